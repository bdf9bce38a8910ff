"""Export (#12): a study, a series or an instance as a ZIP (`Accept: application/zip`,
PS3.18 §8.7.3), on both profiles: every stored object byte for byte, named like a
patient's CD, read back by Python's zipfile (which checks each entry's CRC-32)."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest

from phim_helpers import Instance, stow, uid_for

ZIP = {"Accept": "application/zip"}


@pytest.fixture(scope="module")
def exported(server):
    study = uid_for("export", server.profile, "study")
    insts = []
    for s, n in ((1, 3), (2, 2)):
        series = uid_for("export", server.profile, "series", str(s))
        for i in range(n):
            insts.append(Instance.make(f"export-{server.profile}-{s}-{i}", study_uid=study, series_uid=series,
                                       instance_number=i + 1, rows=256 if i == 0 else 32, cols=256 if i == 0 else 32))
            insts[-1].ds.SeriesNumber = s
    from phim_helpers import encode
    for inst in insts:
        inst.data = encode(inst.ds)
    res = stow(server, [i.data for i in insts])
    assert res.status == 200, res.describe()
    return study, insts


def read_zip(r) -> zipfile.ZipFile:
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(r.content))
    assert z.testzip() is None, "every entry's CRC-32 matches"
    return z


def test_study_as_zip(server, exported):
    study, insts = exported
    r = server.get(f"/dicomweb/studies/{study}", headers=ZIP)
    z = read_zip(r)
    assert f'filename="study-{study}.zip"' in r.headers["Content-Disposition"]
    names = z.namelist()
    assert names == ["DICOM/ST000001/SE000001/IM000001", "DICOM/ST000001/SE000001/IM000002",
                     "DICOM/ST000001/SE000001/IM000003", "DICOM/ST000001/SE000002/IM000001",
                     "DICOM/ST000001/SE000002/IM000002"], names
    # PS3.10 §8.5 / PS3.11: at most eight upper-case letters, digits and '_' per component.
    assert all(re.fullmatch(r"[A-Z0-9_]{1,8}(/[A-Z0-9_]{1,8})*", n) for n in names)
    assert sorted(z.read(n) for n in names) == sorted(i.data for i in insts)
    assert [z.read(n) for n in names] == [i.data for i in insts], "in series and instance order"


def test_series_and_instance_as_zip(server, exported):
    study, insts = exported
    second = [i for i in insts if i.series == insts[-1].series]
    z = read_zip(server.get(f"/dicomweb/studies/{study}/series/{second[0].series}", headers=ZIP))
    assert [z.read(n) for n in z.namelist()] == [i.data for i in second]
    one = insts[1]
    z = read_zip(server.get(f"/dicomweb/studies/{study}/series/{one.series}/instances/{one.sop}", headers=ZIP))
    assert z.namelist() == ["DICOM/ST000001/SE000001/IM000001"] and z.read(z.namelist()[0]) == one.data


def test_zip_negotiation(server, exported):
    study, insts = exported
    # As stored; naming the stored syntax (or *) is the same; another one is refused.
    ts = str(insts[0].ds.file_meta.TransferSyntaxUID)
    read_zip(server.get(f"/dicomweb/studies/{study}", headers={"Accept": f"application/zip; transfer-syntax={ts}"}))
    read_zip(server.get(f"/dicomweb/studies/{study}", headers={"Accept": "application/zip; transfer-syntax=*"}))
    r = server.get(f"/dicomweb/studies/{study}", headers={"Accept": "application/zip; transfer-syntax=1.2.840.10008.1.2.4.50"})
    assert r.status_code == 406
    assert "application/zip" in server.get(f"/dicomweb/studies/{study}", headers={"Accept": "text/plain"}).text
    assert server.get(f"/dicomweb/studies/{uid_for('export', 'missing')}", headers=ZIP).status_code == 404


def test_study_zip_with_dicomdir(server, exported, tmp_path):
    """`?dicomdir=true` (as patients' CDs carry one): pydicom's FileSet reads the DICOMDIR,
    follows its record offsets (PATIENT → STUDY → SERIES → IMAGE) to every file, and
    dcmtk's dcmdump parses it."""
    import subprocess

    import pydicom
    from pydicom.fileset import FileSet

    study, insts = exported
    z = read_zip(server.get(f"/dicomweb/studies/{study}", params={"dicomdir": "true"}, headers=ZIP))
    assert z.namelist()[0] == "DICOMDIR" and len(z.namelist()) == len(insts) + 1
    z.extractall(tmp_path)
    fs = FileSet(tmp_path / "DICOMDIR")
    assert len(fs) == len(insts)
    by_sop = {f.SOPInstanceUID: f for f in fs}
    for inst in insts:
        f = by_sop[inst.sop]
        assert Path(f.path).read_bytes() == inst.data
        assert f.TransferSyntaxUID == str(inst.ds.file_meta.TransferSyntaxUID)
    patient = fs.find(PatientID=str(insts[0].ds.PatientID))
    assert len(patient) == len(insts)
    series = {f.SeriesInstanceUID for f in fs}
    assert series == {i.series for i in insts}
    ds = pydicom.dcmread(tmp_path / "DICOMDIR")
    kinds = [r.DirectoryRecordType for r in ds.DirectoryRecordSequence]
    assert kinds == ["PATIENT", "STUDY", "SERIES", "IMAGE", "IMAGE", "IMAGE", "SERIES", "IMAGE", "IMAGE"], kinds
    study_rec = ds.DirectoryRecordSequence[1]
    assert study_rec.StudyInstanceUID == study and study_rec.StudyDate == "20240102"
    assert ds.DirectoryRecordSequence[2].Modality == "OT"
    r = subprocess.run(["dcmdump", "-q", str(tmp_path / "DICOMDIR")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "DirectoryRecordType" in r.stdout, r.stderr
    # Only with a ZIP.
    assert server.get(f"/dicomweb/studies/{study}", params={"dicomdir": "true"}).status_code == 406
    assert server.get(f"/dicomweb/studies/{study}", params={"dicomdir": "yes"}, headers=ZIP).status_code == 400
