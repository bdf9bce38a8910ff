//! Measurement records and how they are printed: one human-readable line per
//! operation on stdout, and (with `--results FILE`) tab-separated
//! `label op metric value` rows appended to FILE for scripts to aggregate.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Options shared by every measuring subcommand.
#[derive(clap::Args, Clone, Debug)]
pub struct Common {
    /// DICOMweb root, e.g. http://127.0.0.1:8080/dicomweb (Phim) or
    /// http://127.0.0.1:8042/dicom-web (Orthanc).
    #[arg(long)]
    pub url: String,
    /// Server process id, to report its peak RSS (VmHWM).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Label printed with each result line (and the first column of --results).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Append `label<TAB>op<TAB>metric<TAB>value` rows to this file.
    #[arg(long)]
    pub results: Option<PathBuf>,
}

impl Common {
    pub fn base(&self) -> &str {
        self.url.trim_end_matches('/')
    }
}

/// Peak resident set size of a process in kB, from /proc/PID/status.
pub fn peak_rss_kb(pid: u32) -> Option<u64> {
    status_kb(pid, "VmHWM:")
}

/// A kB field of /proc/PID/status (`VmHWM:` peak RSS, `VmRSS:` RSS now).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The p-th quantile (0..=1) of sorted latencies, in milliseconds.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Outcome of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// 404/501 on an optional resource (rendered, thumbnail).
    Unsupported,
    Error,
}

/// One request's measurement.
#[derive(Debug, Clone)]
pub struct Sample {
    pub latency: Duration,
    pub bytes: u64,
    pub outcome: Outcome,
    /// The server answered with a `Warning: 299 … not supported` header:
    /// a query key was ignored, so the answer is not comparable.
    pub ignored_key: bool,
    /// Number of results (QIDO) or instances (metadata), when counted.
    pub results: Option<u64>,
}

/// Summary of one operation (many requests of one kind).
pub struct OpReport {
    pub op: String,
    pub samples: Vec<Sample>,
    /// Wall-clock time of the whole operation (for throughput).
    pub wall: Duration,
}

impl OpReport {
    fn latencies(&self) -> Vec<Duration> {
        let mut v: Vec<Duration> = self
            .samples
            .iter()
            .filter(|s| s.outcome == Outcome::Ok)
            .map(|s| s.latency)
            .collect();
        v.sort();
        v
    }

    /// Prints the human line and appends the TSV rows.
    pub fn emit(&self, common: &Common) {
        let count = |o: Outcome| self.samples.iter().filter(|s| s.outcome == o).count();
        let (ok, unsupported, errors) = (
            count(Outcome::Ok),
            count(Outcome::Unsupported),
            count(Outcome::Error),
        );
        let ignored = self.samples.iter().filter(|s| s.ignored_key).count();
        let bytes: u64 = self
            .samples
            .iter()
            .filter(|s| s.outcome == Outcome::Ok)
            .map(|s| s.bytes)
            .sum();
        let counted: Vec<u64> = self.samples.iter().filter_map(|s| s.results).collect();
        let mean_results = (!counted.is_empty())
            .then(|| counted.iter().sum::<u64>() as f64 / counted.len() as f64);
        let secs = self.wall.as_secs_f64().max(1e-9);
        let lat = self.latencies();
        let (p50, p95, p99) = (
            percentile(&lat, 0.50),
            percentile(&lat, 0.95),
            percentile(&lat, 0.99),
        );
        let label = if common.label.is_empty() {
            String::new()
        } else {
            format!(" [{}]", common.label)
        };
        let mut rows: Vec<(&str, String)> = vec![
            ("requests", self.samples.len().to_string()),
            ("errors", errors.to_string()),
        ];
        if ok == 0 && unsupported > 0 {
            println!(
                "{}{label}: not supported by the server ({unsupported} of {} requests answered 404/501); errors {errors}",
                self.op,
                self.samples.len()
            );
            rows.push(("unsupported", unsupported.to_string()));
        } else {
            let mut line = format!(
                "{}{label}: {ok}/{} ok in {secs:.2} s = {:.1} req/s, {:.1} MB/s; p50 {p50:.1} ms p95 {p95:.1} ms p99 {p99:.1} ms; errors {errors}",
                self.op,
                self.samples.len(),
                ok as f64 / secs,
                bytes as f64 / 1e6 / secs,
            );
            if unsupported > 0 {
                line += &format!("; unsupported {unsupported}");
            }
            if ignored > 0 {
                line += &format!("; server ignored a query key (Warning 299) in {ignored}");
            }
            if let Some(m) = mean_results {
                line += &format!("; mean results {m:.1}");
            }
            println!("{line}");
            rows.push(("rps", format!("{:.3}", ok as f64 / secs)));
            rows.push(("mbps", format!("{:.3}", bytes as f64 / 1e6 / secs)));
            rows.push(("p50_ms", format!("{p50:.3}")));
            rows.push(("p95_ms", format!("{p95:.3}")));
            rows.push(("p99_ms", format!("{p99:.3}")));
            rows.push(("ignored", ignored.to_string()));
            if let Some(m) = mean_results {
                rows.push(("mean_results", format!("{m:.1}")));
            }
        }
        append_rows(common, &self.op, &rows);
    }
}

/// Appends `label op metric value` rows to the --results file, if any.
pub fn append_rows(common: &Common, op: &str, rows: &[(&str, String)]) {
    let Some(path) = &common.results else { return };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open --results file");
    let label = if common.label.is_empty() {
        "-"
    } else {
        &common.label
    };
    for (metric, value) in rows {
        writeln!(f, "{label}\t{op}\t{metric}\t{value}").expect("write --results file");
    }
}

/// Reports the server's peak RSS (when --pid is given).
pub fn emit_rss(common: &Common, op: &str) {
    let Some(pid) = common.pid else { return };
    match peak_rss_kb(pid) {
        Some(kb) => {
            let mb = kb as f64 / 1024.0;
            let label = if common.label.is_empty() {
                String::new()
            } else {
                format!(" [{}]", common.label)
            };
            println!("{op}{label}: server peak RSS {mb:.0} MB");
            append_rows(common, op, &[("peak_rss_mb", format!("{mb:.1}"))]);
        }
        None => println!("{op}: server peak RSS n/a (no /proc/{pid}/status)"),
    }
}
