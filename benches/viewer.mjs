// Viewer benchmark (issue #7): what a radiologist waits for in the bundled
// viewer, measured in Debian's headless Chromium against a release
// `phim serve` on the embedded default, a 300-slice 512x512 CT stored over
// STOW-RS first.
//
//   - first image: from the click on the study-list row to a lit canvas
//     (list page loaded; a new browser context each time, so no HTTP cache);
//   - whole stack: from the same click until all slices are decoded and cached;
//   - scroll: once cached, one ArrowDown per slice through the whole stack,
//     time from the key event to cornerstone's IMAGE_RENDERED for it.
//
//   bash benches/viewer.sh            (REPS=10 by default)
//
// Prints the numbers; it asserts nothing (targets are read, not tested).

import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { filesUnder, qido, startPhim, stow, v } from '../tests/js/harness.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// playwright-core is installed for the browser tests; the benchmark borrows it.
const { chromium } = createRequire(path.join(ROOT, 'tests/e2e/package.json'))('playwright-core');
const PHIM_BIN = process.env.PHIM_BIN || path.join(ROOT, 'target/release/phim');
const LOAD_BIN = process.env.PHIM_LOAD_BIN || path.join(ROOT, 'target/release/phim-load');
const VIEWER_DIR = process.env.PHIM_VIEWER_DIR || path.join(ROOT, 'viewer/dist');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const REPS = Number(process.env.REPS || 10);
const SLICES = Number(process.env.SLICES || 300);
// The viewer picks its renderer (WebGL, or CPU behind a software rasteriser); RENDER=cpu|webgl forces one.
const RENDER = process.env.RENDER || '';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'phim-bench-viewer-'));

function pct(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}
const fmt = (xs) => `p50 ${pct(xs, 50).toFixed(0)} ms, p90 ${pct(xs, 90).toFixed(0)} ms, max ${Math.max(...xs).toFixed(0)} ms (n=${xs.length})`;

/** Resolves once the active viewport's canvas shows an image (lit, with grey levels). */
async function waitImage(page) {
  await page.waitForFunction(() => {
    if (window.__viewer?.state.ready !== true) return false;
    const c = document.querySelector('.pane.active .vp canvas');
    if (!c) return false;
    const tmp = document.createElement('canvas');
    tmp.width = 48; tmp.height = 48;
    const ctx = tmp.getContext('2d');
    ctx.drawImage(c, 0, 0, 48, 48);
    const px = ctx.getImageData(0, 0, 48, 48).data;
    let lit = 0;
    const levels = new Set();
    for (let i = 0; i < px.length; i += 4) {
      levels.add(px[i]);
      if (px[i] > 10) lit++;
    }
    return lit > 0.01 * 48 * 48 && levels.size >= 16;
  }, null, { timeout: 60000, polling: 'raf' });
}

let server;
let browser;
try {
  if (!fs.existsSync(path.join(VIEWER_DIR, 'index.html'))) throw new Error(`viewer not built: ${VIEWER_DIR}`);
  execFileSync(LOAD_BIN, ['gen', '--out', path.join(work, 'gen'), '--ct-studies', '1', '--ct-slices', String(SLICES),
    '--mr-studies', '0', '--cr', '0', '--us', '0'], { stdio: ['ignore', 'ignore', 'inherit'] });
  server = await startPhim(PHIM_BIN, ['--data-dir', path.join(work, 'data'), '--viewer-dir', VIEWER_DIR],
    path.join(work, 'server.log'));
  const { base } = server;
  const dcm = filesUnder(path.join(work, 'gen')).filter((f) => f.endsWith('.dcm'));
  for (let i = 0; i < dcm.length; i += 50) await stow(base, dcm.slice(i, i + 50));
  const [study] = await qido(base, '/studies');
  const studyUid = v(study, '0020000D');
  console.log(`server ${base}, ${dcm.length} CT slices stored, study ${studyUid}; ${REPS} repetitions`);

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const first = [];
  const stack = [];
  let steps = [];
  for (let rep = 0; rep < REPS; rep++) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, locale: 'en-US' });
    if (RENDER) await context.addInitScript((r) => localStorage.setItem('phim.render', r), RENDER);
    const page = await context.newPage();
    await page.goto(`${base}/`);
    await page.waitForSelector('#results[data-state="done"]');
    const t0 = Date.now();
    await page.locator(`tr[data-study="${studyUid}"]`).click();
    await waitImage(page);
    first.push(Date.now() - t0);
    await page.waitForFunction((n) => window.__viewer.cachedCount() === n, dcm.length, { timeout: 120000 });
    stack.push(Date.now() - t0);
    if (rep === 0) {
      steps = await page.evaluate(async (n) => {
        const el = document.querySelector('.pane.active .vp');
        const out = [];
        for (let i = 0; i < n - 1; i++) {
          const t = performance.now();
          const rendered = new Promise((resolve) => el.addEventListener('CORNERSTONE_IMAGE_RENDERED',
            () => resolve(performance.now() - t), { once: true }));
          document.dispatchEvent(new KeyboardEvent('keydown', { key: 'ArrowDown', bubbles: true }));
          out.push(await Promise.race([rendered, new Promise((r) => setTimeout(() => r(5000), 5000))]));
        }
        return out;
      }, dcm.length);
      const end = await page.evaluate(() => window.__viewer.imageIndex());
      if (end !== dcm.length - 1) throw new Error(`scrolled to slice ${end + 1}, not to the last`);
    }
    if (rep === 0) console.log(`  renderer: ${await page.getAttribute('html', 'data-render')}`);
    console.log(`  run ${rep + 1}: first image ${first[rep]} ms, whole stack cached ${stack[rep]} ms`);
    await context.close();
  }
  console.log(`first image after the click:    ${fmt(first)}`);
  console.log(`whole ${dcm.length}-slice stack cached: ${fmt(stack)}`);
  console.log(`scroll, key to rendered slice:  ${fmt(steps)}; ${steps.filter((s) => s > 2000 / 60).length} of ${steps.length} steps over two 60 Hz frames (a dropped frame)`);
} finally {
  await browser?.close();
  server?.proc.kill('SIGTERM');
  fs.rmSync(work, { recursive: true, force: true });
}
