//! The pixel pipeline's CPU work, in process (no HTTP, no store reads):
//! thumbnails per second on a 300-slice CT series with 1 and 2 imaging
//! threads, rendered latency (p50/p99) of a CT slice, a 2000×2500 CR and a
//! frame of a multi-frame US, and transcoding throughput.
//!
//!   cargo bench --bench pixels            (benches/pixels.sh runs it, plus
//!                                          the HTTP frame-latency numbers)
//!
//! `PHIM_BENCH_J2K=file.dcm` adds JPEG 2000 → Explicit VR LE (the script
//! makes that file with pydicom + OpenJPEG).
//! Under `cargo test` (no `--bench`) it runs a small smoke version.

use std::time::{Duration, Instant};

use phim::dicom::frames::{frame_index, FrameIndex};
use phim::dicom::json::{write_dataset, JsonOptions};
use phim::dicom::scan::{scan_bytes, ScanLimits};
use phim::imaging::codec::{self, JPEG_BASELINE};
use phim::imaging::pixel::{PixelInfo, Presentation};
use phim::imaging::render::{self, Format, Luts, RenderParams, Viewport};
use phim::imaging::Imaging;
use phim::synth::{self, Kind, StudySpec};
use rayon::prelude::*;

struct Image {
    info: PixelInfo,
    pres: Presentation,
    ts: String,
    /// The stored bytes of each frame.
    frames: Vec<Vec<u8>>,
}

fn load(file: &[u8]) -> Image {
    let scanned = scan_bytes(file, &ScanLimits::default()).expect("scan");
    let mut json = String::new();
    write_dataset(
        &mut json,
        &scanned.dataset,
        &JsonOptions {
            encoding: scanned.encoding(),
            instance_path: "/x",
            default_charset: scanned.default_charset,
            available_transfer_syntax: Some(scanned.transfer_syntax.uid),
        },
    );
    let doc: serde_json::Value = serde_json::from_str(&json).expect("json");
    let info = PixelInfo::from_json(&doc).expect("pixel info");
    let pres = Presentation::from_json(&doc, 0).expect("presentation");
    let index: FrameIndex = frame_index(&scanned).expect("frames");
    let frames = (0..index.frames())
        .map(|n| {
            index
                .ranges(n)
                .expect("range")
                .iter()
                .flat_map(|(o, l)| file[*o as usize..(*o + *l) as usize].to_vec())
                .collect()
        })
        .collect();
    Image {
        info,
        pres,
        ts: scanned.transfer_syntax.uid.to_owned(),
        frames,
    }
}

fn render_jpeg(img: &Image, frame: usize, viewport: Option<Viewport>) -> Vec<u8> {
    let f = codec::decode(&img.info, &img.ts, &img.frames[frame]).expect("decode");
    let params = RenderParams {
        viewport,
        ..RenderParams::default()
    };
    let out = render::render(&f, &img.info, &img.pres, &Luts::default(), &params).expect("render");
    render::encode(&[out], Format::Jpeg, params.quality).expect("encode")
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3;
    (at(0.5), at(0.99))
}

fn spec(kind: Kind, instances: u32) -> StudySpec {
    StudySpec {
        index: 0,
        kind,
        instances,
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let slices = if full { 300 } else { 10 };
    let reps = if full { 50 } else { 3 };
    println!(
        "machine: {} cores; release build; in-process (no HTTP, no store)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Thumbnails: decode + window + downscale to 128 + JPEG, per slice.
    let ct: Vec<Image> = (0..slices)
        .map(|n| load(&synth::instance(7, &spec(Kind::Ct, slices), n)))
        .collect();
    let vp = Some(Viewport {
        width: 128,
        height: 128,
        region: None,
    });
    for threads in [1, 2] {
        let pool = Imaging::new(threads);
        let t = Instant::now();
        let bytes: usize =
            pool.install(|| ct.par_iter().map(|img| render_jpeg(img, 0, vp).len()).sum());
        let s = t.elapsed().as_secs_f64();
        println!(
            "thumbnails, {slices}-slice CT 512x512, {threads} thread(s): {:.0}/s ({:.2} s, {:.0} B avg)",
            slices as f64 / s,
            s,
            bytes as f64 / slices as f64
        );
    }

    // Rendered latency, full size JPEG.
    let cr = load(&synth::instance(7, &spec(Kind::Cr, 1), 0));
    let us = load(&synth::instance(
        7,
        &spec(Kind::UsCine { frames: 10 }, 1),
        0,
    ));
    for (name, img, frame) in [
        ("CT slice 512x512", &ct[0], 0),
        ("CR 2000x2500", &cr, 0),
        ("US frame 640x480 RGB", &us, 5),
    ] {
        let times: Vec<Duration> = (0..reps)
            .map(|_| {
                let t = Instant::now();
                render_jpeg(img, frame, None);
                t.elapsed()
            })
            .collect();
        let (p50, p99) = percentiles(times);
        println!("rendered {name}: p50 {p50:.1} ms, p99 {p99:.1} ms ({reps} runs)");
    }

    // Transcoding throughput (decoded megabytes per second).
    let transcode = |name: &str, img: &Image, target: &str| {
        let t = Instant::now();
        let mut bytes = 0usize;
        let mut n = 0;
        while n < 3 || t.elapsed() < Duration::from_millis(if full { 2000 } else { 50 }) {
            for f in &img.frames {
                let frame = codec::decode(&img.info, &img.ts, f).expect("decode");
                bytes += frame.data.len();
                let out = codec::encode(&img.info, &frame, target, 90).expect("encode");
                std::hint::black_box(out);
            }
            n += 1;
        }
        println!(
            "transcode {name}: {:.0} MB/s (decoded bytes, one thread), {:.1} ms/frame",
            bytes as f64 / 1e6 / t.elapsed().as_secs_f64(),
            t.elapsed().as_secs_f64() * 1e3 / (n * img.frames.len()) as f64
        );
    };
    transcode(
        "US 640x480 RGB Explicit LE -> JPEG baseline",
        &us,
        JPEG_BASELINE,
    );
    transcode("CT 512x512 Explicit LE -> RLE", &ct[0], codec::RLE_LOSSLESS);
    transcode(
        "CT 512x512 Explicit LE -> JPEG Lossless SV1",
        &ct[0],
        codec::JPEG_LOSSLESS_SV1,
    );
    transcode(
        "CT 512x512 16-bit Explicit LE -> JPEG 2000 lossless",
        &ct[0],
        codec::JPEG_2000_LOSSLESS,
    );
    transcode(
        "CT 512x512 16-bit Explicit LE -> JPEG 2000 lossy 10:1",
        &ct[0],
        codec::JPEG_2000,
    );
    transcode(
        "CT 512x512 Explicit LE -> JPEG-LS lossless",
        &ct[0],
        codec::JPEG_LS_LOSSLESS,
    );
    // Near-lossless takes unsigned samples only (the CT is signed).
    transcode(
        "CR 2000x2500 12-bit Explicit LE -> JPEG-LS lossless",
        &cr,
        codec::JPEG_LS_LOSSLESS,
    );
    transcode(
        "CR 2000x2500 12-bit Explicit LE -> JPEG-LS near-lossless (NEAR 2)",
        &cr,
        codec::JPEG_LS_NEAR,
    );
    match std::env::var("PHIM_BENCH_J2K") {
        Ok(path) => {
            let file = std::fs::read(&path).expect("PHIM_BENCH_J2K file");
            let j2k = load(&file);
            transcode(
                &format!(
                    "{}x{} JPEG 2000 lossless -> Explicit LE",
                    j2k.info.columns, j2k.info.rows
                ),
                &j2k,
                "1.2.840.10008.1.2.1",
            );
        }
        Err(_) => println!("transcode JPEG 2000 -> Explicit LE: skipped (set PHIM_BENCH_J2K)"),
    }
}
