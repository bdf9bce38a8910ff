"""WADO-RS frames (PS3.18 §10.4.1.1.4): frames are read as byte ranges of the
stored object, in the stored form: native frames as application/octet-stream,
encapsulated ones as their compressed bitstream (image/jpeg, image/jp2, …)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.encaps import generate_frames

from phim_helpers import Instance, decode_multipart, encode, stow

ANY_TS = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def frames(server, inst_path: str, numbers: str, accept: str = ANY_TS):
    return server.get(f"/dicomweb{inst_path}/frames/{numbers}", headers={"Accept": accept})


def path_of(ds) -> str:
    return f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def test_native_multiframe(phim_factory):
    server = phim_factory.start("embedded")
    inst = Instance.make("frames-native", rows=32, cols=32)
    ds = inst.ds
    data = np.arange(5 * 32 * 32, dtype=np.uint16).reshape(5, 32, 32)
    ds.NumberOfFrames = 5
    ds.PixelData = data.tobytes()
    assert stow(server, [encode(ds)]).status == 200
    r = frames(server, path_of(ds), "2,5")
    assert r.status_code == 200, r.text
    parts = decode_multipart(r.content, r.headers["Content-Type"])
    assert [p.content for p in parts] == [data[1].tobytes(), data[4].tobytes()]
    assert "application/octet-stream" in parts[0].content_type
    assert frames(server, path_of(ds), "0").status_code == 400
    assert frames(server, path_of(ds), "6").status_code == 404
    assert frames(server, path_of(ds), "1", accept="image/png").status_code == 406


@pytest.mark.parametrize("name,media", [
    ("SC_rgb_rle_2frame.dcm", "image/x-dicom-rle"),
    ("JPEG2000.dcm", "image/jp2"),
    ("SC_rgb_jpeg_gdcm.dcm", "image/jpeg"),
])
def test_encapsulated_frames_are_the_stored_bitstreams(phim_factory, name, media):
    server = phim_factory.start("embedded")
    path = Path(pydicom.data.get_testdata_file(name))
    ds = pydicom.dcmread(path)
    assert stow(server, [path.read_bytes()]).status == 200
    n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    expected = list(generate_frames(ds.PixelData, number_of_frames=n))
    r = frames(server, path_of(ds), ",".join(str(i + 1) for i in range(n)))
    assert r.status_code == 200, r.text
    parts = decode_multipart(r.content, r.headers["Content-Type"])
    assert len(parts) == n
    for part, want in zip(parts, expected):
        assert part.content.rstrip(b"\0") == want.rstrip(b"\0")
        assert media in part.content_type
    r = frames(server, path_of(ds), "1", accept=f'multipart/related; type="{media}"')
    assert r.status_code == 200


def test_big_endian_native_frames_are_served_little_endian(phim_factory):
    server = phim_factory.start("embedded")
    path = Path(pydicom.data.get_testdata_file("MR_small_bigendian.dcm"))
    ds = pydicom.dcmread(path)
    assert stow(server, [path.read_bytes()]).status == 200
    r = frames(server, path_of(ds), "1")
    assert r.status_code == 200
    (part,) = decode_multipart(r.content, r.headers["Content-Type"])
    arr = ds.pixel_array
    assert part.content == arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    assert "1.2.840.10008.1.2.1" in part.content_type


def test_big_endian_8_bit_ow_frames_are_in_sample_order(phim_factory):
    """8-bit samples in OW of a big-endian syntax are stored as big-endian words, each pair of
    bytes swapped (PS3.5 §8.1.1, Annex A.3): frames and rendered images put them back in order,
    also for frames of odd length that start in the middle of a word."""
    server = phim_factory.start("embedded")
    be = Path(pydicom.data.get_testdata_file("SC_rgb_small_odd_big_endian.dcm"))
    le = Path(pydicom.data.get_testdata_file("SC_rgb_small_odd.dcm"))
    ds_be, ds_le = pydicom.dcmread(be), pydicom.dcmread(le)
    assert ds_be["PixelData"].VR == "OW" and ds_be.BitsAllocated == 8
    assert np.array_equal(ds_be.pixel_array, ds_le.pixel_array)
    twin = phim_factory.start("embedded")  # the two files share their UIDs
    assert stow(server, [be.read_bytes()]).status == 200
    assert stow(twin, [le.read_bytes()]).status == 200
    r = frames(server, path_of(ds_be), "1")
    (part,) = decode_multipart(r.content, r.headers["Content-Type"])
    assert part.content == ds_be.pixel_array.tobytes()

    def png(srv):
        r = srv.get(f"/dicomweb{path_of(ds_be)}/rendered", headers={"Accept": "image/png"})
        assert r.status_code == 200, r.text
        return r.content

    assert png(server) == png(twin)

    # Three 3×3 8-bit frames (9 bytes each: frames 2 and 3 start inside a word).
    samples = np.arange(27, dtype=np.uint8)
    words = np.append(samples, np.uint8(0)).reshape(-1, 2)[:, ::-1].tobytes()  # big-endian OW
    inst = Instance.make("frames-be-ow-odd", rows=3, cols=3)
    ds = inst.ds
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.NumberOfFrames = 8, 8, 7, 3
    ds.PixelData = words
    ds["PixelData"].VR = "OW"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
    data = encode(ds)
    assert np.array_equal(pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).pixel_array.ravel(), samples)
    assert stow(server, [data]).status == 200
    r = frames(server, path_of(ds), "1,2,3")
    assert r.status_code == 200, r.text
    got = [p.content for p in decode_multipart(r.content, r.headers["Content-Type"])]
    assert got == [samples[0:9].tobytes(), samples[9:18].tobytes(), samples[18:27].tobytes()]
