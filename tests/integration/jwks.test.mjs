// RS256 and ES256 tokens verified against a JWKS served on loopback
// (WebCrypto in workerd), and the algorithm-confusion cases refused.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { generateKeyPairSync, sign, createHmac } from "node:crypto";
import { startStack, http, devVars, ORG } from "./stack.mjs";

const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
const other = generateKeyPairSync("rsa", { modulusLength: 2048 });
let s, jwksServer;

before(async () => {
  const jwks = {
    keys: [
      { ...rsa.publicKey.export({ format: "jwk" }), kid: "rsa1", alg: "RS256", use: "sig" },
      { ...ec.publicKey.export({ format: "jwk" }), kid: "ec1", alg: "ES256", use: "sig" },
    ],
  };
  jwksServer = createServer((req, res) => res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify(jwks)));
  await new Promise((r) => jwksServer.listen(0, "127.0.0.1", r));
  s = await startStack({ ingest: false, vars: { JWKS_URL: `http://127.0.0.1:${jwksServer.address().port}/jwks.json` } });
});
after(() => {
  s && s.stop();
  jwksServer && jwksServer.close();
});

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
const claims = () => ({ sub: "jwks-test", exp: Math.floor(Date.now() / 1000) + 300, aud: "cf-ssai", iss: "cf-ssai", org: ORG });
function token(alg, kid, signer) {
  const input = `${b64({ alg, kid, typ: "JWT" })}.${b64(claims())}`;
  return `${input}.${signer(Buffer.from(input)).toString("base64url")}`;
}
const rs256 = (key) => (d) => sign("sha256", d, key);
const es256 = (key) => (d) => sign("sha256", d, { key, dsaEncoding: "ieee-p1363" });
const status = async (t) => (await http(`${s.base}/api/orgs/${ORG}/channels`, { headers: { Authorization: `Bearer ${t}` } })).status;

test("RS256 and ES256 tokens from the JWKS are accepted", async () => {
  assert.equal(await status(token("RS256", "rsa1", rs256(rsa.privateKey))), 200);
  assert.equal(await status(token("ES256", "ec1", es256(ec.privateKey))), 200);
});

test("wrong key, key-type confusion and HMAC-with-public-key are refused", async () => {
  assert.equal(await status(token("RS256", "rsa1", rs256(other.privateKey))), 401, "signed by a key not in the JWKS");
  assert.equal(await status(token("ES256", "rsa1", es256(ec.privateKey))), 401, "ES256 naming an RSA key");
  // Classic confusion: HS256 "signed" with the RSA public key as the secret.
  const pem = rsa.publicKey.export({ format: "pem", type: "spki" });
  const input = `${b64({ alg: "HS256", kid: "rsa1" })}.${b64(claims())}`;
  const forged = `${input}.${createHmac("sha256", pem).update(input).digest("base64url")}`;
  assert.equal(await status(forged), 401);
  // RS256 header over an HMAC signature made with the real HS secret.
  const input2 = `${b64({ alg: "RS256", kid: "rsa1" })}.${b64(claims())}`;
  const mixed = `${input2}.${createHmac("sha256", devVars().JWT_SECRET).update(input2).digest("base64url")}`;
  assert.equal(await status(mixed), 401);
});
