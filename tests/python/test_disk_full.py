"""A full disk (#13): the server's data folder (SQLite index, objects and spool on the
embedded profile; the spool on PostgreSQL + S3) is a small tmpfs, filled to the last byte
while four clients store. STOW-RS then fails each instance with Failure Reason A700 (out of
resources, try again later) and C-STORE with status A700, promptly; what was stored before stays
retrievable byte for byte; once space is freed, storing works again without a restart."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from cluster import Ingest, assert_all_retrievable
from phim_helpers import Instance, assert_instance_bytes, encode_multipart, stow
from test_emr import wait_for
from test_store_outage import c_store

SIZE = "24m"


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    cp = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0755", "tmpfs", str(mnt)],
                        capture_output=True)
    if cp.returncode != 0:
        pytest.fail(f"cannot mount a {SIZE} tmpfs at {mnt} (the test needs root): {cp.stderr.decode()}",
                    pytrace=False)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(disk: Path) -> Path:
    """Writes (or tops up) a filler file until the disk is full, to the last byte; returns it."""
    filler = disk / "filler"
    with open(filler, "ab", buffering=0) as f:
        for chunk in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass
    return filler


@pytest.mark.parametrize("profile", ["embedded", "pg_s3"])
def test_a_full_disk_refuses_cleanly_and_recovers(phim_factory, small_disk, profile):
    server = phim_factory.start(profile, name=f"disk-full-{profile}", data_dir=small_disk / "data")
    before = [Instance.make(f"disk-full/{profile}/before/{i}", rows=64, cols=64) for i in range(3)]
    assert stow(server, [i.data for i in before]).status == 200
    # Four clients store small instances all along, retrying (for minutes) what fails.
    with Ingest(server, f"disk-full/{profile}/clients", attempts=600) as ingest:
        wait_for("storing under way", lambda: ingest.count() >= 8, timeout=60)
        filler = fill(small_disk)
        time.sleep(1)  # the clients meet the full disk; what they had spooled is removed
        fill(small_disk)  # and the disk is full to the last byte again
        refuse_while_full(server, profile, before)
        filler.unlink()
        freed_at = ingest.count()
        wait_for("the clients to store again", lambda: ingest.count() >= freed_at + 8, timeout=90)
    print(ingest.summary())
    assert not [f for f in ingest.failed_attempts if f.startswith("gave up")], ingest.summary()
    assert ingest.failed_attempts, "no client saw the full disk"
    assert set(ingest.failed_attempts) <= {"409 [42752]"}, ingest.summary()
    assert_all_retrievable(server, ingest.acked)

    after = Instance.make(f"disk-full/{profile}/after")
    during = [Instance.make(f"disk-full/{profile}/during/{i}", rows=128, cols=128) for i in range(2)]
    res = stow(server, [after.data] + [d.data for d in during])
    assert res.status == 200 and len(res.referenced) == 3, res.describe()
    for i in [*before, after, *during]:
        assert_instance_bytes(server, i.study, i.series, i.sop, i.data)
    assert server.get("/readyz").status_code == 200


def refuse_while_full(server, profile: str, before: list[Instance]) -> None:
    """On the full disk: STOW 409 with A700 per instance and C-STORE A700, promptly; what was
    stored before is intact."""
    during = [Instance.make(f"disk-full/{profile}/during/{i}", rows=128, cols=128) for i in range(2)]
    body, ct = encode_multipart([d.data for d in during])
    started = time.monotonic()
    r = server.http.post(f"{server.dicomweb}/studies", data=body, timeout=60,
                         headers={"Content-Type": ct, "Accept": "application/dicom+json"})
    took = time.monotonic() - started
    assert took < 30, f"STOW took {took:.1f} s on a full disk"
    assert r.status_code == 409, (r.status_code, r.text[:300])
    failed = r.json()["00081198"]["Value"]
    assert len(failed) == 2, failed
    assert all(f["00081197"]["Value"] == [0xA700] for f in failed), failed
    assert c_store(server, Instance.make(f"disk-full/{profile}/cstore", rows=128, cols=128)) == 0xA700
    assert server.alive
    for i in before:
        assert_instance_bytes(server, i.study, i.series, i.sop, i.data)
