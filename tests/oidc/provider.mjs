// A real OpenID Connect provider for Phim's authentication tests.
//
// This is oidc-provider (the certified OpenID Connect implementation for Node), configured
// for tests: a fixed set of clients and users, keys made at start-up, JWT access tokens
// carrying roles. It is not a hand-made token signer, so what the tests exercise is what a
// real deployment (Keycloak, Entra ID, Authentik...) does at the protocol level.
//
// Start:
//   OIDC_PORT=0 OIDC_REDIRECT_URIS=http://127.0.0.1:8080/ node tests/oidc/provider.mjs
// Environment:
//   OIDC_PORT               port on 127.0.0.1 (0 = pick a free one; default 0)
//   OIDC_AUDIENCE           the API's resource indicator = the "aud" of access tokens
//                           (default urn:phim:api). urn:other:api is registered too, for
//                           "token meant for another API" tests.
//   OIDC_REDIRECT_URIS      comma-separated redirect URIs of the viewer's client phim-viewer
//   OIDC_ROLES_STYLE        roles    (default): claim  "roles": ["radiologist"]
//                           keycloak           : claim  "realm_access": {"roles": ["radiologist"]}
//   OIDC_ACCESS_TOKEN_TTL   seconds (default 300)
// When ready it prints exactly one line on stdout, then only logs on stderr:
//   {"issuer": "http://127.0.0.1:PORT", "port": PORT, "audience": "urn:phim:api"}
// It exits on SIGTERM / SIGINT.
//
// Machine clients (client_credentials grant; client_secret_basic; secret = "secret-<id>"):
//   svc-admin, svc-radiologist, svc-clinician, svc-modality, svc-auditor  one role each,
//                                                                        named after the client
//   svc-none                 no roles at all
//   svc-radiologist-es256    role radiologist, token signed ES256 (every other token is RS256)
//   svc-short                role radiologist, access token lives 2 s
// A Python test gets a token with:
//   tok = requests.post(f"{issuer}/token",
//                       data={"grant_type": "client_credentials", "resource": "urn:phim:api"},
//                       auth=("svc-radiologist", "secret-svc-radiologist")).json()["access_token"]
// ("resource" selects the audience: urn:phim:api or urn:other:api. Without it, svc-* clients
// get OIDC_AUDIENCE.) The token is a JWT: header {"alg": "RS256"|"ES256", "typ": "at+jwt",
// "kid"}, claims iss, aud, sub (= client id), client_id, iat, exp, jti, scope?, and the roles
// claim. Keys: {issuer}/jwks (one RSA and one EC P-256 key), discovery at
// {issuer}/.well-known/openid-configuration.
//
// People (authorization code + PKCE, for the viewer): client "phim-viewer", public
// (token_endpoint_auth_method none, PKCE S256 required), scopes "openid profile
// offline_access", grant types authorization_code and refresh_token (a refresh token is
// always issued to it, rotated on use), CORS allowed from any origin. The viewer must send
// resource=<audience> in the authorization request and in the token requests, as with any
// oidc-provider: without it the access token is an opaque one meant for /userinfo.
// The login form (/interaction/<uid>) takes any password; the login names the account:
//   radiologist, clinician, admin, auditor, modality   that one role
//   nobody (or any other name)                          no role
// Consent is given automatically (phim-viewer is a first-party client). The ID token carries
// name and preferred_username. Logout: {issuer}/session/end (RP-initiated logout), which
// confirms by itself and returns to the post_logout_redirect_uri (any registered redirect URI
// or its origin + "/").
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import * as util from 'node:util';

import Provider, { errors } from 'oidc-provider';

// oidc-provider prints its notices with console.info, i.e. on stdout; stdout is for the
// ready line only.
console.info = (...args) => console.error(...args);

const ROLES = ['admin', 'radiologist', 'clinician', 'modality', 'auditor'];
const AUDIENCE = process.env.OIDC_AUDIENCE || 'urn:phim:api';
const OTHER_AUDIENCE = 'urn:other:api';
const ROLES_STYLE = process.env.OIDC_ROLES_STYLE || 'roles';
if (!['roles', 'keycloak'].includes(ROLES_STYLE)) {
  console.error(`OIDC_ROLES_STYLE must be "roles" or "keycloak", not ${JSON.stringify(ROLES_STYLE)}`);
  process.exit(2);
}
const TTL = Number(process.env.OIDC_ACCESS_TOKEN_TTL || 300);
if (!Number.isInteger(TTL) || TTL <= 0) {
  console.error('OIDC_ACCESS_TOKEN_TTL must be a positive whole number of seconds');
  process.exit(2);
}
const SHORT_TTL = 2;
const PORT = Number(process.env.OIDC_PORT || 0);
const REDIRECT_URIS = (process.env.OIDC_REDIRECT_URIS || '')
  .split(',').map((s) => s.trim()).filter(Boolean);
for (const uri of REDIRECT_URIS) {
  if (!URL.canParse(uri)) {
    console.error(`OIDC_REDIRECT_URIS: not a URL: ${uri}`);
    process.exit(2);
  }
}

// ------------------------------------------------------------------ who gets which roles
const machineClients = new Map([
  ...ROLES.map((role) => [`svc-${role}`, { roles: [role] }]),
  ['svc-none', { roles: [] }],
  ['svc-radiologist-es256', { roles: ['radiologist'] }],
  ['svc-short', { roles: ['radiologist'] }],
]);

function userRoles(accountId) {
  return ROLES.includes(accountId) ? [accountId] : [];
}

function rolesClaim(roles) {
  return ROLES_STYLE === 'keycloak' ? { realm_access: { roles } } : { roles };
}

// ------------------------------------------------------------------ keys, made at start-up
// Asynchronous on purpose: Node 20's generateKeyPairSync can deadlock when a
// garbage collection runs during it (seen here: the process hung for good in
// KeyGenJob's destructor, waiting on a mutex its own thread held).
const generateKeyPair = util.promisify(crypto.generateKeyPair);
async function signingKey(type, options, alg) {
  const { privateKey } = await generateKeyPair(type, options);
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, alg, use: 'sig', kid: `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}` };
}
// The first key of an algorithm family is the one oidc-provider signs with.
const jwks = {
  keys: [
    await signingKey('rsa', { modulusLength: 2048 }, 'RS256'),
    await signingKey('ec', { namedCurve: 'P-256' }, 'ES256'),
  ],
};

// ------------------------------------------------------------------ clients
const viewerRedirectUris = REDIRECT_URIS.length ? REDIRECT_URIS : ['http://127.0.0.1/'];
const postLogoutRedirectUris = [...new Set(viewerRedirectUris.flatMap((u) => [u, `${new URL(u).origin}/`]))];

const clients = [
  ...[...machineClients.keys()].map((id) => ({
    client_id: id,
    client_secret: `secret-${id}`,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
  })),
  {
    client_id: 'phim-viewer',
    client_name: 'Phim viewer',
    application_type: 'web',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: viewerRedirectUris,
    post_logout_redirect_uris: postLogoutRedirectUris,
    scope: 'openid profile offline_access',
  },
];

// ------------------------------------------------------------------ pages (no outside resources)
function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title><link rel="icon" href="data:,">
<style>body{font-family:sans-serif;max-width:22em;margin:3em auto}input,button{display:block;width:100%;margin:.4em 0;padding:.4em;box-sizing:border-box}</style>
</head><body><h1>${esc(title)}</h1>${body}</body></html>`;
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// ------------------------------------------------------------------ start
const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(PORT, '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const configuration = {
  clients,
  jwks,
  // Signed cookies; over plain http oidc-provider leaves them non-Secure (it only marks
  // them Secure when the request came over https), SameSite=Lax, which a top-level redirect
  // back from the viewer carries.
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  scopes: ['openid', 'profile', 'offline_access'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
  },
  // Profile claims in the ID token too: the viewer shows the name without /userinfo (its
  // access token is for the API, not for /userinfo).
  conformIdTokenClaims: false,
  async findAccount(_ctx, accountId) {
    return {
      accountId,
      async claims() {
        return { sub: accountId, name: `Test ${accountId}`, preferred_username: accountId };
      },
    };
  },
  interactions: {
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  features: {
    devInteractions: { enabled: false }, // our own form below: theirs loads web fonts
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      // Confirm by itself (a test provider; the viewer's "Log out" is the user's intent).
      async logoutSource(ctx, form) {
        ctx.type = 'html';
        ctx.body = page('Signing out', `${form.replace('</form>', '<input type="hidden" name="logout" value="yes"></form>')}
<script>document.forms[0].submit()</script>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.type = 'html';
        ctx.body = page('Signed out', '<p>You are signed out.</p>');
      },
    },
    resourceIndicators: {
      enabled: true,
      async defaultResource(_ctx, client, oneOf) {
        if (oneOf) return oneOf;
        return machineClients.has(client.clientId) ? AUDIENCE : undefined;
      },
      useGrantedResource: async () => false,
      async getResourceServerInfo(_ctx, resourceIndicator, client) {
        if (resourceIndicator !== AUDIENCE && resourceIndicator !== OTHER_AUDIENCE) {
          throw new errors.InvalidTarget();
        }
        return {
          audience: resourceIndicator,
          scope: 'phim',
          accessTokenFormat: 'jwt',
          accessTokenTTL: client.clientId === 'svc-short' ? SHORT_TTL : TTL,
          jwt: { sign: { alg: client.clientId.endsWith('-es256') ? 'ES256' : 'RS256' } },
        };
      },
    },
  },
  async extraTokenClaims(_ctx, token) {
    if (token.kind === 'ClientCredentials') {
      const c = machineClients.get(token.clientId);
      return c ? rolesClaim(c.roles) : undefined;
    }
    if (token.kind === 'AccessToken' && token.accountId) {
      return rolesClaim(userRoles(token.accountId));
    }
    return undefined;
  },
  // The viewer is a public client that must renew its token without a new login: give it
  // a refresh token whether or not offline_access survived (oidc-provider drops
  // offline_access unless prompt=consent is asked for).
  async issueRefreshToken(_ctx, client, code) {
    if (!client.grantTypeAllowed('refresh_token')) return false;
    return client.clientId === 'phim-viewer' || code.scopes.has('offline_access');
  },
  clientBasedCORS: () => true,
  ttl: {
    AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL || TTL,
    ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL || TTL,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: 24 * 3600,
    Interaction: 3600,
    Session: 24 * 3600,
    Grant: 24 * 3600,
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<pre>${esc(JSON.stringify(out, null, 2))}</pre>`);
  },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error:', err));

// The login / consent interaction.
provider.use(async (ctx, next) => {
  const m = /^\/interaction\/([\w-]+)$/.exec(ctx.path);
  if (!m) return next();
  ctx.set('Cache-Control', 'no-store');
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { uid, prompt, params, session } = details;
  if (uid !== m[1]) ctx.throw(400, 'interaction mismatch');

  if (prompt.name === 'login') {
    if (ctx.method === 'POST') {
      const form = await readForm(ctx.req);
      const login = (form.get('login') || '').trim();
      if (login && form.get('password')) {
        const returnTo = await provider.interactionResult(ctx.req, ctx.res, {
          login: { accountId: login },
        }, { mergeWithLastSubmission: false });
        ctx.status = 303;
        ctx.redirect(returnTo);
        return undefined;
      }
    }
    ctx.type = 'html';
    ctx.body = page('Sign in', `<form method="post" action="/interaction/${esc(uid)}" autocomplete="off">
<label>Login <input name="login" id="login" required autofocus></label>
<label>Password <input name="password" id="password" type="password" required></label>
<button type="submit" id="sign-in">Sign in</button></form>
<p>Any password. Logins: ${ROLES.map(esc).join(', ')}, nobody.</p>`);
    return undefined;
  }

  if (prompt.name === 'consent') {
    // First-party client: grant what it asked for without asking.
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    if (d.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    const grantId = await grant.save();
    const returnTo = await provider.interactionResult(ctx.req, ctx.res, {
      consent: { grantId },
    }, { mergeWithLastSubmission: true });
    ctx.status = 303;
    ctx.redirect(returnTo);
    return undefined;
  }

  ctx.throw(501, `prompt ${prompt.name} not implemented`);
  return undefined;
});

server.on('request', provider.callback());

process.stdout.write(`${JSON.stringify({ issuer, port, audience: AUDIENCE })}\n`);

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
