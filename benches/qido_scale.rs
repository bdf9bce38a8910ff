//! QIDO at archive scale: fills an index with N studies (10 instances in
//! one series each; 100,000 studies = 1,000,000 instances) and measures the
//! query mix of the QIDO issue through the same search code QIDO-RS and
//! C-FIND use.
//!
//!   cargo bench --bench qido_scale -- [--studies 100000] [--database-url URL] [--runs 200] [--no-fill]
//!
//! Without --database-url it uses a SQLite file in a temporary folder. The
//! rows are written with multi-row INSERTs straight into the index tables
//! (the ingest path would take hours at this size); the derived search
//! columns are computed with the same functions ingest uses.

use std::time::{Duration, Instant};

use phim::index;
use phim::query::names::{fuzzy_words, pn_match_key};
use phim::query::{attribute_by_keyword, parse_match, Filter, Level, Query};
use phim::synth::Rng;
use sqlx::any::AnyPoolOptions;
use sqlx::Executor;

const FAMILY: &[&str] = &[
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ",
    "Hồ", "Ngô", "Dương", "Lý", "Smith", "Müller", "García", "Tanaka",
];
const MIDDLE: &[&str] = &[
    "Văn", "Thị", "Minh", "Quốc", "Hữu", "Thu", "Ngọc", "Đức", "Thanh", "Hoài",
];
const GIVEN: &[&str] = &[
    "An", "Bình", "Châu", "Dũng", "Giang", "Hà", "Hải", "Khánh", "Lan", "Long", "Mai", "Nam",
    "Phúc", "Quân", "Sơn", "Tâm", "Thảo", "Trang", "Tuấn", "Vy",
];
const MODALITIES: &[&str] = &["CT", "CT", "CT", "MR", "MR", "CR", "DX", "US", "MG", "PT"];

struct Args {
    studies: u64,
    database_url: Option<String>,
    runs: usize,
    /// Reuse an index filled by an earlier run.
    no_fill: bool,
}

fn args() -> Args {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // binary without it: then a small smoke run keeps it from rotting.
    let bench = std::env::args().any(|a| a == "--bench");
    let (studies, runs) = if bench { (100_000, 200) } else { (500, 3) };
    let mut a = Args {
        studies,
        database_url: None,
        runs,
        no_fill: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--studies" => a.studies = it.next().and_then(|v| v.parse().ok()).expect("--studies N"),
            "--database-url" => a.database_url = it.next(),
            "--runs" => a.runs = it.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--no-fill" => a.no_fill = true,
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

fn name(r: &mut Rng) -> String {
    format!(
        "{}^{} {}",
        FAMILY[r.below(FAMILY.len() as u64) as usize],
        MIDDLE[r.below(MIDDLE.len() as u64) as usize],
        GIVEN[r.below(GIVEN.len() as u64) as usize]
    )
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

async fn fill(url: &str, studies: u64) {
    let pool = AnyPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .expect("connect");
    let sqlite = url.starts_with("sqlite:");
    if sqlite {
        pool.execute("PRAGMA synchronous = OFF")
            .await
            .expect("pragma");
    }
    let mut r = Rng::new(42);
    let metadata_hex = "ab".repeat(600);
    let blob = if sqlite {
        format!("X'{metadata_hex}'")
    } else {
        format!("'\\x{metadata_hex}'::bytea")
    };
    let t = Instant::now();
    let batch = 500u64;
    let mut s = 1u64;
    while s <= studies {
        let end = (s + batch - 1).min(studies);
        let (mut pat, mut st, mut words, mut se, mut ins) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for k in s..=end {
            let n = name(&mut r);
            let pid = format!("P{:07}", k / 2 + 1);
            let year = 2015 + r.below(11);
            let date = format!("{year}{:02}{:02}", 1 + r.below(12), 1 + r.below(28));
            let time = format!("{:02}{:02}00", r.below(24), r.below(60));
            let modality = MODALITIES[r.below(MODALITIES.len() as u64) as usize];
            pat.push(format!(
                "({k}, {}, {}, '', 0)",
                sql_str(&format!("id:{pid}\u{1}#{k}")),
                sql_str(&pid)
            ));
            st.push(format!(
                "({k}, '2.25.9{k}', {k}, {}, {}, '19700101', 'F', '{date}', '{time}', 'ACC{k:08}', '{k}', NULL, 'Study {k}', 0, {})",
                sql_str(&n), sql_str(&pid), sql_str(&pn_match_key(&n))
            ));
            for w in fuzzy_words(&n) {
                words.push(format!("({k}, {})", sql_str(&w)));
            }
            se.push(format!(
                "({k}, '2.25.9{k}.1', {k}, '{modality}', 1, 'Series', NULL, NULL, NULL, 0)"
            ));
            for i in 1..=10u64 {
                let pk = (k - 1) * 10 + i;
                ins.push(format!(
                    "({pk}, '2.25.9{k}.1.{i}', {k}, '1.2.840.10008.5.1.4.1.1.2', {i}, 512, 512, NULL, 16, \
                     '1.2.840.10008.1.2.1', 'studies/2.25.9{k}/{pk:032}.dcm', 525000, 'x', {blob}, 0)"
                ));
            }
        }
        let mut tx = pool.begin().await.expect("begin");
        for (table, cols, rows) in [
            ("patients", "pk, patient_key, patient_id, issuer, created_at", &pat),
            ("studies", "pk, study_uid, patient_pk, patient_name, patient_id, patient_birth_date, patient_sex, study_date, study_time, accession_number, study_id, referring_physician_name, study_description, created_at, patient_name_key", &st),
            ("study_name_words", "study_pk, word", &words),
            ("series", "pk, series_uid, study_pk, modality, series_number, series_description, body_part_examined, pps_start_date, pps_start_time, created_at", &se),
            ("instances", "pk, sop_uid, series_pk, sop_class_uid, instance_number, num_rows, num_columns, num_frames, bits_allocated, transfer_syntax_uid, object_key, size, sha256, metadata, created_at", &ins),
        ] {
            for chunk in rows.chunks(1000) {
                let q = format!("INSERT INTO {table} ({cols}) VALUES {}", chunk.join(","));
                tx.execute(q.as_str()).await.expect("insert");
            }
        }
        tx.commit().await.expect("commit");
        s = end + 1;
        if s % 10_000 == 1 {
            eprintln!("  {} studies in {:.0?}", s - 1, t.elapsed());
        }
    }
    // A steady-state archive: statistics current, visibility map set (what
    // autovacuum does on PostgreSQL), so index-only scans are possible.
    let analyze = if sqlite { "ANALYZE" } else { "VACUUM ANALYZE" };
    pool.execute(analyze).await.expect("analyze");
    if !sqlite {
        for (t, c) in [
            ("patients", "pk"),
            ("studies", "pk"),
            ("series", "pk"),
            ("instances", "pk"),
        ] {
            pool.execute(format!("SELECT setval(pg_get_serial_sequence('{t}', '{c}'), (SELECT MAX({c}) FROM {t}))").as_str())
                .await
                .expect("setval");
        }
    }
    eprintln!(
        "filled {studies} studies / {} instances in {:.1?}",
        studies * 10,
        t.elapsed()
    );
}

fn q(level: Level, keys: &[(&str, String)], fuzzy: bool) -> Query {
    let mut query = Query::new(level);
    query.limit = 50;
    query.combined_datetime = true;
    for (k, v) in keys {
        let a = attribute_by_keyword(k).expect("attribute");
        if let Some(m) = parse_match(a, v, fuzzy).expect("valid value") {
            query.filters.push(Filter {
                attribute: a,
                matching: m,
            });
        }
    }
    query
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let a = args();
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = a
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", tmp.path().join("index.db").display()));
    let ix = index::open(&url, true).await.expect("open index");
    if !a.no_fill {
        fill(&url, a.studies).await;
    }
    let n = a.studies;
    let mut r = Rng::new(7);
    type Make = Box<dyn FnMut(&mut Rng) -> (Level, Query)>;
    let mut mix: Vec<(&str, Make)> = vec![
        (
            "studies by PatientID",
            Box::new(move |r: &mut Rng| {
                (
                    Level::Study,
                    q(
                        Level::Study,
                        &[("PatientID", format!("P{:07}", r.below(n / 2) + 1))],
                        false,
                    ),
                )
            }),
        ),
        (
            "studies by PatientName wildcard",
            Box::new(|r: &mut Rng| {
                (
                    Level::Study,
                    q(
                        Level::Study,
                        &[(
                            "PatientName",
                            format!("{}*", &FAMILY[r.below(FAMILY.len() as u64) as usize]),
                        )],
                        false,
                    ),
                )
            }),
        ),
        (
            "studies by PatientName fuzzy",
            Box::new(|r: &mut Rng| {
                (
                    Level::Study,
                    q(
                        Level::Study,
                        &[(
                            "PatientName",
                            format!(
                                "{} {}",
                                phim::query::names::fold(
                                    FAMILY[r.below(FAMILY.len() as u64) as usize]
                                ),
                                phim::query::names::fold(
                                    GIVEN[r.below(GIVEN.len() as u64) as usize]
                                )
                            ),
                        )],
                        true,
                    ),
                )
            }),
        ),
        (
            "studies by StudyDate range (1 month)",
            Box::new(|r: &mut Rng| {
                let y = 2015 + r.below(11);
                let m = 1 + r.below(12);
                (
                    Level::Study,
                    q(
                        Level::Study,
                        &[("StudyDate", format!("{y}{m:02}01-{y}{m:02}28"))],
                        false,
                    ),
                )
            }),
        ),
        (
            "studies by ModalitiesInStudy",
            Box::new(|r: &mut Rng| {
                (
                    Level::Study,
                    q(
                        Level::Study,
                        &[(
                            "ModalitiesInStudy",
                            MODALITIES[r.below(MODALITIES.len() as u64) as usize].to_string(),
                        )],
                        false,
                    ),
                )
            }),
        ),
        (
            "studies by AccessionNumber",
            Box::new(move |r: &mut Rng| {
                (
                    Level::Study,
                    q(
                        Level::Study,
                        &[("AccessionNumber", format!("ACC{:08}", r.below(n) + 1))],
                        false,
                    ),
                )
            }),
        ),
        (
            "studies limit=50 offset=5000",
            Box::new(|_r: &mut Rng| {
                let mut qq = q(Level::Study, &[], false);
                qq.offset = 5000;
                (Level::Study, qq)
            }),
        ),
        (
            "series of a study",
            Box::new(move |r: &mut Rng| {
                (
                    Level::Series,
                    q(
                        Level::Series,
                        &[("StudyInstanceUID", format!("2.25.9{}", r.below(n) + 1))],
                        false,
                    ),
                )
            }),
        ),
        (
            "instances of a series",
            Box::new(move |r: &mut Rng| {
                let k = r.below(n) + 1;
                (
                    Level::Instance,
                    q(
                        Level::Instance,
                        &[
                            ("StudyInstanceUID", format!("2.25.9{k}")),
                            ("SeriesInstanceUID", format!("2.25.9{k}.1")),
                        ],
                        false,
                    ),
                )
            }),
        ),
    ];
    println!(
        "index: {}  ({} studies, {} instances; {} runs per query, limit 50)",
        if url.starts_with("sqlite") {
            "SQLite"
        } else {
            "PostgreSQL"
        },
        n,
        n * 10,
        a.runs
    );
    println!("| query | p50 ms | p95 ms | p99 ms | rows (median) |");
    println!("|---|---|---|---|---|");
    for (label, make) in mix.iter_mut() {
        let mut times = Vec::with_capacity(a.runs);
        let mut counts = Vec::with_capacity(a.runs);
        for i in 0..a.runs + 10 {
            let (level, query) = make(&mut r);
            let t = Instant::now();
            let rows = match level {
                Level::Study => ix.search_studies(&query).await.expect("search").len(),
                Level::Series => ix.search_series(&query).await.expect("search").len(),
                Level::Instance => ix.search_instances(&query).await.expect("search").len(),
            };
            if i >= 10 {
                times.push(t.elapsed());
                counts.push(rows);
            }
        }
        times.sort();
        counts.sort();
        println!(
            "| {label} | {:.2} | {:.2} | {:.2} | {} |",
            pct(&times, 0.5),
            pct(&times, 0.95),
            pct(&times, 0.99),
            counts[counts.len() / 2]
        );
    }
}
