//! phim-load: a load generator for any DICOMweb server, named by its base
//! URL (Phim: `http://H:P/dicomweb`, Orthanc's plugin: `http://H:P/dicom-web`).
//!
//! * `gen --out DIR [--tiny]` writes a deterministic dataset (CT, MR, CR, US
//!   cine; Vietnamese and other names, accession numbers, study dates over
//!   2019–2025) and its `manifest.json`; `--tiny` makes ~14,000 64×64
//!   instances for a QIDO index.
//! * `stow` stores a dataset with N concurrent STOW-RS clients.
//! * `qido`, `wado`, `metadata`, `rendered` (and `read`, all four) query a
//!   server that holds a generated dataset.
//! * `soak` mixes STOW, QIDO, metadata, frames and rendered from many
//!   clients for a fixed time and samples the server's RSS.
//!
//! Each operation prints one line with throughput, p50/p95/p99 latency and
//! error counts; `--pid` adds the server's peak RSS and `--results FILE`
//! appends machine-readable rows (see `report.rs`).

mod dataset;
mod read;
mod report;
mod soak;
mod stow;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use phim::synth;

use crate::dataset::{GenArgs, Manifest};
use crate::report::{emit_rss, Common};

#[derive(Parser)]
#[command(name = "phim-load", about = "Load generator for DICOMweb servers")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Options of the read workloads.
#[derive(clap::Args, Clone, Debug)]
struct ReadArgs {
    #[command(flatten)]
    common: Common,
    /// Dataset folder (with manifest.json) that the server was loaded with.
    #[arg(long)]
    dir: PathBuf,
    /// Requests per operation.
    #[arg(long, default_value_t = 50)]
    count: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Seed of the random choices (UIDs, patients, pages).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Passes over every study for whole-study retrieval.
    #[arg(long, default_value_t = 2)]
    passes: usize,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate the benchmark dataset (and manifest.json) into a folder.
    Gen(GenArgs),
    /// Write one large multi-frame instance (for flat-memory ingest checks).
    GenLarge {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 2000)]
        frames: u32,
    },
    /// STOW the dataset with concurrent clients.
    Stow {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Instances per STOW request.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Operation name in the results (`<op>.c<clients>`).
        #[arg(long, default_value = "stow")]
        op: String,
    },
    /// QIDO-RS query mix (PatientID, PatientName wildcard, StudyDate range,
    /// ModalitiesInStudy, AccessionNumber, deep page, series of a study,
    /// instances of a series).
    Qido(ReadArgs),
    /// WADO-RS whole-study retrieval (MB/s) and instance retrieval latency.
    Wado(ReadArgs),
    /// Series and study metadata of the dataset's largest study.
    Metadata(ReadArgs),
    /// Rendered and thumbnail of instances ("not supported" on 404/501).
    Rendered(ReadArgs),
    /// wado, metadata and rendered in one go (qido has its own index size).
    Read(ReadArgs),
    /// Many clients mixing STOW, QIDO, metadata, frames and rendered for a
    /// fixed time, with the server's RSS sampled (memory must stay flat).
    Soak(soak::SoakArgs),
}

/// The load generator's runtime: two workers (the machine it was written
/// for has two cores, shared with the server under test).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The bearer token every request carries (`--token`), set once.
pub static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// One HTTP client (keep-alive pool) per run.
pub fn http_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = TOKEN.get() {
        if let Ok(v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")) {
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
    }
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(300))
        .default_headers(headers)
        .build()
        .expect("HTTP client")
}

fn main() {
    let cli = Cli::parse();
    if let Ok(t) = std::env::var("PHIM_LOAD_TOKEN") {
        if !t.is_empty() {
            let _ = TOKEN.set(t);
        }
    }
    match cli.cmd {
        Cmd::Gen(args) => dataset::generate(&args),
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
            common,
            dir,
            clients,
            batch,
            op,
        } => stow::stow(&common, &dir, clients, batch, &op),
        Cmd::Qido(a) => {
            let m = Manifest::load(&a.dir);
            println!(
                "qido: index of {} studies, {} instances; {} requests per query",
                m.studies.len(),
                m.instance_count(),
                a.count
            );
            read::qido(&a.common, &m, a.count, a.clients, a.seed);
            emit_rss(&a.common, "qido");
        }
        Cmd::Wado(a) => {
            let m = Manifest::load(&a.dir);
            read::wado(&a.common, &m, a.passes, a.count, a.clients, a.seed);
            emit_rss(&a.common, "wado");
        }
        Cmd::Metadata(a) => {
            let m = Manifest::load(&a.dir);
            read::metadata(&a.common, &m, a.count, a.clients, a.seed);
            emit_rss(&a.common, "metadata");
        }
        Cmd::Rendered(a) => {
            let m = Manifest::load(&a.dir);
            read::rendered(&a.common, &m, a.count, a.clients, a.seed);
            emit_rss(&a.common, "rendered");
        }
        Cmd::Soak(a) => soak::soak(&a),
        Cmd::Read(a) => {
            let m = Manifest::load(&a.dir);
            read::wado(&a.common, &m, a.passes, a.count, a.clients, a.seed);
            read::metadata(&a.common, &m, a.count, 1, a.seed);
            read::rendered(&a.common, &m, a.count, a.clients, a.seed);
            emit_rss(&a.common, "read");
        }
    }
}
