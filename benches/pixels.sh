#!/usr/bin/env bash
# Pixel pipeline benchmark (issue #4):
#   1. in process (cargo bench --bench pixels): thumbnails/s on a 300-slice
#      CT with 1 and 2 imaging threads, rendered latency of a CT slice, a
#      2000x2500 CR and a US frame, transcoding MB/s (JPEG 2000 -> Explicit
#      LE on a 512x512 16-bit file made with pydicom + OpenJPEG, Explicit LE
#      -> JPEG baseline);
#   2. over HTTP against a release `phim serve` (embedded default): latency
#      of frame 1 and frame 1000 of a 1000-frame multi-frame object, and of
#      rendered/thumbnail requests.
#
#   bash benches/pixels.sh        (needs .venv-test from `make test` for step 1's J2K file)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WORK=${PHIM_BENCH_WORK:-$(mktemp -d)}
REPS=${REPS:-50}
cargo build --release --bins >&2

J2K=""
if [ -x .venv-test/bin/python ]; then
    J2K=$WORK/j2k-ct.dcm
    .venv-test/bin/python - "$J2K" <<'PY'
import sys
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid
y, x = np.mgrid[0:512, 0:512]
img = (1024 + 900 * np.exp(-((x - 256) ** 2 + (y - 256) ** 2) / 20000.0)
       + np.random.default_rng(1).normal(0, 20, (512, 512))).astype(np.uint16)
ds = Dataset()
ds.file_meta = FileMetaDataset()
ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
ds.Rows = ds.Columns = 512
ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
ds.PixelData = (img & 0x0FFF).tobytes()
ds.compress(JPEG2000Lossless)
ds.save_as(sys.argv[1], enforce_file_format=True)
PY
fi

echo "== in process"
PHIM_BENCH_J2K=$J2K cargo bench --bench pixels 2>/dev/null | grep -v '^$'

echo "== over HTTP (release phim serve, embedded default, client on the same machine)"
target/release/phim-load gen-large --out "$WORK/large" --frames 1000 >&2
LOG=$WORK/phim.log
target/release/phim serve --listen 127.0.0.1:0 --data-dir "$WORK/data" --dicom-listen off 2>"$LOG" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    ADDR=$(grep -oE 'listening on http://[0-9.]+:[0-9]+' "$LOG" | head -1 | sed 's|listening on http://||') || true
    [ -n "${ADDR:-}" ] && break
    sleep 0.1
done
BASE=http://$ADDR/dicomweb
target/release/phim-load stow --url "$BASE" --dir "$WORK/large" --clients 1 --batch 1 >&2
INST=$(curl -s "$BASE/instances?limit=1" | python3 -c 'import json,sys; d=json.load(sys.stdin)[0]; print("/studies/%s/series/%s/instances/%s" % (d["0020000D"]["Value"][0], d["0020000E"]["Value"][0], d["00080018"]["Value"][0]))')
lat() { # name url accept
    local name=$1 url=$2 accept=$3
    for _ in $(seq 1 "$REPS"); do
        curl -s -o /dev/null -H "Accept: $accept" -w '%{time_total}\n' "$url"
    done | sort -n | awk -v n="$name" '{a[NR]=$1} END {printf "%s: p50 %.1f ms, p99 %.1f ms (%d requests)\n", n, a[int((NR+1)/2)]*1000, a[int(NR*0.99+0.5)]*1000, NR}'
}
ANY='multipart/related; type="application/octet-stream"; transfer-syntax=*'
lat "frame 1 of 1000 ($(du -m "$WORK"/large/*.dcm | cut -f1) MB object)" "$BASE$INST/frames/1" "$ANY"
lat "frame 1000 of 1000" "$BASE$INST/frames/1000" "$ANY"
lat "rendered frame 500 (JPEG)" "$BASE$INST/frames/500/rendered" "image/jpeg"
lat "thumbnail of the instance" "$BASE$INST/thumbnail" "image/jpeg"
echo "server peak RSS: $(awk '/VmHWM/{print $2, $3}' /proc/$PID/status)"
