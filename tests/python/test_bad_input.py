"""STOW-RS with bad input: each request gets the right status and FailureReason, a bad part
fails only itself, and a previously stored instance stays retrievable byte for byte."""

from __future__ import annotations

import time

import numpy as np
import pytest

from phim_helpers import (
    DICOM_JSON,
    FAIL_DUPLICATE,
    FAIL_PROCESSING,
    FAIL_STUDY_MISMATCH,
    Instance,
    StowResult,
    assert_instance_bytes,
    element_header_offset,
    encode,
    encode_multipart,
    make_dataset,
    parse_content_type,
    stow,
    stow_raw,
    uid_for,
)


@pytest.fixture(scope="module")
def sentinel(server) -> Instance:
    """Stored before the bad requests; must survive all of them unchanged."""
    inst = Instance.make("bad-input/sentinel")
    res = stow(server, [inst.data])
    assert res.status == 200, res.describe()
    return inst


def check_sentinel(server, sentinel: Instance) -> None:
    assert_instance_bytes(server, sentinel.study, sentinel.series, sentinel.sop, sentinel.data)


def random_bytes(seed: int, n: int = 4096) -> bytes:
    return np.random.default_rng(seed).bytes(n)


def truncated_in_header(inst: Instance) -> bytes:
    """Cut inside the value of Patient's Name (0010,0010), well before Pixel Data."""
    off = element_header_offset(inst.data, 0x0010, 0x0010, b"PN")
    return inst.data[: off + 8 + 3]


def truncated_in_pixel_data(inst: Instance) -> bytes:
    off = element_header_offset(inst.data, 0x7FE0, 0x0010, b"OW")
    return inst.data[: off + 12 + 100]


def huge_length(inst: Instance, where: str) -> bytes:
    """A valid file with one element's 32-bit length patched to 0xFFFFFFF0."""
    if where == "private-ob":
        off = element_header_offset(inst.data, 0x0009, 0x1001, b"OB")
    else:
        off = element_header_offset(inst.data, 0x7FE0, 0x0010, b"OW")
    data = bytearray(inst.data)
    assert data[off + 6 : off + 8] == b"\0\0"  # reserved bytes of a 32-bit-length VR
    data[off + 8 : off + 12] = (0xFFFFFFF0).to_bytes(4, "little")
    return bytes(data)


def assert_json_response(res: StowResult) -> None:
    assert parse_content_type(res.content_type)[0] == DICOM_JSON, (
        f"STOW response Content-Type {res.content_type!r}, expected {DICOM_JSON}"
    )


def assert_all_failed(res: StowResult, n: int, reason: int) -> None:
    assert res.status == 409, f"expected 409, got {res.describe()}"
    assert_json_response(res)
    assert len(res.failed) == n, f"expected {n} FailedSOPSequence items: {res.describe()}"
    assert res.failure_reasons() == [reason] * n, f"expected FailureReason {reason:04X}: {res.describe()}"
    assert not res.referenced, res.describe()


# --------------------------------------------------------------------------- single bad parts


def test_non_dicom_part(server, sentinel):
    res = stow(server, [random_bytes(1)])
    assert_all_failed(res, 1, FAIL_PROCESSING)
    check_sentinel(server, sentinel)


@pytest.mark.parametrize("cut", ["header", "pixel-data"])
def test_truncated_file(server, sentinel, cut):
    inst = Instance.make(f"bad-input/truncated-{cut}")
    data = truncated_in_header(inst) if cut == "header" else truncated_in_pixel_data(inst)
    res = stow(server, [data])
    assert_all_failed(res, 1, FAIL_PROCESSING)
    r = server.get(f"/dicomweb/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}",
                   headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert r.status_code == 404, f"a truncated file must not be stored (HTTP {r.status_code})"
    check_sentinel(server, sentinel)


def test_zero_byte_part(server, sentinel):
    res = stow(server, [b""])
    assert_all_failed(res, 1, FAIL_PROCESSING)
    check_sentinel(server, sentinel)


@pytest.mark.parametrize("where", ["private-ob", "pixel-data"])
def test_huge_declared_length(server, sentinel, where):
    inst = Instance.make(f"bad-input/huge-{where}")
    t0 = time.monotonic()
    res = stow(server, [huge_length(inst, where)])
    elapsed = time.monotonic() - t0
    assert_all_failed(res, 1, FAIL_PROCESSING)
    assert elapsed < 10, f"STOW of a file declaring a 4 GiB element took {elapsed:.1f}s"
    assert server.alive, "server died"
    r = server.get("/healthz", timeout=5)  # answers, and not stuck behind a 4 GiB allocation
    assert r.status_code == 200
    check_sentinel(server, sentinel)


# --------------------------------------------------------------------------- request level


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
def test_wrong_content_type(server, sentinel, content_type):
    inst = Instance.make("bad-input/wrong-ct")
    body = b'{"00100010": {"vr": "PN"}}' if content_type == "application/json" else inst.data
    r = server.post("/dicomweb/studies", data=body, headers={"Content-Type": content_type, "Accept": DICOM_JSON})
    assert r.status_code == 415, f"Content-Type {content_type}: HTTP {r.status_code} {r.text[:200]}"
    check_sentinel(server, sentinel)


def test_multipart_without_boundary_parameter(server, sentinel):
    inst = Instance.make("bad-input/no-boundary")
    body, _ = encode_multipart([inst.data], boundary="abc123")
    res = stow_raw(server, body, 'multipart/related; type="application/dicom"')
    assert res.status == 400, res.describe()
    check_sentinel(server, sentinel)


def test_multipart_body_without_delimiters(server, sentinel):
    res = stow_raw(server, random_bytes(2, 2048),
                   'multipart/related; type="application/dicom"; boundary=phim-not-in-body')
    assert res.status == 400, res.describe()
    check_sentinel(server, sentinel)


def test_quoted_boundary_parameter(server, sentinel):
    """Clients (e.g. dicomweb-client) quote the boundary."""
    inst = Instance.make("bad-input/quoted-boundary")
    body, _ = encode_multipart([inst.data], boundary="0f3cf5c0-70e0-41ef-baef-c6f9f65ec3e1")
    res = stow_raw(server, body,
                   'multipart/related; type="application/dicom"; boundary="0f3cf5c0-70e0-41ef-baef-c6f9f65ec3e1"')
    assert res.status == 200, res.describe()
    assert_instance_bytes(server, inst.study, inst.series, inst.sop, inst.data)


# --------------------------------------------------------------------------- study URL


def test_study_uid_mismatch(server, sentinel):
    inst = Instance.make("bad-input/mismatch")
    other = uid_for("bad-input", "other-study")
    res = stow(server, [inst.data], study=other)
    assert_all_failed(res, 1, FAIL_STUDY_MISMATCH)
    item = res.failed[0]
    assert item.sop_instance == inst.sop and item.sop_class == inst.sop_class, res.describe()
    check_sentinel(server, sentinel)


def test_study_uid_mismatch_only_fails_that_part(server, sentinel):
    study = uid_for("bad-input", "mixed-study")
    good = Instance.make("bad-input/mixed-study-good", study_uid=study)
    bad = Instance.make("bad-input/mixed-study-bad")
    res = stow(server, [good.data, bad.data], study=study)
    assert res.status == 202, res.describe()
    assert res.referenced_uids() == {good.sop}
    assert [(i.sop_instance, i.failure_reason) for i in res.failed] == [(bad.sop, FAIL_STUDY_MISMATCH)]
    assert_instance_bytes(server, good.study, good.series, good.sop, good.data)
    check_sentinel(server, sentinel)


# --------------------------------------------------------------------------- mixes


def test_good_and_bad_parts(server, sentinel):
    study = uid_for("bad-input", "mix-study")
    good1 = Instance.make("bad-input/mix-good-1", study_uid=study)
    good2 = Instance.make("bad-input/mix-good-2", study_uid=study)
    trunc = Instance.make("bad-input/mix-truncated")
    huge = Instance.make("bad-input/mix-huge")
    parts = [good1.data, random_bytes(3), b"", good2.data, truncated_in_header(trunc),
             huge_length(huge, "private-ob")]
    res = stow(server, parts)
    assert res.status == 202, res.describe()
    assert_json_response(res)
    assert res.retrieve_url and study in res.retrieve_url, f"202 without the study's RetrieveURL: {res.retrieve_url!r}"
    assert res.referenced_uids() == {good1.sop, good2.sop}, res.describe()
    assert len(res.failed) == 4, res.describe()
    assert res.failure_reasons() == [FAIL_PROCESSING] * 4, res.describe()
    for g in (good1, good2):
        assert_instance_bytes(server, g.study, g.series, g.sop, g.data)
    check_sentinel(server, sentinel)


def test_all_parts_bad(server, sentinel):
    trunc = Instance.make("bad-input/all-bad-truncated")
    res = stow(server, [random_bytes(4), b"", truncated_in_header(trunc)])
    assert_all_failed(res, 3, FAIL_PROCESSING)
    check_sentinel(server, sentinel)


# --------------------------------------------------------------------------- duplicates


def test_duplicate_sop_with_different_bytes(server, sentinel):
    seed = "bad-input/duplicate"
    orig = Instance.make(seed)
    res = stow(server, [orig.data])
    assert res.status == 200, res.describe()

    changed = make_dataset(seed)  # same UIDs ...
    changed.PatientName = "Changed^Name"  # ... different bytes
    data = encode(changed)
    assert data != orig.data
    res = stow(server, [data])
    assert_all_failed(res, 1, FAIL_DUPLICATE)
    assert res.failed[0].sop_instance == orig.sop, res.describe()
    assert res.failed[0].sop_class == orig.sop_class, res.describe()
    assert_instance_bytes(server, orig.study, orig.series, orig.sop, orig.data)
    check_sentinel(server, sentinel)


def test_same_bytes_again_is_success(server, sentinel):
    inst = Instance.make("bad-input/idempotent")
    for attempt in range(2):
        res = stow(server, [inst.data])
        assert res.status == 200, f"attempt {attempt + 1}: {res.describe()}"
        assert res.referenced_uids() == {inst.sop}
        assert not res.failed
    assert_instance_bytes(server, inst.study, inst.series, inst.sop, inst.data)
    # The sentinel itself, once more.
    res = stow(server, [sentinel.data])
    assert res.status == 200, res.describe()
    check_sentinel(server, sentinel)
