"""Specific Character Sets (0008,0005) end to end: STOW-RS -> metadata JSON and QIDO-RS.

Every file of `pydicom.data.get_charset_files()` that `pydicom.dcmread` reads without `force`
is stored, and the text of its instance metadata is compared with pydicom's own decoding
(`ds.decode()`, then `to_json_dict()`), exactly: every value of every PN (per component
group), LO, SH, ST, LT, UT and UC element, sequence items included (items with their own
(0008,0005) and items that inherit it). The study's QIDO-RS PatientName must equal pydicom's
`PatientName` (QIDO returns only the Alphabetic component group, so that group is compared).

Each file gets fresh Study/Series/SOP Instance UIDs (and the Secondary Capture SOP Class
when it has none): some files have none, and several share their UIDs with different bytes
(chrFren/chrFrenMulti, chrJapMulti/chrJapMultiExplicitIR6), which a PACS must refuse as
duplicates. The file is rewritten with pydicom; the test checks that this kept (0008,0005)
and every raw text value byte for byte.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset

from phim_helpers import (
    SECONDARY_CAPTURE,
    encode,
    instance_path,
    jvalue,
    make_dataset,
    metadata,
    note_exclusion,
    qido,
    stow,
    uid_for,
)

# VRs whose text is decoded with the Specific Character Set (PS3.5 6.1.2.3).
CHARSET_VRS = {"PN", "LO", "SH", "ST", "LT", "UT", "UC"}
UID_TAGS = {0x0020000D, 0x0020000E, 0x00080018, 0x00080016}


def _readable_charset_files() -> list[Path]:
    files = []
    for f in sorted(pydicom.data.get_charset_files()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pydicom.dcmread(f)
        except Exception as e:  # noqa: BLE001 - not DICOM without force (FileInfo.txt)
            note_exclusion("pydicom charset files not readable without force (not stored)", f"{Path(f).name}: {e}")
            continue
        files.append(Path(f))
    return files


CHARSET_FILES = _readable_charset_files()
NAMES = [f.name for f in CHARSET_FILES]


def _raw_text_values(data: bytes) -> tuple[dict[str, bytes | str], set[str]]:
    """Raw (undecoded) values of the charset-dependent elements and (0008,0005), and the
    elements stored as UN, by JSON path (`/00100010`, `/00321064[0]/00100010`)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    values: dict[str, bytes | str] = {}
    un: set[str] = set()

    def walk(d: Dataset, path: str) -> None:
        for tag in d.keys():
            elem = d.get_item(tag)  # a RawDataElement until accessed: value is the raw bytes
            key = f"{path}/{int(tag):08X}"
            if elem.VR == "UN":
                un.add(key)
            elif elem.VR == "SQ":
                for i, item in enumerate(d[tag].value):
                    walk(item, f"{key}[{i}]")
            elif int(tag) == 0x00080005:
                values[key] = str(d[tag].value)
            elif elem.VR in CHARSET_VRS and int(tag) not in UID_TAGS:
                values[key] = bytes(elem.value or b"")

    walk(ds, "")
    return values, un


@dataclass
class Prepared:
    name: str
    charset: str
    study: str
    series: str
    sop: str
    data: bytes
    expected: dict  # pydicom's to_json_dict of the decoded data set
    stored_as_un: set[str]  # paths of elements with VR UN in the file
    patient_name: str | None  # pydicom's str(ds.PatientName), None when absent


def _prepare(path: Path) -> Prepared:
    original = path.read_bytes()
    ds = pydicom.dcmread(path)
    name = path.name
    ds.StudyInstanceUID = uid_for("charsets", name, "study")
    ds.SeriesInstanceUID = uid_for("charsets", name, "series")
    ds.SOPInstanceUID = uid_for("charsets", name, "sop")
    if "SOPClassUID" not in ds:
        ds.SOPClassUID = SECONDARY_CAPTURE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    data = buf.getvalue()
    # The rewrite must not have re-encoded any text: same raw bytes, same (0008,0005).
    raw, un = _raw_text_values(data)
    assert (raw, un) == _raw_text_values(original), f"{name}: rewriting changed text values"

    exp = pydicom.dcmread(io.BytesIO(data))
    exp.decode()
    expected = exp.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=lambda e: "bulk")
    charset = exp.get("SpecificCharacterSet", "")
    charset = "\\".join(charset) if isinstance(charset, pydicom.multival.MultiValue) else str(charset)
    pn = exp.get("PatientName")
    return Prepared(name, charset, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                    str(ds.SOPInstanceUID), data, expected, un, None if pn is None else str(pn))


@pytest.fixture(scope="module")
def stored(server) -> dict[str, Prepared]:
    prepared = {p.name: _prepare(p) for p in CHARSET_FILES}
    res = stow(server, [p.data for p in prepared.values()])
    assert res.status == 200, res.describe()
    assert res.referenced_uids() == {p.sop for p in prepared.values()}, res.describe()
    return prepared


def _compare_text(p: Prepared, expected: dict, got: dict, path: str, mismatches: list[str]) -> int:
    """Compares the charset-dependent values of `expected` (pydicom JSON) with `got`; returns
    the number of values compared."""
    n = 0
    got = {k.upper(): v for k, v in got.items()}
    for key, e in expected.items():
        vr = e.get("vr")
        g = got.get(key.upper())
        epath = f"{path}/{key}"
        if vr == "SQ":
            eitems, gitems = e.get("Value", []), (g or {}).get("Value", [])
            if len(eitems) != len(gitems):
                mismatches.append(f"{epath}: {len(gitems)} items, expected {len(eitems)}")
                continue
            for i, (a, b) in enumerate(zip(eitems, gitems)):
                n += _compare_text(p, a, b, f"{epath}[{i}]", mismatches)
            continue
        if vr not in CHARSET_VRS:
            continue
        if epath in p.stored_as_un:
            # pydicom gives UN elements the VR of its (private) dictionary and decodes them;
            # the server keeps UN, whose value is bytes (InlineBinary), not text.
            note_exclusion("text elements stored as UN (pydicom decodes them by its dictionary VR; not compared)",
                           f"{p.name} {epath}")
            continue
        ev = e.get("Value", [])
        gv = (g or {}).get("Value", [])
        if g is None:
            mismatches.append(f"{epath}: missing, expected {ev!r}")
            continue
        if g.get("vr") != vr:
            mismatches.append(f"{epath}: VR {g.get('vr')}, expected {vr}")
        if vr == "PN":
            # PS3.18 F.2.2: a component group without characters may be omitted.
            ev = [{k: c for k, c in v.items() if c} or None if isinstance(v, dict) else v for v in ev]
        # An empty value is null (PS3.18 F.2.5); pydicom writes "" or null.
        ev = [None if v == "" else v for v in ev]
        if ev and all(v is None for v in ev):
            ev = []
        if ev != gv:
            mismatches.append(f"{epath} ({vr}): {gv!r} != expected {ev!r}")
        n += len(ev)
    return n


@pytest.mark.parametrize("name", NAMES)
def test_metadata_text_equals_pydicom(server, stored, name):
    p = stored[name]
    docs = metadata(server, instance_path(p.study, p.series, p.sop))
    assert len(docs) == 1
    mismatches: list[str] = []
    n = _compare_text(p, p.expected, docs[0], "", mismatches)
    assert not mismatches, f"{name} ({p.charset!r}):\n  " + "\n  ".join(mismatches)
    assert n > 0, f"{name}: no text value compared"


@pytest.mark.parametrize("name", NAMES)
def test_qido_patient_name_equals_pydicom(server, stored, name):
    p = stored[name]
    studies = qido(server, "/dicomweb/studies", {"StudyInstanceUID": p.study})
    assert len(studies) == 1, studies
    got = jvalue(studies[0], "00100010")
    if not p.patient_name:
        assert got in (None, ""), f"{name}: PatientName {got!r}, the file has none"
        note_exclusion("charset files without a top-level PatientName (QIDO name not compared)", name)
        return
    alphabetic = p.patient_name.split("=")[0]
    assert isinstance(got, dict), f"{name}: PatientName {got!r}"
    assert got.get("Alphabetic") == alphabetic, f"{name} ({p.charset!r}): {got!r} != {alphabetic!r}"


def test_vietnamese_utf8_name(server):
    name = "Nguyễn^Văn An"
    ds = make_dataset("charsets/vietnamese", patient_name=name)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    res = stow(server, [encode(ds)])
    assert res.status == 200, res.describe()
    study, series, sop = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)

    docs = metadata(server, instance_path(study, series, sop))
    assert jvalue(docs[0], "00100010") == {"Alphabetic": name}

    studies = qido(server, "/dicomweb/studies", {"StudyInstanceUID": study})
    assert len(studies) == 1
    assert jvalue(studies[0], "00100010") == {"Alphabetic": name}


# ------------------------------------------------ files without (0008,0005)

def _undeclared(seed: str, name_bytes: bytes) -> "Instance":
    from phim_helpers import Instance, encode

    inst = Instance.make(seed)
    if "SpecificCharacterSet" in inst.ds:
        del inst.ds.SpecificCharacterSet
    inst.data = encode(inst.ds)
    # Patch the raw PatientName bytes (same length) so no library re-encodes them.
    old = str(inst.ds.PatientName).encode("ascii")
    assert len(name_bytes) <= len(old)
    padded = name_bytes + b" " * (len(old) - len(name_bytes))
    assert inst.data.count(old) == 1
    inst.data = inst.data.replace(old, padded)
    return inst


def test_undeclared_charset_uses_the_configured_default(phim_factory):
    from phim_helpers import metadata, stow

    latin1 = phim_factory.start("embedded")
    inst = _undeclared("nocharset-latin1", "Müller^Jö".encode("latin-1"))
    res = stow(latin1, [inst.data])
    assert res.status == 200, res.describe()
    assert "no Specific Character Set" in (res.headers.get("Warning") or "")
    doc = metadata(latin1, f"/dicomweb/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}")[0]
    assert doc["00100010"]["Value"][0]["Alphabetic"] == "Müller^Jö"

    utf8 = phim_factory.start("embedded", extra_args=["--default-charset", "ISO_IR 192"])
    inst = _undeclared("nocharset-utf8", "Trần^Văn".encode("utf-8"))
    assert stow(utf8, [inst.data]).status == 200
    doc = metadata(utf8, f"/dicomweb/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}")[0]
    assert doc["00100010"]["Value"][0]["Alphabetic"] == "Trần^Văn"
