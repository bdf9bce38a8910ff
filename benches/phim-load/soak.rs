//! `soak`: many concurrent clients mixing STOW, QIDO, WADO metadata, frames
//! and rendered images against a server loaded with a dataset, for a fixed
//! time, while the server's resident memory is sampled. What it shows: the
//! error count (target 0), p50/p99 per operation, and whether memory stays
//! flat after warm-up (it must not grow with the number of requests served).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use phim::synth::{self, Kind, Rng, StudySpec};

use crate::dataset::Manifest;
use crate::read::ACCEPT_JSON;
use crate::report::{append_rows, status_kb, Common, OpReport, Outcome, Sample};

#[derive(clap::Args, Clone, Debug)]
pub struct SoakArgs {
    #[command(flatten)]
    pub common: Common,
    /// Dataset folder (with manifest.json) that the server was loaded with.
    #[arg(long)]
    pub dataset: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 600)]
    pub duration: u64,
    /// Seconds between samples of the server's RSS (needs --pid).
    #[arg(long, default_value_t = 10)]
    pub sample_every: u64,
    /// Seconds of warm-up: RSS growth is measured from the first sample after it.
    #[arg(long, default_value_t = 60)]
    pub warm_up: u64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

const OPS: [&str; 5] = ["stow", "qido", "metadata", "frames", "rendered"];
/// Out of 20 requests: 2 STOWs, 5 queries, 4 metadata, 6 frames, 3 rendered.
const WEIGHTS: [u64; 5] = [2, 5, 4, 6, 3];

/// Resident set size of a process now, in kB.
fn rss_kb(pid: u32) -> Option<u64> {
    status_kb(pid, "VmRSS:")
}

fn pick_op(r: &mut Rng) -> usize {
    let mut x = r.below(WEIGHTS.iter().sum());
    for (i, w) in WEIGHTS.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    0
}

/// One request of operation `op` by client `c`, its `k`-th.
async fn one(
    client: &reqwest::Client,
    base: &str,
    m: &Manifest,
    r: &mut Rng,
    op: usize,
    c: u64,
    k: u64,
) -> Sample {
    let study = &m.studies[r.below(m.studies.len() as u64) as usize];
    let sop = &study.instances[r.below(study.instances.len() as u64) as usize];
    let inst = format!(
        "{base}/studies/{}/series/{}/instances/{sop}",
        study.study_uid, study.series_uid
    );
    let t = Instant::now();
    let resp = match OPS[op] {
        "stow" => {
            // A new small instance in a study of its own (64×64 CR).
            let spec = StudySpec {
                index: 1_000_000 + c * 100_000 + k,
                kind: Kind::Cr,
                instances: 1,
            };
            let data = synth::instance_sized(m.seed + 500, &spec, 0, Some((64, 64)));
            let boundary = format!("soak{c}x{k}");
            let mut body =
                format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").into_bytes();
            body.extend_from_slice(&data);
            body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            client
                .post(format!("{base}/studies"))
                .header(
                    "Content-Type",
                    format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
                )
                .header("Accept", ACCEPT_JSON)
                .body(body)
                .send()
                .await
        }
        "qido" => {
            let url = match r.below(3) {
                0 => format!("{base}/studies?PatientID={}", study.patient_id),
                1 => format!("{base}/studies?StudyDate={}&limit=50", study.study_date),
                _ => format!("{base}/studies/{}/series", study.study_uid),
            };
            client.get(url).header("Accept", ACCEPT_JSON).send().await
        }
        "metadata" => {
            client
                .get(format!("{inst}/metadata"))
                .header("Accept", ACCEPT_JSON)
                .send()
                .await
        }
        "frames" => {
            client
                .get(format!("{inst}/frames/1"))
                .header(
                    "Accept",
                    "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*",
                )
                .send()
                .await
        }
        _ => {
            client
                .get(format!("{inst}/rendered"))
                .header("Accept", "image/jpeg")
                .send()
                .await
        }
    };
    let mut s = Sample {
        latency: Duration::ZERO,
        bytes: 0,
        outcome: Outcome::Error,
        ignored_key: false,
        results: None,
    };
    if let Ok(resp) = resp {
        let status = resp.status().as_u16();
        if let Ok(body) = resp.bytes().await {
            s.bytes = body.len() as u64;
            if status == 200 && !body.is_empty() {
                s.outcome = Outcome::Ok;
            }
        }
    }
    s.latency = t.elapsed();
    s
}

// long: one function sets up the clients, the sampler and the report, in order.
pub fn soak(a: &SoakArgs) {
    let m = Arc::new(Manifest::load(&a.dataset));
    assert!(!m.studies.is_empty(), "the dataset has no studies");
    let samples: Arc<Vec<Mutex<Vec<Sample>>>> =
        Arc::new(OPS.iter().map(|_| Mutex::new(Vec::new())).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let first_error_at = Arc::new(AtomicU64::new(0));
    let rt = crate::runtime();
    let client = crate::http_client();
    let base = a.common.base().to_owned();
    let start = Instant::now();
    let rss: Vec<(u64, u64)> = rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..a.clients.max(1) as u64 {
            let (client, base, m, samples, stop, seed) = (
                client.clone(),
                base.clone(),
                m.clone(),
                samples.clone(),
                stop.clone(),
                a.seed,
            );
            let first_error_at = first_error_at.clone();
            tasks.push(tokio::spawn(async move {
                let mut r = Rng::new(seed.wrapping_mul(7919).wrapping_add(c));
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    let op = pick_op(&mut r);
                    let s = one(&client, &base, &m, &mut r, op, c, k).await;
                    if s.outcome != Outcome::Ok {
                        let _ = first_error_at.compare_exchange(
                            0,
                            start.elapsed().as_millis() as u64 + 1,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    samples[op].lock().expect("lock").push(s);
                    k += 1;
                }
            }));
        }
        let mut rss = Vec::new();
        let deadline = start + Duration::from_secs(a.duration);
        let every = Duration::from_secs(a.sample_every.max(1));
        loop {
            let now = Instant::now();
            if let Some(kb) = a.common.pid.and_then(rss_kb) {
                let t = start.elapsed().as_secs();
                println!("rss t={t}s {:.0} MB", kb as f64 / 1024.0);
                rss.push((t, kb));
            }
            if now >= deadline {
                break;
            }
            tokio::time::sleep(every.min(deadline - now)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        rss
    });
    let wall = start.elapsed();
    let mut errors = 0;
    for (i, op) in OPS.iter().enumerate() {
        let samples = std::mem::take(&mut *samples[i].lock().expect("lock"));
        errors += samples.iter().filter(|s| s.outcome != Outcome::Ok).count();
        OpReport {
            op: format!("soak.{op}.c{}", a.clients),
            samples,
            wall,
        }
        .emit(&a.common);
    }
    let at = first_error_at.load(Ordering::Relaxed);
    println!(
        "soak: {errors} errors in {:.0} s{}",
        wall.as_secs_f64(),
        if at > 0 {
            format!(" (first at {:.1} s)", (at - 1) as f64 / 1000.0)
        } else {
            String::new()
        }
    );
    let after = rss.iter().find(|(t, _)| *t >= a.warm_up);
    if let (Some((t0, kb0)), Some((t1, kb1))) = (after, rss.last()) {
        let max = rss.iter().filter(|(t, _)| t >= t0).map(|(_, kb)| *kb).max();
        let mb = |kb: u64| kb as f64 / 1024.0;
        println!(
            "soak: server RSS {:.0} MB at {t0} s (after warm-up), {:.0} MB at {t1} s, peak after warm-up {:.0} MB: growth {:+.0} MB",
            mb(*kb0),
            mb(*kb1),
            mb(max.unwrap_or(*kb1)),
            mb(*kb1) - mb(*kb0)
        );
        append_rows(
            &a.common,
            &format!("soak.c{}", a.clients),
            &[
                ("errors", errors.to_string()),
                ("rss_after_warmup_mb", format!("{:.1}", mb(*kb0))),
                ("rss_end_mb", format!("{:.1}", mb(*kb1))),
                ("rss_growth_mb", format!("{:.1}", mb(*kb1) - mb(*kb0))),
            ],
        );
    }
}
