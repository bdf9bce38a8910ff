"""TLS (issue #11): HTTPS with rustls, and DICOM TLS (PS3.15 Annex B) on its own port with the
same certificate, client certificates required by --dicom-tls-ca. The certificates are made
for each run by `openssl` (a test CA, a server certificate for 127.0.0.1, a client
certificate for a modality); the peers are Python `requests` and dcmtk's own TLS options
(`echoscu +tls`, `storescu +tls`, `findscu +tls`), and pynetdicom over TLS for C-MOVE."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

from phim_helpers import Instance, qido
from test_dimse import received, start_storescp

DICOM_TLS_RE = re.compile(r"DICOM TLS listening on ([0-9.]+):([0-9]+)")
pytestmark = pytest.mark.skipif(not (shutil.which("openssl") and shutil.which("echoscu")),
                                reason="openssl and dcmtk are installed by `make test`")


@dataclass
class Pki:
    ca: str
    cert: str
    key: str
    client_cert: str
    client_key: str
    stranger_cert: str
    stranger_key: str


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d: Path) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=Phim Test CA", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                                  "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                                  "extendedKeyUsage=clientAuth\n")
    for name, ext, ca in (("server", "server.ext", "ca"), ("client", "client.ext", "ca")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", ext, cwd=d)
    # A client certificate that no trusted CA signed.
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "stranger.key", "-out", "stranger.pem",
            "-days", "2", "-subj", "/CN=stranger", cwd=d)
    p = lambda n: str(d / n)  # noqa: E731
    return Pki(p("ca.pem"), p("server.pem"), p("server.key"), p("client.pem"), p("client.key"),
               p("stranger.pem"), p("stranger.key"))


def dcm(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("profile", ["embedded", "pg_s3"])
def test_https_and_dicom_tls(phim_factory, tmp_path, profile):
    pki = make_pki(tmp_path / "pki")
    out = tmp_path / "moved"
    scp, scp_port = start_storescp(out, "DEST")
    try:
        srv = phim_factory.start(profile, tls_ca=pki.ca, extra_args=[
            "--tls-cert", pki.cert, "--tls-key", pki.key,
            "--dicom-tls-listen", "127.0.0.1:0", "--dicom-tls-ca", pki.ca,
            "--remote-ae", f"DEST=127.0.0.1:{scp_port}"])
        check_tls(srv, pki, tmp_path, profile, out)
    finally:
        scp.kill()
        scp.wait()


def check_tls(srv, pki: Pki, tmp_path: Path, profile: str, out: Path) -> None:
    assert srv.base_url.startswith("https://"), srv.base_url
    # HTTPS, verified against the test CA; STOW and QIDO through it.
    inst = Instance.make(f"tls-{profile}", patient_id="TLS-1")
    r = srv.post("/dicomweb/studies", data=inst.data, headers={"Content-Type": "application/dicom"})
    assert r.status_code == 200, r.text
    assert [s["0020000D"]["Value"][0] for s in qido(srv, "/dicomweb/studies", {"PatientID": "TLS-1"})] == [inst.study]
    # The certificate is not trusted without the CA, and plain HTTP gets no answer.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(srv.url("/healthz"), timeout=10, verify=True)
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(srv.url("/healthz").replace("https://", "http://"), timeout=10)

    m = DICOM_TLS_RE.search(srv.log_text())
    assert m, srv.log_tail()
    host, port = m.group(1), m.group(2)
    tls = ["+tls", pki.client_key, pki.client_cert, "+cf", pki.ca]
    r = dcm(["echoscu", *tls, "-aec", "PHIM", host, port])
    assert r.returncode == 0, r.stdout + r.stderr
    other = Instance.make(f"tls-dimse-{profile}", patient_id="TLS-2")
    f = tmp_path / "other.dcm"
    f.write_bytes(other.data)
    r = dcm(["storescu", *tls, "-aec", "PHIM", host, port, str(f)])
    assert r.returncode == 0, r.stdout + r.stderr
    r = dcm(["findscu", *tls, "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=TLS-2",
             "-k", "StudyInstanceUID", "-aec", "PHIM", host, port])
    assert r.returncode == 0 and other.study in r.stdout + r.stderr, r.stdout + r.stderr
    # C-MOVE over DICOM TLS (dcmtk's movescu has no TLS options: pynetdicom with an SSL
    # context) to a storescp; the sub-association is plain DICOM.
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki.ca)
    ctx.load_cert_chain(pki.client_cert, pki.client_key)
    ae = AE(ae_title="MOVER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate(host, int(port), ae_title="PHIM", tls_args=(ctx, "127.0.0.1"))
    assert assoc.is_established
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = other.study
    try:
        statuses = [st.Status for st, _ in assoc.send_c_move(q, "DEST", StudyRootQueryRetrieveInformationModelMove)]
    finally:
        assoc.release()
    assert statuses[-1] == 0x0000, statuses
    assert set(received(out)) == {other.sop}
    # Refused: no client certificate, one no trusted CA signed, and plain DICOM on the TLS port.
    for cmd in (["echoscu", "+tla", "+cf", pki.ca, "-aec", "PHIM", host, port],
                ["echoscu", "+tls", pki.stranger_key, pki.stranger_cert, "+cf", pki.ca, "-aec", "PHIM", host, port],
                ["echoscu", "-aec", "PHIM", host, port]):
        r = dcm(cmd)
        assert r.returncode != 0, (cmd, r.stdout + r.stderr)
    # The plain DICOM port still answers.
    r = dcm(["echoscu", "-aec", "PHIM", *map(str, srv.dicom_addr)])
    assert r.returncode == 0, r.stdout + r.stderr
