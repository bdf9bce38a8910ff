"""DIMSE with real peers: dcmtk's echoscu/storescu and pynetdicom against `phim serve`.

C-STORE shares the STOW-RS ingest path, so what a modality sends is visible over
QIDO/WADO exactly as if it came by STOW; the data set arrives without a file meta
group and is stored behind Phim's own, byte for byte."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    ModalityWorklistInformationFind,
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from phim_helpers import Instance, assert_instance_bytes, qido, wado_instance_bytes

DCMTK = shutil.which("storescu") and shutil.which("echoscu")
pytestmark = pytest.mark.skipif(not DCMTK, reason="dcmtk is installed by `make test`")


def dataset_bytes(part10: bytes) -> bytes:
    """The data set of a Part 10 file (what travels over DIMSE)."""
    assert part10[128:132] == b"DICM"
    group_len = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_len :]


def dimse_env() -> dict:
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dimse_env())


def write_study(tmp: Path, seed: str, n: int) -> list[Instance]:
    out = []
    study = f"2.25.{abs(hash(seed)) % 10**20}1"
    series = study + ".1"
    for i in range(n):
        inst = Instance.make(f"{seed}-{i}", study_uid=study, series_uid=series,
                             instance_number=i + 1, rows=64, cols=64)
        (tmp / f"{i:03d}.dcm").write_bytes(inst.data)
        out.append(inst)
    return out


def test_c_echo(server):
    host, port = server.dicom_addr
    r = run(["echoscu", "-aec", "PHIM", host, str(port)])
    assert r.returncode == 0, r.stderr
    wrong = run(["echoscu", "-aec", "NOT_PHIM", host, str(port)])
    assert wrong.returncode != 0
    assert "Called AE Title Not Recognized" in wrong.stderr + wrong.stdout


def test_storescu_study_is_visible_over_dicomweb(server, tmp_path):
    insts = write_study(tmp_path, f"dimse-study-{server.profile}", 12)
    host, port = server.dicom_addr
    r = run(["storescu", "-aec", "PHIM", "-aet", "MODALITY", host, str(port), *sorted(map(str, tmp_path.glob("*.dcm")))])
    assert r.returncode == 0, r.stderr
    study = insts[0].study
    found = qido(server, "/dicomweb/studies", {"StudyInstanceUID": study})
    assert len(found) == 1
    assert found[0]["00201208"]["Value"] == [12]
    for inst in insts[:3]:
        got = wado_instance_bytes(server, inst.study, inst.series, inst.sop)
        # Phim's own meta group, then the data set exactly as sent.
        assert dataset_bytes(got) == dataset_bytes(inst.data)
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(got))
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == inst.sop


# pydicom sample file, and the storescu option that proposes its transfer syntax first.
SAMPLES = [
    ("CT_small.dcm", "-xe"),
    ("MR_small_implicit.dcm", "-xi"),
    ("MR_small_bigendian.dcm", "-xb"),
    ("JPEG2000.dcm", "-xw"),
    ("MR_small_jp2klossless.dcm", "-xv"),
    ("SC_rgb_rle.dcm", "-xr"),
    ("image_dfl.dcm", "-xd"),
    ("SC_rgb_jpeg_dcmtk.dcm", "-xy"),
    ("SC_rgb_jpeg_gdcm.dcm", "-xs"),
    ("MR_small_jpeg_ls_lossless.dcm", "-xt"),
]


def same_content(a: pydicom.Dataset, b: pydicom.Dataset) -> list[str]:
    """Differences between two data sets, ignoring group lengths and padding
    (storescu re-encodes the data set it sends)."""
    diffs = []
    for elem in a:
        if elem.tag.element == 0 or elem.tag == 0xFFFCFFFC:
            continue
        if elem.tag not in b:
            diffs.append(f"{elem.tag} missing")
        elif elem.VR != "SQ" and b[elem.tag].value != elem.value:
            diffs.append(f"{elem.tag} differs")
    return diffs


@pytest.mark.parametrize("name,propose", SAMPLES)
def test_storescu_pydicom_samples_in_their_transfer_syntax(phim_factory, tmp_path, name, propose):
    server = phim_factory.start("embedded")
    path = Path(pydicom.data.get_testdata_file(name))
    original = pydicom.dcmread(path)
    host, port = server.dicom_addr
    # Phim must accept the file's own transfer syntax: no conversion by storescu.
    r = run(["storescu", "-aec", "PHIM", propose, "--required", host, str(port), str(path)])
    assert r.returncode == 0, r.stderr + r.stdout
    got = wado_instance_bytes(server, original.StudyInstanceUID, original.SeriesInstanceUID,
                              original.SOPInstanceUID)
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(got))
    assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert same_content(original, ds) == []


# pynetdicom re-deflates a deflated data set before sending it (dropping
# image_dfl.dcm's 8 bytes after the deflate stream): its content is checked
# in the storescu test instead.
@pytest.mark.parametrize("name", [n for n, _ in SAMPLES if n != "image_dfl.dcm"])
def test_pynetdicom_sends_files_and_they_are_stored_byte_for_byte(phim_factory, name):
    """pynetdicom sends a file's encoded data set unchanged: Phim stores exactly
    those bytes behind its own file meta group."""
    server = phim_factory.start("embedded")
    path = Path(pydicom.data.get_testdata_file(name))
    original = pydicom.dcmread(path)
    ae = AE(ae_title="PYNET")
    ae.add_requested_context(original.SOPClassUID, [original.file_meta.TransferSyntaxUID])
    host, port = server.dicom_addr
    assoc = ae.associate(host, port, ae_title="PHIM")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(path).Status == 0x0000
    finally:
        assoc.release()
    got = wado_instance_bytes(server, original.StudyInstanceUID, original.SeriesInstanceUID,
                              original.SOPInstanceUID)
    assert dataset_bytes(got) == dataset_bytes(path.read_bytes())


def test_pynetdicom_store_status_and_duplicates(server):
    ae = AE(ae_title="PYNET")
    ae.add_requested_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.add_requested_context(Verification)
    host, port = server.dicom_addr
    assoc = ae.associate(host, port, ae_title="PHIM")
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000
        inst = Instance.make(f"pynet-{server.profile}")
        status = assoc.send_c_store(inst.ds)
        assert status.Status == 0x0000
        # The same instance again: success (idempotent).
        assert assoc.send_c_store(inst.ds).Status == 0x0000
        # Same SOP Instance UID, other content: 0111, the first one is kept.
        other = copy.deepcopy(inst.ds)
        other.PatientName = "Other^Name"
        dup = assoc.send_c_store(other)
        assert dup.Status == 0x0111, hex(dup.Status)
        assert "ErrorComment" in dup
    finally:
        assoc.release()
    got = wado_instance_bytes(server, inst.study, inst.series, inst.sop)
    assert pydicom.dcmread(pydicom.filebase.DicomBytesIO(got)).PatientName == inst.ds.PatientName


def test_unsupported_abstract_syntax_is_rejected(server):
    ae = AE(ae_title="PYNET")
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.add_requested_context(CTImageStorage)
    host, port = server.dicom_addr
    assoc = ae.associate(host, port, ae_title="PHIM")
    assert assoc.is_established
    try:
        accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
        rejected = {cx.abstract_syntax for cx in assoc.rejected_contexts}
        assert CTImageStorage in accepted
        assert ModalityWorklistInformationFind in rejected
    finally:
        assoc.release()


def test_association_limit_and_calling_ae_allow_list(phim_factory):
    server = phim_factory.start("embedded", extra_args=["--dicom-max-associations", "1",
                                                         "--dicom-allow", "ALLOWED,PYNET"])
    host, port = server.dicom_addr
    blocked = run(["echoscu", "-aet", "INTRUDER", "-aec", "PHIM", host, str(port)])
    assert blocked.returncode != 0
    assert "Calling AE Title Not Recognized" in blocked.stderr + blocked.stdout
    ae = AE(ae_title="PYNET")
    ae.add_requested_context(Verification)
    first = ae.associate(host, port, ae_title="PHIM")
    assert first.is_established
    try:
        second = run(["echoscu", "-aet", "ALLOWED", "-aec", "PHIM", host, str(port)])
        assert second.returncode != 0  # rejected: local limit exceeded
    finally:
        first.release()
    # The slot frees once Phim has seen the release; poll rather than guess how long that takes.
    deadline = time.monotonic() + 10
    while True:
        third = run(["echoscu", "-aet", "ALLOWED", "-aec", "PHIM", host, str(port)])
        if third.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert third.returncode == 0, third.stderr


def big_instance(path: Path, frames: int) -> pydicom.Dataset:
    inst = Instance.make("dimse-big", rows=512, cols=512)
    ds = inst.ds
    ds.NumberOfFrames = frames
    ds.PixelData = np.zeros((frames, 512, 512), dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds


# A peer that sends the command and half of a C-STORE data set, says so, and
# then waits to be killed: the kill lands mid-message on every machine, however
# fast it is (a timed kill of storescu once came after the last byte).
HALFWAY_PEER = r"""
import io, sys, time
import pydicom
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF

host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ds = pydicom.dcmread(path)
ae = AE(ae_title="HALFWAY")
ae.add_requested_context(ds.SOPClassUID, ExplicitVRLittleEndian)
assoc = ae.associate(host, port, ae_title="PHIM")
assert assoc.is_established
context = assoc.accepted_contexts[0]
req = C_STORE()
req.MessageID = 1
req.AffectedSOPClassUID = ds.SOPClassUID
req.AffectedSOPInstanceUID = ds.SOPInstanceUID
req.Priority = 0
req.DataSet = io.BytesIO(encode(ds, False, True))
msg = C_STORE_RQ()
msg.primitive_to_message(req)
pdus = list(msg.encode_msg(context.context_id, 16384))
for primitive in pdus[: len(pdus) // 2]:
    pdu = P_DATA_TF()
    pdu.from_primitive(primitive)
    assoc.dul.socket.send(pdu.encode())
print("sent", len(pdus) // 2, "of", len(pdus), flush=True)
time.sleep(600)
"""


def test_peer_killed_mid_transfer_leaves_nothing_half_stored(phim_factory, tmp_path):
    server = phim_factory.start("embedded")
    host, port = server.dicom_addr
    path = tmp_path / "big.dcm"
    ds = big_instance(path, 80)  # 40 MB
    spool = server.data_dir / "spool"
    proc = subprocess.Popen(
        [sys.executable, "-c", HALFWAY_PEER, host, str(port), str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dimse_env())
    try:
        line = proc.stdout.readline()
        assert line.startswith("sent"), proc.stderr.read() if proc.poll() is not None else line
        # Half a message went out: Phim is spooling it when the peer dies.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(spool.glob("*.part")):
            time.sleep(0.02)
        assert any(spool.glob("*.part")), "Phim did not spool the half-sent instance"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    # The server is fine, the instance is not indexed, and no spool file remains.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(spool.glob("*.part")):
        time.sleep(0.1)
    assert not any(spool.glob("*.part")), "partial spool file left behind"
    assert server.get("/healthz").status_code == 200
    assert qido(server, "/dicomweb/instances", {"SOPInstanceUID": ds.SOPInstanceUID}) == []
    assert run(["echoscu", "-aec", "PHIM", host, str(port)]).returncode == 0
    # A complete transfer afterwards works.
    r = run(["storescu", "-aec", "PHIM", host, str(port), str(path)], timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(qido(server, "/dicomweb/instances", {"SOPInstanceUID": ds.SOPInstanceUID})) == 1


# ----------------------------------------------------------------------------- C-FIND

from pydicom.dataset import Dataset  # noqa: E402
from pynetdicom.sop_class import (  # noqa: E402
    PatientRootQueryRetrieveInformationModelFind,
)

FIND_NAME = "Nguyễn^Văn An"


@pytest.fixture(scope="module")
def find_study(server):
    """A study of 2 series (CT, MR) with 3 instances, stored by STOW."""
    from phim_helpers import stow

    study = f"2.25.{abs(hash('find-' + server.profile)) % 10**20}"
    insts = []
    for i, (series_suffix, modality) in enumerate([(".1", "CT"), (".1", "CT"), (".2", "MR")]):
        inst = Instance.make(f"find-{server.profile}-{i}", study_uid=study, series_uid=study + series_suffix,
                             instance_number=i + 1, modality=modality, patient_id=f"PFIND-{server.profile}",
                             patient_name=FIND_NAME)
        inst.ds.SpecificCharacterSet = "ISO_IR 192"
        inst.ds.AccessionNumber = "ACC-FIND"
        inst.ds.StudyDate = "20240315"
        from phim_helpers import encode
        inst.data = encode(inst.ds)
        insts.append(inst)
    res = stow(server, [i.data for i in insts])
    assert res.status == 200, res.describe()
    return insts


def c_find(server, model, identifier: Dataset) -> list[Dataset]:
    ae = AE(ae_title="PYNET")
    ae.add_requested_context(model)
    host, port = server.dicom_addr
    assoc = ae.associate(host, port, ae_title="PHIM")
    assert assoc.is_established
    found = []
    try:
        for status, ds in assoc.send_c_find(identifier, model):
            assert status is not None and status.Status in (0xFF00, 0xFF01, 0x0000), status
            if status.Status in (0xFF00, 0xFF01):
                found.append(ds)
    finally:
        assoc.release()
    return found


def ident(level: str, **keys) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def test_c_find_study_level_matches_qido(server, find_study):
    pid = find_study[0].ds.PatientID
    found = c_find(server, StudyRootQueryRetrieveInformationModelFind,
                   ident("STUDY", PatientID=pid, StudyInstanceUID="", PatientName="", StudyDate="",
                         AccessionNumber="", ModalitiesInStudy="", NumberOfStudyRelatedInstances=""))
    qido_rows = qido(server, "/dicomweb/studies", {"PatientID": pid})
    assert len(found) == len(qido_rows) == 1
    f, q = found[0], qido_rows[0]
    assert f.StudyInstanceUID == q["0020000D"]["Value"][0] == find_study[0].study
    assert str(f.PatientName) == q["00100010"]["Value"][0]["Alphabetic"] == FIND_NAME
    assert f.AccessionNumber == q["00080050"]["Value"][0] == "ACC-FIND"
    assert f.StudyDate == q["00080020"]["Value"][0] == "20240315"
    assert sorted(f.ModalitiesInStudy) == sorted(q["00080061"]["Value"]) == ["CT", "MR"]
    assert int(f.NumberOfStudyRelatedInstances) == q["00201208"]["Value"][0] == 3
    assert f.RetrieveAETitle == "PHIM"


def test_c_find_wildcard_name_and_date_range(server, find_study):
    found = c_find(server, StudyRootQueryRetrieveInformationModelFind,
                   ident("STUDY", PatientName="nguyễn*", StudyDate="20240301-20240331",
                         StudyInstanceUID=find_study[0].study))
    assert [f.StudyInstanceUID for f in found] == [find_study[0].study]
    none = c_find(server, StudyRootQueryRetrieveInformationModelFind,
                  ident("STUDY", PatientName="nguyễn*", StudyDate="20250101-",
                        StudyInstanceUID=find_study[0].study))
    assert none == []


def test_c_find_series_and_image_levels_match_qido(server, find_study):
    study = find_study[0].study
    series = c_find(server, StudyRootQueryRetrieveInformationModelFind,
                    ident("SERIES", StudyInstanceUID=study, SeriesInstanceUID="", Modality="",
                          NumberOfSeriesRelatedInstances=""))
    q_series = qido(server, f"/dicomweb/studies/{study}/series")
    assert sorted(s.SeriesInstanceUID for s in series) == sorted(r["0020000E"]["Value"][0] for r in q_series)
    assert {s.Modality for s in series} == {"CT", "MR"}
    images = c_find(server, StudyRootQueryRetrieveInformationModelFind,
                    ident("IMAGE", StudyInstanceUID=study, SeriesInstanceUID=study + ".1",
                          SOPInstanceUID="", InstanceNumber=""))
    q_images = qido(server, f"/dicomweb/studies/{study}/series/{study}.1/instances")
    assert sorted(i.SOPInstanceUID for i in images) == sorted(r["00080018"]["Value"][0] for r in q_images)
    assert len(images) == 2


def test_c_find_patient_root_patient_level(server, find_study):
    pid = find_study[0].ds.PatientID
    found = c_find(server, PatientRootQueryRetrieveInformationModelFind,
                   ident("PATIENT", PatientID=pid, PatientName=""))
    assert len(found) == 1
    assert str(found[0].PatientName) == FIND_NAME


def test_findscu(server, find_study):
    host, port = server.dicom_addr
    pid = find_study[0].ds.PatientID
    r = run(["findscu", "-S", "-aec", "PHIM", "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={pid}",
             "-k", "StudyInstanceUID", host, str(port)])
    assert r.returncode == 0, r.stderr
    assert find_study[0].study in r.stdout + r.stderr


def test_c_find_bad_level_is_a900(server):
    ae = AE(ae_title="PYNET")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    host, port = server.dicom_addr
    assoc = ae.associate(host, port, ae_title="PHIM")
    assert assoc.is_established
    try:
        statuses = [s.Status for s, _ in assoc.send_c_find(ident("BOGUS", PatientID=""),
                                                            StudyRootQueryRetrieveInformationModelFind)]
    finally:
        assoc.release()
    assert statuses == [0xA900]


# ------------------------------------------------------------------ C-MOVE, C-GET

import socket  # noqa: E402
import threading  # noqa: E402

from pynetdicom.sop_class import (  # noqa: E402
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
)

from conftest import PROFILES  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_storescp(out: Path, aet: str) -> tuple[subprocess.Popen, int]:
    """dcmtk's storescp writing what it receives bit for bit (+B)."""
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(["storescp", "-aet", aet, "+xa", "+B", "-od", str(out), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dimse_env())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("storescp did not start")


def store_study(server, seed: str, n: int) -> list[Instance]:
    from phim_helpers import stow

    study = f"2.25.{abs(hash(seed)) % 10**20}3"
    insts = [Instance.make(f"{seed}-{i}", study_uid=study, series_uid=study + ".1",
                           instance_number=i + 1, rows=16, cols=16, patient_id=f"P-{seed}")
             for i in range(n)]
    res = stow(server, [i.data for i in insts])
    assert res.status == 200, res.describe()
    return insts


def received(out: Path) -> dict[str, bytes]:
    """SOP Instance UID -> data set bytes of the files a storescp wrote."""
    got = {}
    for f in out.iterdir():
        data = f.read_bytes()
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        got[str(ds.SOPInstanceUID)] = dataset_bytes(data)
    return got


def move(server, model, identifier: Dataset, dest: str) -> list:
    ae = AE(ae_title="MOVER")
    ae.add_requested_context(model)
    host, port = server.dicom_addr
    assoc = ae.associate(host, port, ae_title="PHIM")
    assert assoc.is_established
    try:
        return [status for status, _ in assoc.send_c_move(identifier, dest, model)]
    finally:
        assoc.release()


@pytest.mark.parametrize("profile", PROFILES)
def test_movescu_to_storescp_sends_stored_bytes(phim_factory, tmp_path, profile):
    out = tmp_path / "received"
    scp, scp_port = start_storescp(out, "DEST")
    try:
        server = phim_factory.start(profile, extra_args=["--remote-ae", f"DEST=127.0.0.1:{scp_port}"])
        insts = store_study(server, f"move-{profile}", 5)
        host, port = server.dicom_addr
        r = run(["movescu", "-v", "-S", "-aet", "MOVER", "-aec", "PHIM", "-aem", "DEST",
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={insts[0].study}",
                 host, str(port)])
        assert r.returncode == 0, r.stderr + r.stdout
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(list(out.iterdir())) < 5:
            time.sleep(0.1)
        got = received(out)
        assert set(got) == {i.sop for i in insts}
        for inst in insts:
            stored = wado_instance_bytes(server, inst.study, inst.series, inst.sop)
            assert got[inst.sop] == dataset_bytes(stored)

        # Patient Root, PATIENT level; Study Root, IMAGE level with a list.
        statuses = move(server, PatientRootQueryRetrieveInformationModelMove,
                        ident("PATIENT", PatientID=insts[0].ds.PatientID), "DEST")
        assert statuses[-1].Status == 0x0000
        assert statuses[-1].NumberOfCompletedSuboperations == 5
        assert [s.NumberOfRemainingSuboperations for s in statuses[:-1]] == [4, 3, 2, 1]
        statuses = move(server, StudyRootQueryRetrieveInformationModelMove,
                        ident("IMAGE", StudyInstanceUID=insts[0].study,
                              SeriesInstanceUID=insts[0].series,
                              SOPInstanceUID=[insts[1].sop, insts[3].sop]), "DEST")
        assert statuses[-1].Status == 0x0000
        assert statuses[-1].NumberOfCompletedSuboperations == 2
        # Nothing matches: success, no sub-operations.
        statuses = move(server, StudyRootQueryRetrieveInformationModelMove,
                        ident("SERIES", StudyInstanceUID=insts[0].study, SeriesInstanceUID="1.2.3.4"),
                        "DEST")
        assert statuses[-1].Status == 0x0000
        assert statuses[-1].NumberOfCompletedSuboperations == 0
    finally:
        scp.terminate()
        scp.wait(timeout=10)


def test_c_move_unknown_destination_is_a801(server):
    statuses = move(server, StudyRootQueryRetrieveInformationModelMove,
                    ident("STUDY", StudyInstanceUID="1.2.3"), "NOWHERE")
    assert len(statuses) == 1
    assert statuses[0].Status == 0xA801


def test_c_move_destination_down_fails_the_sub_operations(phim_factory):
    server = phim_factory.start("embedded", extra_args=["--remote-ae", f"DOWN=127.0.0.1:{free_port()}"])
    insts = store_study(server, "move-down", 2)
    statuses = move(server, StudyRootQueryRetrieveInformationModelMove,
                    ident("STUDY", StudyInstanceUID=insts[0].study), "DOWN")
    final = statuses[-1]
    assert final.Status == 0xA702, hex(final.Status)
    assert final.NumberOfFailedSuboperations == 2


def test_getscu_retrieves_a_study(server, tmp_path):
    insts = store_study(server, f"get-{server.profile}", 4)
    host, port = server.dicom_addr
    out = tmp_path / "got"
    out.mkdir()
    r = run(["getscu", "-v", "-S", "-aet", "GETTER", "-aec", "PHIM", "+xe", "-od", str(out),
             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={insts[0].study}",
             host, str(port)])
    assert r.returncode == 0, r.stderr + r.stdout
    got = {}
    for f in out.iterdir():
        ds = pydicom.dcmread(f)
        got[str(ds.SOPInstanceUID)] = ds
    assert set(got) == {i.sop for i in insts}
    for inst in insts:
        assert same_content(inst.ds, got[inst.sop]) == []


def test_pynetdicom_c_get_without_scp_role_fails_sub_operations(server):
    insts = store_study(server, f"get-norole-{server.profile}", 2)
    ae = AE(ae_title="GETTER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian])
    host, port = server.dicom_addr
    assoc = ae.associate(host, port, ae_title="PHIM")  # no role selection
    assert assoc.is_established
    try:
        statuses = [s for s, _ in assoc.send_c_get(ident("STUDY", StudyInstanceUID=insts[0].study),
                                                   StudyRootQueryRetrieveInformationModelGet)]
    finally:
        assoc.release()
    assert statuses[-1].Status == 0xB000
    assert statuses[-1].NumberOfFailedSuboperations == 2


def test_c_move_cancel_stops_the_sub_operations(phim_factory):
    # A slow destination: 50 ms per instance.
    slow = AE(ae_title="SLOW")
    slow.add_supported_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    stored = []

    def on_store(event):
        time.sleep(0.05)
        stored.append(event.request.AffectedSOPInstanceUID)
        return 0x0000

    slow_port = free_port()
    scp = slow.start_server(("127.0.0.1", slow_port), block=False,
                            evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        server = phim_factory.start("embedded", extra_args=["--remote-ae", f"SLOW=127.0.0.1:{slow_port}"])
        insts = store_study(server, "move-cancel", 200)
        ae = AE(ae_title="MOVER")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        host, port = server.dicom_addr
        assoc = ae.associate(host, port, ae_title="PHIM")
        assert assoc.is_established
        statuses = []
        try:
            for status, _ in assoc.send_c_move(ident("STUDY", StudyInstanceUID=insts[0].study), "SLOW",
                                               StudyRootQueryRetrieveInformationModelMove, msg_id=7):
                statuses.append(status)
                if len(statuses) == 5:
                    assoc.send_c_cancel(7, query_model=StudyRootQueryRetrieveInformationModelMove)
        finally:
            assoc.release()
        final = statuses[-1]
        assert final.Status == 0xFE00, hex(final.Status)
        assert 5 <= final.NumberOfCompletedSuboperations < 200
        assert final.NumberOfRemainingSuboperations == 200 - final.NumberOfCompletedSuboperations
        assert len(stored) < 200
    finally:
        scp.shutdown()


# ------------------------------------------------------------ storage commitment


def test_storage_commitment_reports_held_and_missing(server):
    insts = store_study(server, f"commit-{server.profile}", 2)
    reports = []
    got = threading.Event()

    def on_report(event):
        reports.append((event.event_type, event.event_information))
        got.set()
        return 0x0000, None

    ae = AE(ae_title="COMMITTER")
    ae.add_requested_context(StorageCommitmentPushModel)
    host, port = server.dicom_addr
    assoc = ae.associate(host, port, ae_title="PHIM", evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    assert assoc.is_established
    request = Dataset()
    request.TransactionUID = pydicom.uid.generate_uid()
    request.ReferencedSOPSequence = []
    unknown = pydicom.uid.generate_uid()
    for cls, sop in [(i.sop_class, i.sop) for i in insts] + [(SecondaryCaptureImageStorage, unknown)]:
        item = Dataset()
        item.ReferencedSOPClassUID = cls
        item.ReferencedSOPInstanceUID = sop
        request.ReferencedSOPSequence.append(item)
    try:
        status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1")
        assert status.Status == 0x0000
        assert got.wait(15), "no N-EVENT-REPORT"
        # Release only once Phim has our N-EVENT-REPORT-RSP (pynetdicom sends it
        # after the handler returns; releasing first races it).
        deadline = time.monotonic() + 15
        acked = f"transaction_uid={request.TransactionUID}"
        while not any("report acknowledged" in line and acked in line for line in server.log_text().splitlines()):
            assert time.monotonic() < deadline, "Phim never saw the N-EVENT-REPORT-RSP"
            time.sleep(0.05)
    finally:
        assoc.release()
    event_type, info = reports[0]
    assert event_type == 2
    assert info.TransactionUID == request.TransactionUID
    assert sorted(i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence) == sorted(i.sop for i in insts)
    assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in info.FailedSOPSequence] == [(unknown, 0x0112)]


def test_storage_commitment_report_on_a_new_association(phim_factory):
    """A requester that does not take the report on its own association (no
    handler there, or released) gets it on a new one, at its --remote-ae."""
    reports = []
    got = threading.Event()

    def on_report(event):
        reports.append((event.event_type, event.event_information, event.assoc.requestor.ae_title))
        got.set()
        return 0x0000, None

    listener = AE(ae_title="COMMITTER")
    listener.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    listen_port = free_port()
    scp = listener.start_server(("127.0.0.1", listen_port), block=False,
                                evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    try:
        server = phim_factory.start("embedded", extra_args=["--remote-ae", f"COMMITTER=127.0.0.1:{listen_port}"])
        insts = store_study(server, "commit-new-assoc", 1)
        ae = AE(ae_title="COMMITTER")
        ae.add_requested_context(StorageCommitmentPushModel)
        host, port = server.dicom_addr
        assoc = ae.associate(host, port, ae_title="PHIM")  # no N-EVENT-REPORT handler
        assert assoc.is_established
        request = Dataset()
        request.TransactionUID = pydicom.uid.generate_uid()
        item = Dataset()
        item.ReferencedSOPClassUID = insts[0].sop_class
        item.ReferencedSOPInstanceUID = insts[0].sop
        request.ReferencedSOPSequence = [item]
        try:
            status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1")
            assert status.Status == 0x0000
        finally:
            assoc.release()
        assert got.wait(15), "no N-EVENT-REPORT on a new association"
    finally:
        scp.shutdown()
    event_type, info, calling = reports[0]
    assert event_type == 1
    assert calling.strip() == "PHIM"
    assert info.TransactionUID == request.TransactionUID
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [insts[0].sop]
    assert "FailedSOPSequence" not in info


def test_c_get_cancel_stops_the_sub_operations(phim_factory):
    from pynetdicom import build_role

    server = phim_factory.start("embedded")
    insts = store_study(server, "get-cancel", 60)
    stored = []

    def on_store(event):
        time.sleep(0.05)
        stored.append(event.request.AffectedSOPInstanceUID)
        return 0x0000

    ae = AE(ae_title="GETTER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian])
    host, port = server.dicom_addr
    assoc = ae.associate(host, port, ae_title="PHIM",
                         ext_neg=[build_role(SecondaryCaptureImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    statuses = []
    try:
        for status, _ in assoc.send_c_get(ident("STUDY", StudyInstanceUID=insts[0].study),
                                          StudyRootQueryRetrieveInformationModelGet, msg_id=9):
            statuses.append(status)
            if len(statuses) == 3:
                assoc.send_c_cancel(9, query_model=StudyRootQueryRetrieveInformationModelGet)
    finally:
        assoc.release()
    final = statuses[-1]
    assert final.Status == 0xFE00, hex(final.Status)
    assert 3 <= final.NumberOfCompletedSuboperations < 60
    assert final.NumberOfRemainingSuboperations == 60 - final.NumberOfCompletedSuboperations
    assert len(stored) == final.NumberOfCompletedSuboperations


# One SOP class stored in several transfer syntaxes, to a peer that takes only Explicit or
# only Implicit VR Little Endian (#12): C-MOVE and C-GET transcode on the imaging pool
# instead of failing.
MR_VARIANTS = ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]


def mr_variants(label: str) -> list[tuple[str, Dataset, bytes]]:
    import io

    from phim_helpers import uid_for
    files = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")
    study, series = uid_for("transcode", label, "study"), uid_for("transcode", label, "series")
    out = []
    for i, name in enumerate(MR_VARIANTS):
        ds = pydicom.dcmread(os.path.join(files, name))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid_for("transcode", label, name)
        ds.InstanceNumber = i + 1
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append((name, ds, buf.getvalue()))
    return out


@pytest.mark.parametrize("profile,only", [(p, ts) for p in PROFILES for ts in ("explicit", "implicit")])
def test_c_move_and_c_get_transcode_for_peers_that_take_only_uncompressed(phim_factory, profile, only):
    from pynetdicom import build_role
    from pynetdicom.sop_class import MRImageStorage

    from phim_helpers import stow
    received: dict[str, tuple[str, Dataset]] = {}
    syntax = ExplicitVRLittleEndian if only == "explicit" else ImplicitVRLittleEndian

    def on_store(event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        received[str(ds.SOPInstanceUID)] = (str(event.context.transfer_syntax), ds)
        return 0x0000

    scp_ae = AE(ae_title="ELEONLY")
    scp_ae.add_supported_context(MRImageStorage, [syntax])
    port = free_port()
    scp = scp_ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        server = phim_factory.start(profile, extra_args=["--remote-ae", f"ELEONLY=127.0.0.1:{port}"])
        variants = mr_variants(f"{profile}-{only}")
        res = stow(server, [v[2] for v in variants])
        assert res.status == 200, res.describe()
        study = str(variants[0][1].StudyInstanceUID)

        def check(how: str):
            assert set(received) == {str(v[1].SOPInstanceUID) for v in variants}, (how, received.keys())
            for name, ds, _ in variants:
                ts, got = received[str(ds.SOPInstanceUID)]
                assert ts == syntax, (how, name, ts)
                assert np.array_equal(got.pixel_array, ds.pixel_array), (how, name)
                assert got.PatientName == ds.PatientName and got.SOPClassUID == ds.SOPClassUID

        statuses = move(server, StudyRootQueryRetrieveInformationModelMove, ident("STUDY", StudyInstanceUID=study),
                        "ELEONLY")
        final = statuses[-1]
        assert final.Status == 0x0000, hex(final.Status)
        assert final.NumberOfCompletedSuboperations == len(variants) and final.NumberOfFailedSuboperations == 0
        check("C-MOVE")

        received.clear()
        ae = AE(ae_title="GETELE")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(MRImageStorage, [syntax])
        assoc = ae.associate(*server.dicom_addr, ae_title="PHIM", ext_neg=[build_role(MRImageStorage, scp_role=True)],
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
        assert assoc.is_established
        try:
            statuses = [s for s, _ in assoc.send_c_get(ident("STUDY", StudyInstanceUID=study),
                                                      StudyRootQueryRetrieveInformationModelGet)]
        finally:
            assoc.release()
        assert statuses[-1].Status == 0x0000, hex(statuses[-1].Status)
        check("C-GET")
    finally:
        scp.shutdown()
