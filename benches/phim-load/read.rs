//! Read workloads against a server that holds a generated dataset: QIDO-RS
//! query mix, WADO-RS retrieval, metadata, rendered and thumbnail.
//!
//! Every workload derives its questions from the dataset's manifest and a
//! seed, so two servers loaded with the same dataset are asked the same
//! questions in the same order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use phim::synth::Rng;

use crate::dataset::{Manifest, StudyEntry};
use crate::report::{Common, OpReport, Outcome, Sample};

/// What a request's answer is checked for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Check {
    /// 200 (or 204): a DICOM JSON array whose length is recorded.
    JsonArray,
    /// 200 with a body of at least this many bytes.
    MinBytes(u64),
    /// 200 with a non-empty body; 404/501 mean "not supported".
    Optional,
}

#[derive(Clone, Debug)]
pub struct Req {
    pub url: String,
    pub accept: &'static str,
    pub check: Check,
}

pub const ACCEPT_JSON: &str = "application/dicom+json";
pub const ACCEPT_DICOM: &str = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";

async fn one(client: &reqwest::Client, req: &Req) -> Sample {
    let t = Instant::now();
    let resp = client
        .get(&req.url)
        .header("Accept", req.accept)
        .send()
        .await;
    let mut sample = Sample {
        latency: Duration::ZERO,
        bytes: 0,
        outcome: Outcome::Error,
        ignored_key: false,
        results: None,
    };
    let Ok(resp) = resp else {
        sample.latency = t.elapsed();
        return sample;
    };
    let status = resp.status().as_u16();
    sample.ignored_key = resp
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.starts_with("299") && v.contains("not supported"));
    let body = resp.bytes().await;
    sample.latency = t.elapsed();
    let Ok(body) = body else { return sample };
    sample.bytes = body.len() as u64;
    sample.outcome = match (req.check, status) {
        (Check::JsonArray, 204) => {
            sample.results = Some(0);
            Outcome::Ok
        }
        (Check::JsonArray, 200) => match serde_json::from_slice::<Vec<serde_json::Value>>(&body) {
            Ok(v) => {
                sample.results = Some(v.len() as u64);
                Outcome::Ok
            }
            Err(_) => Outcome::Error,
        },
        (Check::MinBytes(min), 200) if sample.bytes >= min => Outcome::Ok,
        (Check::Optional, 200) if sample.bytes > 0 => Outcome::Ok,
        (Check::Optional, 404 | 501) => Outcome::Unsupported,
        _ => Outcome::Error,
    };
    sample
}

/// Runs `reqs` with `clients` concurrent clients; returns the samples in
/// request order and the wall-clock time.
pub fn run(reqs: &[Req], clients: usize) -> (Vec<Sample>, Duration) {
    let rt = crate::runtime();
    let client = crate::http_client();
    let reqs: Arc<Vec<Req>> = Arc::new(reqs.to_vec());
    let out: Arc<Mutex<Vec<Option<Sample>>>> = Arc::new(Mutex::new(vec![None; reqs.len()]));
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..clients.max(1) {
            let (client, reqs, out, next) =
                (client.clone(), reqs.clone(), out.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(req) = reqs.get(i) else { break };
                    let s = one(&client, req).await;
                    out.lock().expect("lock")[i] = Some(s);
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let wall = start.elapsed();
    let samples = std::mem::take(&mut *out.lock().expect("lock"))
        .into_iter()
        .flatten()
        .collect();
    (samples, wall)
}

/// Runs one operation and prints/records it. Optional resources stop after
/// the first few "not supported" answers rather than repeating them.
pub fn measure(common: &Common, op: &str, reqs: &[Req], clients: usize) {
    let optional = reqs.iter().any(|r| r.check == Check::Optional);
    let (samples, wall) = if optional {
        let probe = &reqs[..reqs.len().min(3)];
        let (s, w) = run(probe, 1);
        if s.iter().all(|x| x.outcome == Outcome::Unsupported) {
            (s, w)
        } else {
            run(reqs, clients)
        }
    } else {
        run(reqs, clients)
    };
    OpReport {
        op: op.into(),
        samples,
        wall,
    }
    .emit(common);
}

fn query(base: &str, path: &str, params: &[(&str, String)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    let q = s.finish();
    if q.is_empty() {
        format!("{base}{path}")
    } else {
        format!("{base}{path}?{q}")
    }
}

fn pick<'a, T>(r: &mut Rng, v: &'a [T]) -> &'a T {
    &v[r.below(v.len() as u64) as usize]
}

/// Builds the URL of one query from the random source.
type QueryMaker<'a> = Box<dyn FnMut(&mut Rng) -> String + 'a>;

/// The QIDO-RS mix: one operation per query kind, `count` requests each.
/// Searches that may match many studies ask for `limit=100` explicitly, as
/// viewers do, so that servers with and without a default limit do the same
/// work.
pub fn qido(common: &Common, m: &Manifest, count: usize, clients: usize, seed: u64) {
    let base = common.base();
    let s = &m.studies;
    let limit = || ("limit", "100".to_string());
    let n_studies = s.len() as u64;
    let mut ops: Vec<(&str, QueryMaker)> = vec![
        (
            "qido.patient_id",
            Box::new(|r| {
                query(
                    base,
                    "/studies",
                    &[("PatientID", pick(r, s).patient_id.clone())],
                )
            }),
        ),
        (
            "qido.patient_name_wildcard",
            Box::new(|_| {
                query(
                    base,
                    "/studies",
                    &[("PatientName", "Nguy*".into()), limit()],
                )
            }),
        ),
        (
            "qido.study_date_range",
            Box::new(|r| {
                // A three-month window in one of the dataset's years.
                let year = pick(r, s).study_date[..4].to_string();
                let quarter = r.below(4);
                let first = 1 + quarter * 3;
                let last_day = [31, 30, 30, 31][quarter as usize];
                let range = format!("{year}{first:02}01-{year}{:02}{last_day}", first + 2);
                query(base, "/studies", &[("StudyDate", range), limit()])
            }),
        ),
        (
            "qido.modalities_in_study_ct",
            Box::new(|_| {
                query(
                    base,
                    "/studies",
                    &[("ModalitiesInStudy", "CT".into()), limit()],
                )
            }),
        ),
        (
            "qido.accession_number",
            Box::new(|r| {
                query(
                    base,
                    "/studies",
                    &[("AccessionNumber", pick(r, s).accession.clone())],
                )
            }),
        ),
        (
            "qido.deep_page_limit50",
            Box::new(move |r| {
                // A page in the second half of the study list.
                let half = n_studies / 2;
                let offset =
                    half + r.below(n_studies.saturating_sub(50).saturating_sub(half).max(1));
                query(
                    base,
                    "/studies",
                    &[("limit", "50".into()), ("offset", offset.to_string())],
                )
            }),
        ),
        (
            "qido.series_of_study",
            Box::new(|r| format!("{base}/studies/{}/series", pick(r, s).study_uid)),
        ),
        (
            "qido.instances_of_series",
            Box::new(|r| {
                let st = pick(r, s);
                format!(
                    "{base}/studies/{}/series/{}/instances",
                    st.study_uid, st.series_uid
                )
            }),
        ),
    ];
    for (op, make) in ops.iter_mut() {
        let mut r = Rng::new(seed ^ hash(op));
        let reqs: Vec<Req> = (0..count)
            .map(|_| Req {
                url: make(&mut r),
                accept: ACCEPT_JSON,
                check: Check::JsonArray,
            })
            .collect();
        measure(common, op, &reqs, clients);
    }
}

fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// WADO-RS: whole-study retrieval (every study, `passes` times; MB/s) and
/// single-instance retrieval latency (`count` random instances).
pub fn wado(common: &Common, m: &Manifest, passes: usize, count: usize, clients: usize, seed: u64) {
    let base = common.base();
    let study = |st: &StudyEntry| Req {
        url: format!("{base}/studies/{}", st.study_uid),
        accept: ACCEPT_DICOM,
        // A multipart answer carries at least the Part 10 files' data sets.
        check: Check::MinBytes(st.bytes * 9 / 10),
    };
    let reqs: Vec<Req> = (0..passes.max(1))
        .flat_map(|_| m.studies.iter().map(study))
        .collect();
    measure(common, "wado.study", &reqs, clients);
    let largest = m.largest();
    let reqs: Vec<Req> = (0..passes.max(1)).map(|_| study(largest)).collect();
    measure(
        common,
        &format!("wado.study_largest_{}inst", largest.instances.len()),
        &reqs,
        1,
    );
    let reqs = random_instances(
        common,
        m,
        seed ^ hash("wado.instance"),
        count,
        "",
        ACCEPT_DICOM,
        Check::MinBytes(1),
    );
    measure(common, "wado.instance", &reqs, clients);
}

/// Series and study metadata of the largest study, `count` times each
/// (the answer's length is checked against the instance count), then the
/// metadata of random instances; `clients` at once.
pub fn metadata(common: &Common, m: &Manifest, count: usize, clients: usize, seed: u64) {
    let base = common.base();
    let st = m.largest();
    let n = st.instances.len();
    for (op, url) in [
        (
            format!("metadata.series_{n}inst"),
            format!(
                "{base}/studies/{}/series/{}/metadata",
                st.study_uid, st.series_uid
            ),
        ),
        (
            format!("metadata.study_{n}inst"),
            format!("{base}/studies/{}/metadata", st.study_uid),
        ),
    ] {
        let reqs: Vec<Req> = (0..count)
            .map(|_| Req {
                url: url.clone(),
                accept: ACCEPT_JSON,
                check: Check::JsonArray,
            })
            .collect();
        let (samples, wall) = run(&reqs, clients);
        let samples = samples
            .into_iter()
            .map(|mut s| {
                if s.outcome == Outcome::Ok && s.results != Some(n as u64) {
                    s.outcome = Outcome::Error;
                }
                s
            })
            .collect();
        OpReport { op, samples, wall }.emit(common);
    }
    let reqs = random_instances(
        common,
        m,
        seed ^ hash("metadata.instance"),
        count,
        "/metadata",
        ACCEPT_JSON,
        Check::JsonArray,
    );
    measure(common, "metadata.instance", &reqs, clients);
}

/// `count` requests for `…/instances/{sop}{suffix}` of random instances.
fn random_instances(
    common: &Common,
    m: &Manifest,
    seed: u64,
    count: usize,
    suffix: &str,
    accept: &'static str,
    check: Check,
) -> Vec<Req> {
    let base = common.base();
    let mut r = Rng::new(seed);
    (0..count)
        .map(|_| {
            let st = pick(&mut r, &m.studies);
            let sop = pick(&mut r, &st.instances);
            Req {
                url: format!(
                    "{base}/studies/{}/series/{}/instances/{sop}{suffix}",
                    st.study_uid, st.series_uid
                ),
                accept,
                check,
            }
        })
        .collect()
}

/// Rendered (JPEG) and thumbnail of random instances; "not supported" when
/// the server answers 404/501.
pub fn rendered(common: &Common, m: &Manifest, count: usize, clients: usize, seed: u64) {
    for (op, suffix) in [
        ("rendered.instance", "/rendered"),
        ("thumbnail.instance", "/thumbnail"),
    ] {
        let reqs = random_instances(
            common,
            m,
            seed ^ hash(op),
            count,
            suffix,
            "image/jpeg",
            Check::Optional,
        );
        measure(common, op, &reqs, clients);
    }
}
