"""The background job queue (#13) over HTTP: a job that runs out of attempts is a dead letter
an admin sees (`/api/jobs`, `/metrics`) and queues again; a server killed with `kill -9` in
the middle of a job leaves it to another server once its lease expires; SIGTERM gives its
leases back at once; reconciliation (`fsck`) runs as a periodic job and indexes an orphan."""

from __future__ import annotations

import signal
import time

import pytest

from phim_helpers import Instance, assert_instance_bytes, qido, stow
from test_emr import HookReceiver, study, wait_for
from test_fsck import plant


def jobs(server, **params) -> dict:
    r = server.get("/api/jobs", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def deliveries(server) -> list[dict]:
    r = server.get("/api/webhooks/deliveries")
    assert r.status_code == 200, r.text
    return r.json()["deliveries"]


def metric(server, line_start: str) -> float | None:
    text = server.get("/metrics").text
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return None


def hold_a_delivery(phim_factory, hook, store, label: str, lease: int):
    """Server A (pg_s3 on `store`) in the middle of a delivery to `hook`, which hangs; returns
    A, the arguments for a second server and the study announced."""
    args = ["--stable-after", "1", "--webhook-url", hook.url, "--job-lease", str(lease)]
    a = phim_factory.start("pg_s3", store=store, name=f"{label}-a", extra_args=args)
    insts = study(label, patient_id=label.upper(), accession=label.upper())
    assert stow(a, [i.data for i in insts]).status == 200
    wait_for("A's delivery attempt to start", lambda: hook.requests)
    return a, args, insts


@pytest.mark.parametrize("profile", ["embedded", "pg_s3"])
def test_dead_letters_are_shown_and_retried(phim_factory, profile):
    hook = HookReceiver(fail_first=2)
    try:
        srv = phim_factory.start(profile, name=f"jobs-dead-{profile}", extra_args=[
            "--stable-after", "1", "--webhook-url", hook.url, "--webhook-max-attempts", "2"])
        insts = study(f"jobs-dead/{profile}", patient_id="DEAD-1", accession="DEAD-1")
        assert stow(srv, [i.data for i in insts]).status == 200

        dead = wait_for("the webhook job to be dead",
                        lambda: jobs(srv, state="dead", kind="webhook")["jobs"], timeout=45)
        assert len(dead) == 1, dead
        job = dead[0]
        assert job["attempts"] == 2 and job["maxAttempts"] == 2, job
        assert "500" in (job["lastError"] or ""), job
        assert len(hook.requests) == 2 and not hook.accepted()
        counts = {(c["kind"], c["state"]): c["count"] for c in jobs(srv)["counts"]}
        assert counts.get(("webhook", "dead")) == 1, counts
        [d] = deliveries(srv)
        assert d["status"] == "failed", d
        # The metrics say so too (sampled every 10 s).
        wait_for("phim_jobs{webhook,dead} = 1 in /metrics",
                 lambda: metric(srv, 'phim_jobs{kind="webhook",state="dead"}') == 1, timeout=30)

        # Only a dead job can be retried; a bad id is a bad request.
        assert srv.post("/api/jobs/999999999/retry").status_code == 404
        assert srv.post("/api/jobs/not-a-number/retry").status_code == 400
        assert srv.get("/api/jobs", params={"state": "sleeping"}).status_code == 400
        r = srv.post(f"/api/jobs/{job['id']}/retry")
        assert r.status_code == 200 and r.json()["state"] == "queued", r.text
        got = wait_for("the retried delivery", hook.accepted)
        assert [e["studyInstanceUID"] for e in got] == [insts[0].study]
        wait_for("the delivery log to say delivered",
                 lambda: deliveries(srv)[0]["status"] == "delivered")
        assert jobs(srv, state="dead")["jobs"] == []
        assert srv.post(f"/api/jobs/{job['id']}/retry").status_code == 404
    finally:
        hook.close()


def test_a_killed_servers_job_is_taken_over_when_its_lease_expires(phim_factory):
    """Server A starts a delivery to a receiver that hangs, then dies with kill -9: its job
    stays `running` under A's lease until the lease expires, then server B (same PostgreSQL
    and S3) runs it."""
    hook = HookReceiver(hang_first=60)
    try:
        store = phim_factory.prod_store()
        a, args, insts = hold_a_delivery(phim_factory, hook, store, "jobs-kill", lease=3)
        [held] = jobs(a, state="running", kind="webhook")["jobs"]
        assert held["owner"], held
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        killed = time.monotonic()

        b = phim_factory.start("pg_s3", store=store, name="jobs-kill-b", extra_args=args)
        got = wait_for("B to deliver A's event", hook.accepted, timeout=30)
        took = time.monotonic() - killed
        assert [e["studyInstanceUID"] for e in got] == [insts[0].study]
        assert took < 20, f"taken over after {took:.1f} s with a 3 s lease"
        [d] = wait_for("the delivery log to say delivered",
                       lambda: [d for d in deliveries(b) if d["status"] == "delivered"])
        assert d["attempts"] == 1, d  # A's attempt never ended, so it was not recorded
        assert jobs(b, kind="webhook")["jobs"] == []
        assert_instance_bytes(b, insts[0].study, insts[0].series, insts[0].sop, insts[0].data)
    finally:
        hook.close()


def test_sigterm_gives_the_leases_back(phim_factory):
    """With a 10-minute lease, a delivery abandoned by SIGTERM is taken by the next server at
    once: the lease was released, not left to expire."""
    hook = HookReceiver(hang_first=60)
    try:
        store = phim_factory.prod_store()
        a, args, insts = hold_a_delivery(phim_factory, hook, store, "jobs-term", lease=600)
        started = time.monotonic()
        assert a.stop() == 0, a.log_tail()
        assert time.monotonic() - started < 10

        b = phim_factory.start("pg_s3", store=store, name="jobs-term-b", extra_args=args)
        got = wait_for("B to deliver the released job", hook.accepted, timeout=20)
        assert [e["studyInstanceUID"] for e in got] == [insts[0].study]
    finally:
        hook.close()


@pytest.mark.parametrize("profile", ["embedded", "pg_s3"])
def test_background_fsck_indexes_an_orphan(phim_factory, profile):
    """An object that reached the store but not the index (a crash between the two) is
    indexed by the periodic reconciliation job, without anyone running `phim fsck`."""
    srv = phim_factory.start(profile, name=f"jobs-fsck-{profile}",
                             extra_args=["--fsck-interval", "2", "--fsck-min-age", "1"])
    lost = Instance.make(f"jobs-fsck/{profile}")
    plant(srv, lost.study, lost.data, age_s=7200)
    wait_for("the orphan to be indexed",
             lambda: qido(srv, "/dicomweb/studies", {"StudyInstanceUID": lost.study}), timeout=30)
    assert_instance_bytes(srv, lost.study, lost.series, lost.sop, lost.data)
    [job] = jobs(srv, kind="fsck")["jobs"]
    assert job["state"] in ("queued", "running") and job["lastError"] is None, job
    # Off means off: started again with --fsck-interval 0, the periodic row is gone.
    assert srv.stop() == 0
    off = phim_factory.start(profile, name=f"jobs-fsck-off-{profile}", store=srv.store,
                             data_dir=srv.data_dir, extra_args=["--fsck-interval", "0"])
    assert jobs(off, kind="fsck")["jobs"] == []
