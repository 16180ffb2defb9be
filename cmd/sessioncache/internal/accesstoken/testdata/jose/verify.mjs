// Verifies access tokens as a gateway written in JavaScript would, with
// panva/jose against the key set the service publishes; and derives the
// signing keys from the secret as accesstoken's package doc describes, with
// Node's own crypto, to check that the document says what the code does.
//
// Input (standard input, JSON): jwksURL, issuer, audience, alg, nowMs, token,
// refused (tokens jose must refuse), secret (base64url), epoch.
// Output (stdout, JSON): the token's protectedHeader and payload, the error
// code jose gave for each refused token, the published kids and the derived
// kids.
import crypto from 'node:crypto';
import { calculateJwkThumbprint, createRemoteJWKSet, jwtVerify } from 'jose';

const input = [];
for await (const chunk of process.stdin) input.push(chunk);
const cfg = JSON.parse(Buffer.concat(input).toString());
const jwks = createRemoteJWKSet(new URL(cfg.jwksURL));
const options = {
  typ: 'at+jwt',
  issuer: cfg.issuer,
  audience: cfg.audience,
  algorithms: [cfg.alg],
  currentDate: new Date(cfg.nowMs),
  requiredClaims: ['sub', 'exp', 'iat', 'jti', 'client_id', 'sid'],
};

const { payload, protectedHeader } = await jwtVerify(cfg.token, jwks, options);

const refused = [];
for (const tok of cfg.refused) {
  try {
    await jwtVerify(tok, jwks, options);
    refused.push('accepted');
  } catch (err) {
    refused.push(err.code || String(err));
  }
}

const res = await fetch(cfg.jwksURL);
const published = (await res.json()).keys.map((k) => k.kid);

// seed(e) = HMAC-SHA256(secret, label || 0 || alg || 0 || e as 8 bytes big-endian)
function seed(secret, alg, epoch) {
  const e = Buffer.alloc(8);
  e.writeBigInt64BE(BigInt(epoch));
  const label = Buffer.from('sessioncache access-token signing key v1');
  const zero = Buffer.from([0]);
  return crypto.createHmac('sha256', secret).update(Buffer.concat([label, zero, Buffer.from(alg), zero, e])).digest();
}

// HKDF-Expand (RFC 5869 section 2.3) with SHA-256.
function hkdfExpand(prk, info, length) {
  let t = Buffer.alloc(0);
  let out = Buffer.alloc(0);
  for (let i = 1; out.length < length; i++) {
    t = crypto.createHmac('sha256', prk).update(Buffer.concat([t, Buffer.from(info), Buffer.from([i])])).digest();
    out = Buffer.concat([out, t]);
  }
  return out.subarray(0, length);
}

const p256n = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

function publicJwk(secret, alg, epoch) {
  const s = seed(secret, alg, epoch);
  if (alg === 'EdDSA') {
    const pkcs8 = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), s]);
    const priv = crypto.createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
    return crypto.createPublicKey(priv).export({ format: 'jwk' });
  }
  const x = BigInt('0x' + hkdfExpand(s, 'P-256 scalar', 48).toString('hex'));
  const d = (x % (p256n - 1n)) + 1n;
  const ecdh = crypto.createECDH('prime256v1');
  ecdh.setPrivateKey(Buffer.from(d.toString(16).padStart(64, '0'), 'hex'));
  const pub = ecdh.getPublicKey();
  return { kty: 'EC', crv: 'P-256', x: pub.subarray(1, 33).toString('base64url'), y: pub.subarray(33).toString('base64url') };
}

const secret = Buffer.from(cfg.secret, 'base64url');
const derived = [];
for (const e of [cfg.epoch - 1, cfg.epoch, cfg.epoch + 1]) {
  derived.push(await calculateJwkThumbprint(publicJwk(secret, cfg.alg, e), 'sha256'));
}

process.stdout.write(JSON.stringify({ protectedHeader, payload, refused, published, derived }));
