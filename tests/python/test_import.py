"""`phim import PATH…` into a data dir; a server started on that data dir then serves the files."""

from __future__ import annotations

import numpy as np

from phim_helpers import Instance, assert_instance_bytes, jvalue, qido, require_phim_bin, run_phim


def _import(phim_factory, data_dir, *paths):
    require_phim_bin()
    log = phim_factory.tmp / "import.log"
    cp = run_phim(["import", "--data-dir", str(data_dir), *map(str, paths)], log)
    return cp, log.read_text(errors="replace")


def test_import_folder_with_garbage(phim_factory, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    insts = [Instance.make(f"import/{i}", patient_id="PID-IMPORT") for i in range(3)]
    for n, inst in enumerate(insts):
        (folder / f"good{n}.dcm").write_bytes(inst.data)
    (folder / "garbage.dcm").write_bytes(np.random.default_rng(7).bytes(3000))

    data_dir = phim_factory.path("import-data")
    cp, out = _import(phim_factory, data_dir, folder)
    assert cp.returncode != 0, f"import of a folder with a garbage file must exit non-zero:\n{out[-3000:]}"

    srv = phim_factory.start("embedded", data_dir=data_dir, name="after-import")
    for inst in insts:
        assert_instance_bytes(srv, inst.study, inst.series, inst.sop, inst.data)
    hits = qido(srv, "/dicomweb/studies", {"PatientID": "PID-IMPORT"})
    assert sorted(jvalue(h, "0020000D") for h in hits) == sorted({i.study for i in insts})


def test_import_good_files_exit_zero(phim_factory, tmp_path):
    insts = [Instance.make(f"import-ok/{i}") for i in range(2)]
    paths = []
    for n, inst in enumerate(insts):
        p = tmp_path / f"ok{n}.dcm"
        p.write_bytes(inst.data)
        paths.append(p)
    data_dir = phim_factory.path("import-ok-data")
    cp, out = _import(phim_factory, data_dir, *paths)
    assert cp.returncode == 0, f"import of good files failed:\n{out[-3000:]}"
    # Importing the same files again is idempotent (identical bytes).
    cp, out = _import(phim_factory, data_dir, *paths)
    assert cp.returncode == 0, f"re-import of identical files failed:\n{out[-3000:]}"

    srv = phim_factory.start("embedded", data_dir=data_dir, name="after-import-ok")
    for inst in insts:
        assert_instance_bytes(srv, inst.study, inst.series, inst.sop, inst.data)


def test_import_recurses_into_subfolders(phim_factory, tmp_path):
    inst = Instance.make("import-nested/0")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    (nested / "IM0001").write_bytes(inst.data)  # no .dcm extension, as on many media
    data_dir = phim_factory.path("import-nested-data")
    cp, out = _import(phim_factory, data_dir, tmp_path / "a")
    assert cp.returncode == 0, out[-3000:]
    srv = phim_factory.start("embedded", data_dir=data_dir, name="after-import-nested")
    assert_instance_bytes(srv, inst.study, inst.series, inst.sop, inst.data)
