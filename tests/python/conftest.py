"""Fixtures for Phim's black-box tests.

Profiles:
* `embedded_server` - `phim serve --data-dir DIR` (SQLite index + filesystem objects).
* `pg_s3_server`    - `phim serve` on a fresh PostgreSQL database and a fresh key prefix of
  the S3 test bucket. Needs PHIM_TEST_DATABASE_URL, PHIM_TEST_S3_ENDPOINT,
  PHIM_TEST_S3_BUCKET, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (`make test` provides them);
  fails (not skips) without them.
* `server`          - parametrized over both profiles.

`phim_factory` starts extra servers with custom arguments (two servers on one database,
a server on an imported data dir, ...). Every server is stopped with SIGTERM (SIGKILL after
10 s) at teardown; its log is kept in pytest's tmp dir and its tail is attached to the
report of a failing test.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from phim_helpers import (
    EXCLUSION_EXAMPLES,
    EXCLUSIONS,
    LIVE_SERVERS,
    PhimServer,
    ServerStartError,
    pg_create_database,
    pg_drop_database,
    random_suffix,
    require_phim_bin,
)

PROFILES = ["embedded", "pg_s3"]


# --------------------------------------------------------------------------- environment


@dataclass
class ProdEnv:
    database_url: str
    s3_endpoint: str
    s3_bucket: str
    s3_region: str


def prod_env() -> ProdEnv:
    """The production-profile services of `make test`; pytest.fail when absent."""
    missing = [
        k
        for k in (
            "PHIM_TEST_DATABASE_URL",
            "PHIM_TEST_S3_ENDPOINT",
            "PHIM_TEST_S3_BUCKET",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        )
        if not os.environ.get(k)
    ]
    if missing:
        pytest.fail(
            "the pg_s3 profile needs PostgreSQL and S3: missing "
            + ", ".join(missing)
            + ". Run the suite with `make test` (scripts/test.sh starts both), or start them with "
            "`eval \"$(bash scripts/services/pg-start.sh)\"; eval \"$(bash scripts/services/s3-start.sh)\"` "
            "and export the variables.",
            pytrace=False,
        )
    return ProdEnv(
        database_url=os.environ["PHIM_TEST_DATABASE_URL"],
        s3_endpoint=os.environ["PHIM_TEST_S3_ENDPOINT"],
        s3_bucket=os.environ["PHIM_TEST_S3_BUCKET"],
        s3_region=os.environ.get("AWS_REGION") or "us-east-1",
    )


@dataclass
class ProdStore:
    """A fresh PostgreSQL database + S3 key prefix, shareable by several servers."""

    env: ProdEnv
    database_url: str
    database_name: str
    s3_prefix: str

    def serve_args(self) -> list[str]:
        return [
            "--database-url",
            self.database_url,
            "--store",
            f"s3://{self.env.s3_bucket}/{self.s3_prefix}",
            "--s3-endpoint",
            self.env.s3_endpoint,
            "--s3-region",
            self.env.s3_region,
            "--allow-http",
        ]


# --------------------------------------------------------------------------- factory


class PhimFactory:
    """Starts servers and prod stores; everything is undone by `close()`."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, label: str):
        self.tmp = tmp_path_factory.mktemp(label)
        self.servers: list[PhimServer] = []
        self.stores: list[ProdStore] = []
        self._n = 0

    def path(self, name: str) -> Path:
        p = self.tmp / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def prod_store(self) -> ProdStore:
        env = prod_env()
        try:
            url, name = pg_create_database(env.database_url)
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"could not create a test database on {env.database_url}: {e}", pytrace=False)
        store = ProdStore(env, url, name, f"t-{random_suffix(6)}")
        self.stores.append(store)
        return store

    def start(self, profile: str = "embedded", *, data_dir: Path | None = None,
              store: ProdStore | None = None, extra_args: list[str] | None = None,
              name: str | None = None, env: dict[str, str] | None = None,
              tls_ca: str | None = None) -> PhimServer:
        require_phim_bin()
        self._n += 1
        name = name or f"{profile}-{self._n}"
        data_dir = data_dir or self.path(f"{name}-data")
        args = ["--listen", "127.0.0.1:0", "--data-dir", str(data_dir)]
        if profile == "pg_s3":
            store = store or self.prod_store()
            args += store.serve_args()
        elif profile != "embedded":
            raise ValueError(profile)
        args += extra_args or []
        srv = PhimServer(name, args, self.tmp / f"{name}.log", env={**os.environ, **env} if env else None,
                         tls_ca=tls_ca)
        srv.profile = profile  # type: ignore[attr-defined]
        srv.data_dir = data_dir  # type: ignore[attr-defined]
        srv.store = store  # type: ignore[attr-defined]
        self.servers.append(srv)
        try:
            srv.start()
        except ServerStartError as e:
            pytest.fail(f"{e}\n--- {srv.log_path} (tail) ---\n{srv.log_tail()}", pytrace=False)
        return srv

    def close(self) -> None:
        errors = []
        for srv in reversed(self.servers):
            srv.stop()
        for store in self.stores:
            try:
                pg_drop_database(store.env.database_url, store.database_name)
            except Exception as e:  # noqa: BLE001
                errors.append(f"drop database {store.database_name}: {e}")
        self.servers.clear()
        self.stores.clear()
        if errors:
            raise RuntimeError("; ".join(errors))


@pytest.fixture
def phim_factory(tmp_path_factory, request):
    f = PhimFactory(tmp_path_factory, "phim-" + request.node.name[:40].replace("/", "_"))
    yield f
    f.close()


@pytest.fixture(scope="module")
def module_factory(tmp_path_factory, request):
    f = PhimFactory(tmp_path_factory, "phim-" + request.module.__name__)
    yield f
    f.close()


# --------------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def embedded_server(module_factory) -> PhimServer:
    return module_factory.start("embedded", name="embedded")


@pytest.fixture(scope="module")
def pg_s3_server(module_factory) -> PhimServer:
    return module_factory.start("pg_s3", name="pg_s3")


@pytest.fixture(scope="module", params=PROFILES)
def server(request) -> PhimServer:
    """The server under test, once per profile (one server per test module and profile)."""
    return request.getfixturevalue(f"{request.param}_server")


# --------------------------------------------------------------------------- reporting


_TAIL_SHOWN: set[int] = set()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the log tail of each running server (in full once per server,
    as a pointer to the log file after that, to keep the output readable)."""
    report = yield
    if report.failed:
        for srv in list(LIVE_SERVERS):
            title = f"phim log: {srv.name}"
            if id(srv) in _TAIL_SHOWN:
                report.sections.append((title, f"(tail shown at an earlier failure) {srv.log_path}"))
            else:
                _TAIL_SHOWN.add(id(srv))
                report.sections.append((f"{title} (tail of {srv.log_path})", srv.log_tail(40)))
    return report


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not EXCLUSIONS:
        return
    tr = terminalreporter
    tr.section("phim: what was deliberately not compared (counted)")
    for cat, n in sorted(EXCLUSIONS.items()):
        tr.line(f"{n:6d}  {cat}")
        for ex in EXCLUSION_EXAMPLES.get(cat, [])[:3]:
            tr.line(f"          e.g. {ex[:160]}")
