// What the browser tests (tests/e2e, tests/ohif) share: PASS/FAIL checks,
// a real `phim serve` on a free loopback port, STOW and QIDO over fetch.
// Plain Node (no dependencies), imported by relative path.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

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
