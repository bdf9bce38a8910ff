"""The production shape (#13): three `phim serve` behind HAProxy on one PostgreSQL database and a
3-node Garage cluster (replication factor 3, itself behind HAProxy), with faults injected while
four clients store through the balancer:

* one Phim server killed with `kill -9`: the others keep serving, and the dead server's jobs are
  taken over once its leases expire;
* one Garage node killed and restarted: stores go on (quorum 2 of 3), and once it is back a
  different node can be lost with every instance still readable;
* the whole store down for 30 s: A700 per instance, /readyz unready, recovery by itself.

Each client retries what was not acknowledged, as a modality does; every acknowledged instance
is then retrieved byte for byte through the balancer, and from each server directly."""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests

from cluster import GarageCluster, HAProxy, Ingest, assert_all_retrievable
from conftest import ProdEnv, ProdStore
from phim_helpers import (
    Instance,
    encode_multipart,
    pg_create_database,
    random_suffix,
)
from test_emr import wait_for

SERVERS = 3


class Balanced:
    """The balancer's address, used like a server by the helpers."""

    def __init__(self, url: str):
        self.base_url = url
        self.http = requests.Session()

    def url(self, path: str) -> str:
        return self.base_url + path

    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 60)
        return self.http.get(self.url(path), **kw)


@pytest.fixture(scope="module")
def cluster(module_factory, tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    garage = GarageCluster(root / "garage")
    s3_lb = HAProxy(root, "s3")
    phim_lb = HAProxy(root, "phim")
    try:
        garage.start()
        s3_lb.start([f"127.0.0.1:{p}" for p in garage.s3_ports], health=None)
        env = ProdEnv(database_url=os.environ.get("PHIM_TEST_DATABASE_URL") or pytest.fail(
            "PHIM_TEST_DATABASE_URL is not set (scripts/test.sh sets it)", pytrace=False), s3_endpoint=s3_lb.url,
                      s3_bucket=garage.BUCKET, s3_region=garage.REGION)
        url, name = pg_create_database(env.database_url)
        store = ProdStore(env, url, name, f"c-{random_suffix(6)}")
        module_factory.stores.append(store)  # its database is dropped with the factory
        creds = {"AWS_ACCESS_KEY_ID": garage.access_key, "AWS_SECRET_ACCESS_KEY": garage.secret_key}
        servers = [module_factory.start("pg_s3", store=store, name=f"cluster-{i + 1}", env=creds,
                                        extra_args=["--job-lease", "3", "--s3-retry-timeout", "5"])
                   for i in range(SERVERS)]
        phim_lb.start([s.addr for s in servers], health="/readyz")
        lb = Balanced(phim_lb.url)
        wait_for("the balancer to see every server", lambda: lb.get("/readyz").status_code == 200)
        yield type("Cluster", (), {"garage": garage, "servers": servers, "lb": lb, "store": store})
    finally:
        phim_lb.stop()
        for s in module_factory.servers:
            if s.name.startswith("cluster-"):
                s.stop()
        s3_lb.stop()
        garage.stop()


def study_instances(target, study: str) -> set[str]:
    r = target.get(f"/dicomweb/studies/{study}/instances", params={"includefield": "00080018"},
                   headers={"Accept": "application/dicom+json"})
    if r.status_code == 204:
        return set()
    assert r.status_code == 200, r.text
    return {d["00080018"]["Value"][0] for d in r.json()}


def test_every_server_serves_what_any_stored(cluster):
    with Ingest(cluster.lb, "cluster-basic") as ingest:
        wait_for("12 acknowledged instances", lambda: ingest.count() >= 12, timeout=60)
    print(ingest.summary())
    assert not [f for f in ingest.failed_attempts if f.startswith("gave up")]
    for target in [cluster.lb, *cluster.servers]:
        assert study_instances(target, ingest.study) == {i.sop for i in ingest.acked}
    assert_all_retrievable(cluster.lb, ingest.acked)


def test_a_server_killed_under_load_loses_nothing(cluster):
    victim = cluster.servers[1]
    survivors = [cluster.servers[0], cluster.servers[2]]
    with Ingest(cluster.lb, "cluster-kill") as ingest:
        wait_for("storing under way", lambda: ingest.count() >= 8, timeout=60)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        killed_at = ingest.count()
        wait_for("storing to go on without it", lambda: ingest.count() >= killed_at + 24, timeout=90)
    print(ingest.summary())
    assert not [f for f in ingest.failed_attempts if f.startswith("gave up")], ingest.failed_attempts
    acked = {i.sop for i in ingest.acked}
    for target in [cluster.lb, *survivors]:
        assert study_instances(target, ingest.study) == acked
    assert_all_retrievable(cluster.lb, ingest.acked)
    # The dead server's jobs (thumbnails it had claimed) are not left running: its leases
    # expire (3 s) and the survivors finish them.
    wait_for("no job left running or queued",
             lambda: not survivors[0].get("/api/jobs", params={"kind": "thumbnail"}).json()["jobs"],
             timeout=60)


def test_a_garage_node_killed_and_restarted_loses_nothing(cluster):
    garage = cluster.garage
    with Ingest(cluster.lb, "cluster-garage") as ingest:
        wait_for("storing under way", lambda: ingest.count() >= 8, timeout=60)
        garage.kill_node(2)
        down_at = ingest.count()
        wait_for("storing to go on with two nodes", lambda: ingest.count() >= down_at + 16, timeout=90)
        garage.start_node(2)
        up_at = ingest.count()
        wait_for("storing after the restart", lambda: ingest.count() >= up_at + 8, timeout=90)
    print(ingest.summary())
    assert not [f for f in ingest.failed_attempts if f.startswith("gave up")], ingest.failed_attempts
    assert_all_retrievable(cluster.lb, ingest.acked)
    # With node 3 back, losing node 1 still leaves every instance readable (quorum 2 of 3,
    # node 3 answering for what was written while it was down).
    wait_for("three healthy Garage nodes", lambda: garage.healthy_nodes() == 3, timeout=60)
    garage.kill_node(0)
    try:
        time.sleep(2)  # the balancer's health check takes node 1 out
        assert_all_retrievable(cluster.lb, ingest.acked)
    finally:
        garage.start_node(0)


def test_the_whole_store_down_for_30_s(cluster):
    """Every Garage node stopped for 30 s while four clients store through the balancer: a
    server answers STOW with Failure Reason A700 per
    instance and C-STORE with A700 within its bounded retry time, /readyz goes unready (so the
    balancer answers 503 itself rather than hang), and ingest recovers by itself once the
    store is back, with nothing acknowledged lost."""
    from test_store_outage import c_store

    garage, server = cluster.garage, cluster.servers[0]
    before = Instance.make("cluster-outage/before")
    body, ct = encode_multipart([before.data])
    r = server.http.post(f"{server.dicomweb}/studies", data=body, timeout=60, headers={"Content-Type": ct})
    assert r.status_code == 200, r.text[:300]
    # Four clients store through the balancer all along, retrying (for minutes) what fails.
    with Ingest(cluster.lb, "cluster-outage", attempts=600) as ingest:
        wait_for("storing under way", lambda: ingest.count() >= 8, timeout=60)
        for i in range(garage.n):
            garage.kill_node(i)
        down = time.monotonic()
        try:
            during = Instance.make("cluster-outage/during")
            body, ct = encode_multipart([during.data])
            started = time.monotonic()
            r = server.http.post(f"{server.dicomweb}/studies", data=body, timeout=90,
                                 headers={"Content-Type": ct, "Accept": "application/dicom+json"})
            took = time.monotonic() - started
            assert r.status_code == 409 and took < 40, (r.status_code, took, r.text[:300])
            assert [f["00081197"]["Value"] for f in r.json()["00081198"]["Value"]] == [[0xA700]]
            assert c_store(server, Instance.make("cluster-outage/cstore")) == 0xA700
            wait_for("/readyz to say unready", lambda: server.get("/readyz", timeout=30).status_code == 503,
                     timeout=40)
            wait_for("the balancer to take the servers out",
                     lambda: cluster.lb.get("/readyz", timeout=30).status_code == 503, timeout=20)
            time.sleep(max(0.0, 30 - (time.monotonic() - down)))
        finally:
            for i in range(garage.n):
                garage.start_node(i)
        wait_for("/readyz to recover", lambda: server.get("/readyz", timeout=30).status_code == 200,
                 timeout=60)
        back_at = ingest.count()
        wait_for("storing again through the balancer", lambda: ingest.count() >= back_at + 8, timeout=90)
    print(ingest.summary())
    assert not [f for f in ingest.failed_attempts if f.startswith("gave up")], ingest.summary()
    assert ingest.failed_attempts, "no client saw the outage"
    # Refused while the store was away: A700 from a server, 503 from the balancer or from a
    # server whose store did not answer.
    assert set(ingest.failed_attempts) <= {"409 [42752]", "HTTP 503"}, ingest.summary()
    body, ct = encode_multipart([during.data])
    r = server.http.post(f"{server.dicomweb}/studies", data=body, timeout=60, headers={"Content-Type": ct})
    assert r.status_code == 200, r.text[:300]
    assert_all_retrievable(cluster.lb, [before, during, *ingest.acked])
