// Acceptance test with a real, unmodified third-party viewer: OHIF Viewer 3 (the prebuilt bundle
// of the npm package @ohif/app, pinned in package.json under "ohif") served at the origin root by
// a small Node server that proxies /dicomweb to a fresh `phim serve`, driven by playwright-core
// with Debian's Chromium (no browser download).
//
//   node run.mjs        (env: PHIM_BIN, PHIM_LOAD_BIN, PHIM_PYTHON, OHIF_OUT, OHIF_CACHE, CHROMIUM)
//
// Stores a generated CT stack (phim-load) and a few pydicom sample files (JPEG baseline, RLE,
// JPEG-LS, a 30-frame JPEG ultrasound), then: the study list shows the studies, the CT opens
// from the list, the first image appears, the mouse wheel and the arrow keys move through the
// stack, and the other studies render too. Rendering is judged from the viewport canvas pixels
// (non-blank, and different after scrolling), never from the absence of errors. Every request
// OHIF sends to /dicomweb is recorded at the proxy (requests.jsonl); any 5xx fails the run.
//
// Prints one line per check and a closing "N passed, N failed"; exits 1 on failure.
// Screenshots (PNG), requests.jsonl, summary.json, console.log and server.log go to OHIF_OUT.

import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { assert, checks, filesUnder, qido, startPhim, stow, v } from '../js/harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const PHIM_BIN = process.env.PHIM_BIN || path.join(ROOT, 'target/debug/phim');
const LOAD_BIN = process.env.PHIM_LOAD_BIN || path.join(ROOT, 'target/debug/phim-load');
const PYTHON = process.env.PHIM_PYTHON || path.join(ROOT, '.venv-test/bin/python');
const OUT = process.env.OHIF_OUT || path.join(ROOT, '.test-work/ohif');
const CACHE = process.env.OHIF_CACHE ||
  path.join(process.env.PHIM_TOOLS_DIR || path.join(os.homedir(), '.cache/phim-tools'), 'ohif');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CT_SLICES = 30;
const T_FIRST = 60000; // the first image of a cold start (~5 s here, on 2 busy cores)
const T_IMAGE = 30000; // later ones, the bundle loaded

const t00 = Date.now();
fs.rmSync(OUT, { recursive: true, force: true });
fs.mkdirSync(OUT, { recursive: true });
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'phim-ohif-'));

const { check, counts } = checks();

// ------------------------------------------------------------------ the OHIF bundle
// @ohif/app cannot be an npm dependency: its published package.json depends on @ohif/i18n@3.13.2
// and @ohif/ui@3.13.2, which the registry does not have (npm install fails with ETARGET), and
// only its dist/ is wanted anyway. So package.json pins it by version and sha512 integrity;
// `npm pack` fetches the tarball, which is checked against the pin and unpacked once into the
// cache without onnxruntime (dist/ort, 136 MB, AI segmentation) and the microscopy viewer
// (20 MB): neither is loaded for the studies used here.
function ensureOhif() {
  const pin = JSON.parse(fs.readFileSync(path.join(HERE, 'package.json'), 'utf8')).ohif;
  const dir = path.join(CACHE, `${pin.package.replace(/^@/, '').replace('/', '-')}-${pin.version}`);
  const marker = path.join(dir, '.integrity');
  if (fs.existsSync(path.join(dir, 'dist/index.html')) &&
      fs.existsSync(marker) && fs.readFileSync(marker, 'utf8') === pin.integrity) {
    return { dist: path.join(dir, 'dist'), pin };
  }
  fs.mkdirSync(CACHE, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(CACHE, '.fetch-'));
  try {
    const t0 = Date.now();
    const packed = JSON.parse(execFileSync('npm', ['pack', `${pin.package}@${pin.version}`, '--json',
      '--pack-destination', tmp], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }));
    const tgz = path.join(tmp, packed[0].filename);
    const integrity = `sha512-${crypto.createHash('sha512').update(fs.readFileSync(tgz)).digest('base64')}`;
    assert(integrity === pin.integrity, `${pin.package}@${pin.version}: integrity ${integrity} != pinned ${pin.integrity}`);
    execFileSync('tar', ['-xzf', tgz, '-C', tmp, '--exclude=package/dist/ort',
      '--exclude=package/dist/dicom-microscopy-viewer']);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(path.join(tmp, 'package'), dir);
    fs.writeFileSync(marker, pin.integrity);
    console.log(`fetched ${pin.package}@${pin.version} into ${dir} in ${Date.now() - t0} ms`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return { dist: path.join(dir, 'dist'), pin };
}

// OHIF's configuration, served as /app-config.js in place of the shipped one (which points at a
// public demo server). The data source is this origin's /dicomweb, i.e. Phim behind the proxy.
const APP_CONFIG = `window.config = {
  routerBasename: '/',
  showStudyList: true,
  extensions: [],
  modes: [],
  customizationService: {},
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  investigationalUseDialog: { option: 'never' },
  defaultDataSourceName: 'phim',
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
    sourceName: 'phim',
    configuration: {
      friendlyName: 'Phim',
      name: 'phim',
      qidoRoot: window.location.origin + '/dicomweb',
      wadoRoot: window.location.origin + '/dicomweb',
      wadoUriRoot: window.location.origin + '/dicomweb',
      qidoSupportsIncludeField: true,
      supportsReject: false,
      supportsFuzzyMatching: false,
      supportsWildcard: true,
      imageRendering: 'wadors',
      // Thumbnails are rendered in the browser from the frames (WADO-RS frames/{n}), not fetched
      // from /thumbnail or /rendered: OHIF then depends on neither, and the run fails on any 5xx
      // (Phim's 501 for those included) and on any other 4xx, thumbnails included.
      thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true,
      staticWado: false,
      singlepart: false,
      bulkDataURI: { enabled: true, relativeResolution: 'studies' },
      omitQuotationForMultipartRequest: true,
      dicomUploadEnabled: false,
    },
  }],
};
`;

// ------------------------------------------------------------------ phim




// pydicom's bundled sample files (get_testdata_file of a bundled name never downloads).
const SAMPLES = {
  jpeg: ['SC_rgb_jpeg_dcmtk.dcm', 'SC_rgb_rle_2frame.dcm'], // one study: JPEG baseline YBR_FULL + RLE RGB, 2 frames
  jpegls: ['MR_small_jpeg_ls_lossless.dcm'], // JPEG-LS lossless MR 64x64
  us: ['examples_ybr_color.dcm'], // 30-frame JPEG baseline YBR_FULL_422 ultrasound
  ct: ['CT_small.dcm'], // native CT 128x128
};
function samplePaths() {
  const names = Object.values(SAMPLES).flat();
  const code = 'import json,sys,pydicom\nfrom pydicom.data import get_testdata_file as g\n' +
    'print(json.dumps({n: {"path": g(n), "sop": str(pydicom.dcmread(g(n), stop_before_pixels=True).SOPInstanceUID)} for n in sys.argv[1:]}))';
  try {
    return JSON.parse(execFileSync(PYTHON, ['-c', code, ...names], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
  } catch (e) {
    console.log(`SKIP pydicom samples: ${PYTHON} with pydicom is not available (${String(e.message).split('\n')[0]})`);
    return null;
  }
}

// ------------------------------------------------------------------ OHIF's origin: static + proxy
const MIME = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.json': 'application/json', '.map': 'application/json',
  '.wasm': 'application/wasm', '.svg': 'image/svg+xml', '.png': 'image/png', '.jpg': 'image/jpeg',
  '.gif': 'image/gif', '.ico': 'image/x-icon', '.woff': 'font/woff', '.woff2': 'font/woff2', '.ttf': 'font/ttf',
  '.txt': 'text/plain; charset=utf-8', '.xml': 'application/xml', '.webmanifest': 'application/manifest+json',
};
// Cross-origin isolation gives cornerstone SharedArrayBuffer, as a production deployment would.
const ISOLATION = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

function startFront(dist, phim) {
  const requests = []; // every /dicomweb request, as the proxy saw it
  const staticMisses = [];
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  const root = path.resolve(dist);
  const log = fs.createWriteStream(path.join(OUT, 'requests.jsonl'));
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://front');
    if (url.pathname === '/dicomweb' || url.pathname.startsWith('/dicomweb/')) {
      const t0 = Date.now();
      const rec = { method: req.method, url: req.url, accept: req.headers.accept ?? null };
      const done = (status, type, bytes, error) => {
        Object.assign(rec, { status, type: type ?? null, bytes, ms: Date.now() - t0 }, error ? { error } : {});
        requests.push(rec);
        log.write(`${JSON.stringify(rec)}\n`);
      };
      const headers = Object.fromEntries(Object.entries(req.headers).filter(([k]) => !HOP.has(k)));
      // Host is kept (Phim builds BulkDataURIs from it); X-Forwarded-* as a real proxy sends them.
      Object.assign(headers, { 'x-forwarded-host': req.headers.host, 'x-forwarded-proto': 'http' });
      const up = http.request({ host: phim.host, port: phim.port, method: req.method, path: req.url, headers, agent }, (pres) => {
        const out = Object.fromEntries(Object.entries(pres.headers).filter(([k]) => !HOP.has(k)));
        res.writeHead(pres.statusCode, { ...out, ...ISOLATION });
        let bytes = 0;
        pres.on('data', (c) => { bytes += c.length; });
        pres.on('end', () => done(pres.statusCode, pres.headers['content-type'], bytes));
        pres.on('error', (e) => done(pres.statusCode, pres.headers['content-type'], bytes, String(e)));
        pres.pipe(res);
      });
      up.on('error', (e) => {
        done(502, null, 0, String(e));
        if (!res.headersSent) res.writeHead(502, { 'Content-Type': 'text/plain' });
        res.end(`proxy: ${e}`);
      });
      req.pipe(up);
      return;
    }
    if (url.pathname === '/app-config.js') {
      res.writeHead(200, { 'Content-Type': MIME['.js'], 'Cache-Control': 'no-store', ...ISOLATION });
      res.end(APP_CONFIG);
      return;
    }
    let file;
    try {
      file = path.resolve(root, `.${decodeURIComponent(url.pathname)}`);
    } catch {
      res.writeHead(400).end();
      return;
    }
    if (!file.startsWith(root + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      if (path.extname(url.pathname) !== '') {
        // A missing asset is a 404, not the SPA page (a 200 text/html "script" hides the miss).
        staticMisses.push(url.pathname);
        res.writeHead(404, { 'Content-Type': 'text/plain', ...ISOLATION }).end('not found');
        return;
      }
      file = path.join(root, 'index.html'); // SPA fallback: /viewer, /localbasic, …
    }
    res.writeHead(200, {
      'Content-Type': MIME[path.extname(file).toLowerCase()] ?? 'application/octet-stream',
      'Content-Length': fs.statSync(file).size,
      ...ISOLATION,
    });
    if (req.method === 'HEAD') res.end();
    else fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({ server, agent, log, requests, staticMisses, base: `http://127.0.0.1:${server.address().port}` });
    });
  });
}

// ------------------------------------------------------------------ page helpers
// The visible viewport canvas (OHIF also draws thumbnails through hidden renderGPUViewport-…
// canvases, which must not count), scaled to 128x128: grey levels and simple statistics.
async function canvasStats(page) {
  return page.evaluate(() => {
    const visible = [...document.querySelectorAll('[data-viewport-uid] canvas')].filter((c) => {
      if ((c.id || '').startsWith('renderGPUViewport')) return false;
      const r = c.getBoundingClientRect();
      return r.width > 50 && r.height > 50 && r.right > 0 && r.bottom > 0 &&
        r.left < window.innerWidth && r.top < window.innerHeight && getComputedStyle(c).visibility !== 'hidden';
    });
    if (!visible.length) return null;
    const c = visible.sort((a, b) => b.width * b.height - a.width * a.height)[0];
    const W = 128, H = 128;
    const tmp = document.createElement('canvas');
    tmp.width = W; tmp.height = H;
    const ctx = tmp.getContext('2d');
    ctx.drawImage(c, 0, 0, W, H);
    const px = ctx.getImageData(0, 0, W, H).data;
    const grey = [];
    const levels = new Set();
    let lit = 0, colour = 0, sum = 0, sum2 = 0;
    for (let i = 0; i < px.length; i += 4) {
      const g = Math.round((px[i] + px[i + 1] + px[i + 2]) / 3);
      grey.push(g);
      levels.add(g);
      sum += g; sum2 += g * g;
      if (g > 10) lit++;
      if (Math.max(px[i], px[i + 1], px[i + 2]) - Math.min(px[i], px[i + 1], px[i + 2]) > 30) colour++;
    }
    const n = W * H;
    const r = c.getBoundingClientRect();
    return {
      grey, lit: lit / n, colour: colour / n, levels: levels.size, sd: Math.sqrt(sum2 / n - (sum / n) ** 2),
      width: c.width, height: c.height, box: { x: r.x, y: r.y, width: r.width, height: r.height },
    };
  });
}
// Non-blank: some lit pixels, spread, and enough grey levels (a lossless colour-bar test image has
// fewer than a photograph: its checks pass a lower minLevels).
const isImage = (st, minLevels = 16) => st && st.lit > 0.01 && st.levels >= minLevels && st.sd > 5;
const describe = (st) => st ? `lit ${(st.lit * 100).toFixed(1)} %, ${st.levels} grey levels, sd ${st.sd.toFixed(1)}, colour ${(st.colour * 100).toFixed(1)} %, canvas ${st.width}x${st.height}` : 'no canvas';
function diff(a, b) {
  let s = 0;
  for (let i = 0; i < a.grey.length; i++) s += Math.abs(a.grey[i] - b.grey[i]);
  return s / a.grey.length;
}
async function waitImage(page, { timeout = T_IMAGE, minLevels = 16 } = {}) {
  const t0 = Date.now();
  let st = null;
  while (Date.now() - t0 < timeout) {
    await skipTour(page);
    st = await canvasStats(page);
    if (isImage(st, minLevels)) return st;
    await page.waitForTimeout(250);
  }
  throw new Error(`no image on the viewport canvas after ${timeout} ms: ${describe(st)}`);
}
/** Waits until the canvas differs from `before` by more than `min` (mean grey level change). */
async function waitChange(page, before, { min = 0.5, timeout = 15000, minLevels = 16 } = {}) {
  const t0 = Date.now();
  let st = null;
  while (Date.now() - t0 < timeout) {
    st = await canvasStats(page);
    if (isImage(st, minLevels) && diff(before, st) > min) return st;
    await page.waitForTimeout(200);
  }
  throw new Error(`the pixels did not change: ${describe(st)}, mean change ${st ? diff(before, st).toFixed(2) : '-'}`);
}
/** The image-index overlay ("I: 30 (11/40)"), for the log only; the pixels are the judge. */
async function overlayIndex(page) {
  const text = await page.locator('[data-cy="viewport-overlay-bottom-right"]').first().innerText().catch(() => '');
  return text.replace(/\s+/g, ' ').trim();
}
/** OHIF's first-visit tour (shepherd.js) covers the viewport; skip it when it shows. */
async function skipTour(page) {
  const skip = page.getByRole('button', { name: /skip all/i });
  if (await skip.isVisible().catch(() => false)) await skip.click().catch(() => {});
}
async function shot(page, name) {
  await page.screenshot({ path: path.join(OUT, `${name}.png`) });
}
async function settle(page, ms = 500) {
  await page.waitForTimeout(ms);
}

// ------------------------------------------------------------------ main
let phim;
let front;
let browser;
const pageLog = [];
const blocked = [];
const stopAll = async () => {
  if (browser) await browser.close().catch(() => {});
  if (front) {
    front.server.closeAllConnections?.();
    front.server.close();
    front.agent.destroy();
  }
  if (phim) phim.proc.kill('SIGTERM');
};
for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]]) {
  process.on(sig, async () => {
    await stopAll();
    fs.rmSync(work, { recursive: true, force: true });
    process.exit(code);
  });
}
try {
  const ohif = ensureOhif();
  assert(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing (apt-get install chromium)`);
  execFileSync(LOAD_BIN, ['gen', '--out', path.join(work, 'gen'), '--ct-studies', '1', '--ct-slices', String(CT_SLICES),
    '--mr-studies', '0', '--cr', '0', '--us', '0'], { stdio: ['ignore', 'ignore', 'inherit'] });
  phim = await startPhim(PHIM_BIN, ['--dicom-listen', 'off', '--data-dir', path.join(work, 'data')],
    path.join(OUT, 'server.log'));
  const phimBase = `http://${phim.host}:${phim.port}`;
  const dcm = filesUnder(path.join(work, 'gen')).filter((f) => f.endsWith('.dcm'));
  assert(dcm.length === CT_SLICES, `phim-load wrote ${dcm.length} .dcm files, expected ${CT_SLICES}`);
  await stow(phimBase, dcm);
  const samples = samplePaths();
  if (samples) {
    for (const names of Object.values(SAMPLES)) await stow(phimBase, names.map((n) => samples[n].path));
  }
  const studies = await qido(phimBase, '/studies');
  const byUid = new Map(studies.map((s) => [v(s, '0020000D'), s]));
  const expected = 1 + (samples ? Object.keys(SAMPLES).length : 0);
  assert(studies.length === expected, `QIDO lists ${studies.length} studies, ${expected} were stored`);
  const ct = studies.find((s) => Number(v(s, '00201208')) === CT_SLICES);
  assert(ct, `no study with ${CT_SLICES} instances among ${studies.length}`);
  const sampleStudy = async (names) => {
    const inst = await qido(phimBase, `/instances?SOPInstanceUID=${samples[names[0]].sop}`);
    return inst.length ? byUid.get(v(inst[0], '0020000D')) : undefined;
  };
  front = await startFront(ohif.dist, phim);
  console.log(`${ohif.pin.package}@${ohif.pin.version} at ${front.base} (proxy /dicomweb -> ${phimBase}); ` +
    `${studies.length} studies stored; output in ${OUT}`);

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1'],
  });
  // serviceWorkers 'block': OHIF's sw.js must not cache or answer anything in place of the server.
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, locale: 'en-US', serviceWorkers: 'block' });
  // Loopback only: anything else is aborted and reported.
  await context.route((u) => !['127.0.0.1', 'localhost'].includes(u.hostname), (route) => {
    blocked.push(route.request().url());
    return route.abort();
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => pageLog.push(`pageerror: ${e}`));
  page.on('console', (m) => { if (['error', 'warning'].includes(m.type())) pageLog.push(`${m.type()}: ${m.text()}`); });

  await check('OHIF is served at the origin root with its configuration', async () => {
    const idx = await fetch(`${front.base}/viewer?StudyInstanceUIDs=1.2.3`);
    assert(idx.ok && (await idx.text()).includes('app-config.js'), `SPA fallback: ${idx.status}`);
    const cfg = await (await fetch(`${front.base}/app-config.js`)).text();
    assert(cfg.includes("'/dicomweb'"), 'app-config.js does not point at /dicomweb');
    const qs = await fetch(`${front.base}/dicomweb/studies`, { headers: { Accept: 'application/dicom+json' } });
    assert(qs.status === 200, `proxied QIDO: ${qs.status}`);
  });

  const ctName = v(ct, '00100010')?.Alphabetic ?? '';
  // OHIF shows "Family, Given" (phim-load's names have Vietnamese diacritics: UTF-8 end to end).
  const [family, given] = ctName.split('^');
  const listName = given ? `${family}, ${given}` : family;
  await check(`study list shows the ${studies.length} studies, the CT as "${listName}"`, async () => {
    await page.goto(`${front.base}/`);
    await skipTour(page);
    await page.getByText(listName, { exact: true }).first().waitFor({ timeout: T_FIRST });
    await settle(page, 1000);
    const body = await page.locator('body').innerText();
    const m = body.match(/(\d+)\s*-\s*(\d+)\s+of\s+(\d+)/);
    console.log(`    list header: ${m ? m[0] : '(no "N-M of K" text)'}`);
    assert(m && Number(m[3]) === studies.length, `list says ${m ? m[0] : 'nothing'}, expected ${studies.length} studies`);
    await shot(page, '01-study-list');
  });

  let first;
  await check('the CT opens from the list and its first image is rendered', async () => {
    await page.getByText(listName, { exact: true }).first().click();
    const open = page.getByRole('button', { name: /basic viewer/i }).first();
    await open.waitFor({ timeout: 15000 });
    await shot(page, '02-study-list-expanded');
    await open.click();
    await page.waitForURL(/\/viewer/, { timeout: 15000 });
    assert(page.url().includes(v(ct, '0020000D')), `opened ${page.url()}`);
    first = await waitImage(page, { timeout: T_FIRST });
    await settle(page, 1500); // let the rest of the stack prefetch; the first image must not change by itself
    first = await waitImage(page);
    console.log(`    ${describe(first)}; overlay "${await overlayIndex(page)}"`);
    await shot(page, '03-ct-first-image');
  });

  await check('the mouse wheel scrolls the CT stack and the pixels change', async () => {
    assert(first, 'no first image');
    const { box } = first;
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    for (let i = 0; i < 10; i++) {
      await page.mouse.wheel(0, 100);
      await page.waitForTimeout(60);
    }
    const after = await waitChange(page, first);
    await settle(page);
    const fin = await waitImage(page);
    console.log(`    overlay "${await overlayIndex(page)}", mean pixel change ${diff(first, fin).toFixed(2)}`);
    assert(diff(first, fin) > 0.5, `pixels barely changed (${diff(first, fin)})`);
    assert(after, 'unreachable');
    await shot(page, '04-ct-wheel-scrolled');
  });

  await check('arrow keys move through the stack and back to the same pixels', async () => {
    const s0 = await waitImage(page);
    const o0 = await overlayIndex(page);
    for (let i = 0; i < 3; i++) await page.keyboard.press('ArrowDown');
    const s1 = await waitChange(page, s0);
    await settle(page);
    const o1 = await overlayIndex(page);
    await shot(page, '05-ct-arrow-down');
    for (let i = 0; i < 3; i++) await page.keyboard.press('ArrowUp');
    await settle(page, 1000);
    const s2 = await waitImage(page);
    const o2 = await overlayIndex(page);
    console.log(`    overlay "${o0}" -> "${o1}" -> "${o2}"; change ${diff(s0, s1).toFixed(2)}, back ${diff(s0, s2).toFixed(2)}`);
    assert(diff(s0, s2) < 0.5, `ArrowDown x3 then ArrowUp x3 does not give the same image back (${diff(s0, s2)})`);
  });

  if (samples) {
    const openStudy = async (key, minLevels) => {
      const st = await sampleStudy(SAMPLES[key]);
      assert(st, `study of ${SAMPLES[key][0]} not found in Phim`);
      await page.goto(`${front.base}/viewer?StudyInstanceUIDs=${v(st, '0020000D')}`);
      await waitImage(page, { minLevels });
      await settle(page, 1000);
      const s = await waitImage(page, { minLevels });
      console.log(`    ${describe(s)}; overlay "${await overlayIndex(page)}"`);
      return s;
    };
    const wheel = async (st, steps, minLevels) => {
      const { box } = st;
      await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
      for (let i = 0; i < steps; i++) {
        await page.mouse.wheel(0, 100);
        await page.waitForTimeout(60);
      }
      const after = await waitChange(page, st, { minLevels });
      await settle(page);
      console.log(`    after ${steps} wheel steps: overlay "${await overlayIndex(page)}", mean pixel change ${diff(st, after).toFixed(2)}`);
      return after;
    };

    await check('30-frame JPEG baseline ultrasound renders and its frames scroll', async () => {
      const s0 = await openStudy('us');
      await shot(page, '06-us');
      await wheel(s0, 5);
      await shot(page, '06-us-scrolled');
    });
    await check('JPEG baseline (YBR_FULL) renders in colour, then the 2-frame RLE of its study', async () => {
      const s0 = await openStudy('jpeg', 8);
      assert(s0.colour > 0.2, `expected colour bars, ${(s0.colour * 100).toFixed(1)} % colour pixels`);
      await shot(page, '07-jpeg');
      // OHIF makes a display set of each instance here; double-click the RLE one's thumbnail.
      const thumbs = page.locator('[data-cy="study-browser-thumbnail"]');
      assert((await thumbs.count()) === 2, `${await thumbs.count()} thumbnails, expected 2`);
      await thumbs.nth(1).dblclick();
      // Its first frame shows the same bars as the JPEG (so little changes); the overlay says 1/2.
      await page.waitForFunction(() => /\b1\/2\b/.test(document.querySelector('[data-cy="viewport-overlay-bottom-right"]')?.innerText ?? ''),
        null, { timeout: 30000 });
      await settle(page);
      const s1 = await waitImage(page, { minLevels: 8 });
      assert(s1.colour > 0.2, `expected colour bars, ${(s1.colour * 100).toFixed(1)} % colour pixels`);
      console.log(`    RLE: ${describe(s1)}; overlay "${await overlayIndex(page)}"`);
      await shot(page, '07-rle');
      const s2 = await wheel(s1, 1, 8);
      assert(s2.colour > 0.2, `expected colour bars, ${(s2.colour * 100).toFixed(1)} % colour pixels`);
      await shot(page, '07-rle-frame2');
    });
    await check('JPEG-LS lossless MR renders', async () => {
      await openStudy('jpegls');
      await shot(page, '08-jpegls');
    });
    await check('CT_small (native, 128x128) renders', async () => {
      await openStudy('ct');
      await shot(page, '09-ct-small');
    });
  }

  const summary = {};
  for (const r of front.requests) {
    const tpl = `${r.method} ${r.url.split('?')[0].replace(/\/\d+(\.\d+)+/g, '/{uid}').replace(/\/frames\/[\d,]+/, '/frames/{n}')}`;
    const key = `${tpl} -> ${r.status}`;
    summary[key] = (summary[key] ?? 0) + 1;
  }
  fs.writeFileSync(path.join(OUT, 'summary.json'), JSON.stringify({
    ohif: ohif.pin, requests: summary, staticMisses: front.staticMisses, blocked, pageLog,
  }, null, 2));
  fs.writeFileSync(path.join(OUT, 'console.log'), pageLog.join('\n'));
  console.log(`    ${front.requests.length} requests to /dicomweb:`);
  for (const [k, n] of Object.entries(summary).sort()) console.log(`      ${String(n).padStart(4)} × ${k}`);

  await check('OHIF fetched frames from Phim through the proxy', async () => {
    const frames = front.requests.filter((r) => /\/frames\//.test(r.url) && r.status === 200);
    assert(frames.length >= CT_SLICES, `${frames.length} frame requests answered 200, expected at least ${CT_SLICES}`);
  });
  await check('no 5xx answer from Phim', async () => {
    const bad = front.requests.filter((r) => r.status >= 500);
    assert(bad.length === 0, bad.map((r) => `${r.status} ${r.method} ${r.url} (Accept: ${r.accept})`).join('\n'));
  });
  await check('no 4xx answer from Phim (thumbnails included)', async () => {
    const bad = front.requests.filter((r) => r.status >= 400 && r.status < 500);
    assert(bad.length === 0, bad.map((r) => `${r.status} ${r.method} ${r.url} (Accept: ${r.accept})`).join('\n'));
  });
  await check('OHIF loaded every asset it asked for and nothing outside loopback', async () => {
    assert(front.staticMisses.length === 0, `missing assets: ${front.staticMisses.join(', ')}`);
    assert(blocked.length === 0, `non-loopback requests: ${blocked.join(', ')}`);
  });
} catch (e) {
  counts.failed++;
  console.log(`FAIL setup: ${e?.stack || e}`);
} finally {
  await stopAll();
  front?.log.end();
  fs.rmSync(work, { recursive: true, force: true });
}
console.log(`${counts.passed} passed, ${counts.failed} failed (${((Date.now() - t00) / 1000).toFixed(1)} s)`);
process.exit(counts.failed ? 1 : 0);
