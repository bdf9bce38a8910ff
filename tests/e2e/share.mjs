// End-to-end test of share links in the viewer: a phim server that requires
// authentication (API keys), two CT studies of different patients stored with
// an admin key, links made with a clinician key (POST /api/studies/{study}/share),
// and headless Chromium (Debian's, via playwright-core), a fresh browser
// context for each link as for someone without an account.
//
//   node share.mjs      (env: PHIM_BIN, PHIM_LOAD_BIN, PHIM_VIEWER_DIR, E2E_OUT)
//
// The link opens its study without a login page, every request carries the
// link's token and none reaches the other study; the list and the priors are
// not asked for; a banner says until when the link works; a series link opens
// its series; another study under the same token, a tampered token and an
// expired link each show a page that says so.
// Prints one line per check and a closing "N passed, N failed"; exits 1 on failure.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  assert, checks, filesUnder, launchChromium, otherSeries, qido, recordErrors, recordTraffic, screenshots, startPhim,
  stow, testEnv, v, waitRendered, webStorage,
} from '../js/harness.mjs';

const { phimBin: PHIM_BIN, loadBin: LOAD_BIN, viewerDir: VIEWER_DIR, out: OUT, chromium: CHROMIUM } = testEnv('share');
const SLICES = 6;

fs.rmSync(OUT, { recursive: true, force: true });
fs.mkdirSync(OUT, { recursive: true });
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'phim-share-'));
const dataDir = path.join(work, 'data');

const { check, counts } = checks();

/** `phim api-key create`: the key is the last line it prints (never logged here). */
function apiKey(name, role) {
  const out = execFileSync(PHIM_BIN, ['api-key', 'create', '--name', name, '--role', role, '--data-dir', dataDir],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const key = out.trim().split('\n').at(-1).trim();
  assert(/^\S{20,}$/.test(key), `phim api-key create printed no key for ${name}`);
  return key;
}

const tokenPayload = (token) => JSON.parse(Buffer.from(token.slice('phims_'.length).split('.')[0], 'base64url').toString('utf8'));

const shot = screenshots(OUT);

let server;
let browser;
try {
  assert(fs.existsSync(path.join(VIEWER_DIR, 'index.html')), `viewer not built: ${VIEWER_DIR}/index.html missing`);
  const help = execFileSync(PHIM_BIN, ['serve', '--help'], { encoding: 'utf8' });
  assert(help.includes('--require-auth'), `${PHIM_BIN} serve has no --require-auth`);

  // Keys first: the same data folder, before the server opens it.
  const admin = { Authorization: `Bearer ${apiKey('e2e-admin', 'admin')}` };
  const clinician = { Authorization: `Bearer ${apiKey('e2e-clinician', 'clinician')}` };
  server = await startPhim(PHIM_BIN, ['--data-dir', dataDir, '--dicom-listen', 'off', '--viewer-dir', VIEWER_DIR,
    '--require-auth'], path.join(OUT, 'server.log'));
  const { base } = server;
  console.log(`server at ${base}; screenshots in ${OUT}`);

  execFileSync(LOAD_BIN, ['gen', '--out', path.join(work, 'gen'), '--ct-studies', '2', '--ct-slices', String(SLICES),
    '--mr-studies', '0', '--cr', '0', '--us', '0'], { stdio: ['ignore', 'ignore', 'inherit'] });
  const manifest = JSON.parse(fs.readFileSync(path.join(work, 'gen', 'manifest.json'), 'utf8'));
  const [genA, genB] = manifest.studies;
  assert(genA && genB && genA.patient_id !== genB.patient_id, 'phim-load did not make two studies of different patients');
  const dcm = filesUnder(path.join(work, 'gen')).filter((f) => f.endsWith('.dcm'));
  assert(dcm.length === 2 * SLICES, `phim-load wrote ${dcm.length} .dcm files, expected ${2 * SLICES}`);
  // Study A gets a second series, for the series link and ?series=.
  const extra = [];
  let seriesA2;
  for (const f of dcm.filter((f) => path.basename(path.dirname(f)) === genA.dir)) {
    const { bytes, uid } = otherSeries(fs.readFileSync(f), genA.series_uid, 2);
    seriesA2 = uid;
    const out = path.join(work, `a2-${path.basename(f)}`);
    fs.writeFileSync(out, bytes);
    extra.push(out);
  }
  await stow(base, [...dcm, ...extra], admin);
  const studyA = genA.study_uid;
  const studyB = genB.study_uid;
  const studies = await qido(base, '/studies', admin);
  assert(studies.length === 2 && studies.some((s) => v(s, '0020000D') === studyA) && studies.some((s) => v(s, '0020000D') === studyB),
    `QIDO gave ${studies.length} studies`);
  const seriesOfA = await qido(base, `/studies/${studyA}/series`, admin);
  assert(seriesOfA.length === 2 && seriesOfA.some((s) => v(s, '0020000E') === seriesA2), `study A has ${seriesOfA.length} series`);

  /** POST /api/studies/{study}/share as the clinician. */
  async function makeLink(study, body) {
    const res = await fetch(`${base}/api/studies/${study}/share`, {
      method: 'POST',
      headers: { ...clinician, 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify(body ?? {}),
    });
    const text = await res.text();
    assert(res.status === 200, `share of a study: ${res.status} ${text.slice(0, 200)}`);
    return JSON.parse(text);
  }

  browser = await launchChromium(chromium, CHROMIUM);
  const pageErrors = [];
  /** A page in a fresh context (nobody signed in, empty storage), recording requests and responses. */
  async function freshPage(lang = 'en-US') {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, locale: lang });
    const page = await context.newPage();
    recordErrors(page, pageErrors);
    return { context, page, ...recordTraffic(page) };
  }
  const PROTECTED = /^\/(dicomweb|wado|fhir|api|IHEInvokeImageDisplay)(\/|$)/;
  const isProtected = (url) => url.startsWith(`${base}/`) && PROTECTED.test(new URL(url).pathname)
    && new URL(url).pathname !== '/api/auth/config';
  const carries = (r, token) => r.headers.authorization === `Bearer ${token}` || new URL(r.url).searchParams.get('share') === token;
  const where = (r) => `${r.method} ${new URL(r.url).pathname}`;

  await check('without a link the viewer asks to log in (the server requires authentication)', async () => {
    const { context, page, requests } = await freshPage();
    await page.goto(`${base}/study/${studyA}`);
    await page.waitForSelector('#login-page');
    const asked = requests.filter((r) => isProtected(r.url));
    assert(asked.length === 0, `asked without credentials: ${asked.map(where).join(', ')}`);
    await context.close();
  });

  let link;
  let token;
  await check('a clinician makes a link to study A: a phims_ token in the viewer and IID URLs', async () => {
    link = await makeLink(studyA);
    token = link.token;
    assert(typeof token === 'string' && token.startsWith('phims_'), 'no phims_ token');
    assert(link.viewer === `${base}/study/${studyA}?share=${token}`, 'viewer URL is not /study/<A>?share=<token>');
    assert(link.iid === `${base}/IHEInvokeImageDisplay?requestType=STUDY&studyUID=${studyA}&share=${token}`, 'IID URL');
    assert(link.study === studyA && link.series === null, `study ${link.study === studyA}, series ${link.series}`);
    const exp = tokenPayload(token).exp;
    assert(Date.parse(link.expires) === exp * 1000, 'the payload exp is not the link\'s expiry');
  });

  const shared = await freshPage();
  const { page } = shared;
  const archive = () => shared.requests.filter((r) => isProtected(r.url));

  await check('the viewer URL opens study A and renders it, without a login page', async () => {
    await page.goto(link.viewer);
    const st = await waitRendered(page);
    assert(!(await page.$('#login-page')), 'a login page is shown');
    assert(!(await page.$('#back')), 'a link back to the study list is shown');
    assert(await page.isHidden('#user'), 'a user is shown');
    await page.waitForFunction(() => [...document.querySelectorAll('.series-item')].every((el) => el.dataset.thumb), null, { timeout: 15000 });
    const items = await page.locator('.series-item').evaluateAll((els) => els.map((el) => [el.dataset.series, el.dataset.thumb]));
    assert(items.length === 2 && items.every(([, thumb]) => thumb === 'image'), `series panel ${JSON.stringify(items.map(([, t]) => t))}`);
    await page.waitForFunction((n) => window.__viewer.cachedCount() === n, SLICES, { timeout: 30000 });
    await shot(page, '01-shared-study');
    console.log(`    lit ${(st.lit * 100).toFixed(1)} %, ${st.levels} grey levels`);
  });

  await check('banner "Shared link — expires <local date/time>" from the token, in English and Vietnamese', async () => {
    const exp = tokenPayload(token).exp;
    assert((await page.getAttribute('#share-banner', 'data-expires')) === String(exp), 'banner expiry is not the token\'s');
    const local = (loc) => new Intl.DateTimeFormat(loc, { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit' })
      .format(new Date(exp * 1000));
    const en = await page.evaluate((loc) => new Intl.DateTimeFormat(loc, { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit' })
      .format(new Date(Number(document.querySelector('#share-banner').dataset.expires) * 1000)), 'en-US');
    assert(en === local('en-US'), 'the browser formats the date differently from Node');
    assert((await page.textContent('#share-banner')) === `Shared link — expires ${en}`, `banner: ${await page.textContent('#share-banner')}`);
    await page.selectOption('#lang', 'vi');
    await page.waitForFunction(() => document.querySelector('#share-banner')?.textContent.startsWith('Liên kết chia sẻ — hết hạn '));
    const vi = await page.textContent('#share-banner');
    assert(vi === `Liên kết chia sẻ — hết hạn ${local('vi-VN')}`, `Vietnamese banner: ${vi}`);
    await waitRendered(page);
    await shot(page, '02-banner-vi');
    await page.selectOption('#lang', 'en');
    await page.waitForFunction(() => document.querySelector('#share-banner')?.textContent.startsWith('Shared link'));
    await waitRendered(page);
  });

  await check('every request for archive data carried the token; none named study B; none refused', async () => {
    const asked = archive();
    const dicomweb = asked.filter((r) => new URL(r.url).pathname.startsWith('/dicomweb/'));
    const frames = dicomweb.filter((r) => /\/frames\/\d+$/.test(new URL(r.url).pathname));
    assert(frames.length >= SLICES, `${frames.length} frame requests`);
    assert(dicomweb.some((r) => r.url.includes('/thumbnail')), 'no thumbnail request');
    assert(dicomweb.some((r) => r.url.endsWith('/metadata')), 'no metadata request');
    const bare = asked.filter((r) => !carries(r, token));
    assert(bare.length === 0, `without the share token: ${bare.map(where).join(', ')}`);
    const other = asked.filter((r) => decodeURIComponent(r.url).includes(studyB) || decodeURIComponent(r.url).includes(genB.patient_id));
    assert(other.length === 0, `${other.length} requests named study B`);
    const refused = shared.responses.filter((r) => isProtected(r.url) && (r.status === 401 || r.status === 403));
    assert(refused.length === 0, `refused: ${refused.map((r) => `${r.status} ${new URL(r.url).pathname}`).join(', ')}`);
    console.log(`    ${asked.length} requests to the archive (${frames.length} frames), all with the share token`);
  });

  await check('no study list and no priors are asked for: every study search names study A', async () => {
    const searches = archive().filter((r) => new URL(r.url).pathname === '/dicomweb/studies');
    assert(searches.length >= 1, 'the study was never looked up');
    const wide = searches.filter((r) => new URL(r.url).searchParams.get('StudyInstanceUID') !== studyA);
    assert(wide.length === 0, `${wide.length} searches not for study A (list or priors)`);
    assert(!(await page.$('.priors')), 'a priors panel is shown');
  });

  await check('the token stays in the URL, not in web storage; a reload shows the study again', async () => {
    const stored = await webStorage(page);
    const leaks = stored.filter((kv) => kv.includes(token) || kv.includes('phims_'));
    assert(leaks.length === 0, `share token in web storage: ${leaks.map((kv) => kv.split('=')[0]).join(', ')}`);
    assert(page.url() === link.viewer, 'the page URL is no longer the link');
    const before = shared.requests.length;
    await page.reload();
    await waitRendered(page);
    assert(!(await page.$('#login-page')), 'a login page after the reload');
    const bare = archive().filter((r) => r.n >= before && !carries(r, token));
    assert(bare.length === 0, `without the token after the reload: ${bare.map(where).join(', ')}`);
  });

  await check('"Phim" (home) stays on the shared study: the list is not reachable', async () => {
    const before = shared.requests.length;
    await page.click('#home');
    await waitRendered(page);
    assert(new URL(page.url()).pathname === `/study/${studyA}` && new URL(page.url()).searchParams.get('share') === token,
      'home left the shared study');
    assert(!(await page.$('#results')), 'the study list is shown');
    const refused = shared.responses.filter((r) => isProtected(r.url) && (r.status === 401 || r.status === 403));
    assert(refused.length === 0, `refused: ${refused.map((r) => `${r.status} ${new URL(r.url).pathname}`).join(', ')}`);
    assert(archive().filter((r) => r.n >= before).length > 0, 'home asked for nothing (not re-rendered?)');
  });

  await check('?series= on the link opens that series first', async () => {
    await page.goto(`${link.viewer}&series=${seriesA2}`);
    await waitRendered(page);
    await page.waitForFunction((uid) => document.querySelector('.series-item.active')?.dataset.series === uid, seriesA2, { timeout: 10000 });
    assert((await page.locator('.series-item').count()) === 2, 'the study link shows not both series');
    await page.goto(link.viewer);
    await waitRendered(page);
    const first = await page.getAttribute('.series-item.active', 'data-series');
    assert(first === genA.series_uid, 'without ?series= the first series is not shown first');
  });
  await shared.context.close();

  await check('a series link opens its series only', async () => {
    const seriesLink = await makeLink(studyA, { series: seriesA2 });
    assert(seriesLink.series === seriesA2 && seriesLink.viewer === `${base}/study/${studyA}?share=${seriesLink.token}&series=${seriesA2}`,
      'series link URL');
    const { context, page: p, requests, responses } = await freshPage();
    await p.goto(seriesLink.viewer);
    await waitRendered(p);
    await p.waitForFunction(() => document.querySelector('.series-item.active'), null, { timeout: 10000 });
    const items = await p.locator('.series-item').evaluateAll((els) => els.map((el) => el.dataset.series));
    assert(items.length === 1 && items[0] === seriesA2, `series panel: ${items.length} series`);
    const bare = requests.filter((r) => isProtected(r.url) && !carries(r, seriesLink.token));
    assert(bare.length === 0, `without the token: ${bare.map(where).join(', ')}`);
    const refused = responses.filter((r) => isProtected(r.url) && (r.status === 401 || r.status === 403));
    assert(refused.length === 0, `refused: ${refused.map((r) => `${r.status} ${new URL(r.url).pathname}`).join(', ')}`);
    await shot(p, '03-series-link');
    await context.close();
  });

  await check('the IID URL of the link redirects to the viewer, which opens study A', async () => {
    const { context, page: p } = await freshPage();
    await p.goto(link.iid);
    await p.waitForURL((u) => u.pathname === `/study/${studyA}` && u.searchParams.get('share') === token);
    await waitRendered(p);
    assert(!(await p.$('#login-page')), 'a login page is shown');
    await context.close();
  });

  await check('study B under study A\'s token: a page that says the link does not open it', async () => {
    const { context, page: p, responses } = await freshPage();
    await p.goto(`${base}/study/${studyB}?share=${token}`);
    await p.waitForSelector('#share-page[data-reason="forbidden"]');
    assert((await p.textContent('#share-msg')) === 'This link does not open this study.', `message: ${await p.textContent('#share-msg')}`);
    assert(!(await p.$('#login-page')), 'a login page is shown');
    assert(!(await p.$('.study')), 'the study view (broken) is still shown');
    assert(responses.some((r) => isProtected(r.url) && r.status === 403), 'the server refused nothing: was study B asked for?');
    await shot(p, '04-other-study');
    // The page offers the link's own study.
    await p.click('#share-home');
    await p.waitForURL((u) => u.pathname === `/study/${studyA}`);
    await waitRendered(p);
    await context.close();
  });

  await check('a tampered token: the "not valid" page, not the login page', async () => {
    const last = token.at(-1);
    const tampered = token.slice(0, -1) + (last === 'A' ? 'B' : 'A');
    const { context, page: p, responses } = await freshPage();
    await p.goto(`${base}/study/${studyA}?share=${tampered}`);
    await p.waitForSelector('#share-page[data-reason="invalid"]');
    assert((await p.textContent('#share-msg')) === 'This link is not valid.', `message: ${await p.textContent('#share-msg')}`);
    assert(!(await p.$('#login-page')), 'a login page is shown');
    assert(responses.some((r) => isProtected(r.url) && r.status === 401), 'no 401 from the server');
    await context.close();
  });

  await check('an expired link: the "This link has expired" page, in Vietnamese too, not the login page', async () => {
    const short = await makeLink(studyA, { expires_in: 2 });
    // Wait until the server itself says so (its clock decides, not ours).
    let why = '';
    for (let i = 0; i < 60; i++) {
      const res = await fetch(`${base}/dicomweb/studies/${studyA}/series`, { headers: { Authorization: `Bearer ${short.token}`, Accept: 'application/dicom+json' } });
      why = res.status === 401 ? await res.text() : '';
      if (res.status === 401) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    assert(/expired/.test(why), `the server never said the link expired: ${why}`);
    const { context, page: p } = await freshPage();
    await p.goto(short.viewer);
    await p.waitForSelector('#share-page[data-reason="expired"]');
    assert((await p.textContent('#share-msg')) === 'This link has expired.', `message: ${await p.textContent('#share-msg')}`);
    assert(!(await p.$('#login-page')), 'a login page is shown');
    assert(!(await p.$('.study')), 'the study view is still shown');
    await shot(p, '05-expired');
    await p.selectOption('#lang', 'vi');
    await p.waitForFunction(() => document.querySelector('#share-msg')?.textContent === 'Liên kết này đã hết hạn.');
    await context.close();
  });

  await check('no page errors', async () => {
    assert(pageErrors.length === 0, pageErrors.join('\n'));
  });
} catch (e) {
  counts.failed++;
  console.log(`FAIL share e2e crashed: ${e?.stack || e}`);
} finally {
  await browser?.close().catch(() => undefined);
  server?.proc.kill('SIGTERM');
  fs.rmSync(work, { recursive: true, force: true });
}
console.log(`${counts.passed} passed, ${counts.failed} failed`);
process.exit(counts.failed ? 1 : 0);
