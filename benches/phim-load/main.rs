//! phim-load: a load generator for any DICOMweb server.
//!
//! `phim-load gen --out DIR` writes a deterministic dataset (CT, MR, CR, US
//! cine) once; `phim-load stow --url BASE --dir DIR --clients N` stores it
//! with N concurrent STOW-RS clients and reports instances/s, MB/s, request
//! latency percentiles, errors and (with `--pid`) the server's peak RSS.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use phim::synth::{self, Kind, StudySpec};

#[derive(Parser)]
#[command(name = "phim-load", about = "Load generator for DICOMweb servers")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate the benchmark dataset into a folder.
    Gen {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 2)]
        ct_studies: u64,
        #[arg(long, default_value_t = 150)]
        ct_slices: u32,
        #[arg(long, default_value_t = 2)]
        mr_studies: u64,
        #[arg(long, default_value_t = 50)]
        mr_slices: u32,
        #[arg(long, default_value_t = 4)]
        cr: u64,
        #[arg(long, default_value_t = 1)]
        us: u64,
        #[arg(long, default_value_t = 40)]
        us_frames: u32,
    },
    /// Write one large multi-frame instance (for flat-memory ingest checks).
    GenLarge {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 2000)]
        frames: u32,
    },
    /// STOW the dataset with concurrent clients.
    Stow {
        /// DICOMweb root, e.g. http://127.0.0.1:8080/dicomweb
        #[arg(long)]
        url: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Instances per STOW request.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Server process id, to report its peak RSS (VmHWM).
        #[arg(long)]
        pid: Option<u32>,
        /// Extra label printed with the result line.
        #[arg(long, default_value = "")]
        label: String,
    },
}

fn main() {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Gen {
            out,
            seed,
            ct_studies,
            ct_slices,
            mr_studies,
            mr_slices,
            cr,
            us,
            us_frames,
        } => {
            let mut specs = Vec::new();
            let mut idx = 0;
            let mut add = |kind, count: u64, instances: u32| {
                for _ in 0..count {
                    specs.push(StudySpec {
                        index: idx,
                        kind,
                        instances,
                    });
                    idx += 1;
                }
            };
            add(Kind::Ct, ct_studies, ct_slices);
            add(Kind::Mr, mr_studies, mr_slices);
            add(Kind::Cr, cr, 1);
            add(Kind::UsCine { frames: us_frames }, us, 1);
            let (mut files, mut bytes) = (0u64, 0u64);
            for spec in &specs {
                let dir = out.join(format!("study{:04}", spec.index));
                std::fs::create_dir_all(&dir).expect("create output folder");
                for n in 0..spec.instances {
                    let data = synth::instance(seed, spec, n);
                    bytes += data.len() as u64;
                    files += 1;
                    std::fs::write(dir.join(format!("{:05}.dcm", n + 1)), data)
                        .expect("write file");
                }
            }
            println!(
                "generated {files} instances, {:.1} MB in {}",
                bytes as f64 / 1e6,
                out.display()
            );
        }
        Cmd::GenLarge { out, frames } => {
            std::fs::create_dir_all(&out).expect("create output folder");
            let path = out.join("large-cine.dcm");
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create file"));
            let n = synth::write_large_cine(&mut f, 1, frames).expect("write");
            println!(
                "generated {} ({:.1} MB, {frames} frames)",
                path.display(),
                n as f64 / 1e6
            );
        }
        Cmd::Stow {
            url,
            dir,
            clients,
            batch,
            pid,
            label,
        } => stow(&url, &dir, clients, batch, pid, &label),
    }
}

fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "dcm"))
        .map(|e| e.into_path())
        .collect();
    files.sort();
    files
}

fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn stow(url: &str, dir: &Path, clients: usize, batch: usize, pid: Option<u32>, label: &str) {
    let files = list_files(dir);
    assert!(!files.is_empty(), "no .dcm files under {}", dir.display());
    let batches: Vec<Vec<PathBuf>> = files.chunks(batch.max(1)).map(|c| c.to_vec()).collect();
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let stats = Arc::new(Mutex::new((0u64, 0u64, 0u64))); // instances ok, bytes, failures
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::new();
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (next, latencies, stats, client, batches) =
                (next.clone(), latencies.clone(), stats.clone(), client.clone(), batches.clone());
            let url = format!("{}/studies", url.trim_end_matches('/'));
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(paths) = batches.get(i) else { break };
                    let boundary = format!("phimload{i}");
                    let mut body = Vec::new();
                    let mut size = 0u64;
                    for p in paths {
                        let data = tokio::fs::read(p).await.expect("read dataset file");
                        size += data.len() as u64;
                        body.extend_from_slice(
                            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
                        );
                        body.extend_from_slice(&data);
                        body.extend_from_slice(b"\r\n");
                    }
                    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
                    let t = Instant::now();
                    let resp = client
                        .post(&url)
                        .header(
                            "Content-Type",
                            format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
                        )
                        .header("Accept", "application/dicom+json")
                        .body(body)
                        .send()
                        .await;
                    let ok = match resp {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let _ = r.bytes().await;
                            status == 200
                        }
                        Err(_) => false,
                    };
                    latencies.lock().expect("lock").push(t.elapsed());
                    let mut s = stats.lock().expect("lock");
                    if ok {
                        s.0 += paths.len() as u64;
                        s.1 += size;
                    } else {
                        s.2 += paths.len() as u64;
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let (ok, bytes, failed) = *stats.lock().expect("lock");
    let mut lat = latencies.lock().expect("lock").clone();
    lat.sort();
    let rss = pid
        .and_then(peak_rss_kb)
        .map(|kb| format!("{:.0} MB", kb as f64 / 1024.0));
    println!(
        "stow{} clients={clients} batch={batch}: {ok} instances in {secs:.2} s = {:.1} inst/s, {:.1} MB/s; \
         request p50 {:.0} ms p95 {:.0} ms p99 {:.0} ms; failed {failed}; server peak RSS {}",
        if label.is_empty() { String::new() } else { format!(" [{label}]") },
        ok as f64 / secs,
        bytes as f64 / 1e6 / secs,
        percentile(&lat, 0.50),
        percentile(&lat, 0.95),
        percentile(&lat, 0.99),
        rss.unwrap_or_else(|| "n/a".into())
    );
}
