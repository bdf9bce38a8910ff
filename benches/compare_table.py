#!/usr/bin/env python3
"""Aggregates the rows of benches/compare-orthanc.sh into one Markdown table.

Input: a TSV file of `label<TAB>op<TAB>metric<TAB>value` rows written by
`phim-load --results` (label = `profile|server|rep`) and by the script itself
(references), plus `# ...` comment lines that are echoed as the header.

Output: per profile, each metric for Phim and Orthanc as `median (min–max)`
over repetitions, the ratio Phim/Orthanc of the medians, and the issue's target
with whether it is met.
"""

from __future__ import annotations

import re
import statistics
import sys
from collections import defaultdict

HIGHER = "higher"
LOWER = "lower"


def load(path: str):
    comments, data = [], defaultdict(list)
    ignored = defaultdict(float)
    unsupported = defaultdict(float)
    errors = defaultdict(float)
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            if line.startswith("#"):
                comments.append(line[1:].strip())
                continue
            label, op, metric, value = line.split("\t")
            profile, server, _rep = label.split("|")
            key = (profile, server, op)
            v = float(value)
            if metric == "ignored":
                ignored[key] += v
            elif metric == "unsupported":
                unsupported[key] += v
            elif metric == "errors":
                errors[key] += v
            else:
                data[(profile, server, op, metric)].append(v)
    return comments, data, ignored, unsupported, errors


def fmt(v: float) -> str:
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(values: list[float]) -> str:
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}–{fmt(max(values))})"


def op_order(op: str) -> tuple:
    prefixes = ["stow.", "stow_tiny.", "qido.", "metadata.", "wado.", "rendered.", "thumbnail."]
    for i, p in enumerate(prefixes):
        if op.startswith(p):
            return (i,)
    return (len(prefixes),)


QIDO_ORDER = [
    "qido.patient_id",
    "qido.patient_name_wildcard",
    "qido.study_date_range",
    "qido.modalities_in_study_ct",
    "qido.accession_number",
    "qido.deep_page_limit50",
    "qido.series_of_study",
    "qido.instances_of_series",
]


def metrics_for(op: str) -> list[tuple[str, str, str]]:
    """(metric, unit, better) rows shown for an operation."""
    if op.startswith("stow"):
        return [
            ("inst_s", "instances/s", HIGHER),
            ("mbps", "MB/s", HIGHER),
            ("p95_ms", "request p95 ms", LOWER),
            ("peak_rss_mb", "server peak RSS MB", LOWER),
        ]
    if op.startswith("qido."):
        return [("p50_ms", "p50 ms", LOWER), ("p95_ms", "p95 ms", LOWER)]
    if op.startswith("metadata."):
        return [("p50_ms", "p50 ms", LOWER), ("p95_ms", "p95 ms", LOWER)]
    if op in ("wado.study",) or op.startswith("wado.study_largest"):
        return [("mbps", "MB/s", HIGHER), ("p50_ms", "p50 ms", LOWER)]
    if op == "wado.instance":
        return [("p50_ms", "p50 ms", LOWER), ("p95_ms", "p95 ms", LOWER)]
    return [("p50_ms", "p50 ms", LOWER), ("p95_ms", "p95 ms", LOWER)]


def target(op: str, metric: str, ratio: float | None, phim: float | None, dd: float | None) -> str:
    """The issue's target for this row and whether it is met (empty: none)."""

    def verdict(ok: bool, text: str) -> str:
        return f"{text}: {'met' if ok else 'missed'}"

    if re.fullmatch(r"stow\.c8", op):
        if metric == "inst_s" and ratio is not None:
            return verdict(ratio >= 5, "≥ 5× Orthanc")
        if metric == "mbps" and phim is not None and dd:
            pct = 100 * phim / dd
            return verdict(pct >= 60, f"≥ 60 % of dd write (is {pct:.0f} %)")
        if metric == "peak_rss_mb" and phim is not None:
            return verdict(phim < 300, "< 300 MB")
    if op.startswith("qido.") and metric == "p95_ms" and ratio is not None:
        return verdict(ratio <= 0.1, "≥ 10× faster")
    if op.startswith("metadata.") and metric == "p50_ms":
        parts = []
        if ratio is not None:
            parts.append(verdict(ratio <= 0.1, "≥ 10× faster"))
        m = re.search(r"_(\d+)inst", op)
        if op.startswith("metadata.study") and m and int(m.group(1)) >= 400 and phim is not None:
            parts.append(verdict(phim < 60, "< 60 ms"))
        return "; ".join(parts)
    if op == "wado.study" and metric == "mbps" and ratio is not None:
        return verdict(ratio >= 2, "≥ 2× Orthanc")
    if op == "rendered.instance" and metric == "p50_ms" and ratio is not None:
        return verdict(ratio <= 1 / 3, "≥ 3× faster")
    return ""


def main() -> int:
    comments, data, ignored, unsupported, errors = load(sys.argv[1])
    for c in comments:
        print(f"{c}  ")
    print()
    refs = {}
    ref_rows = []
    for (profile, server, op, metric), values in sorted(data.items()):
        if profile == "reference":
            refs[(op, metric)] = statistics.median(values)
            ref_rows.append((op, metric, values))
    if ref_rows:
        print("| reference (same run) | value: median (min–max) |")
        print("|---|---|")
        names = {
            ("dd_write", "mbps"): "dd write 512 MB, conv=fdatasync, MB/s",
            ("page_cache_read", "mbps"): "page-cache read (dd of a cached 512 MB file), MB/s",
            ("storescp_sink", "inst_s"): "DICOM sink: storescu → storescp --ignore, CT series, instances/s",
            ("storescp_sink", "mbps"): "DICOM sink, MB/s",
        }
        for op, metric, values in ref_rows:
            print(f"| {names.get((op, metric), op + ' ' + metric)} | {cell(values)} |")
        print()
    dd = refs.get(("dd_write", "mbps"))
    profiles = sorted({k[0] for k in data if k[0] != "reference"}, key=lambda p: (p != "embedded", p))
    for profile in profiles:
        ops = sorted(
            {k[2] for k in data if k[0] == profile},
            key=lambda o: (op_order(o), QIDO_ORDER.index(o) if o in QIDO_ORDER else 0, o),
        )
        title = {
            "embedded": "Phim embedded (SQLite + files) vs Orthanc default (SQLite + files)",
            "pg": "Phim PostgreSQL + S3 (s3s-fs) vs Orthanc + PostgreSQL index (files)",
        }.get(profile, profile)
        print(f"**{title}**")
        print()
        print("| operation | metric | Phim | Orthanc | Phim/Orthanc | target |")
        print("|---|---|---|---|---|---|")
        for op in ops:
            for metric, unit, better in metrics_for(op):
                pv = data.get((profile, "phim", op, metric), [])
                ov = data.get((profile, "orthanc", op, metric), [])
                pcell, ocell = cell(pv), cell(ov)
                if not pv and unsupported.get((profile, "phim", op)):
                    pcell = "not supported"
                if not ov and unsupported.get((profile, "orthanc", op)):
                    ocell = "not supported"
                if not pv and not ov and pcell == "–" and ocell == "–":
                    continue
                pm = statistics.median(pv) if pv else None
                om = statistics.median(ov) if ov else None
                ratio = pm / om if pm is not None and om else None
                rtext = f"{ratio:.2f}" if ratio is not None else "–"
                tgt = target(op, metric, ratio, pm, dd)
                if ignored.get((profile, "phim", op)):
                    rtext = "n/c"
                    tgt = "not comparable: Phim ignores this key (Warning 299)"
                for srv, name in (("phim", "Phim"), ("orthanc", "Orthanc")):
                    e = errors.get((profile, srv, op))
                    if e:
                        tgt += f" ({name}: {e:.0f} errors)"
                print(f"| {op} | {unit} | {pcell} | {ocell} | {rtext} | {tgt} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
