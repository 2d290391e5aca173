// Hostile "creatives" the conditioner downloads from an ad server never
// make ffmpeg fetch a host or read a local file: the container is sniffed
// from the first bytes and pinned (MP4/MOV, WebM/Matroska, MPEG-TS only),
// ffmpeg may use the `file` protocol only and reads only the downloaded
// copy, and MP4 data references (`dref`) to other files are not followed.
// Each case runs `cf-ssai ads condition` as the conditioner does; a
// loopback server counts every request a case causes.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, readdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI } from "./stack.mjs";

let dir, server, base;
const hits = [];
// A secret the hostile files point at: it must never reach an output.
const SECRET = "cf-ssai-secret-" + Math.random().toString(36).slice(2);

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "cf-ssai-hostile-"));
  server = createServer((req, res) => {
    hits.push(req.url);
    res.writeHead(200, { "Content-Type": "video/mp2t" }).end(Buffer.alloc(188 * 10, 0x47));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${server.address().port}`;
  writeFileSync(join(dir, "secret.txt"), SECRET.repeat(100));
});
after(() => server?.close());

function condition(file) {
  const out = join(dir, `out-${Math.random().toString(36).slice(2)}`);
  const r = spawnSync(CLI, ["ads", "condition", file, "--out", out, "--containers", "ts", "--ladder", "640x360:900000"], { encoding: "utf8", timeout: 120_000 });
  let summary = {};
  try { summary = JSON.parse(r.stdout.trim().split("\n").pop()); } catch {}
  return { status: r.status, summary, out, stderr: r.stderr };
}

/** Every byte the case wrote under its output directory. */
function outputBytes(out) {
  let all = Buffer.alloc(0);
  const walk = (d) => {
    let names = [];
    try { names = readdirSync(d); } catch { return; }
    for (const n of names) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else all = Buffer.concat([all, readFileSync(p)]);
    }
  };
  walk(out);
  return all;
}

test("an HLS playlist posing as an MP4 is refused and nothing is fetched", () => {
  const f = join(dir, "playlist.mp4");
  writeFileSync(f, `#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n${base}/seg0.ts\n#EXTINF:2,\nfile://${join(dir, "secret.txt")}\n#EXT-X-ENDLIST\n`);
  const before = hits.length;
  const r = condition(f);
  assert.equal(r.status, 1, r.stderr);
  assert.equal(r.summary.error, "unsupported_source", JSON.stringify(r.summary));
  assert.equal(hits.length, before, `no request made: ${hits.slice(before)}`);
  assert.ok(!outputBytes(r.out).includes(SECRET));
});

test("a concat list is refused and no local file is read", () => {
  for (const text of [`ffconcat version 1.0\nfile '${join(dir, "secret.txt")}'\nfile '${base}/x.ts'\n`, `file '${join(dir, "secret.txt")}'\n`]) {
    const f = join(dir, "list.mp4");
    writeFileSync(f, text);
    const before = hits.length;
    const r = condition(f);
    assert.equal(r.summary.error, "unsupported_source", JSON.stringify(r.summary));
    assert.equal(hits.length, before);
    assert.ok(!outputBytes(r.out).includes(SECRET));
  }
});

// ISO BMFF boxes: [size][type][payload]; containers hold boxes.
const CONTAINERS = new Set(["moov", "trak", "mdia", "minf", "dinf"]);
function parseBoxes(buf) {
  const out = [];
  for (let i = 0; i + 8 <= buf.length;) {
    const size = buf.readUInt32BE(i);
    const type = buf.toString("latin1", i + 4, i + 8);
    if (size < 8 || i + size > buf.length) break;
    const body = buf.subarray(i + 8, i + size);
    out.push({ type, body, kids: CONTAINERS.has(type) ? parseBoxes(body) : null });
    i += size;
  }
  return out;
}
function box(type, payload) {
  const h = Buffer.alloc(8);
  h.writeUInt32BE(8 + payload.length);
  h.write(type, 4, "latin1");
  return Buffer.concat([h, payload]);
}
function write(boxes) {
  return Buffer.concat(boxes.map((b) => box(b.type, b.kids ? write(b.kids) : b.body)));
}

test("an MP4 whose data reference points at another file: that file is never read", () => {
  // A real MP4 (moov after mdat: chunk offsets stay valid), then every
  // track's `dref` replaced by a `url ` entry that is not self-contained
  // and names a local file with the secret.
  const src = join(dir, "real.mp4");
  const g = spawnSync("ffmpeg", ["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=3", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", src]);
  assert.equal(g.status, 0, String(g.stderr));
  const boxes = parseBoxes(readFileSync(src));
  let patched = 0;
  const visit = (list) => {
    for (const b of list) {
      if (b.kids) visit(b.kids);
      if (b.type === "dinf") {
        const location = Buffer.from(`file://${join(dir, "secret.txt")}\0`, "latin1");
        const url = box("url ", Buffer.concat([Buffer.from([0, 0, 0, 0]), location])); // flags 0: external
        const dref = Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 0, 0, 1]), url]); // version/flags, 1 entry
        b.kids = [{ type: "dref", body: dref, kids: null }];
        patched++;
      }
    }
  };
  visit(boxes);
  assert.ok(patched > 0, "the MP4 has a dinf to patch");
  const f = join(dir, "dref.mp4");
  writeFileSync(f, write(boxes));
  const before = hits.length;
  const r = condition(f);
  // Refused (the track's data is elsewhere) or conditioned from its own
  // bytes only: either way the referenced file never reaches an output.
  assert.ok(r.status === 0 || ["unsupported_source", "corrupt_source"].includes(r.summary.error), JSON.stringify(r.summary) + r.stderr.slice(-500));
  assert.equal(hits.length, before);
  assert.ok(!outputBytes(r.out).includes(SECRET), "the referenced file's bytes are in no output");
});
