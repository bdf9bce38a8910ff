"""Scale benchmark (#13): 1, 2 and 3 `phim serve` behind HAProxy on one PostgreSQL database and a
3-node Garage cluster (itself behind HAProxy), as tests/python/test_cluster.py runs them. For each
server count: STOW of the benchmark dataset with 8 clients, then WADO-RS (whole studies and single
instances) with 8 clients, all through the balancer; each run starts on a fresh database and key
prefix. Prints phim-load's lines, prefixed with the server count.

    bash benches/scale.sh          (builds, starts PostgreSQL, runs this with the test venv)

Environment: PHIM_BIN, PHIM_LOAD_BIN, PHIM_GARAGE_BIN, PHIM_TEST_DATABASE_URL, PHIM_BENCH_DATA,
SERVER_COUNTS ("1 2 3")."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

from cluster import GarageCluster, HAProxy  # noqa: E402
from phim_helpers import pg_create_database, pg_drop_database  # noqa: E402


def start_phim(bin_: str, work: Path, name: str, args: list[str], env: dict) -> tuple[subprocess.Popen, str]:
    log = work / f"{name}.log"
    proc = subprocess.Popen([bin_, "serve", "--listen", "127.0.0.1:0", "--dicom-listen", "off",
                             "--data-dir", str(work / f"{name}-data"), *args],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = re.search(r"listening on http://([0-9.]+:[0-9]+)", log.read_text(errors="replace"))
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"{name} did not start: {log.read_text(errors='replace')[-2000:]}")


def run(cmd: list[str], prefix: str) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        print(f"{prefix} {line}", flush=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr[-2000:]}")


def main() -> None:
    phim, load = os.environ["PHIM_BIN"], os.environ["PHIM_LOAD_BIN"]
    data = os.environ.get("PHIM_BENCH_DATA", "/tmp/phim-bench-data")
    counts = [int(n) for n in os.environ.get("SERVER_COUNTS", "1 2 3").split()]
    base_url = os.environ["PHIM_TEST_DATABASE_URL"]
    with tempfile.TemporaryDirectory(prefix="phim-scale.") as tmp:
        work = Path(tmp)
        garage = GarageCluster(work / "garage").start()
        s3_lb = HAProxy(work, "s3").start([f"127.0.0.1:{p}" for p in garage.s3_ports], health=None)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": garage.access_key,
               "AWS_SECRET_ACCESS_KEY": garage.secret_key, "PHIM_LOG": "warn,phim::server=info"}
        try:
            for n in counts:
                url, db = pg_create_database(base_url)
                store = ["--database-url", url, "--store", f"s3://{garage.BUCKET}/scale-{db}",
                         "--s3-endpoint", s3_lb.url, "--s3-region", garage.REGION, "--allow-http"]
                servers: list[tuple[subprocess.Popen, str]] = []
                lb = HAProxy(work, f"phim{n}")
                try:
                    for i in range(n):
                        servers.append(start_phim(phim, work, f"phim{n}-{i}", store, env))
                    lb.start([addr for _, addr in servers], health="/readyz")
                    time.sleep(2)  # the balancer's first health checks
                    dicomweb = f"{lb.url}/dicomweb"
                    run([load, "stow", "--url", dicomweb, "--dir", data, "--clients", "8",
                         "--label", f"{n}-servers"], f"[{n} servers]")
                    run([load, "wado", "--url", dicomweb, "--dir", data, "--clients", "8",
                         "--label", f"{n}-servers"], f"[{n} servers]")
                finally:
                    lb.stop()
                    for proc, _ in servers:
                        proc.terminate()
                        proc.wait(timeout=60)
                    pg_drop_database(base_url, db)
        finally:
            s3_lb.stop()
            garage.stop()


if __name__ == "__main__":
    main()
