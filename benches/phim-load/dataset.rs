//! The benchmark dataset: generation (`gen`) and its manifest.
//!
//! `gen` writes one folder per study (`studyNNNN/NNNNN.dcm`) and a
//! `manifest.json` naming every study's UIDs, patient, accession number,
//! date, modality and instance UIDs, so that the read workloads (QIDO, WADO,
//! metadata, rendered) ask every server the same questions without having to
//! discover the data through the server under test.

use std::path::{Path, PathBuf};

use phim::synth::{self, Kind, StudySpec};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Study counts and sizes of a generated dataset.
#[derive(clap::Args, Clone, Debug)]
pub struct GenArgs {
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Small images (64×64, single-frame US): a QIDO index of ~14,000
    /// instances (about 130 MB) instead of full-size images. Changes the
    /// defaults of the counts below to 400 CT studies × 30 slices, 60 MR
    /// × 25, 400 CR and 100 US.
    #[arg(long)]
    pub tiny: bool,
    #[arg(long)]
    pub ct_studies: Option<u64>,
    #[arg(long)]
    pub ct_slices: Option<u32>,
    #[arg(long)]
    pub mr_studies: Option<u64>,
    #[arg(long)]
    pub mr_slices: Option<u32>,
    #[arg(long)]
    pub cr: Option<u64>,
    #[arg(long)]
    pub us: Option<u64>,
    #[arg(long)]
    pub us_frames: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct StudyEntry {
    pub dir: String,
    pub study_uid: String,
    pub series_uid: String,
    pub patient_id: String,
    pub patient_name: String,
    pub accession: String,
    pub study_date: String,
    pub modality: String,
    /// Total bytes of the study's Part 10 files.
    pub bytes: u64,
    pub instances: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Manifest {
    pub seed: u64,
    pub tiny: bool,
    pub studies: Vec<StudyEntry>,
}

pub const MANIFEST: &str = "manifest.json";

impl Manifest {
    pub fn load(dir: &Path) -> Manifest {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {} ({e}); generate the dataset with `phim-load gen --out {}`",
                path.display(),
                dir.display()
            )
        });
        serde_json::from_str(&text).expect("parse manifest.json")
    }

    pub fn instance_count(&self) -> usize {
        self.studies.iter().map(|s| s.instances.len()).sum()
    }

    /// The study with the most instances (first one on ties).
    pub fn largest(&self) -> &StudyEntry {
        self.studies
            .iter()
            .rev()
            .max_by_key(|s| s.instances.len())
            .expect("the dataset has no study")
    }
}

fn modality(kind: Kind) -> &'static str {
    match kind {
        Kind::Ct => "CT",
        Kind::Mr => "MR",
        Kind::Cr => "CR",
        Kind::UsCine { .. } => "US",
    }
}

pub fn generate(a: &GenArgs) {
    let t = a.tiny;
    let pick = |v: Option<u64>, full: u64, tiny: u64| v.unwrap_or(if t { tiny } else { full });
    let pick32 = |v: Option<u32>, full: u32, tiny: u32| v.unwrap_or(if t { tiny } else { full });
    let groups = [
        (
            Kind::Ct,
            pick(a.ct_studies, 2, 400),
            pick32(a.ct_slices, 150, 30),
        ),
        (
            Kind::Mr,
            pick(a.mr_studies, 2, 60),
            pick32(a.mr_slices, 50, 25),
        ),
        (Kind::Cr, pick(a.cr, 4, 400), 1),
        (
            Kind::UsCine {
                frames: pick32(a.us_frames, 40, 1),
            },
            pick(a.us, 1, 100),
            1,
        ),
    ];
    let mut specs = Vec::new();
    let mut index = 0;
    for (kind, count, instances) in groups {
        for _ in 0..count {
            specs.push(StudySpec {
                index,
                kind,
                instances,
            });
            index += 1;
        }
    }
    // Interleave modalities (as a real archive receives them) rather than
    // all CT first: the order decides QIDO's default sort and paging.
    specs.sort_by_key(|s| synth::Rng::new(a.seed ^ s.index.wrapping_mul(0x2545_F491)).next_u64());
    let size = t.then_some((64u16, 64u16));
    let studies: Vec<StudyEntry> = specs
        .par_iter()
        .enumerate()
        .map(|(pos, spec)| {
            let dir_name = format!("study{pos:05}");
            let dir = a.out.join(&dir_name);
            std::fs::create_dir_all(&dir).expect("create output folder");
            let id = synth::identity(a.seed, spec.index);
            let mut bytes = 0u64;
            let mut instances = Vec::with_capacity(spec.instances as usize);
            for n in 0..spec.instances {
                let data = synth::instance_sized(a.seed, spec, n, size);
                bytes += data.len() as u64;
                std::fs::write(dir.join(format!("{:05}.dcm", n + 1)), data).expect("write file");
                // synth names instance n of a series `<series UID>.<n+1>`.
                instances.push(format!("{}.{}", id.series_uid, n + 1));
            }
            StudyEntry {
                dir: dir_name,
                study_uid: id.study_uid,
                series_uid: id.series_uid,
                patient_id: id.patient_id,
                patient_name: id.patient_name,
                accession: id.accession,
                study_date: id.study_date,
                modality: modality(spec.kind).into(),
                bytes,
                instances,
            }
        })
        .collect();
    let manifest = Manifest {
        seed: a.seed,
        tiny: t,
        studies,
    };
    std::fs::write(
        a.out.join(MANIFEST),
        serde_json::to_vec(&manifest).expect("serialize manifest"),
    )
    .expect("write manifest.json");
    let bytes: u64 = manifest.studies.iter().map(|s| s.bytes).sum();
    println!(
        "generated {} studies, {} instances, {:.1} MB in {}",
        manifest.studies.len(),
        manifest.instance_count(),
        bytes as f64 / 1e6,
        a.out.display()
    );
}

/// Every `.dcm` file under `dir`, sorted.
pub fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "dcm"))
        .map(|e| e.into_path())
        .collect();
    files.sort();
    files
}
