"""The production shape on loopback, for the cluster tests: a 3-node Garage cluster (a real
distributed S3 store, replication factor 3, one zone per node) and HAProxy in front of it and
in front of the Phim servers, each started and stopped by the test, each listening on 127.0.0.1;
and the storing clients of the fault tests (`Ingest`).

Garage's binary comes from scripts/services/garage-install.sh (PHIM_GARAGE_BIN); HAProxy is
Debian's (`make test` installs both)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from phim_helpers import Instance, encode_multipart, parse_stow_response, uid_for

CLIENTS = 4


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def wait_port(port: int, what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if port_answers(port):
            return
        time.sleep(0.1)
    pytest.fail(f"{what} did not listen on 127.0.0.1:{port} within {within:.0f} s", pytrace=False)


class GarageCluster:
    """Three Garage nodes on loopback with one bucket and one key."""

    BUCKET = "phim-cluster"
    REGION = "us-east-1"

    def __init__(self, root: Path, nodes: int = 3):
        self.bin = os.environ.get("PHIM_GARAGE_BIN")
        if not self.bin or not os.access(self.bin, os.X_OK):
            pytest.fail("PHIM_GARAGE_BIN is not set to a garage binary "
                        "(scripts/test.sh gets one from scripts/services/garage-install.sh)", pytrace=False)
        self.root = root
        self.n = nodes
        self.secret = secrets.token_hex(32)
        self.access_key = "GK" + secrets.token_hex(12)
        self.secret_key = secrets.token_hex(32)
        self.s3_ports = [free_port() for _ in range(nodes)]
        self.rpc_ports = [free_port() for _ in range(nodes)]
        self.procs: list[subprocess.Popen | None] = [None] * nodes
        # Node ids (`<hex>@127.0.0.1:<rpc port>`), known after the first start; then every
        # config lists the other nodes as bootstrap peers, so that nodes restarted together
        # (the whole store down) find each other again.
        self.ids: list[str] = []

    def config(self, i: int) -> Path:
        return self.root / f"node{i + 1}" / "garage.toml"

    def write_config(self, i: int) -> None:
        d = self.root / f"node{i + 1}"
        (d / "meta").mkdir(parents=True, exist_ok=True)
        (d / "data").mkdir(parents=True, exist_ok=True)
        self.config(i).write_text(f"""
metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "lmdb"
replication_factor = {self.n}
compression_level = "none"
rpc_bind_addr = "127.0.0.1:{self.rpc_ports[i]}"
rpc_public_addr = "127.0.0.1:{self.rpc_ports[i]}"
rpc_secret = "{self.secret}"
bootstrap_peers = [{", ".join(f'"{p}"' for j, p in enumerate(self.ids) if j != i)}]

[s3_api]
s3_region = "{self.REGION}"
api_bind_addr = "127.0.0.1:{self.s3_ports[i]}"
root_domain = ".s3.localhost"
""")

    def cli(self, i: int, *args: str, timeout: float = 30) -> str:
        cp = subprocess.run([self.bin, "-c", str(self.config(i)), *args], capture_output=True,
                            timeout=timeout, env={**os.environ, "RUST_LOG": "warn"})
        if cp.returncode != 0:
            raise RuntimeError(f"garage {' '.join(args)}: {cp.stderr.decode()[-2000:]}")
        return cp.stdout.decode()

    def start_node(self, i: int) -> None:
        log = open(self.root / f"node{i + 1}.log", "ab")
        self.procs[i] = subprocess.Popen([self.bin, "-c", str(self.config(i)), "server"],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "RUST_LOG": "warn"})
        wait_port(self.s3_ports[i], f"garage node {i + 1}")

    def kill_node(self, i: int) -> None:
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()
        self.procs[i] = None

    def start(self) -> "GarageCluster":
        for i in range(self.n):
            self.write_config(i)
            self.start_node(i)
        ids = [self.cli(i, "node", "id", "-q").strip() for i in range(self.n)]
        self.ids = ids
        for i in range(self.n):
            self.write_config(i)  # read at the next start of each node
        for node_id in ids[1:]:
            self.retry(lambda nid=node_id: self.cli(0, "node", "connect", nid))
        for i, node_id in enumerate(ids):
            self.retry(lambda i=i, nid=node_id: self.cli(0, "layout", "assign", "-z", f"dc{i + 1}", "-c", "1G",
                                                         nid.split("@")[0]))
        self.retry(lambda: self.cli(0, "layout", "apply", "--version", "1"))
        self.retry(lambda: self.cli(0, "key", "import", "--yes", "-n", "phim", self.access_key, self.secret_key))
        self.retry(lambda: self.cli(0, "bucket", "create", self.BUCKET))
        self.retry(lambda: self.cli(0, "bucket", "allow", "--read", "--write", "--owner", self.BUCKET,
                                    "--key", self.access_key))
        return self

    @staticmethod
    def retry(step, within: float = 20.0):
        deadline = time.monotonic() + within
        while True:
            try:
                return step()
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def healthy_nodes(self) -> int:
        """Rows of the HEALTHY NODES table of `garage status`."""
        out = self.cli(0, "status")
        section = out.split("HEALTHY NODES", 1)[-1].split("====", 2)
        rows = section[1] if len(section) > 1 else section[0]
        return sum(1 for line in rows.splitlines() if "127.0.0.1:" in line)

    def stop(self) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.terminate()
        for i, p in enumerate(self.procs):
            if p is not None:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            self.procs[i] = None


class HAProxy:
    """Debian's haproxy in the foreground with a config written by the test: HTTP round robin
    with health checks (`/readyz` for Phim servers, a TCP connect for Garage nodes), and
    connection failures retried on another server."""

    def __init__(self, root: Path, name: str):
        self.bin = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not os.access(self.bin, os.X_OK):
            pytest.fail("haproxy is not installed (scripts/test.sh installs Debian's haproxy)", pytrace=False)
        self.root = root
        self.name = name
        self.port = free_port()
        self.cfg = root / f"{name}.cfg"
        self.proc: subprocess.Popen | None = None

    def start(self, servers: list[str], health: str | None) -> "HAProxy":
        check = (f"    option httpchk GET {health}\n    http-check expect status 200\n" if health else "")
        lines = "\n".join(f"    server s{i + 1} {addr} check" for i, addr in enumerate(servers))
        self.cfg.write_text(f"""global
    maxconn 2000

defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout http-request 30s
    option redispatch
    retries 3
    retry-on conn-failure empty-response

frontend {self.name}
    bind 127.0.0.1:{self.port}
    default_backend {self.name}_servers

backend {self.name}_servers
    balance roundrobin
{check}    default-server inter 500ms fall 2 rise 2
{lines}
""")
        cp = subprocess.run([self.bin, "-c", "-f", str(self.cfg)], capture_output=True)
        assert cp.returncode == 0, cp.stdout.decode() + cp.stderr.decode()
        log = open(self.root / f"{self.name}.log", "ab")
        self.proc = subprocess.Popen([self.bin, "-db", "-f", str(self.cfg)], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port, f"haproxy {self.name}")
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Ingest:
    """CLIENTS threads, each storing its own instances one STOW at a time to `target` (a
    balancer or a server: anything with `url(path)`) until stopped, retrying each until it is
    acknowledged, as a modality does: at most `attempts` times, 0.3 s apart. Failed attempts
    are kept as `HTTP <status>`, `409 [<Failure Reasons>]` or the client error's name."""

    def __init__(self, target, label: str, attempts: int = 40):
        self.lb = target
        self.attempts = attempts
        self.label = label
        self.study = uid_for(label, "study")
        self.stop_flag = threading.Event()
        self.acked: list[Instance] = []
        self.failed_attempts: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, args=(c,), daemon=True) for c in range(CLIENTS)]

    def client(self, c: int) -> None:
        http = requests.Session()
        n = 0
        while not self.stop_flag.is_set():
            n += 1
            inst = Instance.make(f"{self.label}/{c}/{n}", study_uid=self.study,
                                 series_uid=uid_for(self.label, f"series-{c}"), instance_number=n)
            body, ct = encode_multipart([inst.data])
            for _ in range(self.attempts):
                try:
                    r = http.post(self.lb.url("/dicomweb/studies"), data=body, timeout=60,
                                  headers={"Content-Type": ct, "Accept": "application/dicom+json"})
                    if r.status_code == 200 and inst.sop in parse_stow_response(r).referenced_uids():
                        with self.lock:
                            self.acked.append(inst)
                        break
                    why = f"HTTP {r.status_code}"
                    if r.status_code == 409:
                        why = f"409 {sorted({f.failure_reason for f in parse_stow_response(r).failed})}"
                except requests.RequestException as e:
                    why = type(e).__name__
                with self.lock:
                    self.failed_attempts.append(why)
                time.sleep(0.3)
            else:
                with self.lock:
                    self.failed_attempts.append(f"gave up on {inst.sop}")

    def __enter__(self) -> "Ingest":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=120)

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def summary(self) -> str:
        with self.lock:
            failed = {f: self.failed_attempts.count(f) for f in set(self.failed_attempts)}
            return f"{self.label}: {len(self.acked)} acknowledged, failed attempts {failed}"


def assert_all_retrievable(target, insts: list[Instance]) -> None:
    for inst in insts:
        r = target.get(f"/dicomweb/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}",
                       headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        assert r.status_code == 200, f"{inst.sop}: HTTP {r.status_code}"
        assert inst.data in r.content, f"{inst.sop}: not byte-identical"
