#!/usr/bin/env python3
"""Differential test of `cf-ssai scte35` against threefive (the reference
SCTE-35 decoder, PyPI): thousands of random but valid splice_info_sections
(splice_null, splice_insert in program/component mode, time_signal,
bandwidth_reservation, private_command; avail, DTMF, segmentation with every
flag combination and UPID type, time descriptors) are decoded by both, and
every field both report is compared.

Usage: threefive_diff.py CF_SSAI_BIN [COUNT] [SEED]
"""
import base64
import json
import random
import subprocess
import sys

import threefive


def crc32_mpeg2(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


class Bits:
    def __init__(self):
        self.v = 0
        self.n = 0

    def put(self, value, bits):
        self.v = (self.v << bits) | (value & ((1 << bits) - 1))
        self.n += bits

    def bytes(self):
        assert self.n % 8 == 0
        return self.v.to_bytes(self.n // 8, "big") if self.n else b""


def splice_time(b, r):
    if r.random() < 0.8:
        b.put(1, 1); b.put(0x3F, 6); b.put(r.getrandbits(33), 33)
    else:
        b.put(0, 1); b.put(0x7F, 7)


def splice_insert(r):
    b = Bits()
    b.put(r.getrandbits(32), 32)
    cancel = r.random() < 0.1
    b.put(cancel, 1); b.put(0x7F, 7)
    if not cancel:
        # threefive does not implement component mode (it skips the
        # component loop), so only program mode is compared; component mode
        # is covered by the decoder's own tests against the spec.
        program = True
        duration = r.random() < 0.7
        immediate = r.random() < 0.2
        b.put(r.getrandbits(1), 1); b.put(program, 1); b.put(duration, 1); b.put(immediate, 1)
        b.put(1, 1); b.put(0x7, 3)
        if program and not immediate:
            splice_time(b, r)
        if not program:
            n = r.randint(1, 3)
            b.put(n, 8)
            for _ in range(n):
                b.put(r.getrandbits(8), 8)
                if not immediate:
                    splice_time(b, r)
        if duration:
            b.put(r.getrandbits(1), 1); b.put(0x3F, 6); b.put(r.getrandbits(33), 33)
        b.put(r.getrandbits(16), 16); b.put(r.getrandbits(8), 8); b.put(r.getrandbits(8), 8)
    return 5, b.bytes()


# No UMID (0x04): threefive 3.1.5 reads only 224 of its 256 bits (its loop
# stops at `> 32`), shifting every later field; ours follows the spec.
UPIDS = [
    (0x00, 0), (0x01, None), (0x02, 8), (0x03, 12), (0x05, 8), (0x06, 12), (0x07, 12),
    (0x08, 8), (0x09, None), (0x0A, 12), (0x0B, None), (0x0C, None), (0x0E, None), (0x0F, None), (0x10, 16),
]
SUB_SEG_TYPES = {0x30, 0x32, 0x34, 0x36, 0x38, 0x3A, 0x44, 0x46}
SEG_TYPES = [0x00, 0x01, 0x10, 0x11, 0x20, 0x21, 0x22, 0x23, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x3B, 0x40, 0x41, 0x44, 0x45, 0x46, 0x47, 0x50, 0x51]


def upid(r):
    t, n = r.choice(UPIDS)
    if t in (0x09, 0x0F, 0x0E, 0x02, 0x03, 0x07):
        text = "".join(r.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(n or r.randint(1, 20)))
        if t == 0x0F:
            text = "urn:uuid:" + text
        return t, text.encode()
    if t == 0x0C:
        return t, b"CUEI" + bytes(r.getrandbits(8) for _ in range(r.randint(1, 8)))
    if t == 0x0B:
        return t, bytes(r.getrandbits(8) for _ in range(r.randint(4, 12)))
    return t, bytes(r.getrandbits(8) for _ in range(n if n is not None else r.randint(1, 12)))


def segmentation(r):
    b = Bits()
    b.put(r.getrandbits(32), 32)
    cancel = r.random() < 0.1
    b.put(cancel, 1); b.put(1, 1); b.put(0x3F, 6)
    if not cancel:
        program = True  # see splice_insert: no component mode in threefive
        duration = r.random() < 0.6
        nr = r.random() < 0.5
        b.put(program, 1); b.put(duration, 1); b.put(nr, 1)
        if nr:
            b.put(0x1F, 5)
        else:
            b.put(r.getrandbits(1), 1); b.put(r.getrandbits(1), 1); b.put(r.getrandbits(1), 1); b.put(r.getrandbits(2), 2)
        if not program:
            n = r.randint(1, 3)
            b.put(n, 8)
            for _ in range(n):
                b.put(r.getrandbits(8), 8); b.put(0x7F, 7); b.put(r.getrandbits(33), 33)
        if duration:
            b.put(r.getrandbits(40), 40)
        t, u = upid(r)
        b.put(t, 8); b.put(len(u), 8)
        for x in u:
            b.put(x, 8)
        st = r.choice(SEG_TYPES)
        b.put(st, 8); b.put(r.getrandbits(8), 8); b.put(r.getrandbits(8), 8)
        if st in SUB_SEG_TYPES:
            b.put(r.getrandbits(8), 8); b.put(r.getrandbits(8), 8)
    return 2, b.bytes()


def descriptor(r):
    kind = r.random()
    if kind < 0.6:
        tag, body = segmentation(r)
    elif kind < 0.75:
        tag, body = 0, r.getrandbits(32).to_bytes(4, "big")
    elif kind < 0.85:
        n = r.randint(0, 7)
        tag, body = 1, bytes([r.getrandbits(8), (n << 5) | 0x1F]) + bytes(r.choice(b"0123456789*#") for _ in range(n))
    else:
        tag, body = 3, r.getrandbits(48).to_bytes(6, "big") + r.getrandbits(32).to_bytes(4, "big") + r.getrandbits(16).to_bytes(2, "big")
    return bytes([tag, len(body) + 4]) + b"CUEI" + body


def section(r):
    k = r.random()
    if k < 0.35:
        ctype, cmd = splice_insert(r)
    elif k < 0.85:
        b = Bits(); splice_time(b, r); ctype, cmd = 6, b.bytes()
    elif k < 0.9:
        ctype, cmd = 0, b""
    elif k < 0.95:
        ctype, cmd = 7, b""
    else:
        ctype, cmd = 0xFF, r.getrandbits(32).to_bytes(4, "big") + bytes(r.getrandbits(8) for _ in range(r.randint(0, 8)))
    descs = b"".join(descriptor(r) for _ in range(r.randint(0, 3)))
    section_length = 11 + len(cmd) + 2 + len(descs) + 4
    b = Bits()
    b.put(0xFC, 8); b.put(0, 1); b.put(0, 1); b.put(3, 2); b.put(section_length, 12)
    b.put(0, 8); b.put(0, 1); b.put(0, 6); b.put(r.getrandbits(33) if r.random() < 0.3 else 0, 33)
    b.put(0xFF, 8); b.put(r.getrandbits(12), 12); b.put(len(cmd), 12); b.put(ctype, 8)
    data = b.bytes() + cmd + len(descs).to_bytes(2, "big") + descs
    return data + crc32_mpeg2(data).to_bytes(4, "big")


def ticks(seconds):
    return None if seconds is None else round(float(seconds) * 90000)


def num(x):
    if isinstance(x, str):
        return int(x, 16) if x.startswith("0x") else int(x)
    return x


def compare(ours, tf):
    errs = []

    def eq(what, a, b):
        if a != b:
            errs.append(f"{what}: ours={a!r} threefive={b!r}")

    info = tf["info_section"]
    eq("tier", ours["tier"], num(info["tier"]))
    eq("pts_adjustment", ours["pts_adjustment_ticks"], ticks(info["pts_adjustment"]))
    eq("splice_command_type", ours["splice_command_type"], info["splice_command_type"])
    cmd, oc = tf["command"], ours["command"]
    t = info["splice_command_type"]
    if t == 6:
        eq("time_signal.pts_time", oc["pts_time_ticks"], ticks(cmd.get("pts_time")) if cmd.get("time_specified_flag") else None)
    if t == 5:
        eq("splice_event_id", oc["splice_event_id"], num(cmd["splice_event_id"]))
        eq("cancel", oc["splice_event_cancel_indicator"], cmd["splice_event_cancel_indicator"])
        if not cmd["splice_event_cancel_indicator"]:
            eq("out_of_network", oc["out_of_network_indicator"], cmd["out_of_network_indicator"])
            eq("immediate", oc["splice_immediate_flag"], cmd["splice_immediate_flag"])
            if cmd.get("program_splice_flag") and not cmd["splice_immediate_flag"]:
                eq("pts_time", oc["pts_time_ticks"], ticks(cmd.get("pts_time")) if cmd.get("time_specified_flag") else None)
            if cmd.get("duration_flag"):
                eq("break_duration", oc["break_duration_ticks"], ticks(cmd.get("break_duration")))
                eq("break_auto_return", oc["break_auto_return"], cmd.get("break_auto_return"))
            eq("unique_program_id", oc["unique_program_id"], cmd["unique_program_id"])
            eq("avail_num", oc["avail_num"], cmd["avail_num"])
            eq("avails_expected", oc["avails_expected"], cmd["avails_expected"])
    if t == 0xFF:
        eq("identifier", oc["identifier"], num(cmd.get("identifier")))
    tds = tf.get("descriptors", [])
    eq("descriptor count", len(ours["descriptors"]), len(tds))
    for i, (od, td) in enumerate(zip(ours["descriptors"], tds)):
        eq(f"d{i}.tag", od["tag"], td["tag"])
        eq(f"d{i}.identifier", od["identifier"], td["identifier"])
        if td["tag"] == 0:
            eq(f"d{i}.provider_avail_id", od["provider_avail_id"], num(td["provider_avail_id"]))
        if td["tag"] == 1:
            eq(f"d{i}.preroll", od["preroll"], td["preroll"])
            eq(f"d{i}.dtmf_chars", od["dtmf_chars"], "".join(td.get("dtmf_chars", [])) if isinstance(td.get("dtmf_chars"), list) else (td.get("dtmf_chars") or ""))
        if td["tag"] == 2:
            eq(f"d{i}.segmentation_event_id", od["segmentation_event_id"], num(td["segmentation_event_id"]))
            eq(f"d{i}.cancel", od["segmentation_event_cancel_indicator"], td["segmentation_event_cancel_indicator"])
            if not td["segmentation_event_cancel_indicator"]:
                eq(f"d{i}.type", od["segmentation_type_id"], td["segmentation_type_id"])
                eq(f"d{i}.upid_type", od["segmentation_upid_type"], td["segmentation_upid_type"])
                eq(f"d{i}.segment_num", od["segment_num"], td["segment_num"])
                eq(f"d{i}.segments_expected", od["segments_expected"], td["segments_expected"])
                if td.get("segmentation_duration_flag"):
                    eq(f"d{i}.duration", od["segmentation_duration_ticks"], ticks(td.get("segmentation_duration")))
                else:
                    eq(f"d{i}.duration", od["segmentation_duration_ticks"], None)
                eq(f"d{i}.delivery_not_restricted", od["delivery_not_restricted_flag"], td["delivery_not_restricted_flag"])
                if not td["delivery_not_restricted_flag"]:
                    eq(f"d{i}.web", od["web_delivery_allowed_flag"], td["web_delivery_allowed_flag"])
                    eq(f"d{i}.blackout", od["no_regional_blackout_flag"], td["no_regional_blackout_flag"])
                    eq(f"d{i}.archive", od["archive_allowed_flag"], td["archive_allowed_flag"])
                if "sub_segment_num" in td:
                    eq(f"d{i}.sub_segment_num", od.get("sub_segment_num"), td["sub_segment_num"])
                    eq(f"d{i}.sub_segments_expected", od.get("sub_segments_expected"), td["sub_segments_expected"])
    return errs


def quiet_decode(b64):
    # threefive prints its own complaints to fd 1/2; keep them out of ours.
    import os
    saved = os.dup(1), os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    sys.stdout.flush()
    os.dup2(null, 1); os.dup2(null, 2)
    try:
        cue = threefive.Cue(b64)
        cue.decode()
        return cue.get()
    finally:
        sys.stdout.flush()
        os.dup2(saved[0], 1); os.dup2(saved[1], 2)
        os.close(null); os.close(saved[0]); os.close(saved[1])


def main():
    cli = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    r = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 35)
    cues = [section(r) for _ in range(count)]
    lines = "\n".join(base64.b64encode(c).decode() for c in cues) + "\n"
    out = subprocess.run([cli, "scte35"], input=lines, capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == count, f"{len(out)} output lines for {count} inputs"
    failures = 0
    skipped = 0
    for raw, line in zip(cues, out):
        ours = json.loads(line)
        b64 = base64.b64encode(raw).decode()
        if "error" in ours:
            failures += 1
            print(f"ours rejected a valid section: {ours['error']}\n  {b64}")
            continue
        if not ours["crc_ok"]:
            failures += 1
            print(f"CRC reported bad for a good section\n  {b64}")
        try:
            ref = quiet_decode(b64)
        except Exception:
            # The reference cannot decode this (it crashes on some UPIDs):
            # nothing to compare against.
            skipped += 1
            continue
        try:
            errs = compare(ours, ref)
        except KeyError:
            # The reference left fields out (it gave up on a UPID).
            skipped += 1
            continue
        if errs:
            failures += 1
            if failures <= 15:
                print(f"{b64}\n  " + "\n  ".join(errs))
    print(json.dumps({"sections": count, "compared": count - skipped, "reference_failed": skipped, "mismatches": failures}))
    if count - skipped < count * 0.8:
        print("too few sections compared")
        failures += 1
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
