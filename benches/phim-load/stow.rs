//! STOW-RS ingest with N concurrent clients.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::dataset::list_files;
use crate::report::{append_rows, peak_rss_kb, percentile, Common};

pub fn stow(common: &Common, dir: &Path, clients: usize, batch: usize, op: &str) {
    let files = list_files(dir);
    assert!(!files.is_empty(), "no .dcm files under {}", dir.display());
    let batches: Vec<Vec<PathBuf>> = files.chunks(batch.max(1)).map(|c| c.to_vec()).collect();
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let stats = Arc::new(Mutex::new((0u64, 0u64, 0u64))); // instances ok, bytes, failures
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let rt = crate::runtime();
    let client = crate::http_client();
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..clients.max(1) {
            let (next, latencies, stats, client, batches, first_error) = (
                next.clone(),
                latencies.clone(),
                stats.clone(),
                client.clone(),
                batches.clone(),
                first_error.clone(),
            );
            let url = format!("{}/studies", common.base());
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
                            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n")
                                .as_bytes(),
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
                            format!(
                                "multipart/related; type=\"application/dicom\"; boundary={boundary}"
                            ),
                        )
                        .header("Accept", "application/dicom+json")
                        .body(body)
                        .send()
                        .await;
                    let error = match resp {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let text = r.bytes().await.unwrap_or_default();
                            (status != 200).then(|| {
                                format!(
                                    "HTTP {status}: {}",
                                    String::from_utf8_lossy(&text[..text.len().min(300)])
                                )
                            })
                        }
                        Err(e) => Some(e.to_string()),
                    };
                    latencies.lock().expect("lock").push(t.elapsed());
                    let mut s = stats.lock().expect("lock");
                    match error {
                        None => {
                            s.0 += paths.len() as u64;
                            s.1 += size;
                        }
                        Some(e) => {
                            s.2 += paths.len() as u64;
                            first_error.lock().expect("lock").get_or_insert(e);
                        }
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
    let rss = common
        .pid
        .and_then(peak_rss_kb)
        .map(|kb| kb as f64 / 1024.0);
    let label = if common.label.is_empty() {
        String::new()
    } else {
        format!(" [{}]", common.label)
    };
    let (p50, p95, p99) = (
        percentile(&lat, 0.50),
        percentile(&lat, 0.95),
        percentile(&lat, 0.99),
    );
    println!(
        "{op}{label} clients={clients} batch={batch}: {ok} instances in {secs:.2} s = {:.1} inst/s, {:.1} MB/s; \
         request p50 {p50:.0} ms p95 {p95:.0} ms p99 {p99:.0} ms; failed {failed}; server peak RSS {}",
        ok as f64 / secs,
        bytes as f64 / 1e6 / secs,
        rss.map(|mb| format!("{mb:.0} MB"))
            .unwrap_or_else(|| "n/a".into())
    );
    if let Some(e) = first_error.lock().expect("lock").as_ref() {
        println!("{op}{label}: first failure: {e}");
    }
    let op = format!("{op}.c{clients}");
    let mut rows = vec![
        ("instances", ok.to_string()),
        ("errors", failed.to_string()),
        ("inst_s", format!("{:.3}", ok as f64 / secs)),
        ("mbps", format!("{:.3}", bytes as f64 / 1e6 / secs)),
        ("p50_ms", format!("{p50:.3}")),
        ("p95_ms", format!("{p95:.3}")),
        ("p99_ms", format!("{p99:.3}")),
    ];
    if let Some(mb) = rss {
        rows.push(("peak_rss_mb", format!("{mb:.1}")));
    }
    append_rows(common, &op, &rows);
}
