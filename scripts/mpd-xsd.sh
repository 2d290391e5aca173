#!/usr/bin/env bash
# Validate DASH MPDs against the MPD XML schema (ISO/IEC 23009-1 5th ed. +
# Amd 1, plus the alternative-MPD event extension used by our SGAI output),
# offline, with xmllint.
#
#   scripts/mpd-xsd.sh FILE.mpd...     validate each file ("-" reads stdin)
#   scripts/mpd-xsd.sh --official ...  validate against the unmodified
#                                      5th-edition schema (no extension)
#   scripts/mpd-xsd.sh --self-test     check the validator: every
#                                      tests/data/dash-schema/samples/good-*.mpd
#                                      must pass, every bad-*.mpd must fail
#                                      with the error in its "expect:" comment
#
# Exit status: 0 all valid, 1 at least one file invalid (or self-test
# failed), 2 usage error or xmllint missing.
# Schema files and their provenance: tests/data/dash-schema/README.md.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/tests/data/dash-schema"
SCHEMA="$DIR/DASH-MPD-alternative.xsd"

usage() {
  sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

self_test=0
files=()
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --self-test) self_test=1 ;;
    --official) SCHEMA="$DIR/DASH-MPD.xsd" ;;
    --) shift; files+=("$@"); break ;;
    -) files+=("-") ;;
    -*) echo "mpd-xsd: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) files+=("$1") ;;
  esac
  shift
done

if ! command -v xmllint >/dev/null 2>&1; then
  echo "mpd-xsd: xmllint not found; install it (Debian/Ubuntu: apt-get install libxml2-utils, or run scripts/setup.sh; macOS: brew install libxml2)" >&2
  exit 2
fi
for f in "$SCHEMA" "$DIR/catalog.xml" "$DIR/xlink.xsd" "$DIR/xml.xsd"; do
  [[ -f "$f" ]] || { echo "mpd-xsd: missing schema file $f" >&2; exit 2; }
done

# The official schema imports xlink.xsd (which imports xml.xsd) by absolute
# http URL; the catalog maps both to the local copies. XML_CATALOG_FILES is a
# space-separated list, so pass the catalog as a file: URI with spaces (and
# %) percent-encoded. Setting it also keeps the system catalog out.
cat_uri="${DIR//%/%25}"
cat_uri="file://${cat_uri// /%20}/catalog.xml"
export XML_CATALOG_FILES="$cat_uri"

# validate FILE: runs xmllint, leaves its combined output in $out and its
# exit status in $rc (0 valid, 3 invalid, 4 schema did not compile, 1 other).
validate() {
  out="$(xmllint --nonet --noout --schema "$SCHEMA" "$1" 2>&1)"
  rc=$?
}

if ((self_test)); then
  ((${#files[@]} == 0)) || { echo "mpd-xsd: --self-test takes no files" >&2; exit 2; }
  SCHEMA="$DIR/DASH-MPD-alternative.xsd" # the samples are written for it
  shopt -s nullglob
  good=("$DIR"/samples/good-*.mpd)
  bad=("$DIR"/samples/bad-*.mpd)
  ((${#good[@]} && ${#bad[@]})) || { echo "mpd-xsd: no samples in $DIR/samples" >&2; exit 2; }
  failed=0
  for f in "${good[@]}"; do
    validate "$f"
    if ((rc == 0)); then
      echo "ok   good ${f##*/}"
    else
      echo "FAIL good ${f##*/} (xmllint exit $rc, expected valid):"
      printf '%s\n' "$out" | sed 's/^/       /'
      failed=1
    fi
  done
  for f in "${bad[@]}"; do
    # The expected error is in the sample's comment: "expect: <substring> -->"
    expect="$(sed -n 's/^.*expect: \(.*\) -->.*$/\1/p' "$f" | head -n 1)"
    if [[ -z "$expect" ]]; then
      echo "FAIL bad  ${f##*/}: no 'expect: ... -->' comment in the sample"
      failed=1
      continue
    fi
    validate "$f"
    if ((rc == 3)) && [[ "$out" == *"$expect"* ]]; then
      echo "ok   bad  ${f##*/} (rejected: $expect)"
    else
      echo "FAIL bad  ${f##*/} (xmllint exit $rc; expected exit 3 with: $expect):"
      printf '%s\n' "$out" | sed 's/^/       /'
      failed=1
    fi
  done
  if ((failed)); then
    echo "mpd-xsd self-test: FAILED"
    exit 1
  fi
  echo "mpd-xsd self-test: ok (${#good[@]} good, ${#bad[@]} bad samples)"
  exit 0
fi

if ((${#files[@]} == 0)); then
  usage >&2
  exit 2
fi

status=0
for f in "${files[@]}"; do
  if [[ "$f" != "-" && ! -r "$f" ]]; then
    echo "$f: cannot read" >&2
    status=1
    continue
  fi
  validate "$f"
  printf '%s\n' "$out"
  if ((rc != 0)); then
    ((rc == 4)) && echo "mpd-xsd: the schema $SCHEMA did not compile (catalog or schema files broken?)" >&2
    status=1
  fi
done
exit "$status"
