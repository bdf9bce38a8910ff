"""Shared helpers for Phim's black-box test suite.

Everything here talks to a real `phim` process over HTTP on 127.0.0.1; nothing imports
project code. Imported by conftest.py and the test modules.
"""

from __future__ import annotations

import collections
import email.message
import hashlib
import io
import os
import re
import secrets
import signal
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pydicom
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

REPO_ROOT = Path(__file__).resolve().parents[2]

LISTEN_RE = re.compile(r"listening on (https?)://([0-9.]+:[0-9]+)")
DICOM_LISTEN_RE = re.compile(r"DICOM listening on ([0-9.]+):([0-9]+)")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
HTTP_TIMEOUT = 60.0

DICOM_JSON = "application/dicom+json"
ACCEPT_DICOM_ANY_TS = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ACCEPT_DICOM = 'multipart/related; type="application/dicom"'
ACCEPT_OCTET_MULTIPART = 'multipart/related; type="application/octet-stream"'

# STOW-RS FailureReason (0008,1197) codes of the contract.
FAIL_PROCESSING = 0xC000  # cannot parse / not DICOM / truncated / empty part
FAIL_STUDY_MISMATCH = 0xA900  # StudyInstanceUID differs from the URL's study
FAIL_DUPLICATE = 0x0111  # same SOP Instance UID stored with different bytes

# Tags of the STOW-RS response.
T_RETRIEVE_URL = "00081190"
T_REFERENCED_SOP_SEQ = "00081199"
T_FAILED_SOP_SEQ = "00081198"
T_REF_SOP_CLASS = "00081150"
T_REF_SOP_INSTANCE = "00081155"
T_WARNING_REASON = "00081196"
T_FAILURE_REASON = "00081197"

# Exclusions/notes counted across the session and printed in pytest's terminal summary
# (conftest.py), so that what a test did not compare is visible, not silent.
EXCLUSIONS: collections.Counter[str] = collections.Counter()
EXCLUSION_EXAMPLES: dict[str, list[str]] = collections.defaultdict(list)


def note_exclusion(category: str, example: str = "") -> None:
    EXCLUSIONS[category] += 1
    examples = EXCLUSION_EXAMPLES[category]
    if example and len(examples) < 5 and example not in examples:
        examples.append(example)


# --------------------------------------------------------------------------- binary / env


def phim_bin() -> Path:
    return Path(os.environ.get("PHIM_BIN") or REPO_ROOT / "target" / "debug" / "phim")


def require_phim_bin() -> Path:
    import pytest

    b = phim_bin()
    if not (b.is_file() and os.access(b, os.X_OK)):
        pytest.fail(
            f"phim binary not found at {b} (set PHIM_BIN, or run `make test`, which builds it)",
            pytrace=False,
        )
    return b


def random_suffix(nbytes: int = 4) -> str:
    return secrets.token_hex(nbytes)


# --------------------------------------------------------------------------- server process


class ServerStartError(RuntimeError):
    pass


# Servers currently running, so that a failing test can show their log tails.
LIVE_SERVERS: list["PhimServer"] = []


class PhimServer:
    """One `phim serve` process. Its stdout+stderr go to `log_path`."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str] | None = None,
                 tls_ca: str | None = None):
        self.name = name
        # http, or https when the server was given --tls-cert (then `tls_ca` verifies it).
        self.scheme = "http"
        self.args = list(args)
        self.log_path = Path(log_path)
        self.env = dict(os.environ if env is None else env)
        # Plain log lines: the listening line is parsed with a regex.
        self.env.setdefault("NO_COLOR", "1")
        self.proc: subprocess.Popen | None = None
        self.addr: str | None = None
        # (host, port) of the DIMSE listener; every test server picks a free port.
        self.dicom_addr: tuple[str, int] | None = None
        if not any(a.startswith("--dicom-listen") for a in self.args):
            self.args += ["--dicom-listen", "127.0.0.1:0"]
        self.http = requests.Session()
        # Per request: requests lets REQUESTS_CA_BUNDLE override a session's `verify`.
        self.tls_ca = tls_ca
        self.exit_code: int | None = None

    # -- lifecycle

    def start(self, timeout: float = START_TIMEOUT) -> "PhimServer":
        cmd = [str(phim_bin()), "serve", *self.args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self._log.write(("$ " + " ".join(cmd) + "\n").encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=self.env
        )
        LIVE_SERVERS.append(self)
        deadline = time.monotonic() + timeout
        try:
            self.addr = self._wait_listening(deadline)
            m = DICOM_LISTEN_RE.search(ANSI_RE.sub("", self.log_text()))
            if m:
                self.dicom_addr = (m.group(1), int(m.group(2)))
            self._wait_ready(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self, deadline: float) -> str:
        assert self.proc is not None
        while True:
            m = LISTEN_RE.search(ANSI_RE.sub("", self.log_text()))
            if m:
                self.scheme = m.group(1)
                return m.group(2)
            rc = self.proc.poll()
            if rc is not None:
                raise ServerStartError(
                    f"{self.name}: phim exited with code {rc} before logging 'listening on http://…'"
                )
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{self.name}: no 'listening on http://HOST:PORT' line within {START_TIMEOUT:.0f}s"
                )
            time.sleep(0.05)

    def _wait_ready(self, deadline: float) -> None:
        last = "no answer"
        while True:
            try:
                r = self.get("/readyz", timeout=5)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            except requests.RequestException as e:
                last = repr(e)
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ServerStartError(f"{self.name}: phim exited with code {self.proc.returncode} before /readyz")
            if time.monotonic() > deadline:
                raise ServerStartError(f"{self.name}: /readyz not 200 within {START_TIMEOUT:.0f}s (last: {last})")
            time.sleep(0.1)

    def stop(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                try:
                    self._log.write(b"\n[test harness] phim ignored SIGTERM for 10 s; killed\n")
                except ValueError:
                    pass
        if self.proc is not None:
            self.exit_code = self.proc.returncode
        if hasattr(self, "_log") and not self._log.closed:
            self._log.close()
        if self in LIVE_SERVERS:
            LIVE_SERVERS.remove(self)
        self.http.close()
        return self.exit_code

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- logs

    def log_text(self) -> str:
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(ANSI_RE.sub("", self.log_text()).splitlines()[-lines:])

    # -- HTTP

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.addr}"

    @property
    def dicomweb(self) -> str:
        return f"{self.base_url}/dicomweb"

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def request(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", HTTP_TIMEOUT)
        if self.tls_ca:
            kw.setdefault("verify", self.tls_ca)
        return self.http.request(method, self.url(path), **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.request("POST", path, **kw)

    def __repr__(self) -> str:
        return f"<PhimServer {self.name} {self.addr}>"


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds (test services: the OpenID provider, rsyslog)."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_phim(args: list[str], log_path: Path, timeout: float = 300, env: dict | None = None):
    """Run a one-shot `phim` subcommand; returns CompletedProcess (output also saved to log_path)."""
    cmd = [str(phim_bin()), *args]
    e = dict(os.environ if env is None else env)
    e.setdefault("NO_COLOR", "1")
    cp = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, env=e)
    Path(log_path).write_bytes(b"$ " + " ".join(cmd).encode() + b"\n" + cp.stdout + cp.stderr)
    return cp


# --------------------------------------------------------------------------- PostgreSQL


def _psql(url: str, sql: str) -> None:
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )


def pg_create_database(base_url: str) -> tuple[str, str]:
    """CREATE a fresh database on the server of `base_url`; returns (url, dbname).

    The name is "<base dbname>_<hex>" so that scripts/services/pg-stop.sh can drop
    leftovers of a crashed run."""
    u = urllib.parse.urlsplit(base_url)
    base_db = u.path.lstrip("/") or "phim_test"
    name = f"{base_db}_{random_suffix()}"
    try:
        _psql(base_url, f'CREATE DATABASE "{name}"')
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"CREATE DATABASE {name} failed: {e.stderr.decode(errors='replace')}") from e
    return urllib.parse.urlunsplit(u._replace(path="/" + name)), name


def pg_drop_database(base_url: str, name: str) -> None:
    _psql(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------- multipart


def parse_content_type(value: str | None) -> tuple[str, dict[str, str]]:
    """('multipart/related', {'type': 'application/dicom', 'boundary': ...}); lower-case mime."""
    if not value:
        return "", {}
    m = email.message.Message()
    m["content-type"] = value
    params = {k.lower(): v for k, v in (m.get_params() or [])[1:]}
    return m.get_content_type().lower(), params


def encode_multipart(
    parts: Iterable[bytes], part_type: str = "application/dicom", boundary: str | None = None
) -> tuple[bytes, str]:
    """Body and Content-Type of a multipart/related request, one part per item."""
    boundary = boundary or f"phim-test-{random_suffix(12)}"
    out = io.BytesIO()
    for p in parts:
        out.write(f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode())
        out.write(p)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f'multipart/related; type="{part_type}"; boundary={boundary}'


@dataclass
class Part:
    headers: dict[str, str]
    content: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def decode_multipart(body: bytes, content_type: str) -> list[Part]:
    """Parse a multipart body (RFC 2046) into parts. Raises ValueError when malformed."""
    mime, params = parse_content_type(content_type)
    if not mime.startswith("multipart/"):
        raise ValueError(f"not a multipart content type: {content_type!r}")
    boundary = params.get("boundary")
    if not boundary:
        raise ValueError(f"no boundary in {content_type!r}")
    delim = b"--" + boundary.encode()
    if body.startswith(delim):
        pos = len(delim)
    else:
        i = body.find(b"\r\n" + delim)
        if i < 0:
            raise ValueError("first boundary delimiter not found")
        pos = i + 2 + len(delim)
    parts: list[Part] = []
    while True:
        if body[pos : pos + 2] == b"--":
            return parts
        eol = body.find(b"\r\n", pos)
        if eol < 0 or body[pos:eol].strip(b" \t"):
            raise ValueError("garbage after boundary delimiter")
        start = eol + 2
        nxt = body.find(b"\r\n" + delim, start)
        if nxt < 0:
            raise ValueError("unterminated part (no closing delimiter)")
        raw = body[start:nxt]
        if raw.startswith(b"\r\n"):
            head, content = b"", raw[2:]
        else:
            j = raw.find(b"\r\n\r\n")
            if j < 0:
                raise ValueError("part without header/body separator")
            head, content = raw[:j], raw[j + 4 :]
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n"):
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        parts.append(Part(headers, content))
        pos = nxt + 2 + len(delim)


def response_parts(resp: requests.Response) -> list[Part]:
    return decode_multipart(resp.content, resp.headers.get("Content-Type", ""))


# --------------------------------------------------------------------------- DICOM JSON access


def jvalues(ds: dict, tag: str) -> list:
    el = ds.get(tag.upper()) or ds.get(tag.lower()) or {}
    return list(el.get("Value") or [])


def jvalue(ds: dict, tag: str, default: Any = None) -> Any:
    v = jvalues(ds, tag)
    return v[0] if v else default


# --------------------------------------------------------------------------- STOW-RS


@dataclass
class StowItem:
    sop_class: str | None
    sop_instance: str | None
    retrieve_url: str | None = None
    warning_reason: int | None = None
    failure_reason: int | None = None


@dataclass(repr=False)
class StowResult:
    status: int
    content_type: str
    body: dict | None
    retrieve_url: str | None = None
    referenced: list[StowItem] = field(default_factory=list)
    failed: list[StowItem] = field(default_factory=list)
    raw: bytes = b""
    headers: dict = field(default_factory=dict)

    def referenced_uids(self) -> set[str]:
        return {i.sop_instance for i in self.referenced if i.sop_instance}

    def failed_by_uid(self) -> dict[str | None, StowItem]:
        return {i.sop_instance: i for i in self.failed}

    def failure_reasons(self) -> list[int | None]:
        return [i.failure_reason for i in self.failed]

    def __repr__(self) -> str:
        return f"<StowResult {self.describe()}>"

    def describe(self) -> str:
        refs = ", ".join(str(i.sop_instance) for i in self.referenced)
        fails = ", ".join(
            f"{i.sop_instance}:{'%04X' % i.failure_reason if i.failure_reason is not None else '?'}"
            for i in self.failed
        )
        return f"HTTP {self.status} ({self.content_type}); stored [{refs}]; failed [{fails}]"


def parse_stow_response(resp: requests.Response) -> StowResult:
    ct = resp.headers.get("Content-Type", "")
    body = None
    if resp.content and parse_content_type(ct)[0] in (DICOM_JSON, "application/json"):
        body = resp.json()
    res = StowResult(status=resp.status_code, content_type=ct, body=body, raw=resp.content,
                     headers=resp.headers)
    if isinstance(body, list) and len(body) == 1:  # tolerate a one-dataset array
        body = res.body = body[0]
    if isinstance(body, dict):
        res.retrieve_url = jvalue(body, T_RETRIEVE_URL)
        for item in jvalues(body, T_REFERENCED_SOP_SEQ):
            res.referenced.append(
                StowItem(
                    sop_class=jvalue(item, T_REF_SOP_CLASS),
                    sop_instance=jvalue(item, T_REF_SOP_INSTANCE),
                    retrieve_url=jvalue(item, T_RETRIEVE_URL),
                    warning_reason=jvalue(item, T_WARNING_REASON),
                )
            )
        for item in jvalues(body, T_FAILED_SOP_SEQ):
            res.failed.append(
                StowItem(
                    sop_class=jvalue(item, T_REF_SOP_CLASS),
                    sop_instance=jvalue(item, T_REF_SOP_INSTANCE),
                    failure_reason=jvalue(item, T_FAILURE_REASON),
                )
            )
    return res


def stow(server: PhimServer, files: list[bytes], study: str | None = None, **kw) -> StowResult:
    """STOW-RS: one multipart/related request with one part per file."""
    body, ct = encode_multipart(files)
    path = "/dicomweb/studies" + (f"/{study}" if study else "")
    headers = {"Content-Type": ct, "Accept": DICOM_JSON, **kw.pop("headers", {})}
    return parse_stow_response(server.post(path, data=body, headers=headers, **kw))


def stow_raw(server: PhimServer, body: bytes, content_type: str, study: str | None = None) -> StowResult:
    path = "/dicomweb/studies" + (f"/{study}" if study else "")
    return parse_stow_response(
        server.post(path, data=body, headers={"Content-Type": content_type, "Accept": DICOM_JSON})
    )


# --------------------------------------------------------------------------- WADO-RS


def instance_path(study: str, series: str, sop: str) -> str:
    return f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"


def wado_instance_bytes(server: PhimServer, study: str, series: str, sop: str) -> bytes:
    """Retrieve one instance as stored (transfer-syntax=*); asserts a one-part answer."""
    r = server.get(instance_path(study, series, sop), headers={"Accept": ACCEPT_DICOM_ANY_TS})
    assert r.status_code == 200, f"WADO-RS instance {sop}: HTTP {r.status_code}: {r.text[:300]}"
    mime, params = parse_content_type(r.headers.get("Content-Type"))
    assert mime == "multipart/related", f"WADO-RS Content-Type {r.headers.get('Content-Type')!r}"
    assert params.get("type", "").lower() == "application/dicom", r.headers.get("Content-Type")
    parts = response_parts(r)
    assert len(parts) == 1, f"WADO-RS instance {sop}: {len(parts)} parts"
    assert parse_content_type(parts[0].content_type)[0] == "application/dicom", parts[0].headers
    return parts[0].content


def assert_instance_bytes(server: PhimServer, study: str, series: str, sop: str, expected: bytes) -> None:
    got = wado_instance_bytes(server, study, series, sop)
    if got != expected:
        n = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        raise AssertionError(
            f"instance {sop}: retrieved {len(got)} bytes differ from the {len(expected)} stored "
            f"(first difference at byte {n})"
        )


def metadata(server: PhimServer, path: str) -> list[dict]:
    r = server.get(path.rstrip("/") + "/metadata", headers={"Accept": DICOM_JSON})
    assert r.status_code == 200, f"GET {path}/metadata: HTTP {r.status_code}: {r.text[:300]}"
    assert parse_content_type(r.headers.get("Content-Type"))[0] == DICOM_JSON, r.headers.get("Content-Type")
    body = r.json()
    assert isinstance(body, list), f"metadata is not a JSON array: {type(body)}"
    return body


def qido(server: PhimServer, path: str, params: dict | None = None) -> list[dict]:
    """QIDO-RS search; an empty answer may be 200 [] or 204."""
    r = server.get(path, params=params or {}, headers={"Accept": DICOM_JSON})
    if r.status_code == 204:
        return []
    assert r.status_code == 200, f"QIDO {path} {params}: HTTP {r.status_code}: {r.text[:300]}"
    if not r.content.strip():
        return []
    assert parse_content_type(r.headers.get("Content-Type"))[0] == DICOM_JSON, r.headers.get("Content-Type")
    body = r.json()
    assert isinstance(body, list), f"QIDO answer is not a JSON array: {body!r:.200}"
    return body


# --------------------------------------------------------------------------- synthetic DICOM


def _seed_int(seed: str) -> int:
    return int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "little")


def uid_for(*parts: str) -> str:
    """A deterministic, valid UID derived from `parts`."""
    return generate_uid(entropy_srcs=["phim-test", *parts])


SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
PRIVATE_CREATOR = "PHIM TEST"


def make_dataset(
    seed: str,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    patient_id: str | None = None,
    patient_name: str = "Test^Patient",
    rows: int = 32,
    cols: int = 32,
    instance_number: int = 1,
    modality: str = "OT",
) -> Dataset:
    """A small, valid, deterministic Secondary Capture image (Explicit VR Little Endian).

    It carries a private OB element (0009,1001) early in the data set so that tests can
    patch a 32-bit length near the start of the data set."""
    rng = np.random.default_rng(_seed_int(seed))
    study_uid = study_uid or uid_for(seed, "study")
    series_uid = series_uid or uid_for(seed, "series")
    sop_uid = sop_uid or uid_for(seed, "sop")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    meta.ImplementationVersionName = "PHIM_TEST"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = "20240102"
    ds.StudyTime = "030405"
    ds.AccessionNumber = f"A{_seed_int(seed) % 10**8:08d}"
    ds.Modality = modality
    ds.ConversionType = "WSD"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = f"phim test {seed}"
    ds.SeriesDescription = f"series of {seed}"
    ds.private_block(0x0009, PRIVATE_CREATOR, create=True).add_new(0x01, "OB", rng.bytes(16))
    ds.PatientName = patient_name
    ds.PatientID = patient_id or f"PID-{_seed_int(seed) % 10**6:06d}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = rng.integers(0, 4096, size=(rows, cols), dtype=np.uint16).tobytes()
    return ds


def encode(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def make_instance(seed: str, **kw) -> tuple[Dataset, bytes]:
    ds = make_dataset(seed, **kw)
    return ds, encode(ds)


@dataclass(repr=False)
class Instance:
    """A synthetic instance: its UIDs and Part-10 bytes."""

    study: str
    series: str
    sop: str
    sop_class: str
    data: bytes
    ds: Dataset

    def __repr__(self) -> str:
        return f"<Instance sop={self.sop} ({len(self.data)} bytes)>"

    @classmethod
    def make(cls, seed: str, **kw) -> "Instance":
        ds, data = make_instance(seed, **kw)
        return cls(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID),
                   str(ds.SOPClassUID), data, ds)


def element_header_offset(data: bytes, group: int, elem: int, vr: bytes) -> int:
    """Offset of an Explicit VR Little Endian element header (tag + VR) in `data`.

    Searches after the 128-byte preamble; asserts exactly one match."""
    needle = group.to_bytes(2, "little") + elem.to_bytes(2, "little") + vr
    first = data.find(needle, 132)
    assert first >= 0, f"({group:04X},{elem:04X}) {vr!r} not found"
    assert data.find(needle, first + 1) < 0, f"({group:04X},{elem:04X}) {vr!r} found twice"
    return first
