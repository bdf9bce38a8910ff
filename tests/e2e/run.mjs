// End-to-end test of the web viewer: a real phim server, a generated CT study
// stored over STOW-RS, and headless Chromium (Debian's, via playwright-core).
//
//   node run.mjs            (env: PHIM_BIN, PHIM_LOAD_BIN, PHIM_VIEWER_DIR, E2E_OUT)
//
// Prints one line per check and a closing "N passed, N failed"; exits 1 on failure.
// Rendering is judged from canvas pixels, never from the absence of errors.

import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PHIM_BIN = process.env.PHIM_BIN || path.join(ROOT, 'target/debug/phim');
const LOAD_BIN = process.env.PHIM_LOAD_BIN || path.join(ROOT, 'target/debug/phim-load');
const VIEWER_DIR = process.env.PHIM_VIEWER_DIR || path.join(ROOT, 'viewer/dist');
const OUT = process.env.E2E_OUT || path.join(ROOT, '.test-work/e2e');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

fs.rmSync(OUT, { recursive: true, force: true });
fs.mkdirSync(OUT, { recursive: true });
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'phim-e2e-'));

let passed = 0;
let failed = 0;
async function check(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`PASS ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e?.stack || e}`);
  }
}
function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

// ------------------------------------------------------------------ server + data
function startServer() {
  const args = ['serve', '--listen', '127.0.0.1:0', '--data-dir', path.join(work, 'data'),
    '--dicom-listen', '127.0.0.1:0', '--viewer-dir', VIEWER_DIR];
  const proc = spawn(PHIM_BIN, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
  const log = fs.createWriteStream(path.join(OUT, 'server.log'));
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error('server did not start in 60 s')), 60000);
    proc.stderr.on('data', (d) => {
      log.write(d);
      buf += d.toString();
      // eslint-disable-next-line no-control-regex
      const m = buf.replace(/\x1b\[[0-9;]*m/g, '').match(/listening on http:\/\/([0-9.:]+)/);
      if (m && timer) {
        clearTimeout(timer);
        resolve({ proc, base: `http://${m[1]}` });
      }
    });
    proc.on('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
}

function filesUnder(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(path.join(dir, e.name)) : [path.join(dir, e.name)]);
}

async function stow(base, files) {
  const boundary = `phim-e2e-${Date.now()}`;
  const chunks = [];
  for (const f of files) {
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`), fs.readFileSync(f), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  const res = await fetch(`${base}/dicomweb/studies`, {
    method: 'POST',
    headers: { 'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}`, Accept: 'application/dicom+json' },
    body: Buffer.concat(chunks),
  });
  // 200 only: 202 would mean some instances were rejected.
  assert(res.status === 200, `STOW answered ${res.status}: ${(await res.text()).slice(0, 300)}`);
}

async function qido(base, p) {
  const res = await fetch(`${base}/dicomweb${p}`, { headers: { Accept: 'application/dicom+json' } });
  assert(res.ok, `QIDO ${p}: ${res.status}`);
  return res.status === 204 ? [] : res.json();
}

const v = (ds, tag) => ds[tag]?.Value?.[0];
const stripAccents = (s) => s.normalize('NFD').replace(/[\u0300-\u036f]/g, '').replace(/đ/g, 'd').replace(/Đ/g, 'D');

// ------------------------------------------------------------------ page helpers
/** A 96x96 grey thumbnail of the viewport canvas plus simple statistics. */
async function canvasStats(page) {
  return page.evaluate(() => {
    const c = document.querySelector('#viewport canvas');
    if (!c) return null;
    const W = 96, H = 96;
    const tmp = document.createElement('canvas');
    tmp.width = W; tmp.height = H;
    const ctx = tmp.getContext('2d');
    ctx.drawImage(c, 0, 0, W, H);
    const px = ctx.getImageData(0, 0, W, H).data;
    const grey = [];
    let lit = 0;
    const levels = new Set();
    for (let i = 0; i < px.length; i += 4) {
      const g = Math.round((px[i] + px[i + 1] + px[i + 2]) / 3);
      grey.push(g);
      levels.add(g);
      if (g > 10) lit++;
    }
    return { grey, lit: lit / (W * H), levels: levels.size, width: c.width, height: c.height };
  });
}
function diff(a, b) {
  let s = 0;
  for (let i = 0; i < a.grey.length; i++) s += Math.abs(a.grey[i] - b.grey[i]);
  return s / a.grey.length;
}
async function waitRendered(page, timeout = 30000) {
  await page.waitForFunction(() => window.__viewer?.state.ready === true, null, { timeout });
  const t0 = Date.now();
  let st;
  while (Date.now() - t0 < timeout) {
    st = await canvasStats(page);
    if (st && st.lit > 0.01 && st.levels >= 16) return st;
    await page.waitForTimeout(250);
  }
  throw new Error(`no image on the canvas: ${JSON.stringify({ lit: st?.lit, levels: st?.levels })}`);
}
async function settle(page) {
  await page.waitForTimeout(400);
}
async function shot(page, name) {
  await page.screenshot({ path: path.join(OUT, `${name}.png`) });
}

// ------------------------------------------------------------------ main
let server;
let browser;
try {
  assert(fs.existsSync(path.join(VIEWER_DIR, 'index.html')), `viewer not built: ${VIEWER_DIR}/index.html missing`);
  execFileSync(LOAD_BIN, ['gen', '--out', path.join(work, 'gen'), '--ct-studies', '1', '--ct-slices', '40',
    '--mr-studies', '0', '--cr', '0', '--us', '0'], { stdio: ['ignore', 'ignore', 'inherit'] });
  server = await startServer();
  const { base } = server;
  console.log(`server at ${base}; screenshots in ${OUT}`);
  // phim-load also writes a manifest.json next to the instances.
  const dcm = filesUnder(path.join(work, 'gen')).filter((f) => f.endsWith('.dcm'));
  assert(dcm.length === 40, `phim-load wrote ${dcm.length} .dcm files, expected 40`);
  await stow(base, dcm);

  const studies = await qido(base, '/studies');
  assert(studies.length === 1, `expected 1 study, QIDO gave ${studies.length}`);
  const study = studies[0];
  const studyUid = v(study, '0020000D');
  const pn = v(study, '00100010')?.Alphabetic ?? '';
  const displayName = pn.replace(/\^+/g, ' ').trim();
  const plainName = stripAccents(displayName).toLowerCase();
  assert(displayName !== plainName, `generated name has no diacritics: ${displayName}`);
  const series = await qido(base, `/studies/${studyUid}/series`);
  const meta = await qido(base, `/studies/${studyUid}/series/${v(series[0], '0020000E')}/metadata`);
  const spacing = meta[0]['00280030'].Value.map(Number); // [row spacing, column spacing]
  console.log(`study with ${meta.length} instances, PixelSpacing ${spacing.join('\\')} mm`);

  // playwright-core gives each launch a fresh temporary user-data-dir.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, locale: 'en-US' });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
  page.on('response', (r) => { if (r.status() >= 400) pageErrors.push(`${r.status()} ${r.url()}`); });

  await check('viewer is served at / with an SPA fallback', async () => {
    const root = await fetch(`${base}/`);
    assert(root.ok && (await root.text()).includes('id="app"'), `GET / -> ${root.status}`);
    const deep = await fetch(`${base}/study/1.2.3`);
    assert(deep.ok && (await deep.text()).includes('id="app"'), `GET /study/1.2.3 -> ${deep.status}`);
    const hz = await fetch(`${base}/healthz`);
    assert(hz.ok, `/healthz -> ${hz.status}`);
    const api404 = await fetch(`${base}/dicomweb/no-such-resource`);
    assert(api404.status === 404, `/dicomweb/no-such-resource -> ${api404.status}`);
  });

  await check('study list shows the study with diacritics', async () => {
    await page.goto(`${base}/`);
    await page.waitForSelector('#results[data-state="done"]');
    const names = await page.locator('td.c-name').allTextContents();
    assert(names.includes(displayName), `names ${JSON.stringify(names)} lack ${displayName}`);
    await shot(page, '01-list');
  });

  const search = async (text) => {
    await page.fill('#q-name', text);
    await page.click('#q-go');
    await page.waitForSelector('#results[data-state="done"]');
    return page.locator('td.c-name').allTextContents();
  };
  await check(`search "${plainName}" (no diacritics, lower case) finds "${displayName}"`, async () => {
    const names = await search(plainName);
    assert(names.length === 1 && names[0] === displayName, JSON.stringify(names));
    await shot(page, '02-search-plain');
  });
  await check(`search "${displayName}" (with diacritics) finds it`, async () => {
    const names = await search(displayName);
    assert(names.length === 1 && names[0] === displayName, JSON.stringify(names));
  });
  await check('search for another name finds nothing', async () => {
    const names = await search('zzzz khong co');
    assert(names.length === 0, JSON.stringify(names));
  });
  await check('modality and date filters', async () => {
    await page.fill('#q-name', '');
    await page.selectOption('#q-mod', 'MR');
    await page.click('#q-go');
    await page.waitForSelector('#results[data-state="done"]');
    assert((await page.locator('td.c-name').count()) === 0, 'MR filter should hide the CT study');
    await page.selectOption('#q-mod', 'CT');
    const d = String(v(study, '00080020'));
    await page.fill('#q-from', `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}`);
    await page.fill('#q-to', `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}`);
    await page.click('#q-go');
    await page.waitForSelector('#results[data-state="done"]');
    assert((await page.locator('td.c-name').count()) === 1, 'CT + study date should find the study');
  });
  await check('Vietnamese UI', async () => {
    await page.selectOption('#lang', 'vi');
    await page.waitForSelector('#results[data-state="done"]');
    const label = await page.textContent('#q-go');
    assert(label === 'Tìm kiếm', `search button says ${label}`);
    await shot(page, '03-list-vi');
    await page.selectOption('#lang', 'en');
    await page.waitForSelector('#results[data-state="done"]');
  });

  let first;
  await check('open the study: an image is rendered', async () => {
    await page.locator('tr[data-study]').first().click();
    await page.waitForURL(/\/study\//);
    first = await waitRendered(page);
    const overlay = await page.textContent('#ov-tl');
    assert(overlay.includes(displayName), `overlay ${overlay}`);
    const br = await page.textContent('#ov-br');
    assert(br.includes(`1/${meta.length}`), `slice overlay ${br}`);
    console.log(`    lit ${(first.lit * 100).toFixed(1)} %, ${first.levels} grey levels, canvas ${first.width}x${first.height}`);
    await shot(page, '04-study');
  });

  const box = await page.locator('#viewport').boundingBox();
  const cx = box.x + box.width / 2;
  const cy = box.y + box.height / 2;
  await check('wheel scrolls to another slice and the pixels change', async () => {
    const before = await canvasStats(page);
    await page.mouse.move(cx, cy);
    for (let i = 0; i < 10; i++) await page.mouse.wheel(0, 100);
    await page.waitForFunction(() => window.__viewer.imageIndex() >= 5, null, { timeout: 10000 });
    await settle(page);
    const after = await waitRendered(page);
    const idx = await page.evaluate(() => window.__viewer.imageIndex());
    const d = diff(before, after);
    console.log(`    image index ${idx}, mean pixel change ${d.toFixed(2)}`);
    assert(d > 0.5, `pixels barely changed (${d})`);
    await shot(page, '05-scrolled');
  });
  await check('arrow keys scroll', async () => {
    const i0 = await page.evaluate(() => window.__viewer.imageIndex());
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('ArrowDown');
    await page.waitForFunction((i) => window.__viewer.imageIndex() === i + 2, i0, { timeout: 5000 });
    await page.keyboard.press('ArrowUp');
    await page.waitForFunction((i) => window.__viewer.imageIndex() === i + 1, i0, { timeout: 5000 });
  });
  await check('window/level drag changes the pixels', async () => {
    await settle(page);
    const before = await canvasStats(page);
    const wl0 = await page.textContent('#ov-br');
    await page.mouse.move(cx, cy);
    await page.mouse.down();
    for (let i = 1; i <= 10; i++) await page.mouse.move(cx + i * 15, cy + i * 10);
    await page.mouse.up();
    await settle(page);
    const after = await canvasStats(page);
    const d = diff(before, after);
    const wl1 = await page.textContent('#ov-br');
    console.log(`    ${wl0.replace(/\n/g, ' ')} -> ${wl1.replace(/\n/g, ' ')}, mean pixel change ${d.toFixed(2)}`);
    assert(d > 2, `pixels barely changed (${d})`);
    assert(wl0 !== wl1, 'overlay W/L unchanged');
    await shot(page, '06-window-level');
  });
  await check('presets, invert and reset change the pixels', async () => {
    const s0 = await canvasStats(page);
    await page.selectOption('#preset', 'lung');
    await settle(page);
    const s1 = await canvasStats(page);
    assert(diff(s0, s1) > 2, `lung preset: ${diff(s0, s1)}`);
    assert((await page.textContent('#ov-br')).includes('W 1500 / L -600'), await page.textContent('#ov-br'));
    await page.click('#invert');
    await settle(page);
    const s2 = await canvasStats(page);
    assert(diff(s1, s2) > 10, `invert: ${diff(s1, s2)}`);
    await shot(page, '07-lung-inverted');
    await page.click('#reset');
    await settle(page);
    const s3 = await canvasStats(page);
    assert(diff(s2, s3) > 2, `reset: ${diff(s2, s3)}`);
  });
  await check('Length tool measures in mm from PixelSpacing', async () => {
    await page.click('#tool-length');
    const a = [cx - 150, cy - 40];
    const b = [cx + 150, cy + 40];
    await page.mouse.move(...a);
    await page.mouse.down();
    for (let i = 1; i <= 10; i++) await page.mouse.move(a[0] + ((b[0] - a[0]) * i) / 10, a[1] + ((b[1] - a[1]) * i) / 10);
    await page.mouse.up();
    await settle(page);
    const lengths = await page.evaluate(() => window.__viewer.lengths());
    assert(lengths.length === 1, `lengths ${JSON.stringify(lengths)}`);
    const [ia, ib] = await page.evaluate(([p, q]) => [window.__viewer.canvasToImage(p), window.__viewer.canvasToImage(q)],
      [[a[0] - box.x, a[1] - box.y], [b[0] - box.x, b[1] - box.y]]);
    const dc = ib[0] - ia[0]; // columns
    const dr = ib[1] - ia[1]; // rows
    const expected = Math.hypot(dc * spacing[1], dr * spacing[0]);
    const { length, unit } = lengths[0];
    console.log(`    ${Math.hypot(dc, dr).toFixed(1)} image pixels x ${spacing[0]} mm = ${expected.toFixed(2)} mm; tool says ${length.toFixed(2)} ${unit}`);
    assert(unit === 'mm', `unit ${unit}`);
    assert(Math.abs(length - expected) < 0.5, `length ${length} != ${expected}`);
    const svgText = await page.locator('#viewport svg text').allTextContents();
    assert(svgText.some((s) => s.includes('mm')), `no mm label drawn: ${JSON.stringify(svgText)}`);
    await shot(page, '08-length');
  });
  await check('no page errors', async () => {
    assert(pageErrors.length === 0, pageErrors.join('\n'));
  });
} catch (e) {
  failed++;
  console.log(`FAIL setup: ${e?.stack || e}`);
} finally {
  if (browser) await browser.close().catch(() => {});
  if (server) {
    server.proc.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
  }
  fs.rmSync(work, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
