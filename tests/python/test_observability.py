"""What the archive is doing, seen from outside (#13): `GET /metrics` read with
the Prometheus text parser a scraper uses, counting what was just done over
DICOMweb and DIMSE; who may read it; JSON logs; and a graceful shutdown that
finishes what is in flight (a STOW-RS body, a DICOM association) within
--shutdown-timeout and then exits 0."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from pynetdicom import AE
from pynetdicom.sop_class import SecondaryCaptureImageStorage, Verification
from pydicom.uid import ExplicitVRLittleEndian

from phim_helpers import Instance, encode_multipart, parse_stow_response, run_phim, stow


def scrape(server, headers: dict | None = None) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    r = server.get("/metrics", headers=headers or {})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_metrics_count_what_was_done(phim_factory):
    server = phim_factory.start("embedded")
    before = scrape(server)
    good = [Instance.make(f"metrics-{i}") for i in range(2)]
    result = stow(server, [g.data for g in good] + [b"not a DICOM file"])
    assert len(result.referenced) == 2 and len(result.failed) == 1
    assert server.get("/dicomweb/studies", params={"StudyInstanceUID": good[0].study}).status_code == 200
    assert server.get("/dicomweb/studies/1.2.3.999/metadata").status_code == 404
    # One association with a C-ECHO and a C-STORE.
    ae = AE(ae_title="METRICS")
    ae.add_requested_context(Verification)
    ae.add_requested_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate(*server.dicom_addr, ae_title="PHIM")
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0
        assert assoc.send_c_store(Instance.make("metrics-dimse").ds).Status == 0
    finally:
        assoc.release()
    time.sleep(0.3)  # the association's end is counted as it closes
    after = scrape(server)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("phim_ingest_instances_total", outcome="stored") == 3
    assert delta("phim_ingest_instances_total", outcome="failed") == 1
    assert delta("phim_ingest_failures_total", kind="unparseable") == 1
    assert delta("phim_ingest_stored_bytes_total") >= sum(len(g.data) for g in good)
    assert delta("phim_ingest_duration_seconds_count") == 4
    assert delta("phim_http_requests_total", service="stow-rs", method="POST", status="202") == 1
    assert delta("phim_http_requests_total", service="qido-rs", status="200") == 1
    assert delta("phim_http_requests_total", service="wado-rs.metadata", status="404") == 1
    assert delta("phim_http_request_duration_seconds_count", service="qido-rs") == 1
    assert delta("phim_dimse_associations_total", tls="false") == 1
    assert delta("phim_dimse_requests_total", service="C-ECHO") == 1
    assert delta("phim_dimse_requests_total", service="C-STORE") == 1
    assert value(after, "phim_dimse_associations_active") == 0
    assert value(after, "phim_http_requests_in_flight", service="stow-rs") == 0
    # The buckets a latency is read from are there.
    assert any(n == "phim_http_request_duration_seconds_bucket" for n, _ in after)


def test_metrics_hold_no_patient_data(phim_factory):
    server = phim_factory.start("embedded")
    inst = Instance.make("metrics-phi", patient_name="Nguyễn^Văn An", patient_id="PID-METRICS-77")
    stow(server, [inst.data])
    assert server.get(f"/dicomweb/studies/{inst.study}/metadata").status_code == 200
    text = server.get("/metrics").text
    for secret in ("Nguy", "PID-METRICS-77", inst.study, inst.sop):
        assert secret not in text


def test_metrics_need_an_admin_unless_public(phim_factory, tmp_path):
    server = phim_factory.start("embedded", extra_args=["--require-auth"])
    storage = ["--data-dir", str(server.data_dir)]

    def key(name, role):
        cp = run_phim(["api-key", "create", "--name", name, "--role", role, *storage], tmp_path / f"{name}.log")
        assert cp.returncode == 0, cp.stderr.decode()
        return cp.stdout.decode().strip()

    admin, clinician = key("scraper", "admin"), key("ward", "clinician")
    assert server.get("/metrics").status_code == 401
    assert server.get("/metrics", headers={"Authorization": f"Bearer {clinician}"}).status_code == 403
    assert "phim_http_requests_total" in server.get(
        "/metrics", headers={"Authorization": f"Bearer {admin}"}).text
    public = phim_factory.start("embedded", extra_args=["--require-auth", "--metrics-public", "true"])
    assert public.get("/metrics").status_code == 200
    # Public metrics open nothing else.
    assert public.get("/dicomweb/studies").status_code == 401


def test_json_logs(phim_factory):
    server = phim_factory.start("embedded", extra_args=["--log-format", "json"])
    inst = Instance.make("json-logs", patient_name="Trần^Thị Bích", patient_id="PID-JSON-42")
    stow(server, [inst.data])
    assert server.get("/dicomweb/studies/1.2.3.4.5.404/metadata").status_code == 404
    server.stop()
    lines = [l for l in server.log_text().splitlines() if l.strip() and not l.startswith(("$ ", "[test harness]"))]
    assert len(lines) >= 5
    records = [json.loads(l) for l in lines]  # every line is one JSON object
    assert all({"timestamp", "level", "target"} <= r.keys() for r in records), records[:3]
    assert any("listening on http://" in r.get("message", "") for r in records)
    assert any(r.get("level") == "INFO" and r.get("target", "").startswith("phim") for r in records)
    text = server.log_text()
    for secret in ("Trần", "Bích", "PID-JSON-42"):
        assert secret not in text


def _slow_multipart(parts: list[bytes], boundary: str, sent_first: threading.Event, go_on: threading.Event):
    """A STOW-RS body sent part by part: after the first, it waits for `go_on`."""
    body, _ = encode_multipart(parts, "application/dicom", boundary)
    # Split the encoded body at the part boundaries.
    marker = f"\r\n--{boundary}".encode()
    first_end = body.index(marker, 1)
    yield body[:first_end]
    sent_first.set()
    go_on.wait(60)
    rest = body[first_end:]
    for i in range(0, len(rest), 4096):
        yield rest[i:i + 4096]
        time.sleep(0.01)


def test_sigterm_finishes_a_stow_in_flight_then_exits_0(phim_factory):
    server = phim_factory.start("embedded", extra_args=["--shutdown-timeout", "30"])
    insts = [Instance.make(f"shutdown-{i}") for i in range(3)]
    boundary = "phim-shutdown-test"
    sent_first, go_on = threading.Event(), threading.Event()
    answer: dict = {}

    def post():
        try:
            answer["resp"] = requests.post(
                f"http://{server.addr}/dicomweb/studies",
                data=_slow_multipart([i.data for i in insts], boundary, sent_first, go_on),
                headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
                timeout=60)
        except Exception as e:  # noqa: BLE001
            answer["error"] = e

    t = threading.Thread(target=post)
    t.start()
    assert sent_first.wait(10)
    time.sleep(0.3)
    server.proc.send_signal(signal.SIGTERM)
    # No new connection is taken once the signal is in.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://{server.addr}/healthz", timeout=1)
        except requests.ConnectionError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the server still accepted connections 5 s after SIGTERM")
    assert server.proc.poll() is None, "exited with a request in flight"
    go_on.set()
    t.join(30)
    assert "error" not in answer, answer.get("error")
    result = parse_stow_response(answer["resp"])
    assert answer["resp"].status_code == 200 and len(result.referenced) == 3
    assert server.proc.wait(20) == 0
    assert "Application Stop" in server.log_text() or "stopped" in server.log_text()
    # Acknowledged means stored: a new server on the same data finds all three.
    again = phim_factory.start("embedded", data_dir=server.data_dir)
    for i in insts:
        r = again.get(f"/dicomweb/studies/{i.study}/series/{i.series}/instances/{i.sop}",
                      headers={"Accept": "application/dicom; transfer-syntax=*"})
        assert r.status_code == 200


def test_sigterm_lets_an_open_association_finish(phim_factory):
    server = phim_factory.start("embedded", extra_args=["--shutdown-timeout", "30"])
    ae = AE(ae_title="SHUTDOWN")
    ae.add_requested_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate(*server.dicom_addr, ae_title="PHIM")
    assert assoc.is_established
    inst = Instance.make("shutdown-dimse")
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert server.proc.poll() is None, "exited with an association open"
    assert assoc.send_c_store(inst.ds).Status == 0
    assoc.release()
    assert server.proc.wait(20) == 0
    again = phim_factory.start("embedded", data_dir=server.data_dir)
    assert again.get(f"/dicomweb/studies/{inst.study}/metadata").status_code == 200


def test_shutdown_timeout_bounds_the_wait(phim_factory):
    server = phim_factory.start("embedded", extra_args=["--shutdown-timeout", "2"])
    boundary = "phim-stuck"
    sent_first, never = threading.Event(), threading.Event()
    body = _slow_multipart([Instance.make("stuck").data, Instance.make("stuck-2").data], boundary,
                           sent_first, never)
    t = threading.Thread(target=lambda: _post_quietly(server, body, boundary), daemon=True)
    t.start()
    assert sent_first.wait(10)
    time.sleep(0.3)
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0
    took = time.monotonic() - started
    assert 1.5 <= took < 8, took
    assert "shutdown timeout" in server.log_text()
    never.set()


def _post_quietly(server, body, boundary):
    try:
        requests.post(f"http://{server.addr}/dicomweb/studies", data=body,
                      headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
                      timeout=30)
    except requests.RequestException:
        pass


def test_the_sample_dashboard_queries_metrics_that_exist(phim_factory):
    """examples/grafana-dashboard.json names only metrics a server exports
    (after some traffic, so that every labelled series has a sample)."""
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "examples" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {re.sub(r"_(bucket|count|sum|total)$", "", m) for e in exprs for m in re.findall(r"phim_[a-z_]+", e)}
    server = phim_factory.start("embedded")
    inst = Instance.make("dashboard")
    stow(server, [inst.data, b"not DICOM"])
    server.get("/dicomweb/studies")
    rendered = server.get(f"/dicomweb/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}/rendered",
                          headers={"Accept": "image/png"})
    assert rendered.status_code == 200
    ae = AE(ae_title="DASH")
    ae.add_requested_context(Verification)
    assoc = ae.associate(*server.dicom_addr, ae_title="PHIM")
    assert assoc.is_established
    assoc.send_c_echo()
    assoc.release()
    text = server.get("/metrics").text
    exported = {re.sub(r"_(bucket|count|sum|total)$", "", f.name) for f in text_string_to_metric_families(text)}
    missing = used - exported
    assert not missing, missing
    assert len(used) >= 12, used
