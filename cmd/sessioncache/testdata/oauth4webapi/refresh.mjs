// An OAuth client and a resource server written with panva/oauth4webapi,
// nobody's code here: discovers the service from its issuer (RFC 8414),
// refreshes at its token endpoint (RFC 6749 section 6) as each session's
// client would, validates every access token as a resource server would
// (RFC 9068, keys from the discovered jwks_uri), replays an old refresh
// token and reports what the library raised. Plain http is allowed for
// the loopback test only, through the library's allowInsecureRequests.
//
// Input (standard input, JSON): issuer, audience, alg, and sessions: a
// list of {client_id, secret, refresh_token, steps (one client
// authentication a refresh: none, client_secret_basic or
// client_secret_post), wrong_secret (a refresh with a wrong secret, by
// client_secret_basic and by client_secret_post, before the steps), replay
// (after the steps, replay the refresh token the first step received, then
// refresh with the current one)}.
// Output (standard output, JSON): the library's version, the discovery
// response and metadata, and for each session what each step returned (no
// token itself: the SHA-256 of refresh tokens, the header and claims of
// access tokens) and the errors the library raised. An unexpected error
// ends the run with it in "failure".
import crypto from 'node:crypto';
import { readFile } from 'node:fs/promises';
import * as oauth from 'oauth4webapi';

const insecure = { [oauth.allowInsecureRequests]: true };

const input = [];
for await (const chunk of process.stdin) input.push(chunk);
const cfg = JSON.parse(Buffer.concat(input).toString());

const pkg = JSON.parse(await readFile(new URL('./node_modules/oauth4webapi/package.json', import.meta.url)));
const report = { oauth4webapi: pkg.version, node: process.version, sessions: [] };

const sha256 = (s) => crypto.createHash('sha256').update(s).digest('hex');

// describe names an error the library raised, with the fields a caller
// would read, and never a token.
function describe(err) {
  const d = { name: err?.constructor?.name ?? typeof err, code: err?.code, message: String(err?.message ?? err) };
  if (err instanceof oauth.ResponseBodyError) {
    Object.assign(d, { status: err.status, error: err.error, error_description: err.error_description });
  } else if (err instanceof oauth.WWWAuthenticateChallengeError) {
    Object.assign(d, {
      status: err.status,
      challenges: err.cause.map((c) => ({ scheme: c.scheme, parameters: c.parameters })),
    });
  }
  return d;
}

async function expectError(what, f) {
  try {
    await f();
  } catch (err) {
    return describe(err);
  }
  throw new Error(`${what} succeeded`);
}

function clientAuth(method, secret) {
  switch (method) {
    case 'none':
      return oauth.None();
    case 'client_secret_basic':
      return oauth.ClientSecretBasic(secret);
    case 'client_secret_post':
      return oauth.ClientSecretPost(secret);
  }
  throw new Error(`unknown client authentication ${method}`);
}

// resource validates an access token as a resource server whose audience
// is audience would, from an Authorization header.
function resource(as, accessToken, audience) {
  const request = new Request('http://resource.invalid/orders', { headers: { authorization: `Bearer ${accessToken}` } });
  return oauth.validateJwtAccessToken(as, request, audience, { ...insecure, signingAlgorithms: [cfg.alg] });
}

async function refresh(as, client, method, secret, refreshToken) {
  const response = await oauth.refreshTokenGrantRequest(as, client, clientAuth(method, secret), refreshToken, insecure);
  const headers = {
    status: response.status,
    content_type: response.headers.get('content-type'),
    cache_control: response.headers.get('cache-control'),
    pragma: response.headers.get('pragma'),
  };
  return { headers, tokens: await oauth.processRefreshTokenResponse(as, client, response) };
}

try {
  const issuer = new URL(cfg.issuer);
  const response = await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oauth2' });
  report.discovery = {
    url: response.url,
    status: response.status,
    content_type: response.headers.get('content-type'),
  };
  const as = await oauth.processDiscoveryResponse(issuer, response);
  report.metadata = as;

  for (const s of cfg.sessions) {
    const out = { client_id: s.client_id, steps: [] };
    report.sessions.push(out);
    const client = { client_id: s.client_id };
    if (s.wrong_secret) {
      out.wrong_secret = {};
      for (const method of ['client_secret_basic', 'client_secret_post']) {
        out.wrong_secret[method] = await expectError(`a refresh with a wrong secret (${method})`, () =>
          refresh(as, client, method, s.secret + '-wrong', s.refresh_token),
        );
      }
    }
    let current = s.refresh_token;
    const received = [];
    for (const method of s.steps) {
      const { headers, tokens } = await refresh(as, client, method, s.secret, current);
      const claims = await resource(as, tokens.access_token, cfg.audience);
      const header = JSON.parse(Buffer.from(tokens.access_token.split('.')[0], 'base64url'));
      out.steps.push({
        auth: method,
        response: headers,
        token_type: tokens.token_type,
        expires_in: tokens.expires_in,
        presented_sha256: sha256(current),
        refresh_token_sha256: typeof tokens.refresh_token === 'string' ? sha256(tokens.refresh_token) : null,
        header,
        claims,
      });
      if (out.steps.length === 1) {
        out.wrong_audience = await expectError('an access token for another audience', () =>
          resource(as, tokens.access_token, cfg.audience + '/other'),
        );
      }
      current = tokens.refresh_token;
      received.push(current);
    }
    if (s.replay) {
      out.replay = await expectError('the replay of an old refresh token', () =>
        refresh(as, client, s.steps[0], s.secret, received[0]),
      );
      out.after_replay = await expectError('a refresh of the session after the replay', () =>
        refresh(as, client, s.steps[0], s.secret, current),
      );
    }
  }
} catch (err) {
  report.failure = describe(err);
}

process.stdout.write(JSON.stringify(report));
