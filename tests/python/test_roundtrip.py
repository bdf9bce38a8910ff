"""pydicom's test corpus through Phim: STOW-RS -> WADO-RS (byte for byte) -> metadata JSON.

Every file of `pydicom.data.get_testdata_files()` (under pydicom's own test_files dir) that
`pydicom.dcmread` reads without `force` and that has Study/Series/SOP Instance UIDs is stored,
in batches of BATCH files per request.

Several corpus files share a SOP Instance UID with different bytes. Per SOP Instance UID the
first file (by path) is the "primary": it is stored first and round-tripped. The others
("secondaries") are stored afterwards, at most one per UID per request, and must fail with
0x0111 (or succeed, when their bytes equal the primary's), leaving the primary unchanged.
"""

from __future__ import annotations

import collections
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom.uid import UID

from dicom_json_compare import (
    COMPARED_CHARSETS,
    SWAP_WIDTH,
    FileContext,
    charset_of,
    compare_dataset,
    swap_bytes,
)
from phim_helpers import (
    ACCEPT_OCTET_MULTIPART,
    DICOM_JSON,
    EXCLUSIONS,
    FAIL_DUPLICATE,
    FAIL_PROCESSING,
    Instance,
    StowResult,
    assert_instance_bytes,
    instance_path,
    jvalue,
    metadata,
    note_exclusion,
    parse_content_type,
    qido,
    response_parts,
    stow,
    stow_raw,
    wado_instance_bytes,
)

BATCH = 10
DATA_ROOT = Path(pydicom.data.__file__).parent / "test_files"
UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")



class _ShortReadDetector(io.BytesIO):
    """pydicom reads a value whose declared length runs past the end of the file without
    complaint; a read that returns some but not all requested bytes reveals it."""

    short = False

    def read(self, n=-1):
        b = super().read(n)
        if n is not None and n >= 0 and 0 < len(b) < n:
            self.short = True
        return b


def _is_truncated(path: Path) -> bool:
    f = _ShortReadDetector(path.read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(f)
        for elem in ds.iterall():
            elem.value  # noqa: B018 - parse sequences too
    return f.short


@dataclass
class CorpusFile:
    path: Path
    name: str
    study: str
    series: str
    sop: str
    sop_class: str
    charset: str
    transfer_syntax: str
    truncated: bool  # pydicom reads it, but a declared length runs past the end of the file
    role: str = "primary"  # "primary" | "secondary" (SOP UID of an earlier file) | "truncated"
    primary_name: str | None = None  # the primary with the same SOP Instance UID, if any
    same_bytes_as_primary: bool = False

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()

    def read(self) -> pydicom.Dataset:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(self.path)


def load_corpus() -> tuple[list[CorpusFile], collections.Counter]:
    files: list[CorpusFile] = []
    skipped: collections.Counter = collections.Counter()
    for p in sorted(pydicom.data.get_testdata_files()):
        path = Path(p)
        if not path.is_file():
            continue
        try:
            name = str(path.relative_to(DATA_ROOT))
        except ValueError:
            skipped["outside pydicom's own test_files (downloaded data)"] += 1
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path)
            except Exception:  # noqa: BLE001
                skipped["not readable by pydicom.dcmread without force"] += 1
                continue
        if not all(k in ds and str(ds[k].value or "").strip() for k in UID_KEYWORDS):
            skipped["without Study/Series/SOP Instance UID"] += 1
            continue
        files.append(
            CorpusFile(
                path=path,
                name=name,
                study=str(ds.StudyInstanceUID),
                series=str(ds.SeriesInstanceUID),
                sop=str(ds.SOPInstanceUID),
                sop_class=str(ds.get("SOPClassUID", "")),
                charset=charset_of(ds),
                transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", "")),
                truncated=_is_truncated(path),
            )
        )
    by_sop: dict[str, list[CorpusFile]] = collections.defaultdict(list)
    for f in files:
        by_sop[f.sop].append(f)
    for group in by_sop.values():
        intact = [f for f in group if not f.truncated]
        primary = intact[0] if intact else None
        for f in group:
            if f is primary:
                continue
            f.role = "truncated" if f.truncated else "secondary"
            if primary is not None:
                f.primary_name = primary.name
                f.same_bytes_as_primary = f.data == primary.data
    return files, skipped


CORPUS, SKIPPED = load_corpus()
BY_NAME = {f.name: f for f in CORPUS}
PRIMARIES = [f for f in CORPUS if f.role == "primary"]
# Stored after all primaries: files re-using a primary's SOP Instance UID, and truncated files.
LATER = [f for f in CORPUS if f.role != "primary"]
for _reason, _n in SKIPPED.items():
    EXCLUSIONS[f"pydicom corpus files not used: {_reason}"] += _n


def _batches() -> list[list[CorpusFile]]:
    batches = [PRIMARIES[i : i + BATCH] for i in range(0, len(PRIMARIES), BATCH)]
    # Secondaries in rounds: round k holds the k-th secondary of every SOP UID, so that no
    # request carries two parts with one SOP Instance UID.
    rank: dict[str, int] = collections.Counter()
    rounds: dict[int, list[CorpusFile]] = collections.defaultdict(list)
    for f in LATER:
        if f.role == "secondary":
            rounds[rank[f.sop]].append(f)
            rank[f.sop] += 1
    for k in sorted(rounds):
        r = rounds[k]
        batches += [r[i : i + BATCH] for i in range(0, len(r), BATCH)]
    # Truncated files alone: the server may not know their SOP Instance UID.
    batches += [[f] for f in LATER if f.role == "truncated"]
    return batches


@dataclass(repr=False)
class Stowed:
    batches: list[list[CorpusFile]]
    results: list[StowResult]
    by_name: dict[str, StowResult]

    def __repr__(self) -> str:
        return f"<Stowed {len(self.by_name)} files in {len(self.batches)} requests>"


@pytest.fixture(scope="module")
def stowed(server) -> Stowed:
    batches = _batches()
    results, by_name = [], {}
    for batch in batches:
        res = stow(server, [f.data for f in batch])
        results.append(res)
        for f in batch:
            by_name[f.name] = res
    return Stowed(batches, results, by_name)


def _expect_stored(f: CorpusFile) -> bool:
    return f.role == "primary" or (f.role == "secondary" and f.same_bytes_as_primary)


def _allowed_failures(f: CorpusFile) -> set[int]:
    if f.role == "truncated":
        # Contract: truncated -> C000; a server that sees the duplicate SOP UID first may say 0111.
        return {FAIL_PROCESSING, FAIL_DUPLICATE} if f.primary_name else {FAIL_PROCESSING}
    if f.role == "secondary" and not f.same_bytes_as_primary:
        return {FAIL_DUPLICATE}
    return set()


def test_corpus_is_big_enough():
    assert len(PRIMARIES) >= 80, f"only {len(PRIMARIES)} usable pydicom corpus files"
    assert any(f.role == "secondary" for f in LATER), "expected pydicom files sharing a SOP Instance UID"


def test_stow_batches_status(server, stowed):
    problems = []
    for batch, res in zip(stowed.batches, stowed.results):
        ok = [f for f in batch if _expect_stored(f)]
        expected = 200 if len(ok) == len(batch) else 409 if not ok else 202
        if parse_content_type(res.content_type)[0] != DICOM_JSON:
            problems.append(f"Content-Type {res.content_type!r} (expected {DICOM_JSON})")
        if expected == 200 and res.status == 202 and not res.failed and any(
            i.warning_reason is not None for i in res.referenced
        ):
            # PS3.18: 202 also when all were stored but some with a WarningReason.
            note_exclusion("STOW requests answered 202 for warnings only (accepted)",
                           ", ".join(f"{i.sop_instance}:{i.warning_reason:04X}" for i in res.referenced
                                     if i.warning_reason is not None))
        elif res.status != expected:
            problems.append(f"[{', '.join(f.name for f in batch)}]: expected HTTP {expected}, got {res.describe()}")
        studies = {f.study for f in batch if _expect_stored(f)}
        if res.status in (200, 202) and len(studies) == 1 and not res.retrieve_url:
            # (With instances of several studies there is no one study URL to give.)
            problems.append(f"HTTP {res.status} for one study without RetrieveURL (0008,1190)")
    assert not problems, "\n".join(problems)


def _referenced(res: StowResult, f: CorpusFile):
    return [i for i in res.referenced if i.sop_instance == f.sop]


def _failed(res: StowResult, f: CorpusFile):
    return [i for i in res.failed if i.sop_instance == f.sop]


@pytest.mark.parametrize("name", [f.name for f in PRIMARIES])
def test_stored_and_retrieved_byte_identical(server, stowed, name):
    f = BY_NAME[name]
    res = stowed.by_name[name]
    refs = _referenced(res, f)
    assert len(refs) == 1, f"{name} not stored: {res.describe()}"
    item = refs[0]
    assert item.sop_class == f.sop_class, f"ReferencedSOPClassUID {item.sop_class} != {f.sop_class}"
    assert item.retrieve_url and f.sop in item.retrieve_url, f"RetrieveURL {item.retrieve_url!r}"
    assert_instance_bytes(server, f.study, f.series, f.sop, f.data)


@pytest.mark.parametrize("name", [f.name for f in LATER])
def test_duplicate_sop_uid_or_truncated(server, stowed, name):
    f = BY_NAME[name]
    res = stowed.by_name[name]
    if _expect_stored(f):
        assert _referenced(res, f), f"identical re-store of {name} must succeed: {res.describe()}"
        assert not _failed(res, f), res.describe()
    else:
        reasons = [i.failure_reason for i in res.failed if i.sop_instance in (f.sop, None)]
        allowed = _allowed_failures(f)
        what = ("is truncated (a declared length runs past the end)" if f.truncated else
                f"has the SOP Instance UID of {f.primary_name} with different bytes")
        assert len(reasons) == 1 and reasons[0] in allowed, (
            f"{name} {what}: expected FailureReason {' or '.join('%04X' % a for a in sorted(allowed))}, "
            f"got {res.describe()}"
        )
        assert not _referenced(res, f), f"{name} reported both stored and failed"
    if f.primary_name:
        primary = BY_NAME[f.primary_name]
        assert_instance_bytes(server, primary.study, primary.series, primary.sop, primary.data)


def _read_with_encoding(f: CorpusFile) -> tuple[pydicom.Dataset, bool]:
    """The data set and whether it is really encoded with implicit VR: pydicom falls back to
    the other VR encoding when the data contradict the transfer syntax, and only warns."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = pydicom.dcmread(f.path)
    implicit = bool(ds.original_encoding[0])
    for w in caught:
        msg = str(w.message)
        if "Expected explicit VR, but found implicit VR" in msg:
            implicit = True
            note_exclusion("files encoded with implicit VR against their explicit VR transfer syntax", f.name)
        elif "Expected implicit VR, but found explicit VR" in msg:
            implicit = False
            note_exclusion("files encoded with explicit VR against their implicit VR transfer syntax", f.name)
    return ds, implicit


def _context(f: CorpusFile, ds: pydicom.Dataset, implicit: bool) -> FileContext:
    little = ds.original_encoding[1]
    ts = UID(f.transfer_syntax) if f.transfer_syntax else None
    return FileContext(
        name=f.name,
        implicit_vr=implicit,
        big_endian=not little,
        encapsulated=bool(ts and ts.is_encapsulated),
        # Every character set is decoded since the PS3.5 §6.1 work: compare
        # text of every file (COMPARED_CHARSETS is kept for reference).
        compare_text=True,
        transfer_syntax=str(ts) if ts else "",
    )


@pytest.mark.parametrize("name", [f.name for f in PRIMARIES])
def test_instance_metadata(server, stowed, name):
    f = BY_NAME[name]
    if not _referenced(stowed.by_name[name], f):
        pytest.fail(f"{name} was not stored: {stowed.by_name[name].describe()}")
    ds, implicit = _read_with_encoding(f)
    ctx = _context(f, ds, implicit)
    if not ctx.compare_text:
        note_exclusion(
            "files whose Specific Character Set is not absent/ISO_IR 6/100/192: only non-text values compared",
            f"{name}: {f.charset}",
        )
    md = metadata(server, instance_path(f.study, f.series, f.sop))
    assert len(md) == 1, f"instance metadata has {len(md)} data sets"
    cmp = compare_dataset(ds, md[0], ctx)
    problems = list(cmp.mismatches)

    for b in cmp.bulk:
        if not b.uri.startswith(server.base_url + "/"):
            problems.append(f"{b.path}: BulkDataURI {b.uri} is not on this server ({server.base_url})")
            continue
        r = server.get(b.uri, headers={"Accept": ACCEPT_OCTET_MULTIPART})
        if r.status_code != 200:
            problems.append(f"{b.path}: GET BulkDataURI -> HTTP {r.status_code} {r.text[:200]}")
            continue
        try:
            parts = response_parts(r)
        except ValueError as e:
            problems.append(f"{b.path}: bulk data answer is not multipart ({r.headers.get('Content-Type')}): {e}")
            continue
        if len(parts) != 1:
            problems.append(f"{b.path}: bulk data answer has {len(parts)} parts")
            continue
        got = parts[0].content
        if not b.comparable:
            note_exclusion("encapsulated Pixel Data bulk values (fetched, not compared)", f"{name} {b.path}")
            if not got:
                problems.append(f"{b.path}: empty bulk data")
            continue
        if got == b.value:
            continue
        if b.swappable and got == swap_bytes(b.value, SWAP_WIDTH[b.vr]):
            note_exclusion("big-endian bulk value returned byte-swapped (accepted)", f"{name} {b.path}")
            continue
        problems.append(f"{b.path}: bulk data ({len(got)} bytes) differs from the value ({len(b.value)} bytes)")

    if problems:
        shown = "\n  ".join(problems[:40])
        more = f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else ""
        pytest.fail(f"{name}: {len(problems)} metadata mismatches ({cmp.compared} attributes compared):\n  {shown}{more}")


def test_bulkdata_accept_and_range(server, stowed):
    """Pixel Data of a native Explicit VR Little Endian file through its BulkDataURI."""
    f = BY_NAME["CT_small.dcm"]
    assert _referenced(stowed.by_name[f.name], f), "CT_small.dcm was not stored"
    value = f.read().PixelData
    md = metadata(server, instance_path(f.study, f.series, f.sop))[0]
    uri = md.get("7FE00010", {}).get("BulkDataURI")
    assert uri, f"no BulkDataURI for Pixel Data: {md.get('7FE00010')!r:.200}"

    # Default representation: multipart/related; type="application/octet-stream".
    for accept in (ACCEPT_OCTET_MULTIPART, "*/*"):
        r = server.get(uri, headers={"Accept": accept})
        assert r.status_code == 200, (accept, r.status_code, r.text[:200])
        mime, params = parse_content_type(r.headers.get("Content-Type"))
        assert mime == "multipart/related", (accept, r.headers.get("Content-Type"))
        assert params.get("type", "").lower() == "application/octet-stream", r.headers.get("Content-Type")
        parts = response_parts(r)
        assert len(parts) == 1 and parts[0].content == value

    r = server.get(uri, headers={"Accept": "application/octet-stream"})
    assert r.status_code == 200, r.text[:200]
    assert parse_content_type(r.headers.get("Content-Type"))[0] == "application/octet-stream"
    assert r.content == value

    r = server.get(uri, headers={"Accept": "application/octet-stream", "Range": "bytes=100-1099"})
    assert r.status_code == 206, r.status_code
    assert r.content == value[100:1100], f"range body of {len(r.content)} bytes"
    assert r.headers.get("Content-Range") == f"bytes 100-1099/{len(value)}", r.headers.get("Content-Range")

    r = server.get(uri, headers={"Accept": "application/octet-stream", "Range": "bytes=-16"})
    assert r.status_code == 206 and r.content == value[-16:]


def test_qido_finds_corpus(server, stowed):
    stored = [f for f in PRIMARIES if _referenced(stowed.by_name[f.name], f)]
    assert stored, "nothing stored"
    sample = stored[:: max(1, len(stored) // 12)]
    problems = []
    for f in sample:
        hits = qido(server, "/dicomweb/instances", {"SOPInstanceUID": f.sop})
        if [jvalue(h, "00080018") for h in hits] != [f.sop]:
            problems.append(f"instances?SOPInstanceUID={f.sop} ({f.name}) -> {len(hits)} hits")
        hits = qido(server, "/dicomweb/studies", {"StudyInstanceUID": f.study})
        if [jvalue(h, "0020000D") for h in hits] != [f.study]:
            problems.append(f"studies?StudyInstanceUID={f.study} ({f.name}) -> {len(hits)} hits")
        hits = qido(server, f"/dicomweb/studies/{f.study}/series/{f.series}/instances")
        if f.sop not in [jvalue(h, "00080018") for h in hits]:
            problems.append(f"studies/{f.study}/series/{f.series}/instances lacks {f.sop} ({f.name})")
    assert not problems, "\n".join(problems)


def test_stow_single_application_dicom_body(server):
    inst = Instance.make("roundtrip/single-body")
    res = stow_raw(server, inst.data, "application/dicom")
    assert res.status == 200, res.describe()
    assert inst.sop in res.referenced_uids(), res.describe()
    assert_instance_bytes(server, inst.study, inst.series, inst.sop, inst.data)


def test_stow_to_study_url(server):
    inst = Instance.make("roundtrip/study-url")
    res = stow(server, [inst.data], study=inst.study)
    assert res.status == 200, res.describe()
    assert inst.sop in res.referenced_uids()
    assert_instance_bytes(server, inst.study, inst.series, inst.sop, inst.data)


def test_stow_part_without_preamble(server):
    """A Part-10 stream that starts directly with the File Meta group (no 128-byte preamble and
    'DICM'), as pydicom.dcmwrite writes data sets made in code and dicomweb-client sends them.

    It must be accepted, and served back as a proper PS3.10 file (preamble + 'DICM' + the bytes
    sent): dicomweb-client reads retrieved parts with pydicom.dcmread, which needs the prefix."""
    inst = Instance.make("roundtrip/no-preamble")
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, inst.ds)  # enforce_file_format=False: no preamble
    data = buf.getvalue()
    assert data[:4] == b"\x02\x00\x02\x00" and data != inst.data
    res = stow(server, [data])
    assert res.status == 200, res.describe()
    assert inst.sop in res.referenced_uids()
    got = wado_instance_bytes(server, inst.study, inst.series, inst.sop)
    assert got[128:132] == b"DICM" and got[132:] == data, (
        f"expected 128-byte preamble + 'DICM' + the {len(data)} bytes sent; got {len(got)} bytes "
        f"starting {got[:8]!r}"
    )
