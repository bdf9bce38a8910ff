"""WADO-RS at study/series/instance level, metadata levels, error statuses, QIDO-RS filters
and paging, on a small synthetic data set: one patient, one study with two series of two
instances each, plus one instance stored in Implicit VR Little Endian."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian

from phim_helpers import (
    ACCEPT_DICOM,
    ACCEPT_DICOM_ANY_TS,
    DICOM_JSON,
    Instance,
    assert_instance_bytes,
    encode,
    instance_path,
    jvalue,
    make_dataset,
    metadata,
    parse_content_type,
    qido,
    response_parts,
    stow,
    uid_for,
)

PATIENT = "PID-WADO-QIDO"


@dataclass
class Data:
    study: str
    series: list[str]
    instances: list[Instance]
    implicit: Instance

    def in_series(self, series: str) -> list[Instance]:
        return [i for i in self.instances if i.series == series]


@pytest.fixture(scope="module")
def data(server) -> Data:
    study = uid_for("wado-qido", "study")
    series = [uid_for("wado-qido", f"series-{s}") for s in range(2)]
    insts = [
        Instance.make(f"wado-qido/{s}-{n}", study_uid=study, series_uid=series[s], patient_id=PATIENT,
                      instance_number=n + 1)
        for s in range(2)
        for n in range(2)
    ]
    ds = make_dataset("wado-qido/implicit", patient_id="PID-WADO-IMPLICIT")
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    data = encode(ds)
    implicit = Instance(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID),
                        str(ds.SOPClassUID), data, ds)
    res = stow(server, [i.data for i in insts] + [implicit.data])
    assert res.status == 200, res.describe()
    return Data(study, series, insts, implicit)


def _retrieve(server, path: str, accept: str = ACCEPT_DICOM_ANY_TS):
    return server.get(path, headers={"Accept": accept})


def test_wado_study_level(server, data):
    r = _retrieve(server, f"/dicomweb/studies/{data.study}")
    assert r.status_code == 200, r.text[:200]
    got = sorted(p.content for p in response_parts(r))
    assert got == sorted(i.data for i in data.instances)


def test_wado_series_level(server, data):
    for series in data.series:
        r = _retrieve(server, f"/dicomweb/studies/{data.study}/series/{series}")
        assert r.status_code == 200, r.text[:200]
        got = sorted(p.content for p in response_parts(r))
        assert got == sorted(i.data for i in data.in_series(series))


def test_metadata_levels(server, data):
    md = metadata(server, f"/dicomweb/studies/{data.study}")
    assert sorted(jvalue(m, "00080018") for m in md) == sorted(i.sop for i in data.instances)
    md = metadata(server, f"/dicomweb/studies/{data.study}/series/{data.series[0]}")
    assert sorted(jvalue(m, "00080018") for m in md) == sorted(i.sop for i in data.in_series(data.series[0]))
    inst = data.instances[0]
    md = metadata(server, instance_path(inst.study, inst.series, inst.sop))
    assert len(md) == 1 and jvalue(md[0], "00080018") == inst.sop
    assert jvalue(md[0], "00100020") == PATIENT
    assert jvalue(md[0], "00100010") == {"Alphabetic": "Test^Patient"}
    assert md[0]["00280010"] == {"vr": "US", "Value": [32]}
    assert md[0]["00200013"] == {"vr": "IS", "Value": [1]}
    assert md[0]["00080090"] == {"vr": "PN"}, "empty value must have only 'vr'"
    assert set(md[0]["00091001"]) == {"vr", "InlineBinary"}
    assert "BulkDataURI" in md[0]["7FE00010"]
    assert not [k for k in md[0] if k.startswith("0002")]


def test_wado_without_transfer_syntax_param(server, data):
    """Without transfer-syntax the default is Explicit VR Little Endian
    (PS3.18 §8.7.3.5.2): such instances come back as stored, others are
    transcoded; transfer-syntax=* gets every instance as stored."""
    inst = data.instances[0]
    r = _retrieve(server, instance_path(inst.study, inst.series, inst.sop), ACCEPT_DICOM)
    assert r.status_code == 200, r.text[:200]
    assert [p.content for p in response_parts(r)] == [inst.data]
    imp = data.implicit
    r = _retrieve(server, instance_path(imp.study, imp.series, imp.sop), ACCEPT_DICOM)
    assert r.status_code == 200, r.text[:200]
    (part,) = response_parts(r)
    assert "transfer-syntax=1.2.840.10008.1.2.1" in part.content_type
    out = pydicom.dcmread(io.BytesIO(part.content))
    assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    original = pydicom.dcmread(io.BytesIO(imp.data))
    assert out.PatientID == original.PatientID and out.PixelData == original.PixelData
    # ... and with transfer-syntax=* it comes back as stored.
    assert_instance_bytes(server, imp.study, imp.series, imp.sop, imp.data)


def test_wado_unsupported_accept(server, data):
    inst = data.instances[0]
    r = _retrieve(server, instance_path(inst.study, inst.series, inst.sop), "application/x-phim-unknown")
    assert r.status_code == 406, r.status_code


def test_wado_unknown_uids(server, data):
    inst = data.instances[0]
    unknown = uid_for("wado-qido", "unknown")
    for path in (
        f"/dicomweb/studies/{unknown}",
        f"/dicomweb/studies/{inst.study}/series/{unknown}",
        instance_path(inst.study, inst.series, unknown),
        instance_path(inst.study, unknown, inst.sop),
        f"/dicomweb/studies/{unknown}/metadata",
        instance_path(inst.study, inst.series, unknown) + "/metadata",
    ):
        r = server.get(path, headers={"Accept": ACCEPT_DICOM_ANY_TS if not path.endswith("metadata") else DICOM_JSON})
        assert r.status_code == 404, f"{path}: HTTP {r.status_code}"


def test_wado_malformed_uids(server, data):
    inst = data.instances[0]
    bad = "1.2.abc"
    for path in (
        f"/dicomweb/studies/{bad}",
        f"/dicomweb/studies/{inst.study}/series/{bad}",
        instance_path(inst.study, inst.series, bad),
        f"/dicomweb/studies/{bad}/metadata",
    ):
        r = server.get(path, headers={"Accept": ACCEPT_DICOM_ANY_TS if not path.endswith("metadata") else DICOM_JSON})
        assert r.status_code == 400, f"{path}: HTTP {r.status_code}"


def test_qido_filters(server, data):
    hits = qido(server, "/dicomweb/studies", {"PatientID": PATIENT})
    assert [jvalue(h, "0020000D") for h in hits] == [data.study]
    hits = qido(server, "/dicomweb/studies", {"StudyInstanceUID": data.study})
    assert [jvalue(h, "0020000D") for h in hits] == [data.study]
    assert jvalue(hits[0], "00100020") == PATIENT

    hits = qido(server, "/dicomweb/series", {"StudyInstanceUID": data.study})
    assert sorted(jvalue(h, "0020000E") for h in hits) == sorted(data.series)
    hits = qido(server, f"/dicomweb/studies/{data.study}/series")
    assert sorted(jvalue(h, "0020000E") for h in hits) == sorted(data.series)
    hits = qido(server, "/dicomweb/series", {"SeriesInstanceUID": data.series[1]})
    assert [jvalue(h, "0020000E") for h in hits] == [data.series[1]]

    s0 = data.series[0]
    hits = qido(server, f"/dicomweb/studies/{data.study}/series/{s0}/instances")
    assert sorted(jvalue(h, "00080018") for h in hits) == sorted(i.sop for i in data.in_series(s0))
    one = data.instances[3]
    hits = qido(server, "/dicomweb/instances", {"SOPInstanceUID": one.sop})
    assert [jvalue(h, "00080018") for h in hits] == [one.sop]
    assert jvalue(hits[0], "0020000D") == data.study and jvalue(hits[0], "0020000E") == one.series


def test_qido_paging(server, data):
    params = {"StudyInstanceUID": data.study}
    everything = qido(server, "/dicomweb/instances", params)
    assert len(everything) == 4
    pages = [qido(server, "/dicomweb/instances", {**params, "limit": 2, "offset": off}) for off in (0, 2, 4)]
    assert [len(p) for p in pages] == [2, 2, 0]
    paged = [jvalue(h, "00080018") for p in pages for h in p]
    assert sorted(paged) == sorted(i.sop for i in data.instances), "pages overlap or miss instances"
    assert len(qido(server, "/dicomweb/instances", {**params, "limit": 1, "offset": 3})) == 1


def test_qido_no_match(server, data):
    assert qido(server, "/dicomweb/studies", {"PatientID": "PID-NOBODY"}) == []
    assert qido(server, "/dicomweb/instances", {"SOPInstanceUID": uid_for("wado-qido", "nothing")}) == []


def test_health_endpoints(server):
    assert server.get("/healthz").status_code == 200
    assert server.get("/readyz").status_code == 200


def test_metadata_content_type(server, data):
    inst = data.instances[0]
    r = server.get(instance_path(inst.study, inst.series, inst.sop) + "/metadata", headers={"Accept": DICOM_JSON})
    assert parse_content_type(r.headers.get("Content-Type"))[0] == DICOM_JSON


def test_pixel_resources_answer_for_themselves(server):
    """WADO-URI and rendered resources answer with their own statuses for
    unknown objects, never with the viewer's page."""
    r = server.get("/wado", params={"requestType": "WADO"})
    assert r.status_code == 400 and "text/html" not in r.headers["Content-Type"]
    r = server.get("/dicomweb/studies/1.2.3/rendered")
    assert r.status_code == 404 and "text/html" not in r.headers["Content-Type"]
    assert server.get("/dicomweb/studies/1.2.3/thumbnail").status_code == 404
