// A DPoP client (RFC 9449) whose proofs are made by panva/dpop, nobody's
// code here, driving the service through a gateway: it logs in bound to its
// key (as its application would, forwarding a proof to POST /v1/sessions),
// refreshes several times at the token endpoint through the gateway,
// answering use_dpop_nonce with the server's nonce, calls the application
// through the gateway with its DPoP-bound access token, and then tries what
// a thief would: the same proof again, the tokens without the key, the
// tokens with another key.
//
// Input (standard input, JSON): base (the gateway's URL, which is the
// service's issuer), service (the service's URL, for the login the
// application makes), api_key, user_id, client_id, alg, refreshes (how
// many), path (of the application, behind forward auth).
// Output (standard output, JSON): the library's version, the thumbprint of
// the key, and for each step its HTTP status, the error and reason of the
// answer, WWW-Authenticate and whether a DPoP-Nonce came; never a token.
import { readFile } from 'node:fs/promises';
import * as dpop from 'dpop';

const input = [];
for await (const chunk of process.stdin) input.push(chunk);
const cfg = JSON.parse(Buffer.concat(input).toString());

const pkg = JSON.parse(await readFile(new URL('./node_modules/dpop/package.json', import.meta.url)));
const report = { dpop: pkg.version, node: process.version, steps: [] };

// describe is what a step reports of an answer: never a token.
async function describe(what, res) {
  let body = {};
  try {
    body = await res.json();
  } catch {}
  const step = {
    what,
    status: res.status,
    error: body.error ?? null,
    reason: body.reason ?? null,
    token_type: body.token_type ?? null,
    www_authenticate: res.headers.get('www-authenticate'),
    nonce: res.headers.get('dpop-nonce') !== null,
  };
  report.steps.push(step);
  return { step, body, res };
}

let nonce;

// refresh refreshes at the token endpoint through the gateway with a proof
// of keypair (none if null), answering use_dpop_nonce once with the nonce
// given, as RFC 9449 section 8 has a client do.
async function refresh(what, keypair, refreshToken) {
  const url = cfg.base + '/oauth2/token';
  for (let attempt = 0; ; attempt++) {
    const headers = { 'content-type': 'application/x-www-form-urlencoded' };
    if (keypair) headers.dpop = await dpop.generateProof(keypair, url, 'POST', nonce);
    const res = await fetch(url, {
      method: 'POST',
      headers,
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: cfg.client_id }),
    });
    if (res.headers.get('dpop-nonce')) nonce = res.headers.get('dpop-nonce');
    const out = await describe(attempt === 0 ? what : what + ' (again, with the nonce)', res);
    if (out.body.error !== 'use_dpop_nonce' || attempt > 0) return out;
  }
}

// call calls the application through the gateway, with the access token
// under scheme and the DPoP header proof (none if null).
async function call(what, scheme, accessToken, proof) {
  const headers = { authorization: `${scheme} ${accessToken}` };
  if (proof) headers.dpop = proof;
  return describe(what, await fetch(cfg.base + cfg.path, { headers }));
}

try {
  const key = await dpop.generateKeyPair(cfg.alg);
  const thief = await dpop.generateKeyPair(cfg.alg);
  report.jkt = await dpop.calculateThumbprint(key.publicKey);

  // The login, through the application: it forwards the proof the client
  // sent to its own POST /login.
  const loginURL = cfg.base + '/login';
  const login = await describe(
    'login',
    await fetch(cfg.service + '/v1/sessions', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-sessioncache-key': cfg.api_key },
      body: JSON.stringify({
        user_id: cfg.user_id,
        client_id: cfg.client_id,
        dpop_proof: await dpop.generateProof(key, loginURL, 'POST'),
        dpop_htm: 'POST',
        dpop_htu: loginURL,
      }),
    }),
  );
  let { access_token: at, refresh_token: rt } = login.body;
  const first = rt;

  for (let i = 1; i <= cfg.refreshes; i++) {
    const r = await refresh(`refresh ${i}`, key, rt);
    if (r.res.status !== 200) throw new Error(`refresh ${i}: ${r.res.status} ${JSON.stringify(r.body)}`);
    ({ access_token: at, refresh_token: rt } = r.body);
  }

  const url = cfg.base + cfg.path;
  const proof = await dpop.generateProof(key, url, 'GET', undefined, at);
  await call('the application, with the key', 'DPoP', at, proof);
  await call('the same proof again', 'DPoP', at, proof);
  await call('the access token as a bearer token', 'Bearer', at, null);
  await call('the access token without a proof', 'DPoP', at, null);
  await call("the access token with another key's proof", 'DPoP', at, await dpop.generateProof(thief, url, 'GET', undefined, at));
  await call('a proof for another path', 'DPoP', at, await dpop.generateProof(key, cfg.base + '/admin', 'GET', undefined, at));

  // One proof, twice, at the token endpoint: the second is refused.
  const tokenURL = cfg.base + '/oauth2/token';
  const fixed = await dpop.generateProof(key, tokenURL, 'POST', nonce);
  for (const what of ['a refresh with a proof', 'the same proof again, with the new refresh token']) {
    const r = await describe(
      what,
      await fetch(tokenURL, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', dpop: fixed },
        body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: rt, client_id: cfg.client_id }),
      }),
    );
    if (r.res.status === 200) rt = r.body.refresh_token;
  }

  await refresh('the refresh token without a proof', null, rt);
  await refresh("the refresh token with another key's proof", thief, rt);
  await refresh('the first refresh token, replayed with the key', key, first);
} catch (err) {
  report.failure = String(err?.stack ?? err);
}

process.stdout.write(JSON.stringify(report));
