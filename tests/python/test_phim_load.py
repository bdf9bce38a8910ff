"""Smoke test of the benchmark harness (`phim-load`, used by benches/stow.sh and
benches/compare-orthanc.sh), so that it does not rot: generate a few tiny instances,
store them with one client into an embedded Phim, run every read workload, and check
that each exits 0, prints its result lines and records no errors. Nothing here
asserts a duration."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest

from phim_helpers import phim_bin


def phim_load_bin() -> Path:
    b = Path(os.environ.get("PHIM_LOAD_BIN") or phim_bin().with_name("phim-load"))
    if not (b.is_file() and os.access(b, os.X_OK)):
        pytest.fail(
            f"phim-load not found at {b} (set PHIM_LOAD_BIN, or run `make test`, which builds it)",
            pytrace=False,
        )
    return b


def run_load(*args: str) -> str:
    cp = subprocess.run(
        [str(phim_load_bin()), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cp.returncode == 0, f"phim-load {args[0]} exited {cp.returncode}:\n{cp.stdout}\n{cp.stderr}"
    return cp.stdout


def read_rows(path: Path) -> list[tuple[str, str, str, str]]:
    with path.open(encoding="utf-8") as f:
        return [tuple(r) for r in csv.reader(f, delimiter="\t")]


def test_phim_load_against_phim(phim_factory, tmp_path):
    data = tmp_path / "dataset"
    out = run_load(
        "gen", "--out", str(data), "--tiny",
        "--ct-studies", "1", "--ct-slices", "3", "--mr-studies", "1", "--mr-slices", "2",
        "--cr", "1", "--us", "0",
    )
    assert "generated 3 studies, 6 instances" in out
    manifest = json.loads((data / "manifest.json").read_text())
    assert sum(len(s["instances"]) for s in manifest["studies"]) == 6
    assert all(s["accession"] and s["study_date"] for s in manifest["studies"])

    server = phim_factory.start("embedded")
    results = tmp_path / "results.tsv"
    common = ["--url", server.dicomweb, "--pid", str(server.proc.pid),
              "--label", "smoke", "--results", str(results)]

    out = run_load("stow", *common, "--dir", str(data), "--clients", "1", "--batch", "2")
    assert "stow [smoke] clients=1 batch=2: 6 instances" in out
    assert "failed 0" in out

    out = run_load("qido", *common, "--dir", str(data), "--count", "2")
    assert "qido.patient_id [smoke]: 2/2 ok" in out
    assert "qido.instances_of_series [smoke]: 2/2 ok" in out

    out = run_load("read", *common, "--dir", str(data), "--count", "2", "--passes", "1")
    assert "wado.study [smoke]: 3/3 ok" in out
    assert "metadata.study_3inst [smoke]: 2/2 ok" in out
    # Phim has no rendered resource yet: reported, not a failure.
    assert "rendered.instance [smoke]" in out

    rows = read_rows(results)
    ops = {op for _, op, _, _ in rows}
    assert {"stow.c1", "qido.patient_id", "wado.study", "wado.instance",
            "metadata.series_3inst", "rendered.instance"} <= ops
    errors = [(op, v) for _, op, m, v in rows if m == "errors" and float(v) != 0]
    assert errors == [], errors
    assert any(m == "peak_rss_mb" for _, _, m, _ in rows)
