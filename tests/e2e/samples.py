"""Writes the compressed sample instances the viewer's browser test opens,
one study each, and prints them as JSON: {name: {path, study, ts}}.

pydicom's bundled sample files (get_testdata_file of a bundled name never
downloads) for every compressed transfer syntax the viewer must decode in
the browser, plus an HTJ2K instance made here with OpenJPH (imagecodecs)
from CT_small's pixels: pydicom ships none. Several samples share their
UIDs (MR_small in three syntaxes), so each gets new, deterministic Study,
Series and SOP Instance UIDs; the encoded pixel data is kept as it is.

    python samples.py OUT_DIR
"""

import json
import sys
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

SAMPLES = {
    "jpeg-baseline": "SC_rgb_jpeg_dcmtk.dcm",  # 1.2.840.10008.1.2.4.50, YBR_FULL 100x100
    "jpeg-extended-12bit": "JPGExtended.dcm",  # .51, 12-bit 1024x256
    "jpeg-lossless-sv1": "SC_rgb_jpeg_gdcm.dcm",  # .70, RGB 100x100
    "jpeg-ls-lossless": "MR_small_jpeg_ls_lossless.dcm",  # .80, MR 64x64
    "jpeg-ls-near-lossless": "SC_rgb_jls_lossy_sample.dcm",  # .81, RGB 100x100
    "j2k-lossless": "MR_small_jp2klossless.dcm",  # .90, MR 64x64
    "j2k-lossy": "693_J2KI.dcm",  # .91, 14-bit 512x512
    "rle": "MR_small_RLE.dcm",  # .5, MR 64x64
    # .50 labelled RGB, no JFIF or Adobe marker: a browser's libjpeg would take it for YCbCr.
    "jpeg-rgb-no-transform": "SC_jpeg_no_color_transform.dcm",
}


def renamed(ds: pydicom.Dataset, name: str) -> pydicom.Dataset:
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[name, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[name, "series"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[name, "instance"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = f"CODEC-{name}"
    ds.PatientName = f"Codec^{name}"
    return ds


def htj2k() -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    pixels = ds.pixel_array
    stream = imagecodecs.htj2k_encode(pixels, reversible=True)
    assert np.array_equal(imagecodecs.htj2k_decode(stream), pixels), "HTJ2K reference not lossless"
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.201"  # HTJ2K Lossless
    return renamed(ds, "htj2k-lossless")


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, file in SAMPLES.items():
        ds = renamed(pydicom.dcmread(get_testdata_file(file)), name)
        made[name] = ds
    made["htj2k-lossless"] = htj2k()
    listing = {}
    for name, ds in made.items():
        path = out / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        listing[name] = {"path": str(path), "study": str(ds.StudyInstanceUID), "ts": str(ds.file_meta.TransferSyntaxUID)}
    print(json.dumps(listing))


if __name__ == "__main__":
    main()
