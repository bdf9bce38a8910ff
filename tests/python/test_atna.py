"""The audit trail to an ATNA audit record repository (IHE ITI-20): Debian's rsyslog listens on
127.0.0.1 (plain TCP, and TLS with a test CA made by openssl) and writes what it receives; each
message must be an RFC 5424 message with MSGID IHE+RFC-3881 whose body parses as a DICOM audit
message (PS3.15 A.5.1) with the event, the requestor and the study of what was done."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from phim_helpers import Instance, stop_process
from test_tls import make_pki

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
pytestmark = pytest.mark.skipif(not Path(RSYSLOGD).exists(), reason="rsyslog is installed by `make test`")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rsyslog:
    def __init__(self, work: Path, tls: "object | None" = None):
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.out = work / "received.log"
        driver = ""
        if tls is not None:
            driver = (f'global(DefaultNetstreamDriver="ossl" DefaultNetstreamDriverCAFile="{tls.ca}" '
                      f'DefaultNetstreamDriverCertFile="{tls.cert}" DefaultNetstreamDriverKeyFile="{tls.key}")\n')
        mod = ('module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")'
               if tls is not None else 'module(load="imtcp")')
        (work / "rsyslog.conf").write_text(
            f'global(workDirectory="{work}")\n{driver}{mod}\n'
            f'input(type="imtcp" address="127.0.0.1" port="{self.port}")\n'
            'template(name="raw" type="string" string="%PRI%|%PROTOCOL-VERSION%|%APP-NAME%|%MSGID%|%msg%\\n")\n'
            f'*.* action(type="omfile" file="{self.out}" template="raw")\n')
        self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(work / "rsyslog.conf"), "-i", str(work / "pid")],
                                     stdout=subprocess.DEVNULL, stderr=open(work / "rsyslogd.err", "wb"),
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("rsyslogd did not start: " + (work / "rsyslogd.err").read_text())
                time.sleep(0.1)

    def messages(self) -> list[tuple[str, ...]]:
        if not self.out.exists():
            return []
        return [tuple(line.split("|", 4)) for line in self.out.read_text(errors="replace").splitlines() if line]

    def close(self):
        stop_process(self.proc)


def audit_messages(receiver: Rsyslog, want: int, timeout: float = 30) -> list[ET.Element]:
    deadline = time.monotonic() + timeout
    while True:
        msgs = receiver.messages()
        if len(msgs) >= want or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    out = []
    for pri, version, app, msgid, body in msgs:
        assert version == "1" and app == "phim" and msgid == "IHE+RFC-3881", (pri, version, app, msgid)
        assert int(pri) // 8 == 10, pri  # security/authorization
        out.append(ET.fromstring(body.lstrip("\ufeff").encode()))
    return out


def check_schema_shape(m: ET.Element) -> None:
    """The elements and attributes PS3.15 A.5.1's schema requires, in its order."""
    assert m.tag == "AuditMessage"
    tags = [c.tag for c in m]
    assert tags[0] == "EventIdentification" and "AuditSourceIdentification" in tags
    assert tags.index("AuditSourceIdentification") > max(i for i, t in enumerate(tags) if t == "ActiveParticipant")
    ev = m.find("EventIdentification")
    assert ev.get("EventActionCode") in "CRUDE" and ev.get("EventOutcomeIndicator") in ("0", "4", "8", "12")
    assert ev.get("EventDateTime")
    eid = ev.find("EventID")
    assert eid.get("csd-code", "").startswith("110") and eid.get("codeSystemName") == "DCM"
    for ap in m.findall("ActiveParticipant"):
        assert ap.get("UserID") and ap.get("UserIsRequestor") in ("true", "false")
        assert ap.find("RoleIDCode") is not None


@pytest.mark.parametrize("profile", ["embedded", "pg_s3"])
@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_audit_messages_reach_an_atna_repository(phim_factory, tmp_path, transport, profile):
    pki = make_pki(tmp_path / "pki") if transport == "tls" else None
    receiver = Rsyslog(tmp_path / "rsyslog", tls=pki)
    try:
        args = ["--audit-syslog", f"{transport}://127.0.0.1:{receiver.port}"]
        if pki:
            args += ["--audit-syslog-ca", pki.ca]
        srv = phim_factory.start(profile, extra_args=args)
        inst = Instance.make(f"atna-{transport}-{profile}", patient_id="ATNA-1")
        assert srv.post("/dicomweb/studies", data=inst.data, headers={"Content-Type": "application/dicom"}).ok
        assert srv.get(f"/dicomweb/studies/{inst.study}/metadata").ok
        assert srv.get("/dicomweb/studies", params={"PatientID": "ATNA-1"}).ok
        msgs = audit_messages(receiver, want=4)
        for m in msgs:
            check_schema_shape(m)
        codes = [m.find("EventIdentification/EventID").get("csd-code") for m in msgs]
        assert {"110100", "110104", "110112"} <= set(codes), codes
        stored = next(m for m in msgs if m.find("EventIdentification").get("EventActionCode") == "C")
        objects = {(o.get("ParticipantObjectTypeCodeRole"), o.get("ParticipantObjectID"))
                   for o in stored.findall("ParticipantObjectIdentification")}
        assert ("1", "ATNA-1") in objects and ("3", inst.study) in objects, objects
        query = next(m for m in msgs if m.find("EventIdentification/EventID").get("csd-code") == "110112")
        assert query.find("ParticipantObjectIdentification/ParticipantObjectQuery") is not None
        # Patient identifiers go to the audit repository, never to the ordinary log.
        assert "ATNA-1" not in srv.log_text()
    finally:
        receiver.close()
