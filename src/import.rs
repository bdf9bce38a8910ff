//! `phim import PATH…`: files and folders through the same ingest pipeline
//! as STOW-RS, with a progress bar and a summary.

use std::path::PathBuf;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::backends::open_backends;
use crate::config::ImportArgs;
use crate::error::failure_reason;
use crate::ingest::{Outcome, Spool};
use crate::server::anyhow_like;

#[derive(Debug, Default)]
pub struct Summary {
    pub stored: usize,
    pub already: usize,
    pub replaced: usize,
    pub skipped: usize,
    pub failed: Vec<(PathBuf, String)>,
}

/// Runs the import; the summary's `failed` decides the exit code.
pub async fn run(args: ImportArgs) -> anyhow_like::Result<Summary> {
    let (_index, _store, ingest) = open_backends(&args.storage, &args.ingest).await?;
    let mut files = Vec::new();
    let mut summary = Summary::default();
    for p in &args.paths {
        if !p.exists() {
            summary
                .failed
                .push((p.clone(), "no such file or folder".into()));
            continue;
        }
        for entry in walkdir::WalkDir::new(p).follow_links(true) {
            match entry {
                Ok(e) if e.file_type().is_file() => {
                    // DICOMDIR is a media index, not an instance (PS3.10 §8.6).
                    if e.file_name() == "DICOMDIR" {
                        summary.skipped += 1;
                    } else {
                        files.push(e.into_path());
                    }
                }
                Ok(_) => {}
                Err(e) => summary.failed.push((
                    e.path().map(|p| p.to_owned()).unwrap_or_default(),
                    e.to_string(),
                )),
            }
        }
    }

    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} files  {per_sec}  eta {eta}  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let concurrency = args.ingest.ingest_concurrency.max(1);
    let mut results = futures::stream::iter(files)
        .map(|path| {
            let ingest = ingest.clone();
            async move {
                let r = match Spool::from_existing(&path).await {
                    Ok(spool) => ingest.ingest(spool, None).await.map_err(|f| {
                        format!(
                            "{} (failure reason {:04X}H)",
                            f.error,
                            failure_reason(&f.error)
                        )
                    }),
                    Err(e) => Err(format!("cannot read: {e}")),
                };
                (path, r)
            }
        })
        .buffer_unordered(concurrency);
    while let Some((path, r)) = results.next().await {
        match r {
            Ok(s) => match s.outcome {
                Outcome::Stored => summary.stored += 1,
                Outcome::AlreadyStored => summary.already += 1,
                Outcome::Replaced => summary.replaced += 1,
            },
            Err(e) => summary.failed.push((path, e)),
        }
        bar.inc(1);
        bar.set_message(format!("{} failed", summary.failed.len()));
    }
    bar.finish_and_clear();

    println!(
        "imported: {} stored, {} already stored, {} replaced, {} skipped, {} failed",
        summary.stored,
        summary.already,
        summary.replaced,
        summary.skipped,
        summary.failed.len()
    );
    for (path, why) in summary.failed.iter().take(50) {
        println!("  failed: {}: {why}", path.display());
    }
    if summary.failed.len() > 50 {
        println!("  … and {} more", summary.failed.len() - 50);
    }
    Ok(summary)
}
