// End-to-end test of the web viewer: a real phim server, a generated CT study
// and a US cine stored over STOW-RS, and headless Chromium (Debian's, via
// playwright-core). A small HTTP server on loopback plays the hospital EMR.
//
//   node run.mjs            (env: PHIM_BIN, PHIM_LOAD_BIN, PHIM_PYTHON, PHIM_VIEWER_DIR, E2E_OUT)
//
// Prints one line per check and a closing "N passed, N failed"; exits 1 on failure.
// Rendering is judged from canvas pixels, never from the absence of errors.

import { execFileSync } from 'node:child_process';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import {
  ACTIVE_CANVAS, assert, canvasStats, checks, filesUnder, launchChromium, otherSeries, qido, recordErrors, replaceAll,
  screenshots, startPhim, stow, testEnv, v, waitRendered,
} from '../js/harness.mjs';

const { root: ROOT, phimBin: PHIM_BIN, loadBin: LOAD_BIN, viewerDir: VIEWER_DIR, out: OUT, chromium: CHROMIUM } = testEnv();
// The test venv's Python (pydicom's sample files, imagecodecs for HTJ2K).
const PYTHON = process.env.PHIM_PYTHON || path.join(ROOT, '.venv-test/bin/python');

fs.rmSync(OUT, { recursive: true, force: true });
fs.mkdirSync(OUT, { recursive: true });
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'phim-e2e-'));

const { check, counts } = checks();

// ------------------------------------------------------------------ server + data




const stripAccents = (s) => s.normalize('NFD').replace(/[\u0300-\u036f]/g, '').replace(/đ/g, 'd').replace(/Đ/g, 'D');

/**
 * Adds a Procedure Code Sequence (0008,1032) with one item to a generated
 * explicit-VR-little-endian instance, right after Study Description
 * (0008,1030), so the tag browser has a nested sequence to show.
 */
function withProcedureCode(bytes) {
  const at = bytes.indexOf(Buffer.from([0x08, 0x00, 0x30, 0x10, 0x4c, 0x4f])); // (0008,1030) LO
  assert(at > 0, 'no Study Description in the generated instance');
  const next = at + 8 + bytes.readUInt16LE(at + 6);
  const el = (g, e, vr, text) => {
    const v = Buffer.from(text.length % 2 ? `${text} ` : text, 'latin1');
    const h = Buffer.alloc(8);
    h.writeUInt16LE(g, 0); h.writeUInt16LE(e, 2); h.write(vr, 4, 'latin1'); h.writeUInt16LE(v.length, 6);
    return Buffer.concat([h, v]);
  };
  const tagLen = (g, e, len) => { const b = Buffer.alloc(8); b.writeUInt16LE(g, 0); b.writeUInt16LE(e, 2); b.writeUInt32LE(len, 4); return b; };
  const seqHead = Buffer.from([0x08, 0x00, 0x32, 0x10, 0x53, 0x51, 0, 0, 0xff, 0xff, 0xff, 0xff]); // SQ, undefined length
  const item = Buffer.concat([el(0x0008, 0x0100, 'SH', 'CTCHEST'), el(0x0008, 0x0102, 'SH', '99PHIM'), el(0x0008, 0x0104, 'LO', 'CT chest')]);
  const seq = Buffer.concat([seqHead, tagLen(0xfffe, 0xe000, item.length), item, tagLen(0xfffe, 0xe0dd, 0)]);
  return Buffer.concat([bytes.subarray(0, next), seq, bytes.subarray(next)]);
}

/** The EMR stand-in: answers /emr/{id} with a page naming the record, and remembers the hits. */
function startEmr() {
  const hits = [];
  const srv = http.createServer((req, res) => {
    hits.push(req.url);
    const m = req.url.match(/^\/emr\/([A-Za-z0-9-]+)$/);
    res.writeHead(m ? 200 : 404, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(m ? `<!doctype html><title>EMR ${m[1]}</title><h1 id="record">EMR record ${m[1]}</h1>` : 'not found');
  });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve({ srv, hits, base: `http://127.0.0.1:${srv.address().port}` })));
}

// ------------------------------------------------------------------ page helpers
/** Grey value of the active canvas at CSS pixel (x, y) of the canvas (mean of a 3x3 block). */
async function canvasGrey(page, x, y) {
  return page.evaluate(([sel, x, y]) => {
    const c = document.querySelector(sel);
    const r = c.width / c.clientWidth;
    const tmp = document.createElement('canvas');
    tmp.width = c.width; tmp.height = c.height;
    const ctx = tmp.getContext('2d');
    ctx.drawImage(c, 0, 0);
    const px = ctx.getImageData(Math.round(x * r) - 1, Math.round(y * r) - 1, 3, 3).data;
    let s = 0;
    for (let i = 0; i < px.length; i += 4) s += (px[i] + px[i + 1] + px[i + 2]) / 3;
    return s / 9;
  }, [ACTIVE_CANVAS, x, y]);
}
function diff(a, b) {
  let s = 0;
  for (let i = 0; i < a.grey.length; i++) s += Math.abs(a.grey[i] - b.grey[i]);
  return s / a.grey.length;
}
async function settle(page) {
  await page.waitForTimeout(400);
}
const shot = screenshots(OUT);
async function drag(page, from, to, steps = 10, button = 'left') {
  await page.mouse.move(...from);
  await page.mouse.down({ button });
  for (let i = 1; i <= steps; i++) await page.mouse.move(from[0] + ((to[0] - from[0]) * i) / steps, from[1] + ((to[1] - from[1]) * i) / steps);
  await page.mouse.up({ button });
}

// ------------------------------------------------------------------ main
let server;
let browser;
let emr;
try {
  assert(fs.existsSync(path.join(VIEWER_DIR, 'index.html')), `viewer not built: ${VIEWER_DIR}/index.html missing`);
  const US_FRAMES = 8;
  execFileSync(LOAD_BIN, ['gen', '--out', path.join(work, 'gen'), '--ct-studies', '1', '--ct-slices', '40',
    '--mr-studies', '0', '--cr', '0', '--us', '1', '--us-frames', String(US_FRAMES)], { stdio: ['ignore', 'ignore', 'inherit'] });
  server = await startPhim(PHIM_BIN, ['--data-dir', path.join(work, 'data'),
    '--dicom-listen', '127.0.0.1:0', '--viewer-dir', VIEWER_DIR], path.join(OUT, 'server.log'));
  emr = await startEmr();
  const { base } = server;
  console.log(`server at ${base}; EMR at ${emr.base}; screenshots in ${OUT}`);
  // phim-load also writes a manifest.json next to the instances.
  const dcm = filesUnder(path.join(work, 'gen')).filter((f) => f.endsWith('.dcm'));
  assert(dcm.length === 41, `phim-load wrote ${dcm.length} .dcm files, expected 40 CT + 1 US`);
  const manifest = JSON.parse(fs.readFileSync(path.join(work, 'gen', 'manifest.json'), 'utf8'));
  const ctDir = manifest.studies.find((st) => st.modality === 'CT').dir;
  const ctFiles = dcm.filter((f) => path.basename(path.dirname(f)) === ctDir).sort();
  for (const f of ctFiles) fs.writeFileSync(f, withProcedureCode(fs.readFileSync(f)));
  const ctSeries = manifest.studies.find((st) => st.modality === 'CT').series_uid;
  const series2Dir = path.join(work, 'series2');
  fs.mkdirSync(series2Dir);
  // Series 2: every other slice (5 mm apart instead of 2.5 mm), same Frame
  // of Reference. Series 3: every fourth slice in a Frame of Reference of
  // its own (as a prior from another session would be).
  const ids = { 2: null, 3: null };
  const made = [];
  for (const [number, every] of [[2, 2], [3, 4]]) {
    for (const f of ctFiles.filter((_, i) => i % every === 0)) {
      const { bytes, uid } = otherSeries(fs.readFileSync(f), ctSeries, number);
      ids[number] = uid;
      const out = path.join(series2Dir, `${number}-${path.basename(f)}`);
      const forUid = `${manifest.studies.find((st) => st.modality === 'CT').study_uid}.1`;
      fs.writeFileSync(out, number === 3 ? replaceAll(bytes, forUid, forUid.slice(0, -1) + '3') : bytes);
      made.push(out);
    }
  }
  const [series2Uid, series3Uid] = [ids[2], ids[3]];
  await stow(base, [...dcm, ...made]);

  const studies = await qido(base, '/studies?includefield=00080061');
  assert(studies.length === 2, `expected 2 studies, QIDO gave ${studies.length}`);
  const modalitiesOf = (s) => s['00080061']?.Value ?? [];
  const study = studies.find((s) => modalitiesOf(s).includes('CT'));
  const usStudy = studies.find((s) => modalitiesOf(s).includes('US'));
  assert(study && usStudy, `modalities ${JSON.stringify(studies.map(modalitiesOf))}`);
  const studyUid = v(study, '0020000D');
  const usStudyUid = v(usStudy, '0020000D');
  const display = (s) => (v(s, '00100010')?.Alphabetic ?? '').split('^').filter(Boolean).join(' ');
  const displayName = display(study);
  const plainName = stripAccents(displayName).toLowerCase();
  assert(displayName !== plainName, `generated name has no diacritics: ${displayName}`);
  const patientId = v(study, '00100020');
  const accession = v(study, '00080050');
  const series = await qido(base, `/studies/${studyUid}/series`);
  assert(series.length === 3 && [series2Uid, series3Uid].every((u) => series.some((s) => v(s, '0020000E') === u)),
    `CT series ${JSON.stringify(series.map((s) => v(s, '0020000E')))}`);
  const seriesUid = ctSeries;
  const meta = await qido(base, `/studies/${studyUid}/series/${seriesUid}/metadata`);
  const spacing = meta[0]['00280030'].Value.map(Number); // [row spacing, column spacing]
  const rows = Number(v(meta[0], '00280010'));
  const cols = Number(v(meta[0], '00280011'));
  console.log(`CT: ${meta.length} instances ${cols}x${rows}, PixelSpacing ${spacing.join('\\')} mm; US: ${display(usStudy)}`);

  browser = await launchChromium(chromium, CHROMIUM);
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, locale: 'en-US' });
  const page = await context.newPage();
  const pageErrors = [];
  const responses = [];
  // Failed loads are judged from the responses below (with their URLs), not from the console's copy.
  recordErrors(page, pageErrors);
  page.on('response', (r) => {
    responses.push({ url: r.url(), status: r.status(), at: Date.now(), accept: r.request().headers().accept ?? '' });
    const u = new URL(r.url());
    const thumbnailPending = r.status() === 501 && u.pathname.endsWith('/thumbnail'); // the lead is building it
    const noLink = r.status() === 404 && /^\/api\/studies\/[^/]+\/emr-link$/.test(u.pathname); // "this study has none"
    if (r.status() >= 400 && !thumbnailPending && !noLink) pageErrors.push(`${r.status()} ${r.url()}`);
  });

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

  // Needs the EMR link API (branch emr); fails clearly until it is merged.
  let emrLinkSet = false;
  await check('set an EMR link through PUT /api/studies/{s}/emr-link', async () => {
    const res = await fetch(`${base}/api/studies/${studyUid}/emr-link`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ recordId: 'ORD-1', url: `${emr.base}/emr/ORD-1` }),
    });
    const text = await res.text();
    assert(res.ok && (res.headers.get('content-type') ?? '').includes('json'),
      `PUT emr-link -> ${res.status} ${res.headers.get('content-type')}: ${text.slice(0, 120)} (is the EMR link API merged?)`);
    emrLinkSet = true;
  });

  await check('study list shows both studies, names with diacritics, dates in the local format', async () => {
    await page.goto(`${base}/`);
    await page.waitForSelector('#results[data-state="done"]');
    const names = await page.locator('td.c-name').allTextContents();
    assert(names.includes(displayName) && names.length === 2, `names ${JSON.stringify(names)} lack ${displayName}`);
    const d = String(v(study, '00080020'));
    const row = page.locator(`tr[data-study="${studyUid}"]`);
    const date = await row.locator('td.c-date').textContent();
    assert(date.startsWith(`${d.slice(4, 6)}/${d.slice(6, 8)}/${d.slice(0, 4)}`), `en-US date: ${date}`);
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
    assert(new URL(page.url()).searchParams.get('patientName') === plainName, `URL keeps the search: ${page.url()}`);
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
  await check('typing a patient ID searches without a click', async () => {
    await page.fill('#q-name', '');
    await page.click('#q-go');
    await page.waitForSelector('#results[data-state="done"]');
    assert((await page.locator('td.c-id').count()) === 2, 'both studies first');
    await page.fill('#q-id', patientId);
    await page.waitForFunction((id) => {
      const ids = [...document.querySelectorAll('td.c-id')].map((td) => td.textContent);
      return document.querySelector('#results').dataset.state === 'done' && ids.length === 1 && ids[0] === id;
    }, patientId, { timeout: 5000 });
    await page.fill('#q-id', '');
  });
  await check('modality and date filters', async () => {
    await page.fill('#q-name', '');
    await page.selectOption('#q-mod', 'MR');
    await page.click('#q-go');
    await page.waitForSelector('#results[data-state="done"]');
    assert((await page.locator('td.c-name').count()) === 0, 'MR filter should hide both studies');
    await page.selectOption('#q-mod', 'CT');
    const d = String(v(study, '00080020'));
    await page.fill('#q-from', `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}`);
    await page.fill('#q-to', `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}`);
    await page.click('#q-go');
    await page.waitForSelector('#results[data-state="done"]');
    const names = await page.locator('td.c-name').allTextContents();
    assert(names.length === 1 && names[0] === displayName, `CT + study date: ${JSON.stringify(names)}`);
  });
  await check('columns sort both ways', async () => {
    await page.click('#q-clear');
    await page.waitForSelector('#results[data-state="done"]');
    const ids = async () => page.locator('td.c-id').allTextContents();
    await page.click('th[data-sort="id"]');
    await page.waitForSelector('#results[data-state="done"] th[aria-sort="ascending"]');
    const up = await ids();
    await page.click('th[data-sort="id"]');
    await page.waitForSelector('#results[data-state="done"] th[aria-sort="descending"]');
    const down = await ids();
    assert(up.length === 2 && up[0] < up[1] && JSON.stringify(down) === JSON.stringify([...up].reverse()), `${up} / ${down}`);
  });
  await check('URL pre-filter: /?patientID=, /?accessionNumber=, /?studyUID=a,b', async () => {
    await page.goto(`${base}/?patientID=${encodeURIComponent(patientId)}`);
    await page.waitForSelector('#results[data-state="done"]');
    assert((await page.inputValue('#q-id')) === patientId, 'patient ID field not pre-filled');
    let ids = await page.locator('td.c-id').allTextContents();
    assert(ids.length === 1 && ids[0] === patientId, `patientID: ${JSON.stringify(ids)}`);
    await page.goto(`${base}/?accessionNumber=${encodeURIComponent(accession)}`);
    await page.waitForSelector('#results[data-state="done"]');
    const accs = await page.locator('td.c-acc').allTextContents();
    assert(accs.length === 1 && accs[0] === accession, `accessionNumber: ${JSON.stringify(accs)}`);
    await page.goto(`${base}/?studyUID=${studyUid},${usStudyUid}`);
    await page.waitForSelector('#results[data-state="done"]');
    assert((await page.locator('tr[data-study]').count()) === 2, 'studyUID=a,b shows both');
    await page.goto(`${base}/?studyUID=${usStudyUid}`);
    await page.waitForSelector('#results[data-state="done"]');
    const uids = await page.locator('tr[data-study]').evaluateAll((trs) => trs.map((tr) => tr.dataset.study));
    assert(uids.length === 1 && uids[0] === usStudyUid, `studyUID: ${JSON.stringify(uids)}`);
    await shot(page, '03-url-studyuid');
  });
  await check('Vietnamese UI (labels, dd/mm/yyyy dates)', async () => {
    await page.goto(`${base}/`);
    await page.waitForSelector('#results[data-state="done"]');
    await page.selectOption('#lang', 'vi');
    await page.waitForSelector('#results[data-state="done"]');
    const label = await page.textContent('#q-go');
    assert(label === 'Tìm kiếm', `search button says ${label}`);
    const d = String(v(study, '00080020'));
    const date = await page.locator(`tr[data-study="${studyUid}"] td.c-date`).textContent();
    assert(date.startsWith(`${d.slice(6, 8)}/${d.slice(4, 6)}/${d.slice(0, 4)}`), `vi date: ${date}`);
    await shot(page, '04-list-vi');
    await page.selectOption('#lang', 'en');
    await page.waitForSelector('#results[data-state="done"]');
  });
  await check('list row shows the EMR record link', async () => {
    assert(emrLinkSet, 'no EMR link was set (see the PUT check)');
    await page.waitForSelector('#results[data-emr]');
    const state = await page.getAttribute('#results', 'data-emr');
    assert(state === 'done', `EMR links: ${state}`);
    const link = page.locator(`tr[data-study="${studyUid}"] a.emr-link`);
    assert((await link.textContent()) === 'ORD-1', 'record ID shown');
    assert((await link.getAttribute('href')) === `${emr.base}/emr/ORD-1`, 'href');
    assert((await page.locator(`tr[data-study="${usStudyUid}"] a.emr-link`).count()) === 0, 'US study has no link');
  });

  let first;
  let firstZoom;
  await check('open the study: first image shown', async () => {
    await page.goto(`${base}/`);
    await page.waitForSelector('#results[data-state="done"]');
    const t0 = Date.now();
    await page.locator(`tr[data-study="${studyUid}"]`).click();
    await page.waitForURL(/\/study\//);
    first = await waitRendered(page);
    const ms = Date.now() - t0;
    const overlay = await page.textContent('.pane.active .overlay.tl');
    assert(overlay.includes(displayName), `overlay ${overlay}`);
    const br = await page.textContent('.pane.active .overlay.br');
    assert(br.includes(`1/${meta.length}`), `slice overlay ${br}`);
    firstZoom = br.match(/[0-9.]+×/)?.[0];
    const after = responses.filter((r) => r.at >= t0 && r.url.startsWith(base));
    const when = (re) => { const r = after.find((x) => re.test(new URL(x.url).pathname)); return r ? `${r.at - t0}` : '-'; };
    console.log(`    responses after the click (ms): study ${when(/^\/dicomweb\/studies$/)}, series ${when(/\/series$/)}, metadata ${when(/\/metadata$/)}, first frame ${when(/\/frames\/1$/)}`);
    console.log(`    first image ${ms} ms after the click; lit ${(first.lit * 100).toFixed(1)} %, ${first.levels} grey levels, canvas ${first.width}x${first.height}`);
    await shot(page, '05-study');
    // The time is printed, not asserted: speed is measured by benches/viewer.sh.
  });
  await check('the whole stack is prefetched in the background', async () => {
    await page.waitForFunction((n) => window.__viewer.cachedCount() === n, meta.length, { timeout: 30000 });
    const frames = responses.filter((r) => r.url.includes(`/series/${seriesUid}/instances/`) && /\/frames\/\d+$/.test(new URL(r.url).pathname));
    assert(frames.length >= meta.length && frames.every((r) => r.status === 200), `${frames.length} frame requests`);
    // Frames come in the stored transfer syntax, decoded in the browser.
    assert(frames.every((r) => r.accept.includes('multipart/related') && r.accept.includes('transfer-syntax=*')), `Accept: ${frames[0].accept}`);
    console.log(`    ${frames.length} frame requests, Accept: ${frames[0].accept}`);
  });
  await check('series panel: thumbnail or a text placeholder', async () => {
    const item = page.locator(`.series-item[data-series="${seriesUid}"]`);
    await page.waitForFunction((uid) => document.querySelector(`.series-item[data-series="${uid}"]`)?.dataset.thumb, seriesUid, { timeout: 10000 });
    const kind = await item.getAttribute('data-thumb');
    const res = responses.find((r) => r.url.includes(`/series/${seriesUid}/thumbnail`));
    assert(res, 'no thumbnail request');
    if (res.status === 200) {
      assert(kind === 'image', `thumbnail answered 200 but shows ${kind}`);
    } else {
      assert(kind === 'placeholder', `thumbnail answered ${res.status} but shows ${kind}`);
      const text = await item.locator('.thumb-placeholder').textContent();
      assert(text.includes('CT') && text.includes(String(meta.length)), `placeholder: ${text}`);
    }
    console.log(`    thumbnail answered ${res.status}: ${kind}`);
  });

  const vpBox = async () => page.locator('.pane.active .vp').boundingBox();
  let box = await vpBox();
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
    await shot(page, '06-scrolled');
  });
  await check('keys scroll: arrows, PageDown/PageUp, Home/End', async () => {
    const idx = () => page.evaluate(() => window.__viewer.imageIndex());
    const i0 = await idx();
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('ArrowDown');
    await page.waitForFunction((i) => window.__viewer.imageIndex() === i + 2, i0, { timeout: 5000 });
    await page.keyboard.press('ArrowUp');
    await page.waitForFunction((i) => window.__viewer.imageIndex() === i + 1, i0, { timeout: 5000 });
    await page.keyboard.press('Home');
    await page.waitForFunction(() => window.__viewer.imageIndex() === 0, null, { timeout: 5000 });
    await page.keyboard.press('PageDown');
    await page.waitForFunction(() => window.__viewer.imageIndex() === 10, null, { timeout: 5000 });
    await page.keyboard.press('End');
    await page.waitForFunction((n) => window.__viewer.imageIndex() === n - 1, meta.length, { timeout: 5000 });
    await page.keyboard.press('PageUp');
    await page.waitForFunction((n) => window.__viewer.imageIndex() === n - 11, meta.length, { timeout: 5000 });
  });
  await check('the scrollbar moves through the stack and follows it', async () => {
    const before = await canvasStats(page);
    await page.locator('.pane.active .pane-scroll').evaluate((el) => {
      el.value = '3';
      el.dispatchEvent(new Event('input', { bubbles: true }));
    });
    await page.waitForFunction(() => window.__viewer.imageIndex() === 3, null, { timeout: 5000 });
    await settle(page);
    const after = await canvasStats(page);
    assert(diff(before, after) > 0.5, `pixels barely changed (${diff(before, after)})`);
    await page.keyboard.press('ArrowDown');
    await page.waitForFunction(() => document.querySelector('.pane.active .pane-scroll').value === '4', null, { timeout: 5000 });
  });
  await check('window/level drag changes the pixels', async () => {
    await settle(page);
    const before = await canvasStats(page);
    const wl0 = await page.textContent('.pane.active .overlay.br');
    await drag(page, [cx, cy], [cx + 150, cy + 100]);
    await settle(page);
    const after = await canvasStats(page);
    const d = diff(before, after);
    const wl1 = await page.textContent('.pane.active .overlay.br');
    console.log(`    ${wl0.replace(/\n/g, ' ')} -> ${wl1.replace(/\n/g, ' ')}, mean pixel change ${d.toFixed(2)}`);
    assert(d > 2, `pixels barely changed (${d})`);
    assert(wl0 !== wl1, 'overlay W/L unchanged');
    await shot(page, '07-window-level');
  });
  await check('presets (lung, bone, stored default by key), invert and reset change the pixels', async () => {
    const br = () => page.textContent('.pane.active .overlay.br');
    const s0 = await canvasStats(page);
    await page.selectOption('#preset', 'lung');
    await settle(page);
    const s1 = await canvasStats(page);
    assert(diff(s0, s1) > 2, `lung preset: ${diff(s0, s1)}`);
    assert((await br()).includes('W 1500 / L -600'), await br());
    await page.keyboard.press('3'); // bone
    await settle(page);
    assert((await br()).includes('W 1500 / L 300'), await br());
    const s2 = await canvasStats(page);
    assert(diff(s1, s2) > 2, `bone preset: ${diff(s1, s2)}`);
    await page.keyboard.press('0'); // the stored WC/WW
    await settle(page);
    assert((await br()).includes(`W ${v(meta[0], '00281051')} / L ${v(meta[0], '00281050')}`), await br());
    await page.click('#invert');
    await settle(page);
    const s3 = await canvasStats(page);
    assert(diff(s2, s3) > 10, `invert: ${diff(s2, s3)}`);
    await shot(page, '08-default-inverted');
    await page.click('#reset');
    await settle(page);
    const s4 = await canvasStats(page);
    assert(diff(s3, s4) > 2, `reset: ${diff(s3, s4)}`);
  });
  await check('zoom (right drag) changes the pixels and the overlay', async () => {
    const s0 = await canvasStats(page);
    const z0 = await page.textContent('.pane.active .overlay.br');
    await drag(page, [cx, cy], [cx, cy - 120], 10, 'right');
    await settle(page);
    const s1 = await canvasStats(page);
    const z1 = await page.textContent('.pane.active .overlay.br');
    console.log(`    ${z0.split('\n').pop()} -> ${z1.split('\n').pop()}, mean pixel change ${diff(s0, s1).toFixed(2)}`);
    assert(diff(s0, s1) > 2, `zoom: ${diff(s0, s1)}`);
    assert(z0.split('\n').pop() !== z1.split('\n').pop(), 'zoom overlay unchanged');
    await shot(page, '09-zoomed');
    await page.keyboard.press('r');
    await settle(page);
  });
  await check('Length across the phantom body is 420 mm (PixelSpacing, known geometry)', async () => {
    // src/synth.rs: the CT body is an ellipse centred on the image with a
    // horizontal semi-axis of 0.42 x columns, so on the centre row it spans
    // columns 256 -/+ 215.04: 430.08 pixels x 0.9765625 mm = 420 mm.
    const half = 0.42 * cols;
    const left = [cols / 2 - half, rows / 2];
    const right = [cols / 2 + half, rows / 2];
    const expected = 2 * half * spacing[1];
    box = await vpBox();
    const [pl, pr, inL, outL, inR, outR] = await page.evaluate(
      (pts) => pts.map((p) => window.__viewer.imageToCanvas(p)),
      [left, right, [left[0] + 4, left[1]], [left[0] - 4, left[1]], [right[0] - 4, right[1]], [right[0] + 4, right[1]]],
    );
    // The pixels say the edges are where the geometry says: bone ring inside, air outside.
    const g = await Promise.all([inL, outL, inR, outR].map((p) => canvasGrey(page, p[0], p[1])));
    console.log(`    grey inside/outside the left edge ${g[0].toFixed(0)}/${g[1].toFixed(0)}, right ${g[2].toFixed(0)}/${g[3].toFixed(0)}`);
    assert(g[0] > 150 && g[2] > 150 && g[1] < 30 && g[3] < 30, `edges not at the expected columns: ${g}`);
    await page.keyboard.press('l');
    await drag(page, [box.x + pl[0], box.y + pl[1]], [box.x + pr[0], box.y + pr[1]], 12);
    await settle(page);
    const lengths = await page.evaluate(() => window.__viewer.lengths());
    assert(lengths.length === 1, `lengths ${JSON.stringify(lengths)}`);
    const { length, unit } = lengths[0];
    console.log(`    expected ${expected.toFixed(2)} mm; the Length tool says ${length.toFixed(2)} ${unit}`);
    assert(unit === 'mm', `unit ${unit}`);
    assert(Math.abs(length - expected) < 1.5, `length ${length} != ${expected}`);
    const svgText = await page.locator('.pane.active svg text').allTextContents();
    assert(svgText.some((s) => s.includes('mm')), `no mm label drawn: ${JSON.stringify(svgText)}`);
    await shot(page, '10-length');
  });
  await check('Angle tool measures a right angle', async () => {
    box = await vpBox();
    const [a, b, c] = await page.evaluate((pts) => pts.map((p) => window.__viewer.imageToCanvas(p)),
      [[100, 400], [300, 400], [300, 200]]);
    await page.keyboard.press('a');
    await drag(page, [box.x + a[0], box.y + a[1]], [box.x + b[0], box.y + b[1]], 8);
    await page.mouse.move(box.x + c[0], box.y + c[1], { steps: 5 });
    await page.mouse.down();
    await page.mouse.up();
    await settle(page);
    const angles = (await page.evaluate(() => window.__viewer.measurements())).filter((m) => m.tool === 'angle');
    assert(angles.length === 1, `angles ${JSON.stringify(angles)}`);
    console.log(`    angle ${angles[0].value.toFixed(2)}°`);
    assert(Math.abs(angles[0].value - 90) < 1, `angle ${angles[0].value}`);
    await shot(page, '11-angle');
    await page.keyboard.press('w');
  });
  await check('Ellipse ROI in soft tissue: mean 34.5 HU, SD 12, area of the drawn ellipse', async () => {
    // src/synth.rs: soft tissue is stored as 1024 + 35 + 12 x noise(sd 1),
    // truncated to integers (mean 1058.5), Rescale -1024: 34.5 HU, SD ~12.
    // The ellipse (centre 256,180, semi-axes 40 x 30 pixels) stays clear of
    // the organ, the lesion and the bone ring on every slice.
    box = await vpBox();
    const [c, edge] = await page.evaluate((pts) => pts.map((p) => window.__viewer.imageToCanvas(p)), [[256, 180], [296, 210]]);
    await page.keyboard.press('e');
    await drag(page, [box.x + c[0], box.y + c[1]], [box.x + edge[0], box.y + edge[1]], 10);
    await settle(page);
    const rois = (await page.evaluate(() => window.__viewer.measurements())).filter((m) => m.tool === 'ellipse');
    assert(rois.length === 1, `ellipses ${JSON.stringify(rois)}`);
    const r = rois[0];
    const expectedArea = Math.PI * 40 * spacing[1] * 30 * spacing[0];
    console.log(`    mean ${r.value.toFixed(2)} ${r.unit}, SD ${r.stdDev?.toFixed(2)}, min ${r.min} max ${r.max}, area ${r.area?.toFixed(0)} ${r.areaUnit} (expected ${expectedArea.toFixed(0)})`);
    assert(r.unit === 'HU', `unit ${r.unit}`);
    assert(Math.abs(r.value - 34.5) < 1.5, `mean ${r.value}`);
    assert(r.stdDev > 10 && r.stdDev < 14, `SD ${r.stdDev}`);
    assert(Math.abs(r.area - expectedArea) / expectedArea < 0.05, `area ${r.area} ${r.areaUnit}`);
    const svgText = (await page.locator('.pane.active svg text').allTextContents()).join(' ');
    assert(/HU/.test(svgText), `no HU label drawn: ${svgText}`);
    await shot(page, '11b-ellipse');
    await page.keyboard.press('w');
  });
  await check('cine plays the stack and pauses', async () => {
    await page.keyboard.press('Home');
    await page.waitForFunction(() => window.__viewer.imageIndex() === 0, null, { timeout: 5000 });
    await page.fill('#fps', '20');
    await page.press('#fps', 'Enter');
    await page.keyboard.press(' ');
    await page.waitForFunction(() => window.__viewer.playing() && window.__viewer.imageIndex() >= 5, null, { timeout: 10000 });
    assert((await page.textContent('#cine')).includes('Pause'), 'button says pause');
    await page.keyboard.press(' ');
    assert(!(await page.evaluate(() => window.__viewer.playing())), 'still playing');
    const i1 = await page.evaluate(() => window.__viewer.imageIndex());
    await page.waitForTimeout(500);
    assert((await page.evaluate(() => window.__viewer.imageIndex())) === i1, 'images still change after pause');
  });
  await check('tag browser shows the StudyInstanceUID and filters', async () => {
    await page.keyboard.press('t');
    await page.waitForSelector('#tags-panel[data-state="done"]');
    const row = page.locator('#tags-panel tr[data-tag="(0020,000D)"]');
    assert((await row.locator('td').nth(1).textContent()) === 'StudyInstanceUID', 'keyword');
    assert((await row.locator('td.tag-value').textContent()) === studyUid, 'value');
    const all = Number(await page.getAttribute('#tags-panel', 'data-rows'));
    await page.fill('#tags-panel .tags-search', 'studyinstance');
    const some = Number(await page.getAttribute('#tags-panel', 'data-rows'));
    assert(some >= 1 && some < all, `filter: ${some} of ${all} rows`);
    console.log(`    ${all} attributes; filter keeps ${some}`);
    // The nested sequence: its item's Code Value, found by a filter, shows under its parents.
    await page.fill('#tags-panel .tags-search', 'ctchest');
    const seqRows = await page.locator('#tags-panel tbody tr').evaluateAll((trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent.trim())));
    assert(seqRows.length === 3 && seqRows[0][0] === '(0008,1032)' && seqRows[1][1] === 'Item 1' && seqRows[2][0] === '(0008,0100)' && seqRows[2][3] === 'CTCHEST',
      `sequence rows ${JSON.stringify(seqRows)}`);
    const indent = await page.locator('#tags-panel tr[data-tag="(0008,0100)"] td').first().evaluate((td) => parseFloat(td.style.paddingLeft));
    assert(indent > 20, `item attribute not indented (${indent}px)`);
    await shot(page, '12-tags-sequence');
    await page.fill('#tags-panel .tags-search', 'patientname');
    const name = page.locator('#tags-panel tr[data-tag="(0010,0010)"] td.tag-value');
    assert((await name.textContent()) === displayName, `PatientName ${await name.textContent()}`);
    await shot(page, '12-tags');
    // It follows the image: the next image's SOP Instance UID shows.
    await page.fill('#tags-panel .tags-search', 'sopinstanceuid');
    const sop = () => page.locator('#tags-panel tr[data-tag="(0008,0018)"] td.tag-value').textContent();
    const sop0 = await sop();
    await page.evaluate(() => document.activeElement.blur());
    await page.keyboard.press('ArrowDown');
    await page.waitForFunction((s0) => {
      const td = document.querySelector('#tags-panel tr[data-tag="(0008,0018)"] td.tag-value');
      return td && td.textContent !== s0;
    }, sop0, { timeout: 5000 });
    const sop1 = await sop();
    const idx = await page.evaluate(() => window.__viewer.imageIndex());
    assert(sop1.startsWith('2.') && sop1 !== sop0, `SOP ${sop0} -> ${sop1} at image ${idx}`);
    await page.keyboard.press('t');
    await page.waitForSelector('#tags-panel', { state: 'hidden' });
  });
  await check('Download saves the study as a ZIP with a DICOMDIR', async () => {
    const listed = await (await fetch(`${base}/dicomweb/studies/${studyUid}/instances?limit=1000`)).json();
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    assert(download.suggestedFilename() === `study-${studyUid}.zip`, download.suggestedFilename());
    const bytes = fs.readFileSync(await download.path());
    assert(bytes.readUInt32LE(0) === 0x04034b50, 'starts with a local file header');
    // The end of central directory record (no archive comment) counts the entries.
    const eocd = bytes.length - 22;
    assert(bytes.readUInt32LE(eocd) === 0x06054b50, 'ends with the end of central directory');
    const entries = bytes.readUInt16LE(eocd + 10);
    assert(entries === listed.length + 1, `${entries} entries for ${listed.length} instances + DICOMDIR`);
    assert(bytes.indexOf('DICOMDIR') > 0 && bytes.indexOf('DICOM/ST000001/SE000001/IM000001') > 0, 'CD-style names');
    console.log(`    ${entries} entries, ${bytes.length} bytes`);
  });
  await check('help panel lists the shortcuts', async () => {
    await page.keyboard.press('?');
    await page.waitForSelector('#help-panel:not([hidden])');
    const text = await page.textContent('#help-panel');
    assert(text.includes('PgDn') && text.includes('Space') && text.includes('Window presets'), text.slice(0, 200));
    await shot(page, '13-help');
    await page.keyboard.press('Escape');
    await page.waitForSelector('#help-panel', { state: 'hidden' });
  });
  await check('layout 2×2 shows 4 viewports; a series loads into the clicked one', async () => {
    await page.click('#layout-2x2');
    await page.waitForFunction(() => document.querySelectorAll('.pane .vp canvas').length === 4, null, { timeout: 10000 });
    assert((await page.evaluate(() => window.__viewer.panes())) === 4, 'panes');
    await settle(page);
    const p0 = await canvasStats(page, '.pane[data-pane="0"] .vp canvas');
    assert(p0.lit > 0.01 && p0.levels >= 16, 'pane 0 lost its image');
    const p3 = page.locator('.pane[data-pane="3"]');
    const b3 = await p3.boundingBox();
    await page.mouse.click(b3.x + b3.width / 2, b3.y + b3.height / 2);
    assert((await page.evaluate(() => window.__viewer.active())) === 3, 'pane 3 is not active');
    await page.click(`.series-item[data-series="${seriesUid}"]`);
    const s3 = await waitRendered(page, '.pane[data-pane="3"] .vp canvas');
    assert(s3.width < first.width * 0.6 && s3.height < first.height * 0.6,
      `pane 3 canvas ${s3.width}x${s3.height}, 1×1 was ${first.width}x${first.height}: not a 2×2 grid`);
    await shot(page, '14-layout-2x2');
    await page.click('#layout-1x1');
    await page.waitForFunction(() => document.querySelectorAll('.pane .vp canvas').length === 1, null, { timeout: 10000 });
    await waitRendered(page);
  });
  await check('linked scrolling (S): the other series follows by position; unlinked it stays', async () => {
    // Pane 0: the 40-slice series (2.5 mm); pane 1 (filled by the 2×1 layout
    // with the next series): its every other slice (5 mm), so slice j of
    // pane 1 lies where slice 2j of pane 0 does.
    await page.click('#layout-2x1');
    await page.waitForFunction(() => document.querySelectorAll('.pane .vp canvas').length === 2, null, { timeout: 10000 });
    await waitRendered(page, '.pane[data-pane="1"] .vp canvas');
    const n2 = meta.length / 2;
    assert((await page.evaluate(() => document.querySelector('.pane[data-pane="1"] .overlay.br').textContent)).includes(`1/${n2}`),
      'pane 1 does not show the 20-slice series');
    const clickPane = async (i) => {
      const b = await page.locator(`.pane[data-pane="${i}"]`).boundingBox();
      await page.mouse.click(b.x + b.width / 2, b.y + b.height / 2);
      assert((await page.evaluate(() => window.__viewer.active())) === i, `pane ${i} is not active`);
    };
    const paneAt = (i, n) => page.waitForFunction(([i, n]) => window.__viewer.paneImageIndex(i) === n, [i, n], { timeout: 5000 })
      .catch(async () => { throw new Error(`pane ${i} at ${await page.evaluate((i) => window.__viewer.paneImageIndex(i), i)}, expected ${n}`); });
    await clickPane(0);
    await page.keyboard.press('Home');
    await paneAt(0, 0);
    await clickPane(1);
    await page.keyboard.press('End');
    await paneAt(1, n2 - 1);
    assert((await page.evaluate(() => window.__viewer.paneImageIndex(0))) === 0, 'pane 0 moved before linking');
    await page.keyboard.press('s');
    assert(await page.evaluate(() => window.__viewer.linked()), 'not linked');
    await paneAt(0, 2 * (n2 - 1)); // linking lines pane 0 up with the active pane
    await page.keyboard.press('PageUp');
    await paneAt(1, n2 - 11);
    await paneAt(0, 2 * (n2 - 11));
    await clickPane(0);
    await page.keyboard.press('ArrowUp');
    await page.keyboard.press('ArrowUp');
    await paneAt(0, 2 * (n2 - 11) - 2);
    await paneAt(1, n2 - 12); // either pane drives
    await shot(page, '14b-linked');
    await page.keyboard.press('s');
    assert(!(await page.evaluate(() => window.__viewer.linked())), 'still linked');
    await page.keyboard.press('Home');
    await paneAt(0, 0);
    await page.waitForTimeout(500);
    const other = await page.evaluate(() => window.__viewer.paneImageIndex(1));
    assert(other === n2 - 12, `unlinked pane 1 moved to ${other}`);
    // Series 3 (every fourth slice, 10 mm apart) has its own Frame of
    // Reference: linked, it keeps the offset it had. Pane 1 at its slice 2
    // (20 mm in its frame), pane 0 at slice 20 (50 mm); pane 0 then moves
    // 4 slices (10 mm) and pane 1 one slice.
    await clickPane(1);
    await page.click(`.series-item[data-series="${series3Uid}"]`);
    await page.waitForFunction(() => document.querySelector('.pane[data-pane="1"] .overlay.br')?.textContent.includes('1/10'), null, { timeout: 10000 });
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('ArrowDown');
    await paneAt(1, 2);
    await clickPane(0);
    await page.keyboard.press('PageDown');
    await page.keyboard.press('PageDown');
    await paneAt(0, 20);
    await page.keyboard.press('s');
    await page.waitForTimeout(300);
    assert((await page.evaluate(() => window.__viewer.paneImageIndex(1))) === 2, 'linking moved the other Frame of Reference');
    for (let i = 0; i < 4; i++) await page.keyboard.press('ArrowDown');
    await paneAt(0, 24);
    await paneAt(1, 3);
    await page.keyboard.press('s');
    await page.click('#layout-1x1');
    await page.waitForFunction(() => document.querySelectorAll('.pane .vp canvas').length === 1, null, { timeout: 10000 });
    await waitRendered(page);
  });
  await check('Vietnamese study view', async () => {
    await page.selectOption('#lang', 'vi');
    await waitRendered(page);
    assert((await page.textContent('#tool-windowLevel')) === 'Cửa sổ', await page.textContent('#tool-windowLevel'));
    const br = await page.textContent('.pane.active .overlay.br');
    assert(br.includes(`Ảnh 1/${meta.length}`), br);
    const d = String(v(study, '00080020'));
    assert((await page.textContent('.pane.active .overlay.tr')).includes(`${d.slice(6, 8)}/${d.slice(4, 6)}/${d.slice(0, 4)}`), 'vi date in the overlay');
    await shot(page, '15-study-vi');
    const toolbar = await page.locator('#toolbar').boundingBox();
    assert(toolbar.height < 50, `the toolbar wraps (${toolbar.height}px high)`);
    await page.selectOption('#lang', 'en');
    await waitRendered(page);
  });
  await check('"Open in EMR" is shown and opens the record', async () => {
    assert(emrLinkSet, 'no EMR link was set (see the PUT check)');
    await page.waitForFunction(() => window.__viewer.state.emr !== 'loading', null, { timeout: 5000 });
    const state = await page.evaluate(() => window.__viewer.state.emr);
    assert(state === 'link', `EMR link state ${state}`);
    const link = page.locator('#emr a.emr-link');
    const [emrPage] = await Promise.all([context.waitForEvent('page'), link.click()]);
    await emrPage.waitForLoadState();
    assert(emrPage.url() === `${emr.base}/emr/ORD-1`, emrPage.url());
    assert((await emrPage.textContent('#record')) === 'EMR record ORD-1', 'EMR page');
    assert(emr.hits.includes('/emr/ORD-1'), `EMR hits ${emr.hits}`);
    await emrPage.close();
  });
  await check('US cine: multi-frame instance, every frame playable', async () => {
    await page.goto(`${base}/study/${usStudyUid}`);
    await waitRendered(page);
    const n = await page.evaluate(() => window.__viewer.imageCount());
    assert(n === US_FRAMES, `frames ${n}`);
    assert((await page.inputValue('#fps')) !== '', 'fps shown');
    const s0 = await canvasStats(page);
    await page.click('#cine');
    await page.waitForFunction(() => window.__viewer.imageIndex() >= 3, null, { timeout: 10000 });
    await settle(page);
    const s1 = await canvasStats(page);
    await page.click('#cine');
    console.log(`    ${n} frames; pixel change while playing ${diff(s0, s1).toFixed(2)}`);
    assert(diff(s0, s1) > 0.5, `frames look the same (${diff(s0, s1)})`);
    // Without the EMR link API the viewer must say so rather than show nothing silently.
    const emrState = await page.evaluate(() => window.__viewer.state.emr);
    assert(emrState === (emrLinkSet ? 'none' : 'unavailable'), `US study EMR state ${emrState}`);
    await shot(page, '16-us-cine');
  });
  await check('an unknown or malformed study UID shows an error, not an empty viewer', async () => {
    await page.goto(`${base}/study/1.2.826.0.1.999999`);
    await page.waitForSelector('#series-panel .err');
    const text = await page.textContent('#series-panel .err');
    assert(text.includes('1.2.826.0.1.999999'), text);
    await page.goto(`${base}/study/not-a-uid`);
    await page.waitForSelector('#series-panel .err');
    assert((await page.textContent('#series-panel .err')).includes('400'), await page.textContent('#series-panel .err'));
    assert(!(await page.evaluate(() => window.__viewer.state.ready)), 'ready without a study');
    pageErrors.splice(0, pageErrors.length, ...pageErrors.filter((e) => !e.startsWith('400 ') || !e.includes('not-a-uid')));
  });
  await check('series placeholder when the thumbnail fails (501 injected)', async () => {
    await page.route('**/thumbnail?*', (route) => route.fulfill({ status: 501, contentType: 'text/plain', body: 'injected' }));
    await page.goto(`${base}/study/${usStudyUid}`);
    await waitRendered(page);
    const item = page.locator('.series-item').first();
    await page.waitForFunction(() => document.querySelector('.series-item')?.dataset.thumb, null, { timeout: 5000 });
    assert((await item.getAttribute('data-thumb')) === 'placeholder', await item.getAttribute('data-thumb'));
    const text = (await item.locator('.thumb-placeholder').innerText()).replace(/\s+/g, ' ');
    assert(text.includes('US') && text.includes('#1') && text.includes('1 image'), `placeholder: ${text}`);
    assert(await item.locator('.thumb-placeholder').isVisible(), 'placeholder hidden');
    await shot(page, '17-thumbnail-placeholder');
    await page.unroute('**/thumbnail?*');
  });
  await check('paging: 25 rows a page, Next and Previous, page in the URL', async () => {
    // 25 more small studies (64x64) make 27: pages of 25 and 2.
    execFileSync(LOAD_BIN, ['gen', '--out', path.join(work, 'gen2'), '--tiny', '--seed', '2', '--ct-studies', '25', '--ct-slices', '1',
      '--mr-studies', '0', '--cr', '0', '--us', '0'], { stdio: ['ignore', 'ignore', 'inherit'] });
    await stow(base, filesUnder(path.join(work, 'gen2')).filter((f) => f.endsWith('.dcm')));
    await page.goto(`${base}/`);
    await page.waitForSelector('#results[data-state="done"]');
    assert((await page.locator('tr[data-study]').count()) === 25, 'first page');
    assert(await page.isDisabled('#prev') && !(await page.isDisabled('#next')), 'buttons on page 1');
    const firstPage = await page.locator('tr[data-study]').evaluateAll((trs) => trs.map((tr) => tr.dataset.study));
    await page.click('#next');
    await page.waitForSelector('#results[data-state="done"]');
    const second = await page.locator('tr[data-study]').evaluateAll((trs) => trs.map((tr) => tr.dataset.study));
    assert(second.length === 2 && second.every((u) => !firstPage.includes(u)), `page 2: ${second}`);
    assert(new URL(page.url()).searchParams.get('page') === '2' && await page.isDisabled('#next'), page.url());
    await page.reload();
    await page.waitForSelector('#results[data-state="done"]');
    assert((await page.locator('tr[data-study]').count()) === 2, 'reload keeps page 2');
    await page.click('#prev');
    await page.waitForSelector('#results[data-state="done"]');
    assert((await page.locator('tr[data-study]').count()) === 25, 'back to page 1');
  });
  // Headless Chromium here has only SwiftShader behind WebGL, so the viewer
  // draws with cornerstone's CPU path (tools.ts: renderBackend); the WebGL
  // path real GPUs take must render too.
  await check('renderer: CPU behind a software rasteriser; WebGL when asked renders the CT', async () => {
    const chosen = await page.getAttribute('html', 'data-render');
    assert(chosen === 'cpu', `renderer chosen on this machine: ${chosen}`);
    const gl = await context.newPage();
    gl.on('pageerror', (e) => pageErrors.push(String(e)));
    try {
      await gl.goto(`${base}/study/${studyUid}?render=webgl`);
      const st = await waitRendered(gl);
      assert((await gl.getAttribute('html', 'data-render')) === 'webgl', 'WebGL not used when asked');
      console.log(`    WebGL: lit ${(st.lit * 100).toFixed(1)} %, ${st.levels} grey levels; CPU (first image): lit ${(first.lit * 100).toFixed(1)} %, ${first.levels} grey levels`);
      assert(Math.abs(st.lit - first.lit) < 0.05, 'WebGL and CPU show different images');
      const zoom = (await gl.textContent('.pane.active .overlay.br')).match(/[0-9.]+×/)?.[0];
      assert(zoom && zoom === firstZoom, `zoom overlay: WebGL ${zoom}, CPU ${firstZoom}`);
      await shot(gl, '18-webgl');
    } finally {
      await gl.close();
    }
  });
  await check('prior studies of the patient: listed, opened side by side, marked as prior', async () => {
    // A prior CT of the same patient a year earlier: every fourth slice of
    // the generated study under other Study/Series UIDs (its Frame of
    // Reference UID starts with the Study UID and changes with it).
    const ct = manifest.studies.find((st) => st.modality === 'CT');
    const bump = (uid, d) => uid.slice(0, -1) + String((Number(uid.at(-1)) + d) % 10);
    const [priorStudy, priorSeries] = [bump(ct.study_uid, 8), bump(ct.series_uid, 6)];
    const priorDir = path.join(work, 'prior');
    fs.mkdirSync(priorDir);
    const files = ctFiles.filter((_, i) => i % 4 === 0).map((f) => {
      let b = replaceAll(fs.readFileSync(f), ct.study_uid, priorStudy);
      b = replaceAll(b, ct.series_uid, priorSeries);
      b = replaceAll(b, ct.study_date, `${Number(ct.study_date.slice(0, 4)) - 1}${ct.study_date.slice(4)}`);
      const out = path.join(priorDir, path.basename(f));
      fs.writeFileSync(out, b);
      return out;
    });
    // Another hospital's patient with the same Patient ID (another issuer,
    // PS3.3 C.7.1.1): must not be offered as a prior.
    const other = path.join(priorDir, 'other-issuer.dcm');
    execFileSync(PYTHON, ['-c', [
      'import sys, numpy as np',
      'from pydicom.dataset import Dataset, FileMetaDataset',
      'from pydicom.uid import ExplicitVRLittleEndian, generate_uid',
      'ds = Dataset(); ds.file_meta = FileMetaDataset()',
      'ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian',
      'ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"',
      'ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["other-issuer"])',
      'ds.StudyInstanceUID = generate_uid(entropy_srcs=["other-issuer", "study"])',
      'ds.SeriesInstanceUID = generate_uid(entropy_srcs=["other-issuer", "series"])',
      'ds.PatientID, ds.IssuerOfPatientID, ds.PatientName = sys.argv[2], "OTHER-HOSPITAL", "Other^Person"',
      'ds.StudyDate, ds.Modality = "20230101", "OT"',
      'ds.Rows = ds.Columns = 16; ds.SamplesPerPixel = 1; ds.PhotometricInterpretation = "MONOCHROME2"',
      'ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0',
      'ds.PixelData = np.arange(256, dtype=np.uint8).tobytes()',
      'ds.save_as(sys.argv[1], enforce_file_format=True)',
    ].join('\n'), other, patientId], { stdio: ['ignore', 'ignore', 'inherit'] });
    await stow(base, [...files, other]);
    await page.goto(`${base}/study/${studyUid}`);
    await waitRendered(page);
    await page.waitForSelector('.priors[data-state="done"]');
    const heads = await page.locator('.priors .prior').count();
    assert(heads === 1, `${heads} priors listed (the other issuer's study must not be)`);
    const year = String(Number(ct.study_date.slice(0, 4)) - 1);
    const head = page.locator(`.prior[data-study="${priorStudy}"] .prior-head`);
    assert((await head.textContent()).includes(year), `prior head: ${await head.textContent()}`);
    await head.click();
    const item = page.locator(`.prior[data-study="${priorStudy}"] .series-item[data-series="${priorSeries}"]`);
    await item.waitFor({ timeout: 5000 });
    await page.click('#layout-2x1');
    await page.waitForFunction(() => document.querySelectorAll('.pane .vp canvas').length === 2, null, { timeout: 10000 });
    const b = await page.locator('.pane[data-pane="1"]').boundingBox();
    await page.mouse.click(b.x + b.width / 2, b.y + b.height / 2);
    await item.click();
    await page.waitForFunction(() => document.querySelector('.pane[data-pane="1"] .overlay.br')?.textContent.includes('1/10'), null, { timeout: 10000 });
    await waitRendered(page, '.pane[data-pane="1"] .vp canvas');
    const tr1 = await page.textContent('.pane[data-pane="1"] .overlay.tr');
    const tr0 = await page.textContent('.pane[data-pane="0"] .overlay.tr');
    console.log(`    pane 0: ${tr0.replace(/\n/g, ' | ')}; pane 1: ${tr1.replace(/\n/g, ' | ')}`);
    assert(tr1.includes('PRIOR') && tr1.includes(year), `prior pane overlay: ${tr1}`);
    assert(!tr0.includes('PRIOR') && !tr0.includes(year), `current pane overlay: ${tr0}`);
    await shot(page, '20-prior');
    // The tag browser of the prior pane reads the prior's instance.
    await page.keyboard.press('t');
    await page.waitForSelector('#tags-panel[data-state="done"]');
    const shown = await page.locator('#tags-panel tr[data-tag="(0020,000D)"] td.tag-value').textContent();
    assert(shown === priorStudy, `tag browser shows study ${shown}`);
    await page.keyboard.press('t');
    await page.click('#layout-1x1');
  });
  await check('every compressed transfer syntax decodes in the browser, as the server renders it', async () => {
    // tests/e2e/samples.py: pydicom's samples (JPEG baseline, 12-bit extended,
    // lossless SV1, JPEG-LS lossless and near-lossless, JPEG 2000 lossless and
    // lossy, RLE) and an HTJ2K instance made with OpenJPH, one study each.
    const listing = JSON.parse(execFileSync(PYTHON, [path.join(ROOT, 'tests/e2e/samples.py'), path.join(work, 'codecs')],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }));
    await stow(base, Object.values(listing).map((s) => s.path));
    const failures = [];
    for (const [name, s] of Object.entries(listing)) {
      const frames = [];
      const seen = (r) => {
        const u = new URL(r.url());
        if (u.pathname.startsWith(`/dicomweb/studies/${s.study}/`) && /\/frames\/1$/.test(u.pathname)) {
          frames.push({ path: u.pathname, type: r.headers()['content-type'] ?? '' });
        }
      };
      page.on('response', seen);
      try {
        await page.goto(`${base}/study/${s.study}`);
        // Some samples are colour bars with a few values: lit is enough here,
        // the correlation below judges the pixels.
        await page.waitForFunction(() => window.__viewer?.state.ready === true, null, { timeout: 20000 });
        assert((await canvasStats(page)).lit > 0.01, 'nothing drawn');
        assert(frames.length > 0, 'no frame request seen');
        // Sent as stored (the browser decodes), not transcoded by the server;
        // but a JPEG labelled RGB comes decoded by the server (viewport.ts).
        const decoded = name === 'jpeg-rgb-no-transform';
        const media = decoded ? 'application/octet-stream' : { '1.2.840.10008.1.2.4.50': 'image/jpeg', '1.2.840.10008.1.2.4.51': 'image/jpeg', '1.2.840.10008.1.2.4.70': 'image/jpeg',
          '1.2.840.10008.1.2.4.80': 'image/jls', '1.2.840.10008.1.2.4.81': 'image/jls', '1.2.840.10008.1.2.4.90': 'image/jp2',
          '1.2.840.10008.1.2.4.91': 'image/jp2', '1.2.840.10008.1.2.4.201': 'image/jphc', '1.2.840.10008.1.2.5': 'image/x-dicom-rle' }[s.ts];
        assert(frames[0].type.includes(`type="${media}"`), `frame sent as ${frames[0].type}, expected ${media}`);
        // The canvas against the server's own rendering of the frame (PNG), both
        // scaled to 48x48: a wrong decode does not correlate.
        const cmp = await page.evaluate(async (url) => {
          const canvas = document.querySelector('.pane.active .vp canvas');
          const scale = canvas.width / canvas.clientWidth;
          const res = await fetch(url, { headers: { Accept: 'image/png' } });
          if (!res.ok) throw new Error(`rendered: ${res.status}`);
          const img = await createImageBitmap(await res.blob());
          const [p0, p1] = [[0, 0], [img.width, img.height]].map((p) => window.__viewer.imageToCanvas(p));
          const N = 48;
          const rgb = [];
          const grab = (src, sx, sy, sw, sh) => {
            const t = document.createElement('canvas');
            t.width = N; t.height = N;
            const ctx = t.getContext('2d');
            ctx.drawImage(src, sx, sy, sw, sh, 0, 0, N, N);
            const d = ctx.getImageData(0, 0, N, N).data;
            rgb.push(d);
            const g = [];
            for (let i = 0; i < d.length; i += 4) g.push((d[i] + d[i + 1] + d[i + 2]) / 3);
            return g;
          };
          const a = grab(canvas, p0[0] * scale, p0[1] * scale, (p1[0] - p0[0]) * scale, (p1[1] - p0[1]) * scale);
          const b = grab(img, 0, 0, img.width, img.height);
          // Colour: the mean difference per channel (a YCbCr/RGB mix-up is large).
          let dc = 0;
          for (let i = 0; i < rgb[0].length; i += 4) {
            for (let c = 0; c < 3; c++) dc += Math.abs(rgb[0][i + c] - rgb[1][i + c]);
          }
          const colour = dc / ((rgb[0].length / 4) * 3);
          const mean = (x) => x.reduce((s, v) => s + v, 0) / x.length;
          const [ma, mb] = [mean(a), mean(b)];
          let sab = 0, saa = 0, sbb = 0;
          for (let i = 0; i < a.length; i++) {
            sab += (a[i] - ma) * (b[i] - mb); saa += (a[i] - ma) ** 2; sbb += (b[i] - mb) ** 2;
          }
          return { r: sab / Math.sqrt(saa * sbb), colour };
        }, `${frames[0].path}/rendered`);
        const { r, colour } = cmp;
        console.log(`    ${name} (${s.ts}): ${media}, correlation with the server's rendering ${r.toFixed(3)}, colour difference ${colour.toFixed(1)}`);
        if (decoded) {
          // A near-uniform white image (244 ± 1): correlation says nothing; taken
          // for YCbCr it would show magenta (about 255, 121, 255), a difference near 45.
          assert(colour < 12, `colour difference ${colour.toFixed(1)} (of 255)`);
        } else {
          assert(r > 0.9, `correlation ${r.toFixed(3)}`);
        }
        await shot(page, `19-codec-${name}`);
      } catch (e) {
        failures.push(`${name}: ${String(e.message).split('\n')[0]}`);
      } finally {
        page.off('response', seen);
      }
    }
    assert(failures.length === 0, failures.join('; '));
  });
  await check('no page errors', async () => {
    assert(pageErrors.length === 0, pageErrors.join('\n'));
  });
} catch (e) {
  counts.failed++;
  console.log(`FAIL setup: ${e?.stack || e}`);
} finally {
  if (browser) await browser.close().catch(() => {});
  if (server) {
    server.proc.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
  }
  emr?.srv.close();
  fs.rmSync(work, { recursive: true, force: true });
}
console.log(`${counts.passed} passed, ${counts.failed} failed`);
process.exit(counts.failed ? 1 : 0);
