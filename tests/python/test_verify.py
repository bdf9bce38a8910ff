"""`phim verify` (#13): every stored object read back and hashed against the
SHA-256 the index recorded, on both profiles. The objects are changed and
removed behind Phim's back, on the filesystem store and in the S3 server's
own files (s3s-fs keeps each object as a file)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from phim_helpers import Instance, assert_instance_bytes, run_phim, stow


def object_path(server, inst: Instance) -> Path:
    """Where the store keeps an instance's object (the key is
    studies/{study}/{first 128 bits of the SHA-256}.dcm)."""
    key = f"studies/{inst.study}/{hashlib.sha256(inst.data).hexdigest()[:32]}.dcm"
    if server.profile == "embedded":
        return server.data_dir / "objects" / key
    root = os.environ.get("S3_DIR")
    if not root:
        pytest.fail("the pg_s3 profile of this test needs S3_DIR (set by scripts/services/s3-start.sh)",
                    pytrace=False)
    return Path(root) / "root" / server.store.env.s3_bucket / server.store.s3_prefix / key


def verify(server, log: Path):
    args = ["verify", "--data-dir", str(server.data_dir)]
    if server.profile == "pg_s3":
        args += server.store.serve_args()
    return run_phim(args, log)


@pytest.mark.parametrize("profile", ["embedded", "pg_s3"])
def test_verify_finds_changed_and_missing_objects(phim_factory, tmp_path, profile):
    server = phim_factory.start(profile)
    insts = [Instance.make(f"verify-{profile}-{i}") for i in range(3)]
    stow(server, [i.data for i in insts])

    cp = verify(server, tmp_path / "clean.log")
    out = cp.stdout.decode()
    assert cp.returncode == 0, out + cp.stderr.decode()
    assert "3 instances checked" in out and "all intact" in out

    changed, missing, intact = insts
    p = object_path(server, changed)
    assert p.is_file(), p
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one bit, same size
    p.write_bytes(bytes(raw))
    object_path(server, missing).unlink()

    cp = verify(server, tmp_path / "broken.log")
    out = cp.stdout.decode()
    assert cp.returncode == 1, out + cp.stderr.decode()
    lines = {l for l in out.splitlines() if l.startswith("NOT INTACT")}
    assert any(changed.sop in l and "content changed" in l for l in lines), out
    assert any(missing.sop in l and "object missing" in l for l in lines), out
    assert not any(intact.sop in l for l in lines), out
    assert "3 instances checked" in out and "2 not intact" in out
    # Verification changes nothing: the intact instance is served as stored.
    assert_instance_bytes(server, intact.study, intact.series, intact.sop, intact.data)


def test_verify_reports_a_changed_size(phim_factory, tmp_path):
    server = phim_factory.start("embedded")
    inst = Instance.make("verify-size")
    stow(server, [inst.data])
    p = object_path(server, inst)
    p.write_bytes(p.read_bytes() + b"\0\0")
    cp = verify(server, tmp_path / "size.log")
    out = cp.stdout.decode()
    assert cp.returncode == 1 and "size changed" in out and inst.sop in out, out
