"""`phim fsck` (#13): objects that reached the store but not the index (a crash
between the two) are found, and with --repair indexed under the same key;
what cannot be indexed is kept and reported; recent objects are left to
ingests in flight. Orphans are made as a crash would leave them: files in
the filesystem store that no index row points at."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from phim_helpers import Instance, assert_instance_bytes, qido, run_phim, stow


def object_path(server, key: str):
    if server.profile == "embedded":
        return server.data_dir / "objects" / key
    # s3s-fs keeps each object as a file under its root.
    return os.path.join(os.environ["S3_DIR"], "root", server.store.env.s3_bucket, server.store.s3_prefix, key)


def plant(server, study: str, data: bytes, age_s: float) -> str:
    from pathlib import Path
    key = f"studies/{study}/{hashlib.sha256(data).hexdigest()[:32]}.dcm"
    path = Path(object_path(server, key))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    then = time.time() - age_s
    os.utime(path, (then, then))
    return key


def fsck(server, log, *extra):
    store = server.store.serve_args() if server.profile == "pg_s3" else []
    return run_phim(["fsck", "--data-dir", str(server.data_dir), *store, *extra], log)


@pytest.mark.parametrize("profile", ["embedded", "pg_s3"])
def test_fsck_finds_and_reindexes_orphans(phim_factory, tmp_path, profile):
    server = phim_factory.start(profile)
    stored = Instance.make("fsck-stored")
    stow(server, [stored.data])
    lost = Instance.make("fsck-lost")
    lost_key = plant(server, lost.study, lost.data, age_s=7200)
    junk_key = plant(server, "1.2.3.999", b"not an instance at all" * 10, age_s=7200)
    fresh = Instance.make("fsck-fresh")
    fresh_key = plant(server, fresh.study, fresh.data, age_s=0)

    cp = fsck(server, tmp_path / "report.log")
    out = cp.stdout.decode()
    assert cp.returncode == 1, out + cp.stderr.decode()
    assert f"ORPHAN {lost_key}" in out and f"ORPHAN {junk_key}" in out, out
    assert fresh_key not in out and "1 newer than --min-age left alone" in out, out
    assert "4 instance objects in the store, 1 indexed; 2 orphans" in out, out
    assert qido(server, "/dicomweb/studies", {"StudyInstanceUID": lost.study}) == []

    cp = fsck(server, tmp_path / "repair.log", "--repair")
    out = cp.stdout.decode()
    assert cp.returncode == 1, out  # the junk is kept, so not everything is indexed
    assert f"INDEXED {lost_key} as study {lost.study}" in out, out
    assert f"KEPT {junk_key}: cannot parse" in out, out
    assert "(1 indexed now, 1 kept)" in out, out
    # The lost instance is back in every answer, byte for byte.
    assert len(qido(server, "/dicomweb/studies", {"StudyInstanceUID": lost.study})) == 1
    assert_instance_bytes(server, lost.study, lost.series, lost.sop, lost.data)
    assert_instance_bytes(server, stored.study, stored.series, stored.sop, stored.data)
    assert os.path.isfile(object_path(server, junk_key))

    # With the junk gone, fsck is clean (the fresh one counts once old enough).
    os.unlink(object_path(server, junk_key))
    cp = fsck(server, tmp_path / "clean.log", "--min-age", "0", "--repair")
    out = cp.stdout.decode()
    assert cp.returncode == 0, out
    assert f"INDEXED {fresh_key}" in out, out
