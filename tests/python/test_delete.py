"""Deletion, the trash and its purge (#12), on both profiles with real clients:
`DELETE` on an instance, a series and a study (the last through
dicomweb-client's `delete_study`) answers 204, and the resource then answers
404 on every route (QIDO, WADO-RS, metadata, frames, rendered, thumbnails,
WADO-URI, FHIR, C-FIND, C-GET) while the study's computed attributes follow;
`phim trash list` shows it and `phim trash restore` brings it back byte for
byte; `--trash-retention 0` purges the objects at once; an instance sent
again before the purge is taken out of the trash and survives it; the purge
runs after a restart; the background fsck never indexes a trashed object."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelGet

from phim_helpers import Instance, assert_instance_bytes, qido, run_phim, stow, uid_for
from test_emr import wait_for
from test_fsck import object_path

PROFILES = ["embedded", "pg_s3"]


def make_study(label: str) -> list[Instance]:
    """Series A (OT, 2 instances) and series B (CT, 1 instance) of one study."""
    study = uid_for("delete", label, "study")
    a, b = uid_for("delete", label, "A"), uid_for("delete", label, "B")
    insts = [Instance.make(f"delete-{label}-a{i}", study_uid=study, series_uid=a, instance_number=i + 1,
                           patient_id=f"DEL-{label}") for i in range(2)]
    insts.append(Instance.make(f"delete-{label}-b", study_uid=study, series_uid=b, modality="CT",
                               patient_id=f"DEL-{label}"))
    return insts


def key_of(inst: Instance) -> str:
    """The object key of an instance (`store/keys.rs`)."""
    return f"studies/{inst.study}/{hashlib.sha256(inst.data).hexdigest()[:32]}.dcm"


def storage_args(server) -> list[str]:
    store = server.store.serve_args() if server.profile == "pg_s3" else []
    return ["--data-dir", str(server.data_dir), *store]


def trash_list(server, log: Path) -> list[dict]:
    cp = run_phim(["trash", "list", "--json", *storage_args(server)], log)
    assert cp.returncode == 0, cp.stderr.decode()
    return [json.loads(line) for line in cp.stdout.decode().splitlines() if line.strip()]


def study_row(server, study: str) -> dict | None:
    rows = qido(server, "/dicomweb/studies", {"StudyInstanceUID": study,
                                               "includefield": "ModalitiesInStudy,NumberOfStudyRelatedInstances,NumberOfStudyRelatedSeries"})
    return rows[0] if rows else None


def values(row: dict, tag: str) -> list:
    return row.get(tag, {}).get("Value", [])


def instance_routes(inst: Instance) -> list[tuple[str, dict | None]]:
    base = f"/dicomweb/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}"
    return [(base, None), (base + "/metadata", None), (base + "/frames/1", None), (base + "/rendered", None),
            (base + "/thumbnail", None),
            ("/wado", {"requestType": "WADO", "studyUID": inst.study, "seriesUID": inst.series,
                       "objectUID": inst.sop})]


def study_routes(study: str) -> list[str]:
    return [f"/dicomweb/studies/{study}", f"/dicomweb/studies/{study}/metadata",
            f"/dicomweb/studies/{study}/rendered", f"/dicomweb/studies/{study}/thumbnail",
            f"/fhir/ImagingStudy/{study}"]


def c_find_studies(server, study: str) -> list[Dataset]:
    ae = AE(ae_title="DELFIND")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(*server.dicom_addr, ae_title="PHIM")
    assert assoc.is_established
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = study
    q.NumberOfStudyRelatedInstances = ""
    found = []
    try:
        for status, ds in assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind):
            if status and status.Status in (0xFF00, 0xFF01):
                found.append(ds)
    finally:
        assoc.release()
    return found


def c_get_status(server, study: str) -> tuple[int, int]:
    """(final status, instances received) of a study-level C-GET."""
    from pynetdicom import build_role, evt
    from pynetdicom.sop_class import SecondaryCaptureImageStorage
    got = []

    def on_store(event):
        got.append(event.request.AffectedSOPInstanceUID)
        return 0x0000

    ae = AE(ae_title="DELGET")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(SecondaryCaptureImageStorage)
    assoc = ae.associate(*server.dicom_addr, ae_title="PHIM",
                         ext_neg=[build_role(SecondaryCaptureImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = study
    final = None
    try:
        for status, _ in assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet):
            if status is not None:
                final = status.Status
    finally:
        assoc.release()
    return final, len(got)


@pytest.mark.parametrize("profile", PROFILES)
def test_delete_to_trash_and_restore(phim_factory, tmp_path, profile):
    server = phim_factory.start(profile)
    insts = make_study(profile)
    other = Instance.make(f"delete-{profile}-other")
    res = stow(server, [i.data for i in insts] + [other.data])
    assert res.status == 200, res.describe()
    study = insts[0].study
    # Thumbnails made before the deletion must not be served after it.
    assert server.get(f"/dicomweb/studies/{study}/series/{insts[0].series}/thumbnail").status_code == 200

    # One instance: the rest of its series and study stay, the counts follow.
    gone = insts[0]
    r = server.request("DELETE", f"/dicomweb/studies/{study}/series/{gone.series}/instances/{gone.sop}")
    assert r.status_code == 204, r.text
    for path, params in instance_routes(gone):
        assert server.get(path, params=params).status_code == 404, path
    row = study_row(server, study)
    assert values(row, "00201208") == [2] and values(row, "00201206") == [2]
    assert qido(server, f"/dicomweb/studies/{study}/series/{gone.series}/instances") != []
    assert_instance_bytes(server, study, insts[1].series, insts[1].sop, insts[1].data)
    # The series thumbnail is that of what is left, not of the deleted instance.
    assert server.get(f"/dicomweb/studies/{study}/series/{gone.series}/thumbnail").status_code == 200

    # One series: Modalities in Study loses CT.
    r = server.request("DELETE", f"/dicomweb/studies/{study}/series/{insts[2].series}")
    assert r.status_code == 204, r.text
    row = study_row(server, study)
    assert values(row, "00080061") == ["OT"] and values(row, "00201206") == [1], row
    assert server.get(f"/dicomweb/studies/{study}/series/{insts[2].series}/metadata").status_code == 404
    assert qido(server, "/dicomweb/series", {"SeriesInstanceUID": insts[2].series}) == []

    # The study, as dicomweb-client deletes it.
    DICOMwebClient(url=server.dicomweb).delete_study(study)
    assert study_row(server, study) is None
    assert qido(server, "/dicomweb/instances", {"StudyInstanceUID": study}) == []
    for path in study_routes(study):
        assert server.get(path).status_code == 404, path
    for inst in insts:
        for path, params in instance_routes(inst):
            assert server.get(path, params=params).status_code == 404, path
    fhir = server.get("/fhir/ImagingStudy", params={"patient": f"DEL-{profile}"}).json()
    assert fhir["total"] == 0, fhir
    assert c_find_studies(server, study) == []
    status, received = c_get_status(server, study)
    assert received == 0 and status in (0x0000, 0xA701, 0xA702, 0xA900, 0xC000), hex(status or 0)
    # Twice is 404; a bad UID 400; another study untouched.
    assert server.request("DELETE", f"/dicomweb/studies/{study}").status_code == 404
    assert server.request("DELETE", "/dicomweb/studies/not-a-uid").status_code == 400
    assert_instance_bytes(server, other.study, other.series, other.sop, other.data)
    # The objects are still stored, and fsck leaves them alone.
    for inst in insts:
        assert os.path.exists(object_path(server, key_of(inst))), key_of(inst)
    cp = run_phim(["fsck", "--repair", "--min-age", "0", *storage_args(server)], tmp_path / "fsck.log")
    assert cp.returncode == 0, cp.stdout.decode() + cp.stderr.decode()
    assert study_row(server, study) is None

    listed = trash_list(server, tmp_path / "list.log")
    mine = [s for s in listed if s["study_uid"] == study]
    assert len(mine) == 1 and mine[0]["instances"] == 3, listed
    assert mine[0]["patient_id"] == f"DEL-{profile}" and mine[0]["deleted_by"] == "anonymous"
    assert set(mine[0]["modalities"].split(",")) == {"OT", "CT"}
    assert mine[0]["purge_after_ms"] - mine[0]["deleted_at_ms"] >= 7 * 86400 * 1000 - 60_000
    # The same for admins over HTTP.
    api = [s for s in server.get("/api/trash").json()["studies"] if s["studyInstanceUid"] == study]
    assert len(api) == 1 and api[0]["instances"] == 3 and sorted(api[0]["modalities"]) == ["CT", "OT"], api
    assert api[0]["deletedBy"] == "anonymous" and api[0]["purgeAfter"] > api[0]["deletedAt"]

    cp = run_phim(["trash", "restore", study, *storage_args(server)], tmp_path / "restore.log")
    out = cp.stdout.decode()
    assert cp.returncode == 0, out + cp.stderr.decode()
    assert "3 instances restored, 0 left in the trash" in out, out
    row = study_row(server, study)
    assert values(row, "00201208") == [3] and set(values(row, "00080061")) == {"OT", "CT"}, row
    for inst in insts:
        assert_instance_bytes(server, study, inst.series, inst.sop, inst.data)
    assert [s for s in trash_list(server, tmp_path / "list2.log") if s["study_uid"] == study] == []
    cp = run_phim(["trash", "restore", study, *storage_args(server)], tmp_path / "restore2.log")
    assert cp.returncode == 1 and "nothing of study" in cp.stdout.decode()
    assert server.post(f"/api/trash/{study}/restore").status_code == 404

    # Restored over HTTP: one series deleted and brought back by an admin's request.
    assert server.request("DELETE", f"/dicomweb/studies/{study}/series/{insts[2].series}").status_code == 204
    r = server.post(f"/api/trash/{study}/restore")
    assert r.status_code == 200 and r.json()["restored"] == 1 and r.json()["kept"] == [], r.text
    assert_instance_bytes(server, study, insts[2].series, insts[2].sop, insts[2].data)


@pytest.mark.parametrize("profile", PROFILES)
def test_retention_zero_purges_at_once(phim_factory, tmp_path, profile):
    server = phim_factory.start(profile, extra_args=["--trash-retention", "0"])
    insts = make_study(f"purge-{profile}")
    assert stow(server, [i.data for i in insts]).status == 200
    study = insts[0].study
    assert server.get(f"/dicomweb/studies/{study}/thumbnail").status_code == 200
    keys = [key_of(i) for i in insts]
    assert server.request("DELETE", f"/dicomweb/studies/{study}").status_code == 204
    wait_for("the purge job deleted the objects", lambda: not any(os.path.exists(object_path(server, k)) for k in keys))
    wait_for("the trash is empty", lambda: not [s for s in trash_list(server, tmp_path / "l.log") if s["study_uid"] == study])
    if profile == "embedded":
        thumbs = server.data_dir / "objects" / "thumbnails" / study
        wait_for("the study's thumbnails are deleted", lambda: not any(p.is_file() for p in thumbs.rglob("*")) if thumbs.exists() else True)
    # Sent again, it is stored again under the same key.
    assert stow(server, [insts[0].data]).status == 200
    assert_instance_bytes(server, study, insts[0].series, insts[0].sop, insts[0].data)


@pytest.mark.parametrize("profile", PROFILES)
def test_sent_again_before_the_purge_survives_it(phim_factory, tmp_path, profile):
    """An instance sent again while it is in the trash is taken out of it in the transaction
    that indexes it: the purge deletes the others, never it. The purge runs after a restart:
    the trash and the job are rows of the index (the first server would purge only in an hour;
    the second, started with a shorter period, brings the job forward)."""
    server = phim_factory.start(profile, extra_args=["--trash-retention", "2s", "--trash-purge-interval", "1h"])
    insts = make_study(f"again-{profile}")
    assert stow(server, [i.data for i in insts]).status == 200
    study = insts[0].study
    assert server.request("DELETE", f"/dicomweb/studies/{study}").status_code == 204
    res = stow(server, [insts[1].data])
    assert res.status == 200, res.describe()
    listed = [s for s in trash_list(server, tmp_path / "l1.log") if s["study_uid"] == study]
    assert listed and listed[0]["instances"] == 2, listed
    keys = {i.sop: key_of(i) for i in insts}
    time.sleep(2.5)
    assert all(os.path.exists(object_path(server, k)) for k in keys.values()), "not purged yet"
    server.stop()
    server2 = phim_factory.start(profile, data_dir=server.data_dir, store=server.store,
                                 extra_args=["--trash-retention", "2s", "--trash-purge-interval", "1s"])
    wait_for("the purge ran after the restart", lambda: not os.path.exists(object_path(server2, keys[insts[0].sop]))
             and not os.path.exists(object_path(server2, keys[insts[2].sop])))
    assert_instance_bytes(server2, study, insts[1].series, insts[1].sop, insts[1].data)
    assert os.path.exists(object_path(server2, keys[insts[1].sop]))
    assert [i["00080018"]["Value"][0] for i in qido(server2, f"/dicomweb/studies/{study}/instances")] == [insts[1].sop]
    wait_for("the trash is empty", lambda: not [s for s in trash_list(server2, tmp_path / "l2.log") if s["study_uid"] == study])


# --------------------------------------------------------------------------- IHE IOCM

KOS = "1.2.840.10008.5.1.4.1.1.88.59"
REJECTED_INSTANCE = 0xA771


def rejection_note(seed: str, targets: list[Instance], code: str = "113001",
                   meaning: str = "Rejected for Quality Reasons") -> Instance:
    """A Key Object Selection document titled from CID 7011 listing `targets` (IHE IOCM)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    from phim_helpers import encode

    def item(**kw) -> Dataset:
        d = Dataset()
        for k, v in kw.items():
            setattr(d, k, v)
        return d

    study = targets[0].study
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = KOS
    ds.file_meta.MediaStorageSOPInstanceUID = uid_for(seed, "kos")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = KOS, uid_for(seed, "kos")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, uid_for(seed, "kos-series")
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "KO", 99, 1
    ds.PatientID, ds.PatientName = targets[0].ds.PatientID, targets[0].ds.PatientName
    ds.ContentDate, ds.ContentTime = "20240105", "101010"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([item(CodeValue=code, CodingSchemeDesignator="DCM", CodeMeaning=meaning)])
    by_series: dict[str, list[Instance]] = {}
    for t in targets:
        by_series.setdefault(t.series, []).append(t)
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([item(
        StudyInstanceUID=study,
        ReferencedSeriesSequence=Sequence([
            item(SeriesInstanceUID=se, ReferencedSOPSequence=Sequence([
                item(ReferencedSOPClassUID=t.sop_class, ReferencedSOPInstanceUID=t.sop) for t in ts]))
            for se, ts in by_series.items()]))])
    ds.ContentSequence = Sequence([item(
        RelationshipType="CONTAINS", ValueType="IMAGE",
        ReferencedSOPSequence=Sequence([item(ReferencedSOPClassUID=t.sop_class, ReferencedSOPInstanceUID=t.sop)]))
        for t in targets])
    return Instance(study, str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), KOS, encode(ds), ds)


@pytest.mark.parametrize("profile", PROFILES)
def test_iocm_rejection_hides_and_refuses(phim_factory, tmp_path, profile):
    from test_store_outage import c_store

    server = phim_factory.start(profile)
    insts = make_study(f"iocm-{profile}")
    assert stow(server, [i.data for i in insts]).status == 200
    study = insts[0].study
    note = rejection_note(f"iocm-{profile}", [insts[0], insts[2]])
    res = stow(server, [note.data])
    assert res.status == 200, res.describe()

    # The note is visible; what it rejects is not, on any route.
    listed = {r["00080018"]["Value"][0] for r in qido(server, f"/dicomweb/studies/{study}/instances")}
    assert listed == {insts[1].sop, note.sop}, listed
    row = study_row(server, study)
    assert values(row, "00201208") == [2] and set(values(row, "00080061")) == {"OT", "KO"}, row
    for inst in (insts[0], insts[2]):
        for path, params in instance_routes(inst):
            assert server.get(path, params=params).status_code == 404, path
    assert_instance_bytes(server, study, note.series, note.sop, note.data)

    # Sent again: refused, over STOW-RS and C-STORE, with A771.
    again = stow(server, [insts[0].data])
    assert again.status == 409 and again.failure_reasons() == [REJECTED_INSTANCE], again.describe()
    assert c_store(server, insts[2]) == REJECTED_INSTANCE
    assert qido(server, "/dicomweb/instances", {"SOPInstanceUID": insts[0].sop}) == []
    # The note sent again changes nothing.
    assert stow(server, [note.data]).status == 200

    # In the trash, marked by the note; restore keeps them there.
    mine = [s for s in trash_list(server, tmp_path / "l.log") if s["study_uid"] == study]
    assert len(mine) == 1 and mine[0]["instances"] == 2, mine
    assert mine[0]["deleted_by"] == "IOCM 113001 Rejected for Quality Reasons"
    cp = run_phim(["trash", "restore", study, *storage_args(server)], tmp_path / "restore.log")
    out = cp.stdout.decode()
    assert cp.returncode == 1 and out.count("KEPT") == 2 and "rejected" in out, out
    r = server.post(f"/api/trash/{study}/restore")
    assert r.status_code == 200 and r.json()["restored"] == 0 and len(r.json()["kept"]) == 2, r.text

    # A note that arrives before the instance it rejects: the instance is refused.
    later = Instance.make(f"iocm-later-{profile}")
    safety = rejection_note(f"iocm-later-{profile}", [later], code="113037",
                            meaning="Rejected for Patient Safety Reasons")
    assert stow(server, [safety.data]).status == 200
    res = stow(server, [later.data])
    assert res.status == 409 and res.failure_reasons() == [REJECTED_INSTANCE], res.describe()
    # A KOS with another title is a key-image note, nothing more.
    keys = rejection_note(f"iocm-keys-{profile}", [insts[1]], code="113000", meaning="Of Interest")
    assert stow(server, [keys.data]).status == 200
    assert_instance_bytes(server, study, insts[1].series, insts[1].sop, insts[1].data)


# --------------------------------------------------------------------------- retention


def dated(label: str, date: str, modality: str) -> Instance:
    from phim_helpers import encode
    inst = Instance.make(f"retention-{label}", modality=modality, patient_id=f"RET-{label}")
    inst.ds.StudyDate = date
    inst.data = encode(inst.ds)
    return inst


@pytest.mark.parametrize("profile", PROFILES)
def test_retention_rules_report_and_move_to_the_trash(phim_factory, tmp_path, profile):
    rules = ["--retention", "3650,US=30"]
    server = phim_factory.start(profile, extra_args=[*rules, "--retention-interval", "1h"])
    old = dated(f"old-{profile}", "20000101", "OT")        # 3650 days: due since 2009
    recent = dated(f"recent-{profile}", "20261201", "OT")  # due in 2036
    us = dated(f"us-{profile}", "20260101", "US")           # US=30: due since February 2026
    kept = dated(f"kept-{profile}", "20000101", "OT")       # due, but an admin keeps it
    assert stow(server, [i.data for i in (old, recent, us, kept)]).status == 200
    assert server.request("PUT", f"/api/studies/{kept.study}/keep").status_code == 204
    assert server.request("PUT", f"/api/studies/{uid_for('retention', 'nothing')}/keep").status_code == 404

    def report(*extra) -> list[dict]:
        cp = run_phim(["retention", "report", "--json", *rules, *extra, *storage_args(server)],
                      tmp_path / f"report{len(extra)}.log")
        assert cp.returncode == 0, cp.stderr.decode()
        return [json.loads(line) for line in cp.stdout.decode().splitlines() if line.strip()]

    due = {r["study_uid"]: r for r in report()}
    assert set(due) == {old.study, us.study, kept.study}, due
    assert due[kept.study]["held"] and not due[old.study]["held"]
    assert due[old.study]["due_on"] == "2009-12-29" and due[us.study]["due_on"] == "2026-01-31"
    assert recent.study in {r["study_uid"] for r in report("--within", "4000")}
    cp = run_phim(["retention", "report", *rules, *storage_args(server)], tmp_path / "text.log")
    assert "3 studies due by" in cp.stdout.decode() and "1 kept by an admin" in cp.stdout.decode(), cp.stdout

    # A server with a short period runs the job (once across servers, brought forward).
    server.stop()
    server = phim_factory.start(profile, data_dir=server.data_dir, store=server.store,
                                extra_args=[*rules, "--retention-interval", "1s"])
    wait_for("the due studies are in the trash",
             lambda: study_row(server, old.study) is None and study_row(server, us.study) is None)
    assert study_row(server, recent.study) is not None and study_row(server, kept.study) is not None
    trashed = {s["study_uid"]: s for s in trash_list(server, tmp_path / "t.log")}
    assert trashed[old.study]["deleted_by"] == "retention" and us.study in trashed
    # The hold released, the next run takes it.
    assert server.request("DELETE", f"/api/studies/{kept.study}/keep").status_code == 204
    assert server.request("DELETE", f"/api/studies/{kept.study}/keep").status_code == 404
    wait_for("the released study is in the trash", lambda: study_row(server, kept.study) is None)
    assert study_row(server, recent.study) is not None
