"""FHIR R4 ImagingStudy over HTTP, on both profiles: read by Study Instance UID, search by
patient and identifier (accession number or study UID), searchset Bundles with paging, and
OperationOutcome errors. Each resource is checked for the elements R4 requires, the code
systems, and references that resolve to the contained Endpoint (Phim's DICOMweb root)."""

from __future__ import annotations

import re

import pytest

from phim_helpers import Instance, encode, stow, uid_for

FHIR_JSON = "application/fhir+json"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
# FHIR R4 dateTime (with a time, an offset is required).
FHIR_DATETIME = re.compile(
    r"^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2}))?)?)?$")


@pytest.fixture(scope="module", params=["embedded", "pg_s3"])
def fhir(request, module_factory):
    return module_factory.start(request.param, name=f"fhir-{request.param}", extra_args=["--timezone", "+07:00"])


@pytest.fixture(scope="module")
def studies(fhir):
    """Two studies of one patient (CT with two series, MR) and one of another patient."""
    p = fhir.profile
    pid, other = f"FHIR-{p}-1", f"FHIR-{p}-2"
    out = {}
    specs = {
        "ct": (pid, f"FACC-{p}-CT", [("CT", 3), ("CT", 2)], "Nguyễn^Văn An", "20240102", "030405.25"),
        "mr": (pid, f"FACC-{p}-MR", [("MR", 1)], "Nguyễn^Văn An", "20240301", "1015"),
        "other": (other, f"FACC-{p}-X", [("US", 1)], "Smith^John", "20230101", ""),
    }
    files = []
    for key, (patient, acc, series, name, date, tm) in specs.items():
        study_uid = uid_for("fhir", p, key)
        insts = []
        for s, (modality, n) in enumerate(series):
            series_uid = uid_for("fhir", p, key, str(s))
            for i in range(n):
                inst = Instance.make(f"fhir-{p}-{key}-{s}-{i}", study_uid=study_uid, series_uid=series_uid,
                                     patient_id=patient, patient_name=name, instance_number=i + 1,
                                     modality=modality)
                inst.ds.AccessionNumber = acc
                inst.ds.SeriesNumber = s + 1
                inst.ds.StudyDate = date
                inst.ds.StudyTime = tm
                inst.ds.StudyDescription = f"FHIR {key}"
                inst.ds.SeriesDescription = f"{modality} series {s + 1}"
                inst.data = encode(inst.ds)
                insts.append(inst)
        files += [i.data for i in insts]
        out[key] = insts
    res = stow(fhir, files)
    assert res.status == 200, res.describe()
    out["pid"], out["other_pid"] = pid, other
    return out


def get_fhir(server, path, status=200, **params):
    r = server.get(path, params=params)
    assert r.status_code == status, f"GET {path} {params}: HTTP {r.status_code}: {r.text[:400]}"
    assert r.headers["Content-Type"].split(";")[0] == FHIR_JSON, r.headers["Content-Type"]
    return r.json()


def check_imaging_study(r: dict, server, insts: list[Instance]) -> None:
    """The elements R4 requires, the code systems, and a resolving Endpoint reference."""
    study = insts[0].ds
    assert r["resourceType"] == "ImagingStudy"
    assert r["id"] == str(study.StudyInstanceUID) and FHIR_ID.match(r["id"])
    assert r["status"] == "available"  # 1..1

    # Identifiers: the study UID as a urn:oid in urn:dicom:uid; the accession with type ACSN.
    ids = r["identifier"]
    uid_ids = [i for i in ids if i.get("system") == "urn:dicom:uid"]
    assert [i["value"] for i in uid_ids] == [f"urn:oid:{study.StudyInstanceUID}"]
    acsn = [i for i in ids if any(c["system"] == V2_0203 and c["code"] == "ACSN"
                                  for c in i.get("type", {}).get("coding", []))]
    assert [i["value"] for i in acsn] == [study.AccessionNumber]

    # subject 1..1: the patient by identifier, with the name as display.
    subj = r["subject"]
    assert subj["type"] == "Patient"
    assert subj["identifier"]["value"] == study.PatientID
    assert subj["display"] == " ".join(w for w in str(study.PatientName).split("^") if w)
    assert "reference" not in subj

    assert r.get("description") == study.StudyDescription
    assert FHIR_DATETIME.match(r["started"]), r["started"]
    modalities = sorted({str(i.ds.Modality) for i in insts})
    assert sorted(c["code"] for c in r["modality"]) == modalities
    assert all(c["system"] == DCM for c in r["modality"])
    assert r["numberOfInstances"] == len(insts)
    series_uids = {str(i.ds.SeriesInstanceUID) for i in insts}
    assert r["numberOfSeries"] == len(series_uids)

    # Every reference is local ('#id') and resolves to a contained resource; the study's
    # endpoint is the DICOMweb root of the server, as dicom-wado-rs.
    contained = {c["id"]: c for c in r.get("contained", [])}

    def resolve(ref: dict) -> dict:
        assert ref["reference"].startswith("#"), ref
        return contained[ref["reference"][1:]]

    endpoints = [resolve(e) for e in r["endpoint"]]
    assert len(endpoints) == 1
    ep = endpoints[0]
    assert ep["resourceType"] == "Endpoint" and ep["status"] == "active"
    assert ep["connectionType"] == {"system": CONNECTION_TYPE, "code": "dicom-wado-rs"}
    assert ep["payloadType"] and all(pt.get("coding") or pt.get("text") for pt in ep["payloadType"])
    assert ep["address"] == server.dicomweb
    # Every contained resource is referenced (R4 dom-3).
    refs = {e["reference"] for e in r["endpoint"]} | {e["reference"] for s in r["series"] for e in s.get("endpoint", [])}
    assert {f"#{k}" for k in contained} <= refs

    # Series and instances: what was stored.
    assert {s["uid"] for s in r["series"]} == series_uids
    for s in r["series"]:
        mine = [i for i in insts if str(i.ds.SeriesInstanceUID) == s["uid"]]
        assert s["modality"] == {"system": DCM, "code": str(mine[0].ds.Modality)}  # 1..1
        assert s["number"] == int(mine[0].ds.SeriesNumber)
        assert s["description"] == mine[0].ds.SeriesDescription
        assert s["numberOfInstances"] == len(mine) == len(s["instance"])
        for e in s.get("endpoint", []):
            assert resolve(e) is ep
        for inst in s["instance"]:
            src = next(i for i in mine if i.sop == inst["uid"])
            assert inst["sopClass"] == {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{src.sop_class}"}
            assert inst["number"] == int(src.ds.InstanceNumber)
    # The endpoint and the UIDs lead to the stored study.
    r2 = server.get(f"{ep['address']}/studies/{r['id']}/series/{r['series'][0]['uid']}/instances",
                    headers={"Accept": "application/dicom+json"})
    assert r2.status_code == 200 and len(r2.json()) == r["series"][0]["numberOfInstances"]


def test_read(fhir, studies):
    ct = studies["ct"]
    r = get_fhir(fhir, f"/fhir/ImagingStudy/{ct[0].study}")
    check_imaging_study(r, fhir, ct)
    # StudyDate/StudyTime with --timezone +07:00.
    assert r["started"] == "2024-01-02T03:04:05.25+07:00"
    assert get_fhir(fhir, f"/fhir/ImagingStudy/{studies['mr'][0].study}")["started"] == "2024-03-01T10:15:00+07:00"
    # No study time: the date alone.
    assert get_fhir(fhir, f"/fhir/ImagingStudy/{studies['other'][0].study}")["started"] == "2023-01-01"


def bundle_check(b: dict, server, total: int) -> list[dict]:
    assert b["resourceType"] == "Bundle" and b["type"] == "searchset"
    assert b["total"] == total
    for e in b.get("entry", []):
        assert e["search"] == {"mode": "match"}
        assert e["fullUrl"] == f"{server.base_url}/fhir/ImagingStudy/{e['resource']['id']}"
    return [e["resource"] for e in b.get("entry", [])]


@pytest.mark.parametrize("how", ["bare", "reference"])
def test_search_by_patient(fhir, studies, how):
    pid = studies["pid"] if how == "bare" else f"Patient/{studies['pid']}"
    b = get_fhir(fhir, "/fhir/ImagingStudy", patient=pid)
    found = bundle_check(b, fhir, 2)
    # Newest first, as QIDO.
    assert [r["id"] for r in found] == [studies["mr"][0].study, studies["ct"][0].study]
    for r in found:
        key = "ct" if r["id"] == studies["ct"][0].study else "mr"
        check_imaging_study(r, fhir, studies[key])
    # A fullUrl reads the same resource.
    assert get_fhir(fhir, b["entry"][0]["fullUrl"]) == found[0]
    assert bundle_check(get_fhir(fhir, "/fhir/ImagingStudy", patient="nobody"), fhir, 0) == []


def test_search_by_identifier(fhir, studies):
    ct, mr = studies["ct"], studies["mr"]
    uid = ct[0].study
    for ident in (f"urn:dicom:uid|urn:oid:{uid}", f"urn:oid:{uid}", ct[0].ds.AccessionNumber,
                  f"|{ct[0].ds.AccessionNumber}"):
        found = bundle_check(get_fhir(fhir, "/fhir/ImagingStudy", identifier=ident), fhir, 1)
        assert [r["id"] for r in found] == [uid], ident
    # OR lists, AND across parameters.
    both = f"{ct[0].ds.AccessionNumber},{mr[0].ds.AccessionNumber}"
    assert len(bundle_check(get_fhir(fhir, "/fhir/ImagingStudy", identifier=both), fhir, 2)) == 2
    found = get_fhir(fhir, "/fhir/ImagingStudy", identifier=both, patient=studies["other_pid"])
    assert bundle_check(found, fhir, 0) == []
    # Accession numbers are identifiers, not patterns.
    assert bundle_check(get_fhir(fhir, "/fhir/ImagingStudy", identifier="FACC-*"), fhir, 0) == []
    found = bundle_check(get_fhir(fhir, "/fhir/ImagingStudy", _id=f"{uid},not-a-uid"), fhir, 1)
    assert [r["id"] for r in found] == [uid]
    assert bundle_check(get_fhir(fhir, "/fhir/ImagingStudy", _id="not-a-uid"), fhir, 0) == []


def test_paging(fhir, studies):
    b = get_fhir(fhir, "/fhir/ImagingStudy", patient=studies["pid"], _count="1")
    first = bundle_check(b, fhir, 2)
    links = {l["relation"]: l["url"] for l in b["link"]}
    assert "next" in links and "_offset=1" in links["next"]
    b2 = get_fhir(fhir, links["next"])
    second = bundle_check(b2, fhir, 2)
    assert [r["id"] for r in first + second] == [studies["mr"][0].study, studies["ct"][0].study]
    assert "next" not in {l["relation"] for l in b2["link"]}


def outcome(server, path, status, code, **params):
    o = get_fhir(server, path, status=status, **params)
    assert o["resourceType"] == "OperationOutcome"
    assert o["issue"][0]["severity"] == "error"
    assert o["issue"][0]["code"] == code
    assert o["issue"][0]["diagnostics"]
    return o


def test_errors_are_operation_outcomes(fhir, studies):
    o = outcome(fhir, "/fhir/ImagingStudy", 400, "invalid", modality="CT")
    assert "modality" in o["issue"][0]["diagnostics"]
    outcome(fhir, "/fhir/ImagingStudy", 400, "invalid", identifier="urn:oid:1.2.x")
    outcome(fhir, "/fhir/ImagingStudy", 400, "invalid", identifier="http://hospital.example/acc|A1")
    outcome(fhir, "/fhir/ImagingStudy", 400, "invalid", _count="zero")
    outcome(fhir, "/fhir/ImagingStudy", 406, "not-supported", _format="xml")
    outcome(fhir, f"/fhir/ImagingStudy/{uid_for('fhir', 'unknown')}", 404, "not-found")
    outcome(fhir, "/fhir/ImagingStudy/not-a-uid", 404, "not-found")
    outcome(fhir, "/fhir/Patient/1", 404, "not-found")


def test_capability_statement(fhir):
    c = get_fhir(fhir, "/fhir/metadata")
    assert c["resourceType"] == "CapabilityStatement" and c["fhirVersion"] == "4.0.1"
    res = c["rest"][0]["resource"]
    # AuditEvent: the audit trail, for auditors (test_auth.py).
    assert [r["type"] for r in res] == ["ImagingStudy", "AuditEvent"]
    assert {p["name"] for p in res[0]["searchParam"]} >= {"patient", "identifier"}
    assert {p["name"] for p in res[1]["searchParam"]} >= {"patient", "date", "entity-id"}
