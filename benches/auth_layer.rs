//! What the auth layer and the audit trail cost one request, measured in
//! process through the router (no sockets, no load generator sharing the
//! cores): QIDO-RS for a study and WADO-RS instance metadata, on a server
//! without authentication and on one that requires it (an API key,
//! authenticated, authorised and audited each time).
//!
//!   cargo bench --bench auth_layer

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use phim::audit;
use phim::auth::{api_keys, Auth, AuthConfig, Role};
use phim::imaging::Imaging;
use phim::ingest::{Ingest, IngestConfig, Spool};
use phim::server::router;
use phim::state::AppState;
use phim::store::{Store, StoreLocation};
use phim::synth::{self, Kind, StudySpec};
use tower::ServiceExt;

struct Setup {
    auth: Arc<Auth>,
    open: axum::Router,
    locked: axum::Router,
    key: String,
    qido: String,
    metadata: String,
    _dir: tempfile::TempDir,
    _stop: tokio_util::sync::CancellationToken,
}

fn setup(rt: &tokio::runtime::Runtime) -> Setup {
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("index.db").display());
        let index = phim::index::open(&url, true).await.expect("index");
        let store = Store::open(&StoreLocation::Memory, &Default::default()).expect("store");
        let ingest = Ingest::new(
            store.clone(),
            index.clone(),
            IngestConfig {
                spool_dir: dir.path().join("spool"),
                max_instance_size: 1 << 30,
                on_duplicate: phim::ingest::DuplicatePolicy::Reject,
                concurrency: 1,
                limits: Default::default(),
                trash_retention: std::time::Duration::ZERO,
            },
        )
        .expect("ingest");
        let spec = StudySpec {
            index: 0,
            kind: Kind::Mr,
            instances: 4,
        };
        let file = dir.path().join("mr.dcm");
        std::fs::write(&file, synth::instance(3, &spec, 0)).expect("write");
        let stored = ingest
            .ingest(Spool::from_existing(&file).await.expect("spool"), None)
            .await
            .expect("stored");
        let key = api_keys::create(index.as_ref(), "bench", Role::Radiologist)
            .await
            .expect("key");
        let stop = tokio_util::sync::CancellationToken::new();
        // The real audit writer, appending to the real table.
        let (audit, _task) = audit::start(index.clone(), None, stop.clone());
        let state = |required: bool| AppState {
            index: index.clone(),
            store: store.clone(),
            ingest: ingest.clone(),
            public_url: None,
            listen_addr: "127.0.0.1:8080".parse().expect("addr"),
            viewer_dir: dir.path().join("no-viewer"),
            emr: Default::default(),
            jobs_wake: Default::default(),
            imaging: Imaging::new(1),
            auth: Arc::new(Auth::new(
                AuthConfig {
                    required,
                    ..AuthConfig::default()
                },
                index.clone(),
                None,
            )),
            audit: audit.clone(),
            limits: Default::default(),
        };
        let locked = state(true);
        Setup {
            auth: locked.auth.clone(),
            open: router(state(false)),
            locked: router(locked),
            key,
            qido: format!("/dicomweb/studies?StudyInstanceUID={}", stored.study_uid),
            metadata: format!(
                "/dicomweb/studies/{}/series/{}/instances/{}/metadata",
                stored.study_uid, stored.series_uid, stored.sop_uid
            ),
            _dir: dir,
            _stop: stop,
        }
    })
}

async fn get(app: &axum::Router, path: &str, key: Option<&String>) {
    let mut req = Request::get(path);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
}

/// Each measured request alternates with one of the other mode, timed
/// apart: drift of the machine (and the audit writer's fsyncs) falls on
/// both modes alike.
fn layer(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let s = setup(&rt);
    let mut g = c.benchmark_group("auth layer");
    g.throughput(Throughput::Elements(1));
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {}", s.key).parse().expect("header"),
    );
    g.bench_function("authenticate an API key (cached)", |b| {
        b.to_async(&rt)
            .iter(|| async { s.auth.authenticate(&headers, None).await.expect("key") })
    });
    let open = (&s.open, None);
    let locked = (&s.locked, Some(&s.key));
    for (what, path) in [("QIDO study", &s.qido), ("instance metadata", &s.metadata)] {
        for (mode, timed, other) in [("open", open, locked), ("API key", locked, open)] {
            g.bench_function(format!("{what}, {mode}"), |b| {
                b.to_async(&rt).iter_custom(|iters| async move {
                    let mut spent = std::time::Duration::ZERO;
                    for _ in 0..iters {
                        get(other.0, path, other.1).await;
                        let t = std::time::Instant::now();
                        get(timed.0, path, timed.1).await;
                        spent += t.elapsed();
                    }
                    spent
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, layer);
criterion_main!(benches);
