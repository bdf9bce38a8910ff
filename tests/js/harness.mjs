// What the browser tests (tests/e2e, tests/ohif) share: PASS/FAIL checks,
// a real `phim serve` on a free loopback port, STOW and QIDO over fetch,
// edits of generated instances, and the viewer's page helpers (Chromium,
// canvas statistics, screenshots, recorded errors and requests).
// Plain Node (no dependencies), imported by relative path.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/// What a browser test runs and where it writes, from the environment
/// (PHIM_BIN, PHIM_LOAD_BIN, PHIM_VIEWER_DIR, E2E_OUT, CHROMIUM); the defaults
/// are this checkout's debug build, viewer/dist, .test-work/e2e and Debian's
/// Chromium. `out` is E2E_OUT's subfolder `sub`.
export function testEnv(sub = '') {
  return {
    root: ROOT,
    phimBin: process.env.PHIM_BIN || path.join(ROOT, 'target/debug/phim'),
    loadBin: process.env.PHIM_LOAD_BIN || path.join(ROOT, 'target/debug/phim-load'),
    viewerDir: process.env.PHIM_VIEWER_DIR || path.join(ROOT, 'viewer/dist'),
    out: path.join(process.env.E2E_OUT || path.join(ROOT, '.test-work/e2e'), sub),
    chromium: process.env.CHROMIUM || '/usr/bin/chromium',
  };
}

/// PASS/FAIL lines and the closing "N passed, N failed" counts.
export function checks() {
  const counts = { passed: 0, failed: 0 };
  async function check(name, fn) {
    const t0 = Date.now();
    try {
      await fn();
      counts.passed++;
      console.log(`PASS ${name} (${Date.now() - t0} ms)`);
    } catch (e) {
      counts.failed++;
      console.log(`FAIL ${name}: ${e?.stack || e}`);
    }
  }
  return { check, counts };
}

export function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

/// Starts `phim serve` with `args` (a free port is picked unless `listen`
/// names one), its log written to `logPath`; resolves with
/// { proc, base, host, port } once it listens.
export function startPhim(bin, args, logPath, { listen = '127.0.0.1:0' } = {}) {
  const proc = spawn(bin, ['serve', '--listen', listen, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, NO_COLOR: '1' },
  });
  const log = fs.createWriteStream(logPath);
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error('phim did not start in 60 s')), 60000);
    proc.stderr.on('data', (d) => {
      log.write(d);
      buf += d.toString();
      // eslint-disable-next-line no-control-regex
      const m = buf.replace(/\x1b\[[0-9;]*m/g, '').match(/listening on http:\/\/([0-9.:]+)/);
      if (m && timer) {
        clearTimeout(timer);
        const at = m[1].lastIndexOf(':');
        resolve({ proc, base: `http://${m[1]}`, host: m[1].slice(0, at), port: Number(m[1].slice(at + 1)) });
      }
    });
    proc.on('error', reject);
    proc.on('exit', (code) => reject(new Error(`phim exited with ${code}`)));
  });
}

export function filesUnder(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(path.join(dir, e.name)) : [path.join(dir, e.name)]);
}

/// STOW-RS of files; only 200 passes (202 means some were rejected or
/// stored with a warning). `headers` are added (e.g. Authorization).
export async function stow(base, files, headers = {}) {
  const boundary = `phim-test-${Date.now()}`;
  const chunks = [];
  for (const f of files) {
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`), fs.readFileSync(f), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  const res = await fetch(`${base}/dicomweb/studies`, {
    method: 'POST',
    headers: { 'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}`, Accept: 'application/dicom+json', ...headers },
    body: Buffer.concat(chunks),
  });
  const text = await res.text();
  assert(res.status === 200, `STOW of ${files.map((f) => path.basename(f)).join(', ')} answered ${res.status}: ${text.slice(0, 500)}`);
}

export async function qido(base, p, headers = {}) {
  const res = await fetch(`${base}/dicomweb${p}`, { headers: { Accept: 'application/dicom+json', ...headers } });
  assert(res.ok, `QIDO ${p}: ${res.status}`);
  return res.status === 204 ? [] : res.json();
}

/// A port on 127.0.0.1 that was free a moment ago (for a server whose URL
/// another one must know before it starts).
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/// The first value of a DICOM JSON attribute.
export const v = (ds, tag) => ds[tag]?.Value?.[0];

// ------------------------------------------------------------------ DICOM bytes

/// `bytes` with every occurrence of `from` replaced by `to` (same length).
export function replaceAll(bytes, from, to) {
  const [a, b] = [Buffer.from(from, 'latin1'), Buffer.from(to, 'latin1')];
  assert(a.length === b.length, 'replacement changes the length');
  const out = Buffer.from(bytes);
  for (let at = out.indexOf(a); at >= 0; at = out.indexOf(a, at + a.length)) b.copy(out, at);
  return out;
}

/// Another series of a generated CT instance (phim-load gen): another Series
/// Instance UID (the SOP Instance UIDs start with it and change with it) and
/// Series Number `number` (2 to 9). The generated UIDs and numbers are short:
/// the lengths stay. Returns { bytes, uid } (uid: the new series UID).
export function otherSeries(bytes, seriesUid, number) {
  const uid2 = seriesUid.slice(0, -1) + String((Number(seriesUid.at(-1)) + number - 1) % 10);
  const out = replaceAll(bytes, seriesUid, uid2);
  const at = out.indexOf(Buffer.from([0x20, 0x00, 0x11, 0x00, 0x49, 0x53, 0x02, 0x00, 0x31, 0x20])); // (0020,0011) IS "1 "
  assert(at > 0, 'no Series Number 1 in the generated instance');
  out[at + 8] = 0x30 + number;
  return { bytes: out, uid: uid2 };
}

// ------------------------------------------------------------------ Phim's viewer in Chromium
// `page` is a playwright-core Page; the tests import playwright-core
// themselves (it lives in their node_modules, not here).

const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/// Headless Chromium (`chromium` from playwright-core) at `executablePath`,
/// without sandbox, GPU or background network; each launch gets a fresh
/// temporary user-data-dir.
export function launchChromium(chromium, executablePath) {
  return chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS });
}

/// The canvas of the viewer's active viewport.
export const ACTIVE_CANVAS = '.pane.active .vp canvas';

/// A 96x96 grey thumbnail of the canvas at `selector` plus simple statistics:
/// { grey (96*96 values), lit (share above 10), levels (distinct greys),
/// width, height (the canvas's own) }, or null when there is no such canvas.
export async function canvasStats(page, selector = ACTIVE_CANVAS) {
  return page.evaluate((sel) => {
    const c = document.querySelector(sel);
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
  }, selector);
}

/// Waits until the viewer says it is ready and the canvas at `selector` shows
/// an image (over 1 % lit, at least 16 grey levels); resolves with its
/// canvasStats, throws after `timeout` ms.
export async function waitRendered(page, selector = ACTIVE_CANVAS, timeout = 30000) {
  await page.waitForFunction(() => window.__viewer?.state.ready === true, null, { timeout });
  const t0 = Date.now();
  let st;
  while (Date.now() - t0 < timeout) {
    st = await canvasStats(page, selector);
    if (st && st.lit > 0.01 && st.levels >= 16) return st;
    await page.waitForTimeout(100);
  }
  throw new Error(`no image on the canvas: ${JSON.stringify({ lit: st?.lit, levels: st?.levels })}`);
}

/// shot(page, name) writes `dir`/`name`.png.
export const screenshots = (dir) => (page, name) => page.screenshot({ path: path.join(dir, `${name}.png`) });

/// Pushes the page's uncaught errors and console errors onto `errors`, except
/// "Failed to load resource" (failed loads are judged from the responses).
export function recordErrors(page, errors) {
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text()); });
}

/// Records every request with the headers it really carried
/// ({ url, method, headers, body, n: its index }) and every response ({ url, status }).
export function recordTraffic(page) {
  const requests = [];
  page.on('request', async (req) => {
    const entry = { url: req.url(), method: req.method(), headers: req.headers(), body: req.postData() ?? '', n: requests.length };
    requests.push(entry);
    try { entry.headers = await req.allHeaders(); } catch { /* the page went away */ }
  });
  const responses = [];
  page.on('response', (r) => responses.push({ url: r.url(), status: r.status() }));
  return { requests, responses };
}

/// Every localStorage and sessionStorage entry of the page, as "key=value".
export function webStorage(page) {
  return page.evaluate(() => {
    const all = [];
    for (const s of [localStorage, sessionStorage]) for (let i = 0; i < s.length; i++) all.push(`${s.key(i)}=${s.getItem(s.key(i))}`);
    return all;
  });
}
