//! Micro-benchmarks of ingest's hot paths: header scan, DICOM JSON
//! generation, and one index insert (SQLite, durable).
//!
//!   cargo bench --bench hot_paths

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use phim::dicom::json::{write_dataset, JsonOptions};
use phim::dicom::scan::{scan_bytes, ScanLimits};
use phim::dicom::tags;
use phim::index::{self, Attributes, NewInstance};
use phim::synth::{self, Kind, StudySpec};

fn ct_slice() -> Vec<u8> {
    synth::instance(
        1,
        &StudySpec {
            index: 0,
            kind: Kind::Ct,
            instances: 100,
        },
        10,
    )
}

fn scan(c: &mut Criterion) {
    let file = ct_slice();
    let limits = ScanLimits::default();
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(1));
    g.bench_function("scan CT slice header", |b| {
        b.iter(|| scan_bytes(&file, &limits).expect("scan"))
    });
    let scanned = scan_bytes(&file, &limits).expect("scan");
    g.bench_function("DICOM JSON of a CT slice", |b| {
        b.iter(|| {
            let mut out = String::new();
            write_dataset(
                &mut out,
                &scanned.dataset,
                &JsonOptions {
                    encoding: scanned.encoding(),
                    instance_path: "/x",
                    default_charset: Default::default(),
                    available_transfer_syntax: None,
                },
            );
            out
        })
    });
    g.finish();
}

fn index_insert(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("index.db").display());
    let ix = rt.block_on(index::open(&url, true)).expect("open index");
    let mut n = 0u64;
    let mut g = c.benchmark_group("index");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sqlite insert_instance (synchronous=FULL)", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let rec = NewInstance {
                study_uid: format!("1.2.{}", n / 100),
                series_uid: format!("1.2.{}.1", n / 100),
                sop_uid: format!("1.2.{}.1.{n}", n / 100),
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                attributes: Attributes::default()
                    .with_text(tags::PATIENT_ID, &format!("P{}", n / 300)),
                transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
                object_key: format!("k/{n}"),
                size: 1,
                sha256: "x".into(),
                metadata: vec![0; 2000],
                ..Default::default()
            };
            let ix = ix.clone();
            async move { ix.insert_instance(&rec).await.expect("insert") }
        })
    });
    g.finish();
}

criterion_group!(benches, scan, index_insert);
criterion_main!(benches);
