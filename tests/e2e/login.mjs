// End-to-end test of the viewer's OpenID Connect login: a real OpenID provider
// (tests/oidc/provider.mjs, oidc-provider), a phim server that requires its
// tokens, a generated CT study stored with a client_credentials token, and
// headless Chromium (Debian's, via playwright-core).
//
//   node login.mjs      (env: PHIM_BIN, PHIM_LOAD_BIN, PHIM_VIEWER_DIR, E2E_OUT; needs
//                        tests/oidc/node_modules: `cd tests/oidc && npm ci`)
//
// Logged out, the viewer shows a login page and asks the archive for nothing;
// it logs in with the authorization code flow and PKCE (S256) at the provider,
// sends the access token on every request (its fetches, cornerstone's frame
// requests, thumbnails), renews it with the refresh token, goes back to the
// login page when a 401 cannot be cured, and logs out at the provider.
// Prints one line per check and a closing "N passed, N failed"; exits 1 on failure.

import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';
import {
  assert, checks, filesUnder, freePort, launchChromium, qido, recordErrors, recordTraffic, screenshots, startPhim, stow,
  testEnv, v, waitRendered, webStorage,
} from '../js/harness.mjs';

const { root: ROOT, phimBin: PHIM_BIN, loadBin: LOAD_BIN, viewerDir: VIEWER_DIR, out: OUT, chromium: CHROMIUM } = testEnv('login');
const AUDIENCE = 'urn:phim:api';
// Short enough that the viewer renews during the test (it renews when a fifth
// of the lifetime is left), long enough to load a study with the first token.
const TOKEN_TTL = 30;
const SLICES = 8;

fs.rmSync(OUT, { recursive: true, force: true });
fs.mkdirSync(OUT, { recursive: true });
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'phim-login-'));

const { check, counts } = checks();

/** Starts the test OpenID provider; resolves with its ready line and a stop(). */
function startProvider(env) {
  const proc = spawn(process.execPath, [path.join(ROOT, 'tests/oidc/provider.mjs')], {
    env: { ...process.env, OIDC_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = fs.createWriteStream(path.join(OUT, 'provider.log'));
  proc.stderr.pipe(log);
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: proc.stdout });
    lines.once('line', (line) => resolve({ ...JSON.parse(line), proc }));
    proc.on('error', reject);
    proc.on('exit', (code) => reject(new Error(`the OpenID provider exited with ${code} (see ${OUT}/provider.log)`)));
  });
}

async function serviceToken(issuer, client) {
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { Authorization: `Basic ${Buffer.from(`${client}:secret-${client}`).toString('base64')}` },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: AUDIENCE }),
  });
  const body = await res.json();
  assert(res.ok && body.access_token, `token for ${client}: ${res.status} ${JSON.stringify(body)}`);
  return body.access_token;
}

const jwtPayload = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));

const shot = screenshots(OUT);

/** Requests to the archive's protected routes (everything but the viewer's files and /api/auth/config). */
const PROTECTED = /^\/(dicomweb|wado|fhir|api)(\/|$)/;
const isProtected = (base, url) => url.startsWith(`${base}/`) && PROTECTED.test(new URL(url).pathname)
  && new URL(url).pathname !== '/api/auth/config';

let provider;
let server;
let browser;
try {
  assert(fs.existsSync(path.join(VIEWER_DIR, 'index.html')), `viewer not built: ${VIEWER_DIR}/index.html missing`);
  assert(fs.existsSync(path.join(ROOT, 'tests/oidc/node_modules/oidc-provider')), 'tests/oidc/node_modules missing: cd tests/oidc && npm ci');
  const help = execFileSync(PHIM_BIN, ['serve', '--help'], { encoding: 'utf8' });
  assert(help.includes('--oidc-issuer'), `${PHIM_BIN} serve has no --oidc-issuer`);

  // phim's URL is the viewer's redirect URI, which the provider must know first.
  const phimPort = await freePort();
  const base = `http://127.0.0.1:${phimPort}`;
  provider = await startProvider({
    OIDC_REDIRECT_URIS: `${base}/auth/callback`,
    OIDC_AUDIENCE: AUDIENCE,
    OIDC_ACCESS_TOKEN_TTL: String(TOKEN_TTL),
  });
  const { issuer } = provider;
  server = await startPhim(PHIM_BIN, ['--data-dir', path.join(work, 'data'), '--dicom-listen', '127.0.0.1:0',
    '--viewer-dir', VIEWER_DIR, '--oidc-issuer', issuer, '--oidc-audience', AUDIENCE, '--oidc-client-id', 'phim-viewer'],
  path.join(OUT, 'server.log'), { listen: `127.0.0.1:${phimPort}` });
  assert(server.base === base, `phim listens at ${server.base}, not ${base}`);
  console.log(`server at ${base}; OpenID provider at ${issuer}; screenshots in ${OUT}`);

  execFileSync(LOAD_BIN, ['gen', '--out', path.join(work, 'gen'), '--ct-studies', '1', '--ct-slices', String(SLICES),
    '--mr-studies', '0', '--cr', '0', '--us', '0'], { stdio: ['ignore', 'ignore', 'inherit'] });
  const dcm = filesUnder(path.join(work, 'gen')).filter((f) => f.endsWith('.dcm'));
  assert(dcm.length === SLICES, `phim-load wrote ${dcm.length} .dcm files, expected ${SLICES}`);

  await check('the server asks for a token: 401 with WWW-Authenticate: Bearer, config public', async () => {
    const res = await fetch(`${base}/dicomweb/studies`, { headers: { Accept: 'application/dicom+json' } });
    assert(res.status === 401, `QIDO without a token: ${res.status}`);
    assert(/^Bearer\b/i.test(res.headers.get('www-authenticate') ?? ''), `WWW-Authenticate: ${res.headers.get('www-authenticate')}`);
    const cfg = await (await fetch(`${base}/api/auth/config`)).json();
    assert(cfg.required === true && cfg.oidc?.issuer === issuer && cfg.oidc?.client_id === 'phim-viewer'
      && cfg.oidc?.audience === AUDIENCE, `/api/auth/config: ${JSON.stringify(cfg)}`);
  });

  const admin = { Authorization: `Bearer ${await serviceToken(issuer, 'svc-admin')}` };
  await stow(base, dcm, admin);
  const studies = await qido(base, '/studies', admin);
  assert(studies.length === 1, `expected 1 study, QIDO gave ${studies.length}`);
  const studyUid = v(studies[0], '0020000D');

  browser = await launchChromium(chromium, CHROMIUM);
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, locale: 'en-US' });
  const page = await context.newPage();
  const pageErrors = [];
  recordErrors(page, pageErrors);
  // The stacks of the page's uncaught errors, for the "no page errors" message.
  const errorStacks = [];
  page.on('pageerror', (e) => errorStacks.push(e.stack || String(e)));
  // Every request with the headers it really carried.
  const { requests, responses } = recordTraffic(page);
  const archiveRequests = () => requests.filter((r) => isProtected(base, r.url));
  const bearer = (r) => /^Bearer (.+)$/.exec(r.headers.authorization ?? '')?.[1] ?? null;

  await check('logged out: the login page, and not one request for archive data', async () => {
    await page.goto(`${base}/`);
    await page.waitForSelector('#login-page');
    assert((await page.textContent('#login')).trim() === 'Log in', `button says ${await page.textContent('#login')}`);
    assert(await page.isHidden('#user'), 'a user is shown while logged out');
    await page.selectOption('#lang', 'vi');
    await page.waitForFunction(() => document.querySelector('#login')?.textContent.trim() === 'Đăng nhập');
    await page.selectOption('#lang', 'en');
    await page.waitForFunction(() => document.querySelector('#login')?.textContent.trim() === 'Log in');
    await page.goto(`${base}/study/${encodeURIComponent(studyUid)}`);
    await page.waitForSelector('#login-page');
    await shot(page, '01-login-page');
    const asked = archiveRequests();
    assert(asked.length === 0, `asked while logged out: ${asked.map((r) => new URL(r.url).pathname).join(', ')}`);
    assert(requests.some((r) => r.url === `${base}/api/auth/config`), 'the viewer never asked /api/auth/config');
  });

  let authRequest;
  await check('"Log in" goes to the provider: code flow, PKCE S256, resource = the audience', async () => {
    await page.click('#login');
    await page.waitForURL((u) => u.href.startsWith(`${issuer}/interaction/`));
    authRequest = requests.find((r) => r.url.startsWith(`${issuer}/auth?`));
    assert(authRequest, 'no authorization request');
    const q = new URL(authRequest.url).searchParams;
    assert(q.get('response_type') === 'code', `response_type ${q.get('response_type')}`);
    assert(q.get('code_challenge_method') === 'S256' && /^[\w-]{43}$/.test(q.get('code_challenge') ?? ''),
      `PKCE: ${q.get('code_challenge_method')} ${q.get('code_challenge')}`);
    assert(q.get('client_id') === 'phim-viewer', `client_id ${q.get('client_id')}`);
    assert(q.get('redirect_uri') === `${base}/auth/callback`, `redirect_uri ${q.get('redirect_uri')}`);
    assert(q.getAll('resource').join() === AUDIENCE, `resource ${q.getAll('resource')}`);
    assert((q.get('scope') ?? '').split(' ').includes('openid'), `scope ${q.get('scope')}`);
    assert(q.get('state'), 'no state');
    await shot(page, '02-provider-login');
  });

  let firstToken;
  let firstExpiry;
  await check('logging in as radiologist at the provider returns to the list, which shows the study', async () => {
    await page.fill('#login', 'radiologist');
    await page.fill('#password', 'any password');
    await page.click('#sign-in');
    // The study URL asked for before the login is where the viewer comes back to.
    await page.waitForURL((u) => u.href === `${base}/study/${encodeURIComponent(studyUid)}`);
    await page.click('#back');
    await page.waitForSelector('#results[data-state="done"]');
    const rows = await page.locator('tr[data-study]').evaluateAll((trs) => trs.map((tr) => tr.dataset.study));
    assert(rows.length === 1 && rows[0] === studyUid, `rows ${JSON.stringify(rows)}`);
    assert((await page.textContent('#user-name')) === 'Test radiologist', `user shown: ${await page.textContent('#user-name')}`);
    assert((await page.textContent('#logout')) === 'Log out', `logout button: ${await page.textContent('#logout')}`);
    await shot(page, '03-list');
    const qidos = archiveRequests().filter((r) => new URL(r.url).pathname === '/dicomweb/studies');
    firstToken = bearer(qidos[0] ?? {});
    assert(firstToken, 'the study search carried no bearer token');
    const claims = jwtPayload(firstToken);
    assert(claims.aud === AUDIENCE && claims.sub === 'radiologist' && claims.iss === issuer, `token claims ${JSON.stringify(claims)}`);
    firstExpiry = await page.getAttribute('#user', 'data-expires');
    assert(firstExpiry && Number(firstExpiry) > 0, `expiry shown: ${firstExpiry}`);
  });

  await check('the token request: the code with its PKCE verifier, and resource = the audience', async () => {
    const tokenReq = requests.find((r) => r.url === `${issuer}/token` && r.body.includes('grant_type=authorization_code'));
    assert(tokenReq, 'no authorization_code token request');
    const body = new URLSearchParams(tokenReq.body);
    const verifier = body.get('code_verifier') ?? '';
    const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
    assert(challenge === new URL(authRequest.url).searchParams.get('code_challenge'), 'code_verifier does not match the code_challenge');
    assert(body.get('resource') === AUDIENCE, `token request resource ${body.get('resource')}`);
    assert(!body.has('client_secret'), 'a public client sent a secret');
  });

  await check('tokens are kept in memory only (nothing in localStorage or sessionStorage)', async () => {
    const stored = await webStorage(page);
    const leaks = stored.filter((kv) => kv.includes(firstToken) || /refresh_token|access_token|id_token/.test(kv));
    assert(leaks.length === 0, `tokens in web storage: ${leaks.map((kv) => kv.split('=')[0]).join(', ')}`);
  });

  await check('opening the study renders an image; thumbnails load through the token', async () => {
    await page.locator(`tr[data-study="${studyUid}"]`).click();
    await page.waitForURL(/\/study\//);
    const st = await waitRendered(page);
    await page.waitForFunction(() => [...document.querySelectorAll('.series-item')].every((el) => el.dataset.thumb), null, { timeout: 15000 });
    const thumb = responses.find((r) => r.url.includes('/thumbnail'));
    assert(thumb, 'no thumbnail request');
    const kind = await page.getAttribute('.series-item', 'data-thumb');
    assert(thumb.status === 200 ? kind === 'image' : kind === 'placeholder', `thumbnail ${thumb.status} shows ${kind}`);
    await page.waitForFunction((n) => window.__viewer.cachedCount() === n, SLICES, { timeout: 30000 });
    await shot(page, '04-study');
    console.log(`    lit ${(st.lit * 100).toFixed(1)} %, ${st.levels} grey levels; thumbnail ${thumb.status} (${kind})`);
  });

  await check('every request to the archive carried Authorization: Bearer, and none was refused', async () => {
    const asked = archiveRequests();
    const frames = asked.filter((r) => /\/frames\/\d+$/.test(new URL(r.url).pathname));
    assert(frames.length >= SLICES, `${frames.length} frame requests`);
    assert(asked.some((r) => r.url.includes('/thumbnail')), 'no thumbnail request');
    assert(asked.some((r) => r.url.endsWith('/metadata')), 'no metadata request');
    const bare = asked.filter((r) => !bearer(r));
    assert(bare.length === 0, `without a token: ${bare.map((r) => `${r.method} ${new URL(r.url).pathname}`).join(', ')}`);
    const refused = responses.filter((r) => isProtected(base, r.url) && (r.status === 401 || r.status === 403));
    assert(refused.length === 0, `refused: ${refused.map((r) => `${r.status} ${new URL(r.url).pathname}`).join(', ')}`);
    console.log(`    ${asked.length} requests to the archive (${frames.length} frames), all with a token`);
  });

  await check('the token is renewed with the refresh token before it expires, and used', async () => {
    // The top bar carries the token's expiry time (not the token): it changes with each renewal.
    await page.waitForFunction((exp) => document.querySelector('#user')?.dataset.expires !== exp, firstExpiry,
      { timeout: TOKEN_TTL * 1000 + 30000 });
    const refresh = requests.find((r) => r.url === `${issuer}/token` && r.body.includes('grant_type=refresh_token'));
    assert(refresh, 'renewed without a refresh_token request');
    const body = new URLSearchParams(refresh.body);
    assert(body.get('resource') === AUDIENCE, `refresh request resource: ${body.get('resource')}`);
    assert(body.get('client_id') === 'phim-viewer' && !body.has('client_secret'), 'refresh request client');
    const from = requests.length;
    await page.click('#back');
    await page.waitForSelector('#results[data-state="done"]');
    const later = archiveRequests().filter((r) => r.n >= from && new URL(r.url).pathname === '/dicomweb/studies');
    const tok = bearer(later[0] ?? {});
    assert(tok && tok !== firstToken, 'the search after the renewal did not use a new token');
    assert(jwtPayload(tok).exp > jwtPayload(firstToken).exp, 'the new token does not outlive the first');
    const refused = responses.filter((r) => isProtected(base, r.url) && r.status === 401);
    assert(refused.length === 0, `refused: ${refused.map((r) => new URL(r.url).pathname).join(', ')}`);
  });

  await check('a reload signs in again through the provider session, without its form', async () => {
    const url = page.url();
    const before = requests.length;
    await page.reload();
    await page.waitForSelector('#results[data-state="done"]');
    assert(page.url() === url, `back at ${page.url()}, not ${url}`);
    assert((await page.textContent('#user-name')) === 'Test radiologist', 'user not shown');
    const after = requests.filter((r) => r.n >= before);
    assert(after.some((r) => r.url.startsWith(`${issuer}/auth?`)), 'no new authorization request');
    assert(!after.some((r) => r.url.startsWith(`${issuer}/interaction/`) && r.method === 'POST'), 'the login form was submitted again');
    const bare = archiveRequests().filter((r) => r.n >= before && !bearer(r));
    assert(bare.length === 0, `without a token after the reload: ${bare.map((r) => new URL(r.url).pathname).join(', ')}`);
  });

  await check('a 401 that renewal cannot cure returns to the login page ("session ended")', async () => {
    // The provider refuses the refresh token (as after a revocation), and the
    // archive refuses the current access token.
    await page.route(`${issuer}/token`, (route) => (route.request().postData() ?? '').includes('grant_type=refresh_token')
      ? route.fulfill({ status: 400, contentType: 'application/json', body: '{"error":"invalid_grant","error_description":"grant request is invalid"}' })
      : route.continue());
    await page.route(`${base}/dicomweb/**`, (route) => route.fulfill({ status: 401, headers: { 'WWW-Authenticate': 'Bearer error="invalid_token"' }, body: '' }));
    await page.click('#q-go');
    await page.waitForSelector('#login-page[data-reason="ended"]');
    assert(await page.isHidden('#user'), 'the user is still shown');
    assert(await page.isVisible('#login'), 'no login button');
    await shot(page, '05-session-ended');
    await page.unroute(`${issuer}/token`);
    await page.unroute(`${base}/dicomweb/**`);
  });

  await check('logging in again while the provider session lasts needs no form', async () => {
    await page.click('#login');
    await page.waitForSelector('#results[data-state="done"]');
    assert((await page.textContent('#user-name')) === 'Test radiologist', 'user not shown');
    assert((await page.locator('tr[data-study]').count()) === 1, 'the study is not listed');
  });

  await check('"Log out" ends the session here and at the provider', async () => {
    const before = requests.length;
    const back = page.waitForEvent('framenavigated', { predicate: (f) => f === page.mainFrame() && f.url() === `${base}/`, timeout: 30000 });
    await page.click('#logout');
    await back;
    await page.waitForSelector('#login-page[data-reason="needed"]');
    assert(await page.isHidden('#user'), 'the user is still shown');
    const after = requests.filter((r) => r.n >= before);
    assert(after.some((r) => r.url.startsWith(`${issuer}/session/end`)), 'the provider was not asked to end its session');
    assert(after.some((r) => r.url.startsWith(`${issuer}/token/revocation`)), 'the refresh token was not revoked');
    const asked = archiveRequests().filter((r) => r.n >= before);
    assert(asked.length === 0, `asked after logout: ${asked.map((r) => new URL(r.url).pathname).join(', ')}`);
    await shot(page, '06-logged-out');
    // The provider's session is over too: logging in asks for the password again.
    await page.click('#login');
    await page.waitForURL((u) => u.href.startsWith(`${issuer}/interaction/`));
    await page.waitForSelector('#password');
  });

  await check('user nobody (no role) logs in but is refused the archive, without a broken page', async () => {
    await page.fill('#login', 'nobody');
    await page.fill('#password', 'x');
    await page.click('#sign-in');
    await page.waitForSelector('#results[data-state="error"]');
    assert((await page.textContent('#user-name')) === 'Test nobody', 'user not shown');
    const refused = responses.filter((r) => r.url.startsWith(`${base}/dicomweb/studies`) && r.status === 403);
    assert(refused.length >= 1, 'no 403 for the search');
    await shot(page, '07-no-role');
  });

  await check('no page errors', async () => {
    assert(pageErrors.length === 0, [...pageErrors, ...errorStacks].join('\n'));
  });
} catch (e) {
  counts.failed++;
  console.log(`FAIL login e2e crashed: ${e?.stack || e}`);
} finally {
  await browser?.close().catch(() => undefined);
  server?.proc.kill('SIGTERM');
  provider?.proc.kill('SIGTERM');
  fs.rmSync(work, { recursive: true, force: true });
}
console.log(`${counts.passed} passed, ${counts.failed} failed`);
process.exit(counts.failed ? 1 : 0);
