//! What the server is doing, for Prometheus: `GET /metrics` in the text
//! exposition format. Values are recorded where things happen through the
//! `metrics` facade (a counter or a histogram is one line there); this
//! module installs the Prometheus recorder once per process, names every
//! metric (so that the list below is the whole catalogue), labels HTTP
//! requests by the service they reach (a fixed set: the label never holds
//! a UID or a path), and renders the page.
//!
//! No metric carries patient data: labels are services, methods, status
//! codes, DICOM statuses and error kinds.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// HTTP requests answered, by `service`, `method` and `status`.
pub(crate) const HTTP_REQUESTS: &str = "phim_http_requests_total";
/// Time to the response's head, by `service` (seconds).
pub(crate) const HTTP_DURATION: &str = "phim_http_request_duration_seconds";
/// Requests being answered now, by `service`.
pub(crate) const HTTP_IN_FLIGHT: &str = "phim_http_requests_in_flight";
/// Instances through the ingest pipeline, by `outcome` (`stored`,
/// `replaced`, `already_stored`, `failed`).
pub(crate) const INSTANCES: &str = "phim_ingest_instances_total";
/// Bytes of instances stored (new objects only).
pub(crate) const STORED_BYTES: &str = "phim_ingest_stored_bytes_total";
/// Instances refused or failed, by `kind` (`unparseable`,
/// `invalid_attribute`, `duplicate`, `too_large`, `store`, `index`, …).
pub(crate) const INGEST_FAILURES: &str = "phim_ingest_failures_total";
/// Time of one instance through the pipeline (seconds).
pub(crate) const INGEST_DURATION: &str = "phim_ingest_duration_seconds";
/// DICOM associations accepted, by `tls` (`true`/`false`).
pub(crate) const DIMSE_ASSOCIATIONS: &str = "phim_dimse_associations_total";
/// DICOM associations open now.
pub(crate) const DIMSE_ACTIVE: &str = "phim_dimse_associations_active";
/// DIMSE requests received, by `service` (`C-ECHO`, `C-STORE`, …).
pub(crate) const DIMSE_REQUESTS: &str = "phim_dimse_requests_total";
/// Imaging jobs waiting for or holding a place in the pool's queue.
pub(crate) const IMAGING_QUEUE: &str = "phim_imaging_queue_depth";
/// Time of one imaging job on the pool (seconds).
pub(crate) const IMAGING_JOB: &str = "phim_imaging_job_seconds";
/// Imaging jobs refused because the queue stayed full.
pub(crate) const IMAGING_BUSY: &str = "phim_imaging_busy_total";
/// Object store errors, by `kind` (`unavailable`, `invalid_range`; a
/// missing object is an answer, not counted).
pub(crate) const STORE_ERRORS: &str = "phim_store_errors_total";
pub(crate) const STORE_HTTP_REQUESTS: &str = "phim_store_http_requests_total";
/// Its `outcome` labels (`store::http`).
const STORE_HTTP_OUTCOMES: &[&str] =
    &["success", "client_error", "server_error", "transport_error"];
/// Index errors, by `kind` (`unavailable`, `corrupt`, `config`).
pub(crate) const INDEX_ERRORS: &str = "phim_index_errors_total";
/// Audit events dropped because the audit queue was full.
pub(crate) const AUDIT_LOST: &str = "phim_audit_events_lost_total";
/// Jobs in the shared queue, by `kind` and `state` (`queued`, `running`,
/// `dead`): the whole cluster's, as the index counts them (every server
/// reports the same numbers).
pub(crate) const JOBS: &str = "phim_jobs";
/// Seconds the oldest due job of a `kind` has been waiting.
pub(crate) const JOB_OLDEST_DUE: &str = "phim_jobs_oldest_due_seconds";
/// Job attempts this server finished, by `kind` and `outcome` (`done`,
/// `retry`, `dead`, `rescheduled`).
pub(crate) const JOBS_FINISHED: &str = "phim_jobs_finished_total";
/// Time of one job attempt, by `kind`.
pub(crate) const JOB_DURATION: &str = "phim_job_duration_seconds";

/// Latency buckets (seconds): 1 ms to 60 s.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder (once per process; later calls reuse
/// it). `None` when another recorder was installed first: metrics are then
/// not rendered, and `/metrics` says so.
pub(crate) fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "time to the response head");
    describe_gauge!(HTTP_IN_FLIGHT, "HTTP requests being answered");
    describe_counter!(
        INSTANCES,
        "instances through the ingest pipeline, by outcome"
    );
    describe_counter!(STORED_BYTES, Unit::Bytes, "bytes of new instances stored");
    describe_counter!(INGEST_FAILURES, "instances refused or failed, by kind");
    describe_histogram!(
        INGEST_DURATION,
        Unit::Seconds,
        "time of one instance through ingest"
    );
    describe_counter!(DIMSE_ASSOCIATIONS, "DICOM associations accepted");
    describe_gauge!(DIMSE_ACTIVE, "DICOM associations open");
    describe_counter!(DIMSE_REQUESTS, "DIMSE requests received, by service");
    describe_gauge!(IMAGING_QUEUE, "imaging jobs queued or running");
    describe_histogram!(IMAGING_JOB, Unit::Seconds, "time of one imaging job");
    describe_counter!(IMAGING_BUSY, "imaging jobs refused: queue full");
    describe_counter!(STORE_ERRORS, "object store errors");
    describe_counter!(
        STORE_HTTP_REQUESTS,
        "S3 HTTP attempts by outcome (server_error and transport_error ones are retried by the client)"
    );
    describe_counter!(INDEX_ERRORS, "index errors");
    describe_counter!(AUDIT_LOST, "audit events dropped: queue full");
    describe_gauge!(JOBS, "jobs in the shared queue, by kind and state");
    describe_gauge!(
        JOB_OLDEST_DUE,
        Unit::Seconds,
        "how long the oldest due job of a kind has waited"
    );
    describe_counter!(
        JOBS_FINISHED,
        "job attempts finished here, by kind and outcome"
    );
    describe_histogram!(JOB_DURATION, Unit::Seconds, "time of one job attempt");
    // Series that should read 0 until something happens exist from the
    // start (a missing series is not a zero to an alert rule).
    metrics::counter!(AUDIT_LOST).absolute(0);
    metrics::counter!(IMAGING_BUSY).absolute(0);
    metrics::gauge!(IMAGING_QUEUE).set(0.0);
    metrics::gauge!(DIMSE_ACTIVE).set(0.0);
    for kind in ["unavailable", "invalid_range"] {
        metrics::counter!(STORE_ERRORS, "kind" => kind).absolute(0);
    }
    for outcome in STORE_HTTP_OUTCOMES {
        metrics::counter!(STORE_HTTP_REQUESTS, "outcome" => *outcome).absolute(0);
    }
    for kind in ["unavailable", "corrupt", "config"] {
        metrics::counter!(INDEX_ERRORS, "kind" => kind).absolute(0);
    }
}

/// Keeps the histograms' buffers drained between scrapes.
pub(crate) async fn run_upkeep(stop: tokio_util::sync::CancellationToken) {
    let Some(handle) = install() else { return };
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            _ = stop.cancelled() => return,
        }
    }
}

/// `GET /metrics`.
pub(crate) async fn render() -> Response {
    match install() {
        Some(h) => {
            h.run_upkeep();
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                h.render(),
            )
                .into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are not recorded in this process\n",
        )
            .into_response(),
    }
}

/// The service an HTTP request reaches, from its path alone (PS3.18
/// resources for DICOMweb): a label of bounded cardinality.
pub(crate) fn service_of(method: &axum::http::Method, path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["dicomweb", rest @ ..] => dicomweb_service(method, rest),
        ["wado"] => "wado-uri",
        ["api", ..] => "api",
        ["fhir", ..] => "fhir",
        ["IHEInvokeImageDisplay"] => "iid",
        ["healthz"] | ["readyz"] => "health",
        ["metrics"] => "metrics",
        _ => "viewer",
    }
}

fn dicomweb_service(method: &axum::http::Method, rest: &[&str]) -> &'static str {
    if method == axum::http::Method::POST {
        return "stow-rs";
    }
    match rest.last().copied() {
        Some("metadata") => return "wado-rs.metadata",
        Some("rendered") => return "wado-rs.rendered",
        Some("thumbnail") => return "wado-rs.thumbnail",
        _ => {}
    }
    if rest.contains(&"bulkdata") {
        return "wado-rs.bulkdata";
    }
    match rest {
        [.., "frames", _] => "wado-rs.frames",
        ["studies"] | ["series"] | ["instances"] => "qido-rs",
        ["studies", _, "series" | "instances"] | ["studies", _, "series", _, "instances"] => {
            "qido-rs"
        }
        [] => "dicomweb",
        _ => "wado-rs",
    }
}

/// Middleware: counts every answered request and times it to its head.
pub(crate) async fn track(req: Request, next: Next) -> Response {
    let service = service_of(req.method(), req.uri().path());
    let method = method_label(req.method());
    let started = Instant::now();
    // Decremented when dropped: a request whose client went away counts
    // down too.
    let in_flight = Held::new(metrics::gauge!(HTTP_IN_FLIGHT, "service" => service));
    let response = next.run(req).await;
    drop(in_flight);
    metrics::histogram!(HTTP_DURATION, "service" => service)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        HTTP_REQUESTS,
        "service" => service,
        "method" => method,
        "status" => response.status().as_str().to_owned()
    )
    .increment(1);
    response
}

/// One up on a gauge while it lives (down again when dropped, on every
/// path: an answer, an error, a caller that went away).
pub(crate) struct Held(metrics::Gauge);

impl Held {
    pub(crate) fn new(g: metrics::Gauge) -> Held {
        g.increment(1.0);
        Held(g)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Methods as labels: the usual ones by name, anything else as `other`.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn services() {
        let g = Method::GET;
        for (m, path, want) in [
            (&Method::POST, "/dicomweb/studies", "stow-rs"),
            (&Method::POST, "/dicomweb/studies/1.2", "stow-rs"),
            (&g, "/dicomweb/studies", "qido-rs"),
            (&g, "/dicomweb/studies/1.2/series", "qido-rs"),
            (&g, "/dicomweb/studies/1.2/series/1.3/instances", "qido-rs"),
            (&g, "/dicomweb/studies/1.2/instances", "qido-rs"),
            (&g, "/dicomweb/studies/1.2", "wado-rs"),
            (
                &g,
                "/dicomweb/studies/1.2/series/1.3/instances/1.4",
                "wado-rs",
            ),
            (&g, "/dicomweb/studies/1.2/metadata", "wado-rs.metadata"),
            (
                &g,
                "/dicomweb/studies/1.2/series/1.3/instances/1.4/frames/1,2",
                "wado-rs.frames",
            ),
            (
                &g,
                "/dicomweb/studies/1.2/series/1.3/instances/1.4/frames/1/rendered",
                "wado-rs.rendered",
            ),
            (
                &g,
                "/dicomweb/studies/1.2/series/1.3/instances/1.4/rendered",
                "wado-rs.rendered",
            ),
            (&g, "/dicomweb/studies/1.2/thumbnail", "wado-rs.thumbnail"),
            (
                &g,
                "/dicomweb/studies/1.2/series/1.3/instances/1.4/bulkdata/7FE00010",
                "wado-rs.bulkdata",
            ),
            (&g, "/wado", "wado-uri"),
            (&g, "/api/studies/1.2/emr-link", "api"),
            (&g, "/fhir/ImagingStudy", "fhir"),
            (&g, "/metrics", "metrics"),
            (&g, "/readyz", "health"),
            (&g, "/study/1.2", "viewer"),
            (&g, "/", "viewer"),
        ] {
            assert_eq!(service_of(m, path), want, "{m} {path}");
        }
    }
}
