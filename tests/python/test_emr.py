"""The EMR side (issue #7) over HTTP, on both profiles: EMR record links (explicit and from
--emr-url-template), the references of a study, IHE Invoke Image Display redirects, the change
feed of stable studies and its webhooks (a receiver on 127.0.0.1 that fails first, then
accepts: the retry is logged). Two servers on one PostgreSQL announce and deliver once."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from phim_helpers import Instance, encode, phim_bin, stow, uid_for

TEMPLATE = "https://emr.example/patients/{PatientID}/orders/{AccessionNumber}"
JSON = "application/json"


# --------------------------------------------------------------------------- webhook receiver


class HookReceiver:
    """A small HTTP server on 127.0.0.1 that records POSTed events. The first `fail_first`
    requests are answered 500, later ones 200; each answer waits `delay` seconds, the first
    one `hang_first` seconds (a receiver that hangs while its caller dies)."""

    def __init__(self, fail_first: int = 0, delay: float = 0.0, hang_first: float = 0.0):
        self.fail_first = fail_first
        self.delay = delay
        self.hang_first = hang_first
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    status = 500 if len(receiver.requests) < receiver.fail_first else 200
                    wait = receiver.hang_first if not receiver.requests else receiver.delay
                    record = {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": json.loads(body),
                        "answered": None,  # set once the answer is sent
                    }
                    receiver.requests.append(record)
                time.sleep(wait)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    return  # the caller is gone (killed, or gave up): not answered
                with receiver.lock:
                    record["answered"] = status

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/phim"

    def accepted(self) -> list[dict]:
        with self.lock:
            return [r["body"] for r in self.requests if r["answered"] == 200]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def wait_for(what: str, check, timeout: float = 30.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def all_events(server, since: int = 0) -> list[dict]:
    events = []
    while True:
        r = server.get("/api/changes", params={"since": since, "limit": 2})
        assert r.status_code == 200, r.text
        body = r.json()
        events += body["events"]
        if not body["events"]:
            assert body["next"] == since
            return events
        assert body["next"] == body["events"][-1]["seq"]
        since = body["next"]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=["embedded", "pg_s3"])
def emr(request, module_factory):
    """A server with a URL template, 1 s stability and a webhook receiver that fails once."""
    hook = HookReceiver(fail_first=1)
    request.addfinalizer(hook.close)
    srv = module_factory.start(
        request.param,
        name=f"emr-{request.param}",
        extra_args=["--emr-url-template", TEMPLATE, "--stable-after", "1", "--webhook-url", hook.url],
    )
    srv.hook = hook  # type: ignore[attr-defined]
    return srv


def study(seed: str, *, patient_id: str, accession: str | None, n: int = 1, name: str = "Nguyễn^Văn An"):
    """`n` instances of one study (one series), encoded."""
    study_uid, series_uid = uid_for(seed, "study"), uid_for(seed, "series")
    insts = []
    for i in range(n):
        inst = Instance.make(f"{seed}/{i}", study_uid=study_uid, series_uid=series_uid, patient_id=patient_id,
                             patient_name=name, instance_number=i + 1, modality="CT")
        if accession is None:
            del inst.ds.AccessionNumber
        else:
            inst.ds.AccessionNumber = accession
        inst.data = encode(inst.ds)
        insts.append(inst)
    return insts


@pytest.fixture(scope="module")
def archive(emr):
    p = emr.profile
    studies = {
        # A patient ID and an accession number that need percent-encoding in the template.
        "a": study(f"emr-{p}-a", patient_id=f"P {p}/1", accession=f"ACC/{p} 1", n=2),
        "b": study(f"emr-{p}-b", patient_id=f"P-{p}-2", accession=None),
        # Two studies share an accession number (IID: not unique).
        "c1": study(f"emr-{p}-c1", patient_id=f"P-{p}-3", accession=f"SHARED-{p}"),
        "c2": study(f"emr-{p}-c2", patient_id=f"P-{p}-3", accession=f"SHARED-{p}"),
    }
    res = stow(emr, [i.data for s in studies.values() for i in s])
    assert res.status == 200, res.describe()
    return {k: v[0].study for k, v in studies.items()} | {"_insts": studies}


def error_json(r, status: int) -> dict:
    assert r.status_code == status, f"HTTP {r.status_code}: {r.text[:300]}"
    assert r.headers["Content-Type"].startswith(JSON), r.headers["Content-Type"]
    body = r.json()
    assert body["status"] == status and body["error"], body
    return body


# --------------------------------------------------------------------------- EMR links


def test_template_link_is_percent_encoded(emr, archive):
    p = emr.profile
    r = emr.get(f"/api/studies/{archive['a']}/emr-link")
    assert r.status_code == 200, r.text
    pid = urllib.parse.quote(f"P {p}/1", safe="")
    acc = urllib.parse.quote(f"ACC/{p} 1", safe="")
    assert r.json() == {"recordId": f"ACC/{p} 1", "url": f"https://emr.example/patients/{pid}/orders/{acc}",
                        "source": "template"}
    # No accession number: the template does not apply, and there is no explicit link.
    body = error_json(emr.get(f"/api/studies/{archive['b']}/emr-link"), 404)
    assert "no EMR link" in body["error"]


def test_explicit_link_wins_and_can_be_removed(emr, archive):
    a, b = archive["a"], archive["b"]
    link = {"recordId": "ORD-778 Nguyễn", "url": "https://emr.example/orders/778?tab=images"}
    r = emr.request("PUT", f"/api/studies/{a}/emr-link", json=link)
    assert r.status_code == 200, r.text
    assert r.json() == link | {"source": "explicit"}
    assert emr.get(f"/api/studies/{a}/emr-link").json() == link | {"source": "explicit"}
    r = emr.request("PUT", f"/api/studies/{b}/emr-link", json={"recordId": "B", "url": "http://emr.local/b"})
    assert r.status_code == 200, r.text
    assert emr.get(f"/api/studies/{b}/emr-link").json()["source"] == "explicit"

    r = emr.request("DELETE", f"/api/studies/{a}/emr-link")
    assert r.status_code == 204 and not r.content
    assert emr.get(f"/api/studies/{a}/emr-link").json()["source"] == "template"
    # Deleting again is still 204 (the study exists; it has no explicit link).
    assert emr.request("DELETE", f"/api/studies/{a}/emr-link").status_code == 204


@pytest.mark.parametrize("body", [
    {"recordId": "", "url": "https://emr.example/x"},
    {"recordId": "   ", "url": "https://emr.example/x"},
    {"recordId": "x" * 257, "url": "https://emr.example/x"},
    {"recordId": "R", "url": "/relative/path"},
    {"recordId": "R", "url": "ftp://emr.example/x"},
    {"recordId": "R", "url": "javascript:alert(1)"},
    {"recordId": "R"},
    {"url": "https://emr.example/x"},
    {"recordId": 42, "url": "https://emr.example/x"},
    "not a JSON object",
])
def test_bad_link_bodies_are_400_json(emr, archive, body):
    if isinstance(body, str):
        r = emr.request("PUT", f"/api/studies/{archive['c1']}/emr-link", data=body,
                        headers={"Content-Type": JSON})
    else:
        r = emr.request("PUT", f"/api/studies/{archive['c1']}/emr-link", json=body)
    error_json(r, 400)
    # Nothing was stored: the template still answers.
    assert emr.get(f"/api/studies/{archive['c1']}/emr-link").json()["source"] == "template"


def test_link_limits_and_unknown_studies(emr, archive):
    ok = {"recordId": "é" * 256, "url": "https://emr.example/x"}
    assert emr.request("PUT", f"/api/studies/{archive['c2']}/emr-link", json=ok).status_code == 200
    assert emr.request("DELETE", f"/api/studies/{archive['c2']}/emr-link").status_code == 204
    unknown = uid_for("emr", "no such study")
    link = {"recordId": "R", "url": "https://emr.example/x"}
    error_json(emr.request("PUT", f"/api/studies/{unknown}/emr-link", json=link), 404)
    error_json(emr.get(f"/api/studies/{unknown}/emr-link"), 404)
    error_json(emr.request("DELETE", f"/api/studies/{unknown}/emr-link"), 404)
    body = error_json(emr.get("/api/studies/1.2.abc/emr-link"), 400)
    assert "1.2.abc" in body["error"]
    error_json(emr.get("/api/no-such-thing"), 404)


def test_link_writes_need_the_token_when_one_is_set(phim_factory):
    """--emr-api-token (here through its environment variable): PUT and DELETE of EMR links
    need `Authorization: Bearer <token>` (401 with a Bearer challenge otherwise); reads stay
    open; the token never reaches the log."""
    token = "tok-9f8e7d6c5b4a39281706"
    srv = phim_factory.start("embedded", name="emr-token", env={"PHIM_EMR_API_TOKEN": token})
    insts = study("emr-token", patient_id="TOK-1", accession="TOK-1")
    assert stow(srv, [i.data for i in insts]).status == 200
    url = f"/api/studies/{insts[0].study}/emr-link"
    link = {"recordId": "TOK-1", "url": "https://emr.example/tok-1"}
    for headers in ({}, {"Authorization": "Bearer wrong-token-0000000000"}, {"Authorization": f"Basic {token}"},
                    {"Authorization": f"Bearer {token}x"}):
        for method, kwargs in (("PUT", {"json": link}), ("DELETE", {})):
            r = srv.request(method, url, headers=headers, **kwargs)
            error_json(r, 401)
            assert r.headers["WWW-Authenticate"].startswith("Bearer"), r.headers
    error_json(srv.get(url), 404)  # nothing was set
    ok = {"Authorization": f"Bearer {token}"}
    assert srv.request("PUT", url, json=link, headers=ok).status_code == 200
    assert srv.get(url).json()["recordId"] == "TOK-1"  # reads need no token
    assert srv.request("DELETE", url, headers=ok).status_code == 204
    error_json(srv.get(url), 404)
    assert token not in srv.log_path.read_text(errors="replace")


def test_a_short_token_is_refused_at_start(phim_factory, tmp_path):
    r = subprocess.run([str(phim_bin()), "serve", "--listen", "127.0.0.1:0", "--dicom-listen", "off",
                        "--data-dir", str(tmp_path / "d"), "--emr-api-token", "short"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "--emr-api-token" in r.stderr and "short" not in r.stderr.replace("--emr-api-token", "")


def test_batch_read_for_the_study_list(emr, archive):
    a, b, c1 = archive["a"], archive["b"], archive["c1"]
    unknown = uid_for("emr", "no such study")
    link = {"recordId": "B-1", "url": "https://emr.example/b/1"}
    assert emr.request("PUT", f"/api/studies/{b}/emr-link", json=link).status_code == 200
    r = emr.get("/api/emr-links", params={"studies": f"{a},{b},{c1},{unknown},{a}"})
    assert r.status_code == 200, r.text
    got = r.json()
    assert set(got) == {a, b, c1}, got
    assert got[b] == link | {"source": "explicit"}
    assert got[a]["source"] == got[c1]["source"] == "template"
    assert got[c1]["recordId"] == f"SHARED-{emr.profile}"

    too_many = ",".join(uid_for("emr-batch", str(i)) for i in range(201))
    assert "200" in error_json(emr.get("/api/emr-links", params={"studies": too_many}), 400)["error"]
    error_json(emr.get("/api/emr-links", params={"studies": f"{a},1.02"}), 400)
    error_json(emr.get("/api/emr-links"), 400)
    error_json(emr.get("/api/emr-links", params={"studies": a, "other": "1"}), 400)


# --------------------------------------------------------------------------- references


def test_references(emr, archive):
    a, b = archive["a"], archive["b"]
    base = emr.base_url
    r = emr.get(f"/api/studies/{a}/references")
    assert r.status_code == 200, r.text
    ref = r.json()
    assert ref == {
        "studyInstanceUID": a,
        "viewer": f"{base}/study/{a}",
        "iid": f"{base}/IHEInvokeImageDisplay?requestType=STUDY&studyUID={a}",
        "wado": f"{base}/dicomweb/studies/{a}",
        "metadata": f"{base}/dicomweb/studies/{a}/metadata",
        "thumbnail": f"{base}/dicomweb/studies/{a}/thumbnail",
        "fhir": f"{base}/fhir/ImagingStudy/{a}",
        "emr": emr.get(f"/api/studies/{a}/emr-link").json(),
    }
    # The references resolve.
    assert emr.get(ref["metadata"], headers={"Accept": "application/dicom+json"}).status_code == 200
    assert emr.get(ref["fhir"]).status_code == 200
    iid = emr.get(ref["iid"], allow_redirects=False)
    assert iid.status_code == 302 and iid.headers["Location"] == ref["viewer"]

    # Behind a proxy: the same base-URL rules as DICOMweb's RetrieveURL.
    r = emr.get(f"/api/studies/{a}/references",
                headers={"X-Forwarded-Host": "pacs.example", "X-Forwarded-Proto": "https"})
    assert r.json()["viewer"] == f"https://pacs.example/study/{a}"
    emr.request("DELETE", f"/api/studies/{b}/emr-link")
    assert emr.get(f"/api/studies/{b}/references").json()["emr"] is None
    error_json(emr.get(f"/api/studies/{uid_for('emr', 'nope')}/references"), 404)


# --------------------------------------------------------------------------- IHE IID


def iid(server, **params):
    return server.get("/IHEInvokeImageDisplay", params=params, allow_redirects=False)


def location(r) -> str:
    assert r.status_code == 302, f"HTTP {r.status_code}: {r.text[:300]}"
    return r.headers["Location"]


def test_iid_redirects(emr, archive):
    base, p = emr.base_url, emr.profile
    a, b, c1, c2 = archive["a"], archive["b"], archive["c1"], archive["c2"]
    assert location(iid(emr, requestType="STUDY", studyUID=a)) == f"{base}/study/{a}"
    assert location(iid(emr, requestType="STUDY", studyUID=f"{a},{b}")) == f"{base}/?studyUID={a},{b}"
    # Unique accession number: straight to the study; shared or unknown: the list.
    assert location(iid(emr, requestType="STUDY", accessionNumber=f"ACC/{p} 1")) == f"{base}/study/{a}"
    got = location(iid(emr, requestType="STUDY", accessionNumber=f"SHARED-{p}"))
    assert got == f"{base}/?accessionNumber=SHARED-{p}"
    got = location(iid(emr, requestType="STUDY", accessionNumber="NOT*THERE"))
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(got).query) == {"accessionNumber": ["NOT*THERE"]}
    # PATIENT: an IID patientID is CX (ID^^^&issuer&ISO): the ID part is used.
    got = location(iid(emr, requestType="PATIENT", patientID=f"P {p}/1^^^&1.2.3.4&ISO"))
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(got).query) == {"patientID": [f"P {p}/1"]}
    # IID display options are accepted.
    got = location(iid(emr, requestType="STUDY", studyUID=c1, viewerType="IHE_BIR", diagnosticQuality="true"))
    assert got == f"{base}/study/{c1}"
    assert c2 != c1


@pytest.mark.parametrize("params,status", [
    ({}, 400),
    ({"studyUID": "1.2.3"}, 400),
    ({"requestType": "SERIES", "studyUID": "1.2.3"}, 400),
    ({"requestType": "STUDY"}, 400),
    ({"requestType": "STUDY", "studyUID": ""}, 400),
    ({"requestType": "STUDY", "studyUID": "1.2.x"}, 400),
    ({"requestType": "PATIENT"}, 400),
    ({"requestType": "PATIENT", "patientID": "^^^&1.2&ISO"}, 400),
    ({"requestType": "STUDY", "studyUID": "1.2.3", "accessionNumber": "A"}, 400),
])
def test_iid_errors(emr, params, status):
    r = iid(emr, **params)
    assert r.status_code == status, f"{params}: HTTP {r.status_code}"
    assert r.text.strip()


def test_iid_unknown_study_is_404(emr, archive):
    unknown = uid_for("emr", "iid unknown")
    r = iid(emr, requestType="STUDY", studyUID=f"{archive['a']},{unknown}")
    assert r.status_code == 404 and unknown in r.text


# --------------------------------------------------------------------------- changes, webhooks


def test_stable_studies_are_announced_once_and_again_when_they_grow(emr, archive):
    insts = archive["_insts"]
    mine = {archive[k] for k in ("a", "b", "c1", "c2")}

    def announced():
        evs = [e for e in all_events(emr) if e["studyInstanceUID"] in mine]
        return evs if {e["studyInstanceUID"] for e in evs} == mine else None

    events = wait_for("the four studies to be announced", announced)
    assert len(events) == 4, f"announced more than once: {events}"
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    by_uid = {e["studyInstanceUID"]: e for e in events}
    a = by_uid[archive["a"]]
    base = emr.base_url
    assert a["type"] == "study.stable"
    assert a["numberOfInstances"] == 2
    assert a["accessionNumber"] == f"ACC/{emr.profile} 1"
    assert a["patientID"] == f"P {emr.profile}/1"
    assert a["time"].endswith("Z") and a["time"][:2] == "20"
    assert a["links"] == {
        "viewer": f"{base}/study/{a['studyInstanceUID']}",
        "wado": f"{base}/dicomweb/studies/{a['studyInstanceUID']}",
        "fhir": f"{base}/fhir/ImagingStudy/{a['studyInstanceUID']}",
        "thumbnail": f"{base}/dicomweb/studies/{a['studyInstanceUID']}/thumbnail",
    }
    assert by_uid[archive["b"]]["accessionNumber"] is None

    # More instances later: announced again, once, with the new count.
    last = max(e["seq"] for e in all_events(emr))
    extra = Instance.make(f"emr-{emr.profile}-a/extra", study_uid=insts["a"][0].study,
                          series_uid=uid_for("emr-extra-series", emr.profile), patient_id=insts["a"][0].ds.PatientID)
    assert stow(emr, [extra.data]).status == 200
    again = wait_for("the grown study to be announced again",
                     lambda: [e for e in all_events(emr, last) if e["studyInstanceUID"] == archive["a"]])
    time.sleep(2.5)  # more than the quiet period: no second announcement
    again = [e for e in all_events(emr, last) if e["studyInstanceUID"] == archive["a"]]
    assert len(again) == 1 and again[0]["numberOfInstances"] == 3, again
    assert [e["studyInstanceUID"] for e in all_events(emr, last)] == [archive["a"]]


def test_changes_parameters(emr):
    for params in ({"since": "-1"}, {"since": "x"}, {"limit": "0"}, {"cursor": "1"}):
        error_json(emr.get("/api/changes", params=params), 400)
    r = emr.get("/api/changes", params={"since": 10**12})
    assert r.status_code == 200 and r.json() == {"events": [], "next": 10**12}


def test_webhooks_deliver_every_event_with_a_logged_retry(emr, archive):
    hook = emr.hook
    events = wait_for("events", lambda: all_events(emr))

    def delivered():
        got = hook.accepted()
        return got if {e["seq"] for e in got} >= {e["seq"] for e in events} else None

    got = wait_for("every event to reach the webhook", delivered)
    # Exactly the events of the feed, each accepted once.
    by_seq = {e["seq"]: e for e in got}
    assert len(by_seq) == len(got), "an event was accepted twice"
    feed = {e["seq"]: e for e in all_events(emr)}
    for seq, body in by_seq.items():
        assert body == feed[seq]
    first = hook.requests[0]
    assert first["answered"] == 500
    assert first["path"] == "/hooks/phim"
    assert first["headers"]["content-type"] == JSON
    assert first["headers"]["x-phim-event"] == "study.stable"

    r = emr.get("/api/webhooks/deliveries")
    assert r.status_code == 200, r.text
    log = r.json()["deliveries"]
    assert log and all(d["url"] == hook.url for d in log)
    done = wait_for("the log to show every delivery delivered",
                    lambda: (lambda l: l if all(d["status"] == "delivered" for d in l) else None)(
                        emr.get("/api/webhooks/deliveries").json()["deliveries"]))
    retried = [d for d in done if d["attempts"] > 1]
    assert len(retried) == 1, done
    d = retried[0]
    assert d["attempts"] == 2 and d["lastStatusCode"] == 200 and d["lastError"] == "HTTP 500"
    assert d["eventSeq"] == first["body"]["seq"]
    assert d["createdAt"] <= d["deliveredAt"] and d["nextAttemptAt"] is None
    assert all(x["attempts"] == 1 and x["lastError"] is None for x in done if x is not d)
    error_json(emr.get("/api/webhooks/deliveries", params={"limit": "0"}), 400)


def test_two_servers_announce_and_deliver_once(phim_factory):
    """Two servers on one PostgreSQL: each stable study is one event, each event one
    accepted delivery."""
    hook = HookReceiver()
    try:
        store = phim_factory.prod_store()
        args = ["--stable-after", "1", "--webhook-url", hook.url]
        a = phim_factory.start("pg_s3", store=store, name="emr-a", extra_args=args)
        b = phim_factory.start("pg_s3", store=store, name="emr-b", extra_args=args)
        uids = set()
        for i in range(6):
            insts = study(f"emr-two/{i}", patient_id=f"TWO-{i}", accession=f"TWO-{i}", n=2)
            assert stow(a if i % 2 else b, [x.data for x in insts]).status == 200
            uids.add(insts[0].study)
        events = wait_for("six announcements",
                          lambda: (lambda ev: ev if {e["studyInstanceUID"] for e in ev} == uids else None)(
                              all_events(a)))
        time.sleep(2.5)
        events = all_events(a)
        assert sorted(e["studyInstanceUID"] for e in events) == sorted(uids), "a study announced twice"
        # The same feed from either server (links name the server asked).
        strip = lambda evs: [{k: v for k, v in e.items() if k != "links"} for e in evs]  # noqa: E731
        assert strip(all_events(b)) == strip(events)
        got = wait_for("six deliveries", lambda: (lambda g: g if len(g) >= 6 else None)(hook.accepted()))
        time.sleep(1.5)
        got = hook.accepted()
        assert sorted(e["seq"] for e in got) == sorted(e["seq"] for e in events), "delivered twice"
    finally:
        hook.close()


def test_shutdown_does_not_wait_for_a_slow_webhook(phim_factory):
    """A receiver that takes 30 s to answer must not hold up SIGTERM: the attempt is abandoned
    (its lease expires and it is tried again later)."""
    hook = HookReceiver(delay=30)
    try:
        srv = phim_factory.start("embedded", name="emr-slow-hook",
                                 extra_args=["--stable-after", "1", "--webhook-url", hook.url])
        insts = study("emr-slow-hook", patient_id="SLOW-1", accession="SLOW-1")
        assert stow(srv, [i.data for i in insts]).status == 200
        wait_for("the webhook attempt to start", lambda: hook.requests)
        started = time.monotonic()
        code = srv.stop()
        assert time.monotonic() - started < 5, "shutdown waited for the webhook"
        assert code == 0, srv.log_tail()
    finally:
        hook.close()
