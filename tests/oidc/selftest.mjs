// Self-check of the test OpenID provider (provider.mjs): discovery, keys, client_credentials
// tokens (RS256 and ES256, roles, audiences, lifetimes), the Keycloak roles style, and a
// user's authorization code + PKCE login with refresh, each token's signature verified
// against the provider's JWKS.
//   node tests/oidc/selftest.mjs     prints one line per check, then "N passed, N failed"
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REDIRECT = 'http://127.0.0.1:1/callback'; // never fetched: the flow stops at the redirect
let passed = 0;
let failed = 0;

function check(name, ok, detail = '') {
  if (ok) {
    passed += 1;
    console.log(`ok   ${name}`);
  } else {
    failed += 1;
    console.log(`FAIL ${name}${detail ? `: ${detail}` : ''}`);
  }
}

async function startProvider(env) {
  const child = spawn(process.execPath, [path.join(HERE, 'provider.mjs')], {
    env: { ...process.env, OIDC_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const lines = createInterface({ input: child.stdout });
  const first = await new Promise((resolve, reject) => {
    lines.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`provider exited (${code}): ${stderr}`)));
  });
  const info = JSON.parse(first);
  let extra = '';
  lines.on('line', (l) => { extra += `${l}\n`; });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return {
    ...info,
    extraStdout: () => extra,
    async stop() {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

const b64json = (s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));

function decode(jwt) {
  const parts = String(jwt).split('.');
  if (parts.length !== 3) throw new Error(`not a JWS (${parts.length} parts)`);
  return { header: b64json(parts[0]), payload: b64json(parts[1]), parts };
}

function verifySignature(jwt, jwks) {
  const { header, parts } = decode(jwt);
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  if (!jwk) return false;
  const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
  const data = Buffer.from(`${parts[0]}.${parts[1]}`);
  const sig = Buffer.from(parts[2], 'base64url');
  if (header.alg === 'RS256') return crypto.verify('sha256', data, key, sig);
  if (header.alg === 'ES256') return crypto.verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, sig);
  return false;
}

async function clientToken(issuer, clientId, { resource = 'urn:phim:api', secret = `secret-${clientId}`, scope } = {}) {
  const body = new URLSearchParams({ grant_type: 'client_credentials' });
  if (resource) body.set('resource', resource);
  if (scope) body.set('scope', scope);
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${clientId}:${secret}`).toString('base64')}` },
    body,
  });
  return { status: res.status, json: await res.json() };
}

// A minimal browser: cookies per origin, redirects followed by hand.
class Browser {
  constructor() { this.cookies = new Map(); }

  async go(url, init = {}) {
    const headers = new Headers(init.headers);
    const jar = [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    if (jar) headers.set('cookie', jar);
    const res = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const eq = pair.indexOf('=');
      this.cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1));
    }
    return res;
  }

  // Follows redirects until one leaves the provider (to the client's redirect URI).
  async follow(url, init, issuer) {
    let res = await this.go(url, init);
    for (let i = 0; i < 10 && res.status >= 300 && res.status < 400; i += 1) {
      const next = new URL(res.headers.get('location'), url).href;
      if (!next.startsWith(`${issuer}/`)) return { res, location: next };
      url = next;
      res = await this.go(url);
    }
    return { res, location: null, url };
  }
}

async function codeFlow(issuer, login, { pkce = true } = {}) {
  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
  const state = crypto.randomBytes(8).toString('hex');
  const auth = new URL(`${issuer}/auth`);
  auth.search = new URLSearchParams({
    client_id: 'phim-viewer',
    response_type: 'code',
    redirect_uri: REDIRECT,
    scope: 'openid profile offline_access',
    resource: 'urn:phim:api',
    state,
    nonce: 'n-1',
    ...(pkce ? { code_challenge: challenge, code_challenge_method: 'S256' } : {}),
  }).toString();
  const browser = new Browser();
  const first = await browser.follow(auth.href, {}, issuer);
  if (first.location) return { redirect: new URL(first.location), verifier, state };
  const html = await first.res.text();
  const action = /<form method="post" action="([^"]+)"/.exec(html)?.[1];
  if (!action) return { error: `no login form (HTTP ${first.res.status})` };
  const submitted = await browser.follow(new URL(action, issuer).href, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ login, password: 'any' }).toString(),
  }, issuer);
  if (!submitted.location) return { error: `login did not return to the client (HTTP ${submitted.res.status})` };
  return { redirect: new URL(submitted.location), verifier, state, browser };
}

async function tokenRequest(issuer, params, origin) {
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: origin ? { origin } : {},
    body: new URLSearchParams(params),
  });
  return { status: res.status, json: await res.json(), cors: res.headers.get('access-control-allow-origin') };
}

async function main() {
  const op = await startProvider({ OIDC_REDIRECT_URIS: REDIRECT });
  try {
    const { issuer } = op;
    check('ready line: issuer is http://127.0.0.1:PORT', issuer === `http://127.0.0.1:${op.port}`, issuer);
    check('ready line: default audience', op.audience === 'urn:phim:api', op.audience);

    const disco = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
    check('discovery: issuer', disco.issuer === issuer, disco.issuer);
    check('discovery: token endpoint', disco.token_endpoint === `${issuer}/token`, disco.token_endpoint);
    check('discovery: PKCE S256', (disco.code_challenge_methods_supported || []).includes('S256'));
    const jwks = await (await fetch(disco.jwks_uri)).json();
    const rsa = jwks.keys.find((k) => k.kty === 'RSA');
    const ec = jwks.keys.find((k) => k.kty === 'EC' && k.crv === 'P-256');
    check('jwks: an RSA and an EC P-256 key, each with a kid', !!(rsa?.kid && ec?.kid), JSON.stringify(jwks.keys.map((k) => k.kty)));
    check('jwks: public parts only', jwks.keys.every((k) => !('d' in k) && !('p' in k)));

    const rad = await clientToken(issuer, 'svc-radiologist');
    check('svc-radiologist: token issued', rad.status === 200 && rad.json.token_type === 'Bearer', JSON.stringify(rad.json));
    {
      const { header, payload } = decode(rad.json.access_token);
      check('svc-radiologist: alg RS256, typ at+jwt', header.alg === 'RS256' && header.typ === 'at+jwt', JSON.stringify(header));
      check('svc-radiologist: kid of the RSA key', header.kid === rsa.kid, header.kid);
      check('svc-radiologist: signature verifies', verifySignature(rad.json.access_token, jwks));
      check('svc-radiologist: iss', payload.iss === issuer, payload.iss);
      check('svc-radiologist: aud urn:phim:api', payload.aud === 'urn:phim:api', JSON.stringify(payload.aud));
      check('svc-radiologist: roles [radiologist]', JSON.stringify(payload.roles) === '["radiologist"]', JSON.stringify(payload.roles));
      check('svc-radiologist: sub = client id', payload.sub === 'svc-radiologist', payload.sub);
      check('svc-radiologist: lives 300 s', payload.exp - payload.iat === 300, String(payload.exp - payload.iat));
    }
    const es = await clientToken(issuer, 'svc-radiologist-es256');
    check('svc-radiologist-es256: token issued', es.status === 200, JSON.stringify(es.json));
    {
      const { header, payload } = decode(es.json.access_token);
      check('svc-radiologist-es256: alg ES256, kid of the EC key', header.alg === 'ES256' && header.kid === ec.kid, JSON.stringify(header));
      check('svc-radiologist-es256: signature verifies', verifySignature(es.json.access_token, jwks));
      check('svc-radiologist-es256: aud, roles', payload.aud === 'urn:phim:api' && JSON.stringify(payload.roles) === '["radiologist"]', JSON.stringify(payload));
    }
    {
      const t = await clientToken(issuer, 'svc-none');
      check('svc-none: roles []', t.status === 200 && JSON.stringify(decode(t.json.access_token).payload.roles) === '[]');
      const s = await clientToken(issuer, 'svc-short');
      const p = decode(s.json.access_token).payload;
      check('svc-short: lives 2 s', s.status === 200 && p.exp - p.iat === 2 && s.json.expires_in === 2, `${p.exp - p.iat} / ${s.json.expires_in}`);
      const o = await clientToken(issuer, 'svc-admin', { resource: 'urn:other:api' });
      check('resource urn:other:api: aud urn:other:api', o.status === 200 && decode(o.json.access_token).payload.aud === 'urn:other:api');
      const d = await clientToken(issuer, 'svc-admin', { resource: null });
      check('no resource: still a JWT for the default audience', d.status === 200 && decode(d.json.access_token).payload.aud === 'urn:phim:api');
      const u = await clientToken(issuer, 'svc-admin', { resource: 'urn:unknown:api' });
      check('unknown resource: invalid_target', u.status === 400 && u.json.error === 'invalid_target', JSON.stringify(u.json));
      const w = await clientToken(issuer, 'svc-admin', { secret: 'wrong' });
      check('wrong secret: invalid_client', w.status === 401 && w.json.error === 'invalid_client', JSON.stringify(w.json));
      for (const role of ['admin', 'clinician', 'modality', 'auditor']) {
        const r = await clientToken(issuer, `svc-${role}`);
        check(`svc-${role}: roles [${role}]`, r.status === 200 && JSON.stringify(decode(r.json.access_token).payload.roles) === JSON.stringify([role]));
      }
    }

    // A person: authorization code + PKCE, then refresh.
    const flow = await codeFlow(issuer, 'radiologist');
    check('code flow: login form leads back to the redirect URI with a code', !!flow.redirect?.searchParams.get('code'), flow.error || flow.redirect?.href);
    if (flow.redirect) {
      check('code flow: state kept', flow.redirect.searchParams.get('state') === flow.state);
      check('code flow: iss in the response', flow.redirect.searchParams.get('iss') === issuer);
      const origin = 'http://127.0.0.1:1';
      const tok = await tokenRequest(issuer, {
        grant_type: 'authorization_code',
        client_id: 'phim-viewer',
        code: flow.redirect.searchParams.get('code'),
        redirect_uri: REDIRECT,
        code_verifier: flow.verifier,
        resource: 'urn:phim:api',
      }, origin);
      check('code flow: token endpoint answers the browser origin (CORS)', tok.cors === origin, String(tok.cors));
      check('code flow: tokens issued', tok.status === 200 && !!tok.json.access_token && !!tok.json.id_token, JSON.stringify(tok.json));
      if (tok.status === 200) {
        const at = decode(tok.json.access_token).payload;
        check('user token: JWT for urn:phim:api', at.aud === 'urn:phim:api' && verifySignature(tok.json.access_token, jwks), JSON.stringify(at.aud));
        check('user token: sub and roles', at.sub === 'radiologist' && JSON.stringify(at.roles) === '["radiologist"]', JSON.stringify(at));
        const idt = decode(tok.json.id_token).payload;
        check('id token: name and preferred_username', idt.preferred_username === 'radiologist' && !!idt.name && idt.aud === 'phim-viewer', JSON.stringify(idt));
        check('refresh token issued to the public viewer', !!tok.json.refresh_token);
        const ref = await tokenRequest(issuer, {
          grant_type: 'refresh_token',
          client_id: 'phim-viewer',
          refresh_token: tok.json.refresh_token,
          resource: 'urn:phim:api',
        }, origin);
        check('refresh: a new JWT access token with the roles', ref.status === 200
          && JSON.stringify(decode(ref.json.access_token).payload.roles) === '["radiologist"]'
          && ref.json.access_token !== tok.json.access_token, JSON.stringify(ref.json));
        const replay = await tokenRequest(issuer, {
          grant_type: 'authorization_code',
          client_id: 'phim-viewer',
          code: flow.redirect.searchParams.get('code'),
          redirect_uri: REDIRECT,
          code_verifier: flow.verifier,
          resource: 'urn:phim:api',
        });
        check('code flow: a code is used once', replay.status === 400 && replay.json.error === 'invalid_grant', JSON.stringify(replay.json));
      }
      const wrongVerifier = await codeFlow(issuer, 'nobody');
      if (wrongVerifier.redirect) {
        const bad = await tokenRequest(issuer, {
          grant_type: 'authorization_code',
          client_id: 'phim-viewer',
          code: wrongVerifier.redirect.searchParams.get('code'),
          redirect_uri: REDIRECT,
          code_verifier: crypto.randomBytes(32).toString('base64url'),
          resource: 'urn:phim:api',
        });
        check('code flow: a wrong code_verifier is refused', bad.status === 400 && bad.json.error === 'invalid_grant', JSON.stringify(bad.json));
      } else {
        check('code flow: a wrong code_verifier is refused', false, wrongVerifier.error);
      }
    }
    const nobody = await codeFlow(issuer, 'nobody');
    if (nobody.redirect?.searchParams.get('code')) {
      const tok = await tokenRequest(issuer, {
        grant_type: 'authorization_code',
        client_id: 'phim-viewer',
        code: nobody.redirect.searchParams.get('code'),
        redirect_uri: REDIRECT,
        code_verifier: nobody.verifier,
        resource: 'urn:phim:api',
      });
      check('user nobody: roles []', tok.status === 200 && JSON.stringify(decode(tok.json.access_token).payload.roles) === '[]', JSON.stringify(tok.json));
    } else {
      check('user nobody: roles []', false, nobody.error);
    }
    const noPkce = await codeFlow(issuer, 'radiologist', { pkce: false });
    check('code flow without PKCE is refused', noPkce.redirect?.searchParams.get('error') === 'invalid_request'
      && !noPkce.redirect.searchParams.get('code'), noPkce.error || noPkce.redirect?.href);
    check('stdout: nothing after the ready line', op.extraStdout() === '', op.extraStdout());
  } finally {
    const { code, signal } = await op.stop();
    check('SIGTERM: the provider exits', code === 0 || signal === 'SIGTERM', `code ${code} signal ${signal}`);
  }

  const kc = await startProvider({ OIDC_ROLES_STYLE: 'keycloak', OIDC_AUDIENCE: 'urn:phim:test', OIDC_ACCESS_TOKEN_TTL: '60' });
  try {
    check('OIDC_AUDIENCE: in the ready line', kc.audience === 'urn:phim:test');
    const t = await clientToken(kc.issuer, 'svc-clinician', { resource: 'urn:phim:test' });
    const p = t.status === 200 ? decode(t.json.access_token).payload : {};
    check('keycloak style: realm_access.roles, no roles claim', JSON.stringify(p.realm_access) === '{"roles":["clinician"]}' && !('roles' in p), JSON.stringify(p));
    check('OIDC_AUDIENCE: aud', p.aud === 'urn:phim:test', JSON.stringify(p.aud));
    check('OIDC_ACCESS_TOKEN_TTL: lives 60 s', p.exp - p.iat === 60, String(p.exp - p.iat));
  } finally {
    await kc.stop();
  }
}

try {
  await main();
} catch (err) {
  failed += 1;
  console.log(`FAIL selftest crashed: ${err.stack || err}`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
