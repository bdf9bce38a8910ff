"""QIDO-RS matching over HTTP: names with diacritics (case- and, with
fuzzymatching, accent- and order-insensitive), wildcards, ranges, UID lists,
includefield, warnings for unsupported keys and 400 for unknown ones."""

from __future__ import annotations

import pytest

from phim_helpers import DICOM_JSON, Instance, encode, qido, stow

NAMES = ["Nguyễn^Văn An", "Nguyễn^Thị Bích", "Trần^Văn An", "Smith^John"]


@pytest.fixture(scope="module")
def archive(server):
    insts = []
    for i, name in enumerate(NAMES):
        inst = Instance.make(f"qido-{server.profile}-{i}", patient_name=name, patient_id=f"QIDO-{server.profile}-{i}",
                             modality=["CT", "MR", "CT", "US"][i])
        inst.ds.SpecificCharacterSet = "ISO_IR 192"
        inst.ds.StudyDate = f"2024010{i + 1}"
        inst.ds.StudyTime = "101500"
        inst.ds.AccessionNumber = f"QACC{i}"
        inst.ds.StudyDescription = f"Phim QIDO {server.profile}"
        inst.data = encode(inst.ds)
        insts.append(inst)
    res = stow(server, [i.data for i in insts])
    assert res.status == 200, res.describe()
    return insts


def names(rows):
    return sorted(r["00100010"]["Value"][0]["Alphabetic"] for r in rows)


def search(server, archive, **params):
    params.setdefault("StudyDescription", f"Phim QIDO {server.profile}")
    return qido(server, "/dicomweb/studies", params)


@pytest.mark.parametrize("query,fuzzy,expected", [
    ("nguyễn*", False, ["Nguyễn^Thị Bích", "Nguyễn^Văn An"]),
    ("NGUYỄN^VĂN AN", False, ["Nguyễn^Văn An"]),
    ("nguyen*", False, []),  # accents matter without fuzzymatching
    ("nguyen van an", True, ["Nguyễn^Văn An"]),
    ("NGUYEN^VAN^AN", True, ["Nguyễn^Văn An"]),
    ("Văn An", True, ["Nguyễn^Văn An", "Trần^Văn An"]),
    ("bich", True, ["Nguyễn^Thị Bích"]),
    ("*^John", False, ["Smith^John"]),
])
def test_person_name_matching(server, archive, query, fuzzy, expected):
    params = {"PatientName": query}
    if fuzzy:
        params["fuzzymatching"] = "true"
    assert names(search(server, archive, **params)) == expected


def test_ranges_lists_and_modalities(server, archive):
    assert names(search(server, archive, StudyDate="20240102-20240103")) == ["Nguyễn^Thị Bích", "Trần^Văn An"]
    assert names(search(server, archive, StudyDate="20240104-")) == ["Smith^John"]
    assert names(search(server, archive, ModalitiesInStudy="CT")) == ["Nguyễn^Văn An", "Trần^Văn An"]
    uids = f"{archive[0].study},{archive[3].study}"
    assert names(search(server, archive, StudyInstanceUID=uids)) == ["Nguyễn^Văn An", "Smith^John"]
    assert names(search(server, archive, **{"00080050": "QACC2"})) == ["Trần^Văn An"]


def test_newest_first_and_paging(server, archive):
    rows = search(server, archive, limit="2")
    assert [r["00080020"]["Value"][0] for r in rows] == ["20240104", "20240103"]
    r = server.get("/dicomweb/studies", params={"StudyDescription": f"Phim QIDO {server.profile}", "limit": "2"},
                   headers={"Accept": DICOM_JSON})
    assert "additional results" in r.headers.get("Warning", "")
    rows = search(server, archive, limit="2", offset="2")
    assert [r["00080020"]["Value"][0] for r in rows] == ["20240102", "20240101"]


def test_includefield_and_warnings(server, archive):
    r = server.get("/dicomweb/studies", params={"PatientID": archive[0].ds.PatientID,
                                                 "includefield": "00080070,InstitutionName"},
                   headers={"Accept": DICOM_JSON})
    assert r.status_code == 200
    r = server.get("/dicomweb/studies", params={"PatientID": archive[0].ds.PatientID, "includefield": "all"},
                   headers={"Accept": DICOM_JSON})
    assert r.status_code == 200 and r.json()[0]["00100020"]["Value"] == [archive[0].ds.PatientID]
    r = server.get("/dicomweb/studies", params={"ScanningSequence": "SE"}, headers={"Accept": DICOM_JSON})
    assert r.status_code == 200
    assert "not supported" in r.headers.get("Warning", "")
    r = server.get("/dicomweb/studies", params={"NotAnAttribute": "1"}, headers={"Accept": DICOM_JSON})
    assert r.status_code == 400 and "NotAnAttribute" in r.text
    r = server.get("/dicomweb/studies", params={"StudyDate": "2024-01"}, headers={"Accept": DICOM_JSON})
    assert r.status_code == 400 and "StudyDate" in r.text


def test_series_and_instances_levels(server, archive):
    s = archive[1]
    series = qido(server, "/dicomweb/series", {"PatientName": "nguyễn^thị*", "Modality": "MR"})
    assert [r["0020000E"]["Value"][0] for r in series] == [s.series]
    inst = qido(server, f"/dicomweb/studies/{s.study}/instances", {"SOPClassUID": s.sop_class})
    assert [r["00080018"]["Value"][0] for r in inst] == [s.sop]
