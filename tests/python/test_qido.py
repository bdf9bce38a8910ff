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


def test_results_carry_their_upper_levels(server, archive):
    """PS3.18 §10.6.3.3.1 (Tables 10.6.3-3 to -5): all series return their study's attributes,
    a study's instances their series' attributes, all instances both; a fixed study or series
    in the path is not repeated (but harms nothing)."""
    s = archive[1]
    study_attrs = {"00100010": s.ds.PatientName, "00100020": s.ds.PatientID, "00080020": s.ds.StudyDate,
                   "00080050": s.ds.AccessionNumber}

    def check_study(row):
        assert row["00100010"]["Value"][0]["Alphabetic"] == str(study_attrs["00100010"]), row
        for tag in ("00100020", "00080020", "00080050"):
            assert row[tag]["Value"] == [study_attrs[tag]], (tag, row)
        assert row["00201208"]["Value"] == [1] and row["00080061"]["Value"] == ["MR"], row

    def check_series(row):
        assert row["00080060"]["Value"] == ["MR"] and row["00200011"]["Value"] == [1], row
        assert row["00201209"]["Value"] == [1], row

    [series] = qido(server, "/dicomweb/series", {"SeriesInstanceUID": s.series})
    check_study(series)
    assert series["00081190"]["Value"][0].endswith(f"/series/{s.series}"), "the series' own RetrieveURL"
    [inst] = qido(server, f"/dicomweb/studies/{s.study}/instances")
    check_series(inst)
    [inst] = qido(server, "/dicomweb/instances", {"SOPInstanceUID": s.sop})
    check_series(inst)
    check_study(inst)
    assert inst["00081190"]["Value"][0].endswith(f"/instances/{s.sop}"), "the instance's own RetrieveURL"
    # Many results at once: each with its own study.
    rows = qido(server, "/dicomweb/series", {"StudyDescription": f"Phim QIDO {server.profile}"})
    assert sorted(r["00100020"]["Value"][0] for r in rows) == sorted(i.ds.PatientID for i in archive)
    for r in rows:
        assert r["0020000D"]["Value"][0] in {i.study for i in archive}
