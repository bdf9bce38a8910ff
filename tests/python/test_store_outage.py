"""The S3 store goes away and comes back (#13): STOW-RS during the outage
answers promptly with Failure Reason A700 (out of resources: try again) for
each instance instead of hanging, C-STORE answers A700 too, /readyz goes
unready, and everything works again once the store is back, with every
instance acknowledged before, during and after retrievable byte for byte.
The store is a private s3s-fs, killed and restarted on the same port and
files; the index is PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import re
import time
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import SecondaryCaptureImageStorage
from pydicom.uid import ExplicitVRLittleEndian

from phim_helpers import Instance, assert_instance_bytes, encode_multipart, stow


class PrivateS3:
    def __init__(self, root: Path, log: Path):
        self.bin = os.environ.get("PHIM_S3S_BIN")
        if not self.bin:
            pytest.fail("PHIM_S3S_BIN is not set (scripts/services/s3-start.sh prints it)", pytrace=False)
        self.root, self.log = root, log
        (root / "outage").mkdir(parents=True, exist_ok=True)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.bin, "--host", "127.0.0.1", "--port", str(self.port),
             "--access-key", os.environ["AWS_ACCESS_KEY_ID"], "--secret-key", os.environ["AWS_SECRET_ACCESS_KEY"],
             str(self.root)],
            stdin=subprocess.DEVNULL, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        self.kill()
        pytest.fail("the private s3s-fs did not start")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def wait_ready(server, want: int, within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if server.get("/readyz", timeout=30).status_code == want:
            return time.monotonic() - started
        time.sleep(0.3)
    pytest.fail(f"/readyz did not answer {want} within {within} s")


def c_store(server, inst: Instance) -> int:
    ae = AE(ae_title="OUTAGE")
    ae.add_requested_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate(*server.dicom_addr, ae_title="PHIM")
    assert assoc.is_established
    try:
        return assoc.send_c_store(inst.ds).Status
    finally:
        assoc.release()


@pytest.fixture
def private_s3(tmp_path):
    s3 = PrivateS3(tmp_path / "s3root", tmp_path / "s3s.log")
    s3.start()
    yield s3
    # Whatever the test did, no s3s-fs outlives it.
    if s3.proc and s3.proc.poll() is None:
        s3.kill()


def test_store_outage_fails_fast_and_recovers(phim_factory, private_s3):
    s3 = private_s3
    db = phim_factory.prod_store()
    server = phim_factory.start("embedded", extra_args=[
        "--database-url", db.database_url,
        "--store", "s3://outage/p", "--s3-endpoint", f"http://127.0.0.1:{s3.port}",
        "--s3-region", "us-east-1", "--allow-http", "--s3-retry-timeout", "3"])
    before = Instance.make("outage-before")
    assert len(stow(server, [before.data]).referenced) == 1

    s3.kill()
    during = [Instance.make(f"outage-during-{i}") for i in range(2)]
    started = time.monotonic()
    body, ct = encode_multipart([d.data for d in during])
    r = server.http.post(f"{server.dicomweb}/studies", data=body, headers={"Content-Type": ct}, timeout=60)
    took = time.monotonic() - started
    assert took < 30, f"STOW took {took:.1f} s during the outage"
    assert r.status_code == 409, (r.status_code, r.text[:300])
    failed = r.json()["00081198"]["Value"]
    assert len(failed) == 2
    assert all(f["00081197"]["Value"] == [0xA700] for f in failed), failed
    assert c_store(server, Instance.make("outage-cstore")) == 0xA700
    wait_ready(server, 503, within=30)

    s3.start()
    wait_ready(server, 200, within=30)
    after = Instance.make("outage-after")
    assert len(stow(server, [after.data] + [d.data for d in during]).referenced) == 3
    for i in [before, after, *during]:
        assert_instance_bytes(server, i.study, i.series, i.sop, i.data)
    # The client's attempts are counted: the refused connections object_store retried, and
    # the successes before and after (a store that is starting may also answer 5xx: those
    # are server_error, counted but not asserted).
    metrics = server.get("/metrics").text
    count = lambda outcome: float(re.search(  # noqa: E731
        rf'^phim_store_http_requests_total{{outcome="{outcome}"}} (\S+)$', metrics, re.M).group(1))
    assert count("transport_error") >= 2 and count("success") >= 4, metrics[:2000]
