"""Compare the server's DICOM JSON metadata (PS3.18 Annex F) with what pydicom reads.

The expectation for each element is pydicom's own `to_json_dict`
(`bulk_data_threshold=1024, bulk_data_element_handler=lambda e: "bulk"`), except for binary
VRs, where the raw value bytes are compared directly, and the contract's bulk rule is checked:

* Pixel Data (7FE0,0010) and OB/OD/OF/OL/OV/OW/UN values over 1024 bytes -> "BulkDataURI";
* smaller binary values -> "InlineBinary" (base64 of the value bytes);
* empty values -> only "vr".

Everything that is *not* compared is counted with `note_exclusion` and shown in pytest's
summary, so that an exclusion can not hide silently.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass, field

import numpy as np
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from phim_helpers import note_exclusion

BULK_THRESHOLD = 1024
BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
NUMBER_VRS = {"IS", "DS", "FL", "FD", "SL", "SS", "UL", "US", "SV", "UV"}
# VRs whose text depends on Specific Character Set (others are default repertoire only).
CHARSET_VRS = {"SH", "LO", "ST", "LT", "UC", "UT", "PN"}
# Text VRs where leading spaces are significant (PS3.5 6.2).
LEADING_SPACE_VRS = {"ST", "LT", "UT"}
SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
PIXEL_DATA = 0x7FE00010
KEY_RE = re.compile(r"^[0-9A-F]{8}$")

# Specific Character Set values whose text the test compares.
COMPARED_CHARSETS = {"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192"}


@dataclass
class FileContext:
    name: str
    implicit_vr: bool
    big_endian: bool
    encapsulated: bool
    compare_text: bool  # False: Specific Character Set not in COMPARED_CHARSETS
    # The file's transfer syntax: the server adds it as Available Transfer Syntax UID (0008,3002).
    transfer_syntax: str = ""


@dataclass
class BulkRef:
    path: str
    tag: int
    vr: str
    uri: str
    value: bytes
    comparable: bool  # False for encapsulated Pixel Data (what to return is not specified yet)
    swappable: bool  # big endian OW/OF/...: either byte order accepted


@dataclass
class Comparison:
    mismatches: list[str] = field(default_factory=list)
    bulk: list[BulkRef] = field(default_factory=list)
    compared: int = 0
    dropped: set[str] = field(default_factory=set)  # paths of elements pydicom cannot convert

    def fail(self, path: str, msg: str) -> None:
        self.mismatches.append(f"{path}: {msg}")


def _is_excluded_tag(tag: int) -> bool:
    """Group 0002 and group lengths (gggg,0000), which are not in the JSON model. Data Set
    Trailing Padding (FFFC,FFFC) is compared like any element: the stored data set has it."""
    group, elem = tag >> 16, tag & 0xFFFF
    return group == 0x0002 or elem == 0x0000


def charset_of(ds: Dataset) -> str:
    """Specific Character Set as one string ('' when absent), values joined with '\\'."""
    if "SpecificCharacterSet" not in ds:
        return ""
    cs = ds["SpecificCharacterSet"].value
    if cs is None:
        return ""
    if isinstance(cs, str):
        return cs.strip()
    return "\\".join(str(v).strip() for v in cs)


def _norm_str(v, vr: str) -> str:
    if v is None:
        return ""
    s = str(v)
    if vr == "UI":
        return s.strip("\0 ")
    if vr in LEADING_SPACE_VRS:
        return s.rstrip(" \0")
    return s.strip(" \0")


def _num_eq(x, y) -> bool:
    if x in (None, "") or y in (None, ""):
        return x in (None, "") and y in (None, "")
    try:
        fx, fy = float(x), float(y)
    except (TypeError, ValueError):
        return str(x).strip() == str(y).strip()
    if math.isnan(fx) or math.isnan(fy):
        return math.isnan(fx) and math.isnan(fy)
    if isinstance(x, int) and isinstance(y, int):
        return x == y
    return math.isclose(fx, fy, rel_tol=1e-6, abs_tol=1e-9)


def _norm_pn(v) -> dict:
    if v is None or v == "":
        return {}
    if isinstance(v, str):  # tolerate nothing else: PN must be an object
        return {"<string>": v}
    return {k: str(c).rstrip(" ") for k, c in v.items() if c not in (None, "")}


def _values_as_bytes(vr: str, values) -> bytes | None:
    fmt = {"US": "<u2", "SS": "<i2", "UL": "<u4", "SL": "<i4"}.get(vr)
    if fmt is None or values is None:
        return None
    try:
        return np.array([int(v) for v in values], dtype=fmt).tobytes()
    except (TypeError, ValueError, OverflowError):
        return None


def _ambiguous_candidates(tag: int, vr: str) -> set[str]:
    cands = set(vr.split(" or ")) if " or " in vr else {vr}
    try:
        dvr = dictionary_VR(tag)
    except KeyError:
        dvr = None
    if dvr and " or " in dvr:
        cands |= set(dvr.split(" or "))
    return cands


def compare_dataset(ds: Dataset, got: dict, ctx: FileContext, path: str = "", result: Comparison | None = None) -> Comparison:
    """Compare pydicom data set `ds` with the server's JSON object `got`."""
    res = result or Comparison()
    if not isinstance(got, dict):
        res.fail(path or "/", f"expected a JSON object, got {type(got).__name__}")
        return res

    for key in got:
        if not KEY_RE.match(key):
            res.fail(path or "/", f"attribute key {key!r} is not 8 upper-case hex digits")
        elif int(key, 16) >> 16 == 0x0002:
            res.fail(path or "/", f"group 0002 attribute {key} must not be in metadata")
    got_norm = {k.upper(): v for k, v in got.items()}

    expected_keys: set[str] = set()
    for elem in _elements(ds, res, ctx, path):
        if _is_excluded_tag(elem.tag):
            continue
        key = f"{elem.tag:08X}"
        expected_keys.add(key)
        epath = f"{path}/{key}"
        if key not in got_norm:
            res.fail(epath, f"missing ({elem.keyword or 'private'} {elem.VR})")
            continue
        _compare_element(elem, got_norm[key], ctx, epath, res)

    for key in sorted(set(got_norm) - expected_keys):
        t = int(key, 16) if KEY_RE.match(key) else None
        if t is not None and _is_excluded_tag(t):
            continue
        if f"{path}/{key}" in res.dropped:
            continue
        if not path and key == "00083002":
            # Available Transfer Syntax UID: the stored syntax, added by the server.
            got_ts = got_norm[key].get("Value", [None])[0]
            if got_norm[key].get("vr") != "UI" or (ctx.transfer_syntax and got_ts != ctx.transfer_syntax):
                res.fail(f"/{key}", f"Available Transfer Syntax UID {got_norm[key]} is not the stored {ctx.transfer_syntax}")
            continue
        res.fail(f"{path}/{key}", "present in server metadata but not in the file (per pydicom)")
    return res


def _elements(ds: Dataset, res: Comparison, ctx: FileContext, path: str):
    for tag in list(ds.keys()):
        try:
            elem = ds[tag]
            if elem.VR != "SQ":
                elem.to_json_dict(lambda e: "bulk", BULK_THRESHOLD)
        except Exception as e:  # pydicom cannot convert the value: do not compare it
            res.dropped.add(f"{path}/{int(tag):08X}")
            note_exclusion("elements pydicom cannot convert to JSON (not compared)", f"{ctx.name} {path}/{int(tag):08X}: {e}")
            continue
        yield elem


def _compare_element(elem: DataElement, got: dict, ctx: FileContext, path: str, res: Comparison) -> None:
    res.compared += 1
    if not isinstance(got, dict) or "vr" not in got:
        res.fail(path, f"not a DICOM JSON attribute object: {got!r:.120}")
        return
    evr, gvr = str(elem.VR), str(got["vr"])
    if evr != gvr:
        cands = _ambiguous_candidates(elem.tag, evr)
        if (ctx.implicit_vr or " or " in evr) and gvr in cands:
            note_exclusion("implicit-VR ambiguous VR resolved differently (accepted)", f"{ctx.name} {path} pydicom {evr} server {gvr}")
            _compare_ambiguous(elem, got, ctx, path, res, gvr)
        else:
            res.fail(path, f"VR {gvr}, expected {evr}")
        return

    if evr in BINARY_VRS:
        _compare_binary(elem, got, ctx, path, res)
        return

    value_keys = {"Value", "InlineBinary", "BulkDataURI"} & set(got)
    if evr == "SQ":
        items = list(elem.value or [])
        gitems = got.get("Value")
        if not items:
            if value_keys:
                res.fail(path, f"empty sequence must have only 'vr', got keys {sorted(value_keys)}")
            return
        if not isinstance(gitems, list) or len(gitems) != len(items):
            res.fail(path, f"sequence has {len(gitems) if isinstance(gitems, list) else gitems!r} items, expected {len(items)}")
            return
        for i, (item, gitem) in enumerate(zip(items, gitems)):
            compare_dataset(item, gitem, ctx, f"{path}[{i}]", res)
        return

    expected = elem.to_json_dict(lambda e: "bulk", BULK_THRESHOLD)
    if "Value" not in expected:
        if value_keys:
            res.fail(path, f"empty value must have only 'vr', got {got!r:.150}")
        return
    if "Value" not in got:
        res.fail(path, f"no Value; expected {expected['Value']!r:.150}")
        return
    ev, gv = expected["Value"], got["Value"]
    if not isinstance(gv, list):
        res.fail(path, f"Value must be an array, got {gv!r:.100}")
        return
    if evr in CHARSET_VRS and not ctx.compare_text:
        note_exclusion("text values of files with an uncompared Specific Character Set (not compared)", f"{ctx.name} {path}")
        if len(ev) != len(gv):
            res.fail(path, f"{len(gv)} values, expected {len(ev)}")
        return
    if len(ev) != len(gv):
        res.fail(path, f"{len(gv)} values {gv!r:.150}, expected {len(ev)} {ev!r:.150}")
        return

    if evr == "PN":
        for i, (a, b) in enumerate(zip(ev, gv)):
            if b not in (None, "") and not isinstance(b, dict):
                res.fail(path, f"PN value [{i}] must be an object, got {b!r:.80}")
            elif _norm_pn(a) != _norm_pn(b):
                res.fail(path, f"PN [{i}] {b!r:.150} != expected {a!r:.150}")
    elif evr in NUMBER_VRS:
        for i, (a, b) in enumerate(zip(ev, gv)):
            if evr in ("IS", "DS", "SV", "UV") and isinstance(b, str):
                # PS3.18 F.2.3.1 allows strings for these only to keep precision (SV/UV) or
                # for invalid values; the contract says numbers.
                if evr in ("IS", "DS"):
                    res.fail(path, f"{evr} value [{i}] is a string {b!r}, contract says a JSON number")
                    continue
            elif b is not None and not isinstance(b, (int, float)):
                res.fail(path, f"{evr} value [{i}] {b!r:.60} is not a JSON number")
                continue
            if not _num_eq(a, b):
                res.fail(path, f"{evr} [{i}] {b!r} != expected {a!r}")
    elif evr == "AT":
        for i, (a, b) in enumerate(zip(ev, gv)):
            if str(a).upper() != str(b).upper():
                res.fail(path, f"AT [{i}] {b!r} != expected {a!r}")
    else:
        for i, (a, b) in enumerate(zip(ev, gv)):
            if _norm_str(a, evr) != _norm_str(b, evr):
                res.fail(path, f"{evr} [{i}] {b!r:.150} != expected {a!r:.150}")


def _compare_binary(elem: DataElement, got: dict, ctx: FileContext, path: str, res: Comparison,
                    raw: bytes | None = None, vr: str | None = None) -> None:
    vr = vr or str(elem.VR)
    if raw is None:
        raw = elem.value if isinstance(elem.value, (bytes, bytearray)) else b""
    raw = bytes(raw)
    if "Value" in got:
        res.fail(path, f"binary VR {vr} must use InlineBinary/BulkDataURI, not Value")
        return
    is_pixel = elem.tag == PIXEL_DATA
    top_level = path.count("/") == 1
    swappable = ctx.big_endian and vr in SWAP_WIDTH
    if len(raw) == 0:
        if "InlineBinary" in got or "BulkDataURI" in got:
            res.fail(path, f"empty {vr} value must have only 'vr', got {sorted(got)}")
        return
    must_bulk = len(raw) > BULK_THRESHOLD or (is_pixel and top_level)
    may_bulk = must_bulk or is_pixel
    if "BulkDataURI" in got:
        uri = got["BulkDataURI"]
        if not may_bulk:
            res.fail(path, f"{vr} value of {len(raw)} bytes (<= {BULK_THRESHOLD}) must be InlineBinary, got BulkDataURI")
        if not (isinstance(uri, str) and uri.startswith("http://")):
            res.fail(path, f"BulkDataURI {uri!r:.120} is not an absolute http URL")
            return
        comparable = not (is_pixel and ctx.encapsulated)
        res.bulk.append(BulkRef(path, int(elem.tag), vr, uri, raw, comparable, swappable))
        return
    if "InlineBinary" in got:
        if must_bulk:
            res.fail(path, f"{vr} value of {len(raw)} bytes must be a BulkDataURI, got InlineBinary")
        try:
            data = base64.b64decode(got["InlineBinary"], validate=True)
        except Exception as e:
            res.fail(path, f"InlineBinary is not valid base64: {e}")
            return
        if data == raw:
            return
        if swappable and data == swap_bytes(raw, SWAP_WIDTH[vr]):
            note_exclusion("big-endian binary value returned byte-swapped (accepted)", f"{ctx.name} {path}")
            return
        # A value of odd length is padded to even length in the file; JSON need not pad.
        if data == raw.rstrip(b"\0") or data + b"\0" == raw:
            return
        res.fail(path, f"InlineBinary ({len(data)} bytes) differs from the value ({len(raw)} bytes)")
        return
    res.fail(path, f"{vr} value of {len(raw)} bytes has neither InlineBinary nor BulkDataURI")


def _compare_ambiguous(elem: DataElement, got: dict, ctx: FileContext, path: str, res: Comparison, gvr: str) -> None:
    """pydicom and the server resolved an ambiguous VR (e.g. 'US or SS', 'OB or OW', 'US or OW')
    differently for an implicit VR file: compare what can be compared."""
    evr = str(elem.VR)
    if gvr in BINARY_VRS and evr in BINARY_VRS:
        _compare_binary(elem, got, ctx, path, res, vr=gvr)
    elif gvr in BINARY_VRS:  # pydicom numbers, server bytes
        raw = _values_as_bytes(evr, elem.value if elem.VM > 1 else [elem.value])
        if raw is None:
            note_exclusion("ambiguous VR value not comparable (not compared)", f"{ctx.name} {path}")
            return
        _compare_binary(elem, got, ctx, path, res, raw=raw, vr=gvr)
    elif evr in BINARY_VRS:  # pydicom bytes, server numbers
        got_raw = _values_as_bytes(gvr, got.get("Value"))
        if got_raw is None or got_raw != bytes(elem.value or b""):
            res.fail(path, f"{gvr} values {got.get('Value')!r:.100} do not match the {evr} bytes")
    else:  # US vs SS: compare modulo 2^16
        ev = elem.value if elem.VM > 1 else [elem.value]
        gv = got.get("Value") or []
        if len(ev) != len(gv) or any(
            a is None or b is None or (int(a) - int(b)) % 65536 != 0 for a, b in zip(ev, gv)
        ):
            res.fail(path, f"{gvr} values {gv!r:.100} do not match {evr} {list(ev)!r:.100}")


def swap_bytes(data: bytes, width: int) -> bytes:
    n = len(data) - len(data) % width
    arr = np.frombuffer(data[:n], dtype=np.uint8).reshape(-1, width)[:, ::-1]
    return arr.tobytes() + data[n:]
