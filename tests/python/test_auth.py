"""Trust (issue #11): authentication, the role table, the audit trail and DICOM peers'
permissions, on both profiles, with real parts: API keys made by `phim api-key`, access tokens
from a real OpenID provider (npm `oidc-provider`, tests/oidc/provider.mjs), dcmtk and
pynetdicom as DICOM peers, and `phim audit verify` against a row changed behind Phim's back.

The role x route matrix is the README's role table: every protected route answers 401 without
credentials, 403 to a role without the permission, and neither to one with it; a refused
request changes nothing."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests
from pynetdicom import AE
from pynetdicom.sop_class import (
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from pydicom.dataset import Dataset

from phim_helpers import Instance, encode, parse_stow_response, run_phim, stop_process, uid_for

ROOT = Path(__file__).resolve().parents[2]
ROLES = ["admin", "radiologist", "clinician", "modality", "auditor"]
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
NOT_AUTHORIZED = 0x0124


# --------------------------------------------------------------------------- helpers


def storage_args(server_or_store, data_dir: Path) -> list[str]:
    """The index options of `phim api-key`/`phim audit` for a server's profile."""
    args = ["--data-dir", str(data_dir)]
    store = getattr(server_or_store, "store", None)
    if store is not None:
        args += ["--database-url", store.database_url]
    return args


def make_key(tmp: Path, storage: list[str], name: str, role: str) -> str:
    cp = run_phim(["api-key", "create", "--name", name, "--role", role, *storage], tmp / f"key-{name}.log")
    assert cp.returncode == 0, cp.stderr.decode()
    key = cp.stdout.decode().strip()
    assert key.startswith("phim_") and len(key) == 48, key
    return key


def bearer(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


def sr_instance(seed: str, study: Instance) -> bytes:
    """A Basic Text SR in `study`: a derived object a radiologist may store."""
    ds = Instance.make(seed, study_uid=study.study, series_uid=uid_for(seed, "series")).ds
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.file_meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    ds.Modality = "SR"
    for kw in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
               "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):
        if kw in ds:
            delattr(ds, kw)
    return encode(ds)


def multipart(parts: list[bytes]) -> tuple[bytes, str]:
    boundary = "phim-auth-test-boundary"
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
                    for p in parts) + b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow_as(srv, token, parts: list[bytes]) -> requests.Response:
    body, ct = multipart(parts)
    return srv.post("/dicomweb/studies", data=body, headers={"Content-Type": ct, **bearer(token)})


def study_uids(srv, token) -> set[str]:
    r = srv.get("/dicomweb/studies", params={"limit": 1000}, headers=bearer(token))
    assert r.status_code in (200, 204), r.text
    return {s["0020000D"]["Value"][0] for s in (r.json() if r.status_code == 200 else [])}


def instance_uids(srv, token, study: str) -> set[str]:
    r = srv.get(f"/dicomweb/studies/{study}/instances", headers=bearer(token))
    if r.status_code == 204:
        return set()
    assert r.status_code == 200, r.text
    return {i["00080018"]["Value"][0] for i in r.json()}


# --------------------------------------------------------------------------- secure by default


def test_exposed_without_auth_refuses_to_start(tmp_path):
    """Listening beyond loopback with no authentication: phim serve exits with a message that
    says what to do, before it binds anything (HTTP and DICOM alike)."""
    for args, words in (
        (["--listen", "0.0.0.0:0", "--dicom-listen", "off"], "--allow-anonymous"),
        (["--listen", "127.0.0.1:0", "--dicom-listen", "0.0.0.0:0"], "--dicom-require-known-ae"),
    ):
        cp = subprocess.run([str(ROOT / "target/debug/phim") if not os.environ.get("PHIM_BIN") else os.environ["PHIM_BIN"],
                             "serve", "--data-dir", str(tmp_path / "d"), *args],
                            capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        out = (cp.stdout + cp.stderr).decode()
        assert cp.returncode == 2, out
        assert "refusing" in out and words in out, out


# --------------------------------------------------------------------------- API keys + matrix


@pytest.fixture(scope="module", params=["embedded", "pg_s3"])
def locked(request, module_factory, tmp_path_factory):
    """A server that requires authentication, one API key per role, and one stored study."""
    profile = request.param
    tmp = tmp_path_factory.mktemp(f"auth-{profile}")
    data_dir = tmp / "data"
    store = module_factory.prod_store() if profile == "pg_s3" else None
    storage = ["--data-dir", str(data_dir)] + (["--database-url", store.database_url] if store else [])
    keys = {role: make_key(tmp, storage, f"{role}-key", role) for role in ROLES}
    revoked = make_key(tmp, storage, "old-key", "admin")
    cp = run_phim(["api-key", "revoke", "old-key", *storage], tmp / "revoke.log")
    assert cp.returncode == 0, cp.stderr.decode()
    listed = run_phim(["api-key", "list", *storage], tmp / "list.log").stdout.decode()
    assert "modality-key" in listed and "old-key" in listed and "phim_" not in listed
    srv = module_factory.start(profile, data_dir=data_dir, store=store, name=f"locked-{profile}",
                               extra_args=["--require-auth"])
    inst = Instance.make(f"auth-{profile}", patient_id=f"AUTH-{profile}")
    r = stow_as(srv, keys["modality"], [inst.data])
    assert r.status_code == 200, r.text
    return {"srv": srv, "keys": keys, "revoked": revoked, "inst": inst, "storage": storage, "tmp": tmp,
            "profile": profile}


def routes(inst: Instance):
    s, se, i = inst.study, inst.series, inst.sop
    base = f"/dicomweb/studies/{s}/series/{se}/instances/{i}"
    # (method, path, params, permission)
    return [
        ("GET", "/dicomweb/studies", None, "query"),
        ("GET", "/dicomweb/series", None, "query"),
        ("GET", "/dicomweb/instances", None, "query"),
        ("GET", f"/dicomweb/studies/{s}/series", None, "query"),
        ("GET", f"/dicomweb/studies/{s}/instances", None, "query"),
        ("GET", f"/dicomweb/studies/{s}/series/{se}/instances", None, "query"),
        ("GET", f"/dicomweb/studies/{s}", None, "retrieve"),
        ("GET", f"/dicomweb/studies/{s}/metadata", None, "retrieve"),
        ("GET", f"/dicomweb/studies/{s}/series/{se}", None, "retrieve"),
        ("GET", f"/dicomweb/studies/{s}/series/{se}/metadata", None, "retrieve"),
        ("GET", base, None, "retrieve"),
        ("GET", base + "/metadata", None, "retrieve"),
        ("GET", base + "/frames/1", None, "retrieve"),
        ("GET", base + "/rendered", None, "retrieve"),
        ("GET", base + "/thumbnail", None, "retrieve"),
        ("GET", f"/dicomweb/studies/{s}/rendered", None, "retrieve"),
        ("GET", f"/dicomweb/studies/{s}/thumbnail", None, "retrieve"),
        ("GET", f"/dicomweb/studies/{s}/series/{se}/thumbnail", None, "retrieve"),
        ("GET", "/wado", {"requestType": "WADO", "studyUID": s, "seriesUID": se, "objectUID": i}, "retrieve"),
        ("GET", "/IHEInvokeImageDisplay", {"requestType": "STUDY", "studyUID": s}, "query"),
        ("GET", "/fhir/ImagingStudy", {"_id": s}, "query"),
        ("GET", f"/fhir/ImagingStudy/{s}", None, "query"),
        ("GET", f"/api/studies/{s}/emr-link", None, "query"),
        ("GET", "/api/emr-links", {"studies": s}, "query"),
        ("GET", f"/api/studies/{s}/references", None, "query"),
        ("GET", "/api/changes", None, "query"),
        ("GET", "/api/webhooks/deliveries", None, "administer"),
    ]


# The README's role table, by permission.
GRANTS = {
    "query": {"admin", "radiologist", "clinician"},
    "retrieve": {"admin", "radiologist", "clinician"},
    "store": {"admin", "modality"},
    "emr-link-write": {"admin", "clinician"},
    "administer": {"admin"},
}


def test_role_route_matrix(locked):
    srv, keys, inst = locked["srv"], locked["keys"], locked["inst"]
    failures = []
    for method, path, params, permission in routes(inst):
        for who in [None, *ROLES]:
            r = srv.request(method, path, params=params, headers=bearer(keys.get(who)), allow_redirects=False)
            if who is None:
                want = "401"
            else:
                want = "allowed" if who in GRANTS[permission] else "403"
            got = str(r.status_code) if r.status_code in (401, 403) else "allowed"
            if got != want:
                failures.append(f"{method} {path} as {who or 'nobody'}: {r.status_code} (want {want}) {r.text[:120]}")
            if r.status_code == 401:
                assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), (path, r.headers)
            if r.status_code in (401, 403):
                assert r.text.strip(), f"{path}: a refusal says why"
    assert not failures, "\n".join(failures)
    # Open to anyone.
    for path in ("/healthz", "/readyz", "/api/auth/config", "/fhir/metadata"):
        assert srv.get(path).status_code == 200, path
    assert srv.get("/api/auth/config").json() == {"required": True, "oidc": None}


def test_refused_requests_change_nothing(locked):
    srv, keys, inst = locked["srv"], locked["keys"], locked["inst"]
    new = Instance.make(f"refused-{locked['profile']}", patient_id="REFUSED-1")
    for who in (None, "clinician", "auditor", "radiologist"):
        r = stow_as(srv, keys.get(who), [new.data])
        if who == "radiologist":
            # Let in (it may store derived objects), but a CT/SC image is refused per
            # instance with Failure Reason 0124 (Not Authorized).
            assert r.status_code == 409, r.text
            assert parse_stow_response(r).failure_reasons() == [NOT_AUTHORIZED], r.text
        else:
            assert r.status_code == (401 if who is None else 403), (who, r.status_code, r.text)
    assert new.study not in study_uids(srv, keys["admin"])
    link = {"recordId": "R-1", "url": "https://emr.example/r/1"}
    for who in (None, "radiologist", "modality", "auditor"):
        r = srv.request("PUT", f"/api/studies/{inst.study}/emr-link", json=link, headers=bearer(keys.get(who)))
        assert r.status_code == (401 if who is None else 403), (who, r.status_code)
        assert r.headers["Content-Type"].startswith("application/json")
    assert srv.get(f"/api/studies/{inst.study}/emr-link", headers=bearer(keys["admin"])).status_code == 404
    r = srv.request("PUT", f"/api/studies/{inst.study}/emr-link", json=link, headers=bearer(keys["clinician"]))
    assert r.status_code == 200, r.text


def test_radiologist_stores_derived_objects_only(locked):
    srv, keys, inst = locked["srv"], locked["keys"], locked["inst"]
    sr = sr_instance(f"sr-{locked['profile']}", inst)
    ct = Instance.make(f"rad-ct-{locked['profile']}", study_uid=inst.study,
                       series_uid=uid_for("rad-ct", locked["profile"]))
    r = stow_as(srv, keys["radiologist"], [sr, ct.data])
    assert r.status_code == 202, r.text
    res = parse_stow_response(r)
    assert res.failure_reasons() == [NOT_AUTHORIZED], r.text
    stored = instance_uids(srv, keys["admin"], inst.study)
    assert ct.sop not in stored and len(res.referenced_uids()) == 1 and res.referenced_uids() <= stored


def test_dicomweb_client_with_a_key(locked):
    """dicomweb-client (what scripts and research tools use) with a bearer token: stores as a
    modality, searches and retrieves as a radiologist, and is refused without the token."""
    from dicomweb_client.api import DICOMwebClient
    import requests as rq

    srv, keys = locked["srv"], locked["keys"]
    inst = Instance.make(f"dwc-{locked['profile']}", patient_id="DWC-1")
    modality = DICOMwebClient(url=srv.dicomweb, headers=bearer(keys["modality"]))
    modality.store_instances([inst.ds])
    reader = DICOMwebClient(url=srv.dicomweb, headers=bearer(keys["radiologist"]))
    found = reader.search_for_studies(search_filters={"PatientID": "DWC-1"})
    assert [s["0020000D"]["Value"][0] for s in found] == [inst.study]
    got = reader.retrieve_instance(inst.study, inst.series, inst.sop)
    assert str(got.SOPInstanceUID) == inst.sop
    with pytest.raises(rq.exceptions.HTTPError) as e:
        DICOMwebClient(url=srv.dicomweb).search_for_studies()
    assert e.value.response.status_code == 401
    with pytest.raises(rq.exceptions.HTTPError) as e:
        modality.search_for_studies()
    assert e.value.response.status_code == 403


def test_bad_credentials_are_refused(locked):
    srv, keys = locked["srv"], locked["keys"]
    for headers in ({"Authorization": f"Bearer {locked['revoked']}"},            # revoked
                    {"Authorization": "Bearer phim_" + "A" * 43},                # unknown
                    {"Authorization": f"Basic {base64.b64encode(b'u:p').decode()}"},
                    {"Authorization": "Bearer a.b.c"},                           # a JWT, no issuer here
                    {"Authorization": f"Bearer {keys['admin']}x"}):
        r = srv.get("/dicomweb/studies", headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    # Keys never reach the log.
    log = srv.log_text()
    assert not any(k in log for k in keys.values())


# --------------------------------------------------------------------------- audit trail


def test_only_admins_delete(locked):
    """DELETE is for admins (policy.rs); the deletion is audited as DICOM Study Deleted
    (PS3.15 A.5.3.5) with who, the study, its patient and the instance count."""
    srv, keys, p = locked["srv"], locked["keys"], locked["profile"]
    doomed = Instance.make(f"doomed-{p}", patient_id=f"DOOMED-{p}")
    assert stow_as(srv, keys["modality"], [doomed.data]).status_code == 200
    path = f"/dicomweb/studies/{doomed.study}"
    for who in (None, *[r for r in ROLES if r != "admin"]):
        r = srv.request("DELETE", path, headers=bearer(keys.get(who)))
        assert r.status_code == (401 if who is None else 403), (who, r.status_code, r.text)
    assert doomed.study in study_uids(srv, keys["admin"])
    r = srv.request("DELETE", path, headers=bearer(keys["admin"]))
    assert r.status_code == 204, r.text
    assert doomed.study not in study_uids(srv, keys["admin"])

    def deleted():
        return [r for r in audit_rows(locked) if r["event"] == "StudyDeleted"]

    row = wait_for(deleted, "the deletion is audited")[0]
    assert row["action"] == "D" and row["outcome"] == "Success", row
    assert row["actor"]["name"] == "admin-key" and row["studies"] == [doomed.study], row
    assert row["patient_id"] == f"DOOMED-{p}" and row["instances"] == 1, row


def audit_rows(locked) -> list[dict]:
    if locked["profile"] == "embedded":
        db = sqlite3.connect(Path(locked["storage"][1]) / "index.db")
        try:
            return [json.loads(b) for (b,) in db.execute("SELECT body FROM audit_log ORDER BY seq")]
        finally:
            db.close()
    url = locked["storage"][3]
    out = subprocess.run(["psql", "-X", "-At", "-d", url, "-c", "SELECT body FROM audit_log ORDER BY seq"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def tamper(locked, sql: str) -> None:
    if locked["profile"] == "embedded":
        db = sqlite3.connect(Path(locked["storage"][1]) / "index.db")
        with db:
            db.execute(sql)
        db.close()
    else:
        subprocess.run(["psql", "-X", "-q", "-d", locked["storage"][3], "-c", sql], check=True,
                       capture_output=True, timeout=60)


def wait_for(pred, what: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.2)


def test_audit_trail_records_access_and_detects_tampering(locked):
    srv, keys, inst = locked["srv"], locked["keys"], locked["inst"]
    patient = f"AUTH-{locked['profile']}"
    assert srv.get(f"/dicomweb/studies/{inst.study}/metadata", headers=bearer(keys["clinician"])).status_code == 200
    assert srv.get("/dicomweb/studies", params={"PatientID": patient}, headers=bearer(keys["radiologist"])).ok
    assert srv.get("/dicomweb/studies", headers=bearer(keys["auditor"])).status_code == 403

    def events():
        rows = audit_rows(locked)
        kinds = {(r["event"], r["action"], r["actor"]["name"]) for r in rows}
        need = {("ApplicationActivity", "E", "phim"), ("InstancesTransferred", "C", "modality-key"),
                ("InstancesTransferred", "R", "clinician-key"), ("Query", "E", "radiologist-key"),
                ("SecurityAlert", "E", "auditor-key"), ("UserAuthentication", "E", "unknown")}
        return rows if need <= kinds else None

    rows = wait_for(events, "the audit trail has every kind of event of this test")
    stored = next(r for r in rows if r["event"] == "InstancesTransferred" and r["action"] == "C")
    assert stored["studies"] == [inst.study] and stored["instances"] >= 1 and stored["patient_id"] == patient
    read = next(r for r in rows if r["actor"]["name"] == "clinician-key" and r["event"] == "InstancesTransferred")
    assert read["patient_id"] == patient and read["actor"]["roles"] == ["clinician"]
    assert read["actor"]["address"] == "127.0.0.1"
    # Patient identifiers stay out of the ordinary log.
    assert patient not in srv.log_text()

    # FHIR AuditEvent (IHE BALP), for auditors and admins only.
    fhir = "/fhir/AuditEvent"
    assert srv.get(fhir, params={"patient": patient}, headers=bearer(keys["clinician"])).status_code == 403
    bundle = srv.get(fhir, params={"patient": patient}, headers=bearer(keys["auditor"]))
    assert bundle.status_code == 200 and bundle.headers["Content-Type"].startswith("application/fhir+json")
    events = [e["resource"] for e in bundle.json()["entry"]]
    assert events and all(e["resourceType"] == "AuditEvent" for e in events)
    codes = {e["type"]["code"] for e in events}
    assert {"110104", "110112"} <= codes, codes
    assert all(any(x.get("what", {}).get("identifier", {}).get("value") == patient for x in e["entity"]) for e in events)
    by_study = srv.get(fhir, params={"entity-id": f"urn:oid:{inst.study}", "date": f"ge{time.strftime('%Y-%m-%d', time.gmtime())}"},
                       headers=bearer(keys["admin"])).json()
    assert by_study["total"] >= 2
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    assert srv.get(fhir, params={"date": f"ge{tomorrow}"}, headers=bearer(keys["auditor"])).json()["total"] == 0
    assert srv.get(fhir, params={"date": "yesterday"}, headers=bearer(keys["auditor"])).status_code == 400

    verify = run_phim(["audit", "verify", *locked["storage"]], locked["tmp"] / "verify.log")
    assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()
    assert "intact" in verify.stdout.decode()
    # A row changed behind Phim's back breaks the chain at that row.
    tamper(locked, "UPDATE audit_log SET body = replace(body, 'clinician-key', 'someone-else') "
                   "WHERE seq = (SELECT min(seq) FROM audit_log WHERE actor = 'clinician-key')")
    tamper(locked, "UPDATE audit_log SET actor = 'someone-else' WHERE actor = 'clinician-key'")
    broken = run_phim(["audit", "verify", *locked["storage"]], locked["tmp"] / "verify2.log")
    out = broken.stdout.decode()
    assert broken.returncode == 1 and "BROKEN" in out, out


# --------------------------------------------------------------------------- DICOM peers


def dcm(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "TCP_NODELAY": "1"})


@pytest.mark.skipif(not shutil.which("storescu"), reason="dcmtk is installed by `make test`")
@pytest.mark.parametrize("profile", ["embedded", "pg_s3"])
def test_remote_ae_permissions(phim_factory, tmp_path, profile):
    srv = phim_factory.start(profile, extra_args=[
        "--dicom-require-known-ae",
        "--remote-ae", "CT1=127.0.0.1:11199:store,commit",
        "--remote-ae", "WS1=127.0.0.1:11198:find",
        # Bound to another loopback address than the one the tests connect from.
        "--remote-ae", "CT2=127.0.0.2:11197:store,from-host",
    ])
    host, port = srv.dicom_addr
    # Unknown calling AE: A-ASSOCIATE-RJ, calling AE title not recognized.
    r = dcm(["echoscu", "-aet", "STRANGER", "-aec", "PHIM", host, str(port)])
    assert r.returncode != 0 and "Calling AE Title Not Recognized" in r.stdout + r.stderr
    r = dcm(["echoscu", "-aet", "CT2", "-aec", "PHIM", host, str(port)])
    assert r.returncode != 0 and "Calling AE Title Not Recognized" in r.stdout + r.stderr
    # CT1 stores (dcmtk), but may not search.
    inst = Instance.make("ae-perm", patient_id="AE-1")
    f = tmp_path / "a.dcm"
    f.write_bytes(inst.data)
    r = dcm(["storescu", "-aet", "CT1", "-aec", "PHIM", host, str(port), str(f)])
    assert r.returncode == 0, r.stdout + r.stderr

    def find_status(calling: str) -> int:
        ae = AE(ae_title=calling)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate(host, port, ae_title="PHIM")
        assert assoc.is_established
        try:
            q = Dataset()
            q.QueryRetrieveLevel = "STUDY"
            q.StudyInstanceUID = ""
            statuses = [s.Status for s, _ in assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind)]
        finally:
            assoc.release()
        return statuses[-1]

    assert find_status("CT1") == NOT_AUTHORIZED
    assert find_status("WS1") == 0x0000
    # WS1 may search but not store: refused with 0124, nothing stored.
    ae = AE(ae_title="WS1")
    ae.add_requested_context(SecondaryCaptureImageStorage)
    assoc = ae.associate(host, port, ae_title="PHIM")
    assert assoc.is_established
    other = Instance.make("ae-perm-2", patient_id="AE-2")
    try:
        st = assoc.send_c_store(other.ds)
    finally:
        assoc.release()
    assert st.Status == NOT_AUTHORIZED
    studies = {s["0020000D"]["Value"][0] for s in srv.get("/dicomweb/studies").json()}
    assert inst.study in studies and other.study not in studies
    # C-MOVE needs `move`: WS1 may only find.
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove
    ae = AE(ae_title="WS1")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate(host, port, ae_title="PHIM")
    assert assoc.is_established
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = inst.study
    try:
        statuses = [s.Status for s, _ in assoc.send_c_move(q, "CT1", StudyRootQueryRetrieveInformationModelMove)]
    finally:
        assoc.release()
    assert statuses[-1] == NOT_AUTHORIZED
    # Verification needs no permission.
    ae = AE(ae_title="WS1")
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, port, ae_title="PHIM")
    assert assoc.is_established and assoc.send_c_echo().Status == 0
    assoc.release()


# --------------------------------------------------------------------------- OpenID Connect


class Provider:
    """tests/oidc/provider.mjs: a real, certified OpenID provider on 127.0.0.1."""

    def __init__(self, **env):
        node = shutil.which("node")
        if not node or not (ROOT / "tests/oidc/node_modules").is_dir():
            pytest.fail("the OpenID provider needs node and tests/oidc/node_modules (scripts/test.sh installs them)",
                        pytrace=False)
        self.proc = subprocess.Popen([node, str(ROOT / "tests/oidc/provider.mjs")], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                     env={**os.environ, "OIDC_PORT": "0", **env})
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            pytest.fail("the OpenID provider did not start", pytrace=False)
        info = json.loads(line)
        self.issuer, self.audience = info["issuer"], info["audience"]

    def token(self, client: str, resource: str | None = None) -> str:
        r = requests.post(f"{self.issuer}/token", timeout=30, auth=(client, f"secret-{client}"),
                          data={"grant_type": "client_credentials", "resource": resource or self.audience})
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def close(self):
        stop_process(self.proc)


@pytest.fixture(scope="module")
def idp():
    p = Provider()
    yield p
    p.close()


def b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("profile", ["embedded", "pg_s3"])
def test_oidc_tokens(phim_factory, idp, profile):
    srv = phim_factory.start(profile, extra_args=[
        "--oidc-issuer", idp.issuer, "--oidc-audience", idp.audience,
        "--oidc-client-id", "phim-viewer", "--oidc-clock-skew", "0"])
    cfg = srv.get("/api/auth/config").json()
    assert cfg["required"] and cfg["oidc"]["issuer"] == idp.issuer and cfg["oidc"]["client_id"] == "phim-viewer"
    inst = Instance.make(f"oidc-{profile}", patient_id="OIDC-1")
    assert stow_as(srv, idp.token("svc-modality"), [inst.data]).status_code == 200
    search = lambda token: srv.get("/dicomweb/studies", headers=bearer(token))  # noqa: E731
    for client, want in (("svc-radiologist", 200), ("svc-clinician", 200), ("svc-admin", 200),
                         ("svc-radiologist-es256", 200), ("svc-modality", 403), ("svc-auditor", 403),
                         ("svc-none", 403)):
        r = search(idp.token(client))
        assert r.status_code == want, (client, r.status_code, r.text)
    good = idp.token("svc-radiologist")
    head, payload, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = dict(claims, roles=["admin"])
    bad = {
        "wrong audience": idp.token("svc-radiologist", resource="urn:other:api"),
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(forged)}.",
        "tampered": f"{head}.{b64(forged)}.{sig}",
        "unknown key": f"{b64({**json.loads(base64.urlsafe_b64decode(head + '==')), 'kid': 'not-a-key'})}.{payload}.{sig}",
        "garbage": "x.y.z",
    }
    short = idp.token("svc-short")
    assert search(short).status_code == 200
    # Another provider: its issuer is not ours (and neither are its keys).
    other = Provider()
    try:
        bad["wrong issuer"] = other.token("svc-radiologist")
    finally:
        other.close()
    time.sleep(3)  # svc-short's tokens live 2 s; --oidc-clock-skew 0
    bad["expired"] = short
    for what, token in bad.items():
        r = search(token)
        assert r.status_code == 401, (what, r.status_code, r.text)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert search(good).status_code == 200
    assert not any(t in srv.log_text() for t in (good, short))


@pytest.mark.parametrize("profile", ["embedded", "pg_s3"])
def test_keycloak_roles_claim(phim_factory, profile):
    kc = Provider(OIDC_ROLES_STYLE="keycloak")
    try:
        srv = phim_factory.start(profile, extra_args=[
            "--oidc-issuer", kc.issuer, "--oidc-audience", kc.audience,
            "--oidc-roles-claim", "realm_access.roles"])
        assert srv.get("/dicomweb/studies", headers=bearer(kc.token("svc-clinician"))).status_code in (200, 204)
        assert srv.get("/dicomweb/studies", headers=bearer(kc.token("svc-modality"))).status_code == 403
    finally:
        kc.close()


# --------------------------------------------------------------------------- share links


def test_share_links_open_one_study(locked):
    srv, keys, inst = locked["srv"], locked["keys"], locked["inst"]
    other = Instance.make(f"share-other-{locked['profile']}", patient_id="SHARE-OTHER")
    assert stow_as(srv, keys["admin"], [other.data]).status_code == 200
    share = f"/api/studies/{inst.study}/share"
    assert srv.post(share, headers=bearer(keys["modality"])).status_code == 403
    assert srv.post(share).status_code == 401
    assert srv.post(f"/api/studies/{uid_for('nope')}/share", headers=bearer(keys["clinician"])).status_code == 404
    made = srv.post(share, json={"expires_in": 600}, headers=bearer(keys["clinician"]))
    assert made.status_code == 200, made.text
    link = made.json()
    token = link["token"]
    assert link["viewer"].endswith(f"/study/{inst.study}?share={token}")
    # As a bearer token and as the `share` parameter a viewer URL carries.
    md = f"/dicomweb/studies/{inst.study}/metadata"
    assert srv.get(md, headers=bearer(token)).status_code == 200
    assert srv.get(md, params={"share": token}).status_code == 200
    # Searches see the shared study only, whatever they ask for.
    for params in ({}, {"StudyInstanceUID": other.study}, {"PatientID": "SHARE-OTHER"}):
        r = srv.get("/dicomweb/studies", params={**params, "share": token})
        found = {s["0020000D"]["Value"][0] for s in r.json()} if r.status_code == 200 else set()
        assert found <= {inst.study} and other.study not in found, (params, r.status_code)
    assert inst.study in study_uids(srv, token)
    for path in (f"/dicomweb/studies/{other.study}/metadata", f"/dicomweb/studies/{other.study}",
                 "/api/changes", f"/fhir/ImagingStudy/{other.study}"):
        assert srv.get(path, params={"share": token}).status_code == 403, path
    assert stow_as(srv, token, [Instance.make("via-share").data]).status_code == 403
    # IID hands the link on to the viewer.
    r = srv.get("/IHEInvokeImageDisplay", params={"requestType": "STUDY", "studyUID": inst.study, "share": token},
                allow_redirects=False)
    assert r.status_code == 302 and f"share={token}" in r.headers["Location"], r.headers
    # The EMR's references carry a share link when it asks for one.
    refs = srv.get(f"/api/studies/{inst.study}/references", params={"share_expires_in": 600},
                   headers=bearer(keys["clinician"]))
    assert refs.status_code == 200, refs.text
    ref_token = refs.json()["share"]["token"]
    assert refs.json()["viewer"].endswith(f"/study/{inst.study}?share={ref_token}")
    assert refs.json()["iid"].endswith(f"&share={ref_token}")
    assert srv.get(md, params={"share": ref_token}).status_code == 200
    assert "share" not in srv.get(f"/api/studies/{inst.study}/references", headers=bearer(keys["clinician"])).json()
    # A share link cannot make another one.
    assert srv.get(f"/api/studies/{inst.study}/references",
                   params={"share_expires_in": 600, "share": token}).status_code == 403
    assert srv.get(f"/api/studies/{inst.study}/references", params={"share_expires_in": "soon"},
                   headers=bearer(keys["clinician"])).status_code == 400
    # Tampered: refused.
    head, sig = token.rsplit(".", 1)
    assert srv.get(md, headers=bearer(head + "." + sig[::-1])).status_code == 401
    # A new signing key: links signed before keep working; new ones use the new key.
    cp = run_phim(["share-key", "rotate", *locked["storage"]], locked["tmp"] / "rotate.log")
    assert cp.returncode == 0, cp.stderr.decode()
    assert srv.get(md, headers=bearer(token)).status_code == 200
    short = srv.post(share, json={"expires_in": 1}, headers=bearer(keys["radiologist"])).json()["token"]
    assert short.split(".")[0] != token.split(".")[0]
    time.sleep(2.1)
    r = srv.get(md, headers=bearer(short))
    assert r.status_code == 401 and "expired" in r.text, r.text


# --------------------------------------------------------------------------- limits, CORS


@pytest.mark.parametrize("profile", ["embedded", "pg_s3"])
def test_limits_per_identity_and_cors(phim_factory, tmp_path, profile):
    data = tmp_path / "data"
    store = phim_factory.prod_store() if profile == "pg_s3" else None
    storage = ["--data-dir", str(data)] + (["--database-url", store.database_url] if store else [])
    keys = {r: make_key(tmp_path, storage, f"{r}-k", r) for r in ("clinician", "radiologist", "modality")}
    srv = phim_factory.start(profile, data_dir=data, store=store, extra_args=[
        "--require-auth", "--rate-limit", "2", "--rate-burst", "5", "--max-body", "modality=64K",
        "--cors-origin", "https://emr.example"])
    # Rate: a burst of 5, then 429 with Retry-After; another identity is not affected.
    codes = [srv.get("/dicomweb/studies", headers=bearer(keys["clinician"])).status_code for _ in range(8)]
    assert codes[:5] == [200] * 5 or all(c in (200, 204) for c in codes[:5]), codes
    assert 429 in codes[5:], codes
    r = srv.get("/dicomweb/studies", headers=bearer(keys["clinician"]))
    if r.status_code == 429:
        assert int(r.headers["Retry-After"]) >= 1 and "rate" in r.text
    assert srv.get("/dicomweb/studies", headers=bearer(keys["radiologist"])).status_code in (200, 204)
    # Body per role: a modality may send 64 KiB; more is 413 and nothing is stored.
    big = Instance.make(f"limits-big-{profile}", rows=256, cols=256)
    assert len(big.data) > 64 * 1024
    r = srv.post("/dicomweb/studies", data=big.data, headers={"Content-Type": "application/dicom", **bearer(keys["modality"])})
    assert r.status_code == 413, r.text
    small = Instance.make(f"limits-small-{profile}")
    r = srv.post("/dicomweb/studies", data=small.data, headers={"Content-Type": "application/dicom", **bearer(keys["modality"])})
    assert r.status_code == 200, r.text
    assert study_uids(srv, keys["radiologist"]) == {small.study}
    # CORS: the configured origin only; a preflight needs no credentials.
    pre = srv.request("OPTIONS", "/dicomweb/studies", headers={
        "Origin": "https://emr.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert pre.status_code == 200 and pre.headers["Access-Control-Allow-Origin"] == "https://emr.example", pre.headers
    r = srv.get("/dicomweb/studies", headers={"Origin": "https://evil.example", **bearer(keys["radiologist"])})
    assert "Access-Control-Allow-Origin" not in r.headers


@pytest.mark.parametrize("profile", ["embedded", "pg_s3"])
def test_concurrent_requests_per_identity(phim_factory, tmp_path, profile):
    """--max-concurrent-requests: a caller's requests at once, held while they run."""
    import socket
    from urllib.parse import urlsplit

    data = tmp_path / "data"
    store = phim_factory.prod_store() if profile == "pg_s3" else None
    storage = ["--data-dir", str(data)] + (["--database-url", store.database_url] if store else [])
    keys = {r: make_key(tmp_path, storage, f"{r}-k", r) for r in ("modality", "radiologist")}
    srv = phim_factory.start(profile, data_dir=data, store=store,
                             extra_args=["--require-auth", "--max-concurrent-requests", "2"])
    host, port = urlsplit(srv.url("/")).hostname, urlsplit(srv.url("/")).port
    import select

    def open_slow():
        # A STOW whose body never finishes arriving: its request keeps running.
        s = socket.create_connection((host, port))
        s.sendall((f"POST /dicomweb/studies HTTP/1.1\r\nHost: {host}\r\n"
                   f"Authorization: Bearer {keys['modality']}\r\nContent-Type: application/dicom\r\n"
                   f"Content-Length: 1000000\r\n\r\n").encode() + b"\0" * 1000)
        return s

    slow = [open_slow(), open_slow()]
    small = Instance.make(f"concurrent-{profile}")

    def store_small():
        return srv.post("/dicomweb/studies", data=small.data,
                        headers={"Content-Type": "application/dicom", **bearer(keys["modality"])})

    deadline = time.monotonic() + 10
    while True:
        time.sleep(0.1)
        # A slow request that lost the race to a probe was answered 429: open it again.
        answered = select.select(slow, [], [], 0)[0]
        for s in answered:
            slow.remove(s)
            s.close()
            slow.append(open_slow())
        if answered:
            continue
        r = store_small()
        if r.status_code == 429 or time.monotonic() > deadline:
            break
    assert r.status_code == 429 and "--max-concurrent-requests" in r.text, (r.status_code, r.text)
    assert int(r.headers["Retry-After"]) >= 1
    # Another identity is not affected.
    assert srv.get("/dicomweb/studies", headers=bearer(keys["radiologist"])).status_code in (200, 204)
    for s in slow:
        s.close()
    deadline = time.monotonic() + 10
    while (r := store_small()).status_code == 429:
        assert time.monotonic() < deadline, "the places of closed requests were not given back"
        time.sleep(0.05)
    assert r.status_code == 200, r.text


def test_cors_is_off_by_default(server):
    r = server.request("OPTIONS", "/dicomweb/studies", headers={
        "Origin": "https://emr.example", "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in r.headers
    r = server.get("/dicomweb/studies", headers={"Origin": "https://emr.example"})
    assert "Access-Control-Allow-Origin" not in r.headers
