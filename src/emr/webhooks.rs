//! Webhooks: each change event is POSTed as JSON to every `--webhook-url`.
//! Deliveries live in the index (one row per event and URL, the log of
//! `GET /api/webhooks/deliveries`), each with a `webhook` job in the shared
//! queue: the job runner (`crate::jobs`) of one server claims it with a
//! lease for each attempt, so servers sharing PostgreSQL do not deliver it
//! twice at once; failures are retried with exponential backoff up to
//! `--webhook-max-attempts`, then the job is dead (`GET /api/jobs`).
//! Delivery is at least once: a receiver tells repeats by `X-Phim-Delivery`.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use super::changes::{event_json, rfc3339_utc};
use crate::dicomweb::public_root;
use crate::error::{ApiError, JsonError};
use crate::index::{now_ms, ClaimedDelivery, ClaimedJob, DeliveryOutcome, DeliveryRecord, JobEnd};
use crate::jobs::{retry_at, Handler};
use crate::redact::redact_url;
use crate::state::AppState;

/// One attempt may take this long (well inside a job lease, which is
/// renewed anyway).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks `--webhook-url` values: absolute http(s) URLs.
pub(crate) fn parse_urls(urls: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for u in urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
        let parsed =
            url::Url::parse(u).map_err(|e| format!("--webhook-url '{}': {e}", redact_url(u)))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "--webhook-url '{}': not an http or https URL",
                redact_url(u)
            ));
        }
        if !out.iter().any(|o| o == u) {
            out.push(u.to_owned());
        }
    }
    Ok(out)
}

/// What an attempt ended with, given the attempt count so far.
fn outcome(
    result: Result<u16, String>,
    attempts: i64,
    max_attempts: u32,
    now: i64,
) -> DeliveryOutcome {
    let (status, error) = match result {
        Ok(s) if (200..300).contains(&s) => return DeliveryOutcome::Delivered { status: s },
        Ok(s) => (Some(s), format!("HTTP {s}")),
        Err(e) => (None, e),
    };
    if attempts >= i64::from(max_attempts) {
        DeliveryOutcome::GaveUp { status, error }
    } else {
        DeliveryOutcome::Retry {
            status,
            error,
            next_attempt_ms: retry_at(attempts, now),
        }
    }
}

/// One POST; the receiver's status, or why there was none.
async fn post(client: &reqwest::Client, d: &ClaimedDelivery, body: &Value) -> Result<u16, String> {
    let resp = client
        .post(&d.url)
        .header("Content-Type", "application/json")
        .header("X-Phim-Event", d.event.event_type.as_str())
        .header("X-Phim-Delivery", d.id.to_string())
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| {
            // reqwest's message names the URL; keep only what failed.
            let e = e.without_url();
            format!("request failed: {e}")
        })?;
    Ok(resp.status().as_u16())
}

/// Runs `webhook` jobs: one attempt at one delivery each.
pub(crate) struct Deliveries {
    st: AppState,
    client: reqwest::Client,
    root: String,
}

impl Deliveries {
    pub(crate) fn new(st: AppState) -> Result<Deliveries, String> {
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("webhooks: cannot build the HTTP client: {e}"))?;
        let root = public_root(&st, &HeaderMap::new());
        Ok(Deliveries { st, client, root })
    }
}

#[async_trait::async_trait]
impl Handler for Deliveries {
    async fn run(&self, job: &ClaimedJob) -> JobEnd {
        let Ok(id) = job.key.parse::<i64>() else {
            return JobEnd::Dead {
                error: "not a delivery id".to_owned(),
            };
        };
        let d = match self.st.index.delivery(id).await {
            Ok(Some(d)) => d,
            // Delivered or given up already (a repeat of a finished attempt).
            Ok(None) => return JobEnd::Done,
            Err(e) => {
                return JobEnd::Retry {
                    at: retry_at(job.attempts, now_ms()),
                    error: e.to_string(),
                }
            }
        };
        let body = event_json(&d.event, &self.root);
        let result = post(&self.client, &d, &body).await;
        let out = outcome(
            result,
            job.attempts,
            self.st.emr.webhook_max_attempts,
            now_ms(),
        );
        if let DeliveryOutcome::Delivered { status } = &out {
            tracing::info!(delivery = d.id, seq = d.event.seq, study = %d.event.study_uid,
                attempts = job.attempts, status, "webhook delivered");
        }
        if let Err(e) = self.st.index.record_delivery(d.id, &out, now_ms()).await {
            tracing::warn!(delivery = d.id, error = %e, "webhooks: cannot record the outcome");
        }
        match out {
            DeliveryOutcome::Delivered { .. } => JobEnd::Done,
            DeliveryOutcome::Retry {
                error,
                next_attempt_ms,
                ..
            } => JobEnd::Retry {
                at: next_attempt_ms,
                error,
            },
            DeliveryOutcome::GaveUp { error, .. } => JobEnd::Dead { error },
        }
    }
}

fn record_json(r: &DeliveryRecord) -> Value {
    json!({
        "id": r.id,
        "eventSeq": r.event_seq,
        "url": r.url,
        "status": r.status,
        "attempts": r.attempts,
        "lastStatusCode": r.last_status,
        "lastError": r.last_error,
        "createdAt": rfc3339_utc(r.created_ms),
        "updatedAt": rfc3339_utc(r.updated_ms),
        "nextAttemptAt": (r.status == "pending").then(|| rfc3339_utc(r.next_attempt_ms)),
        "deliveredAt": r.delivered_ms.map(rfc3339_utc),
    })
}

/// `GET /api/webhooks/deliveries[?limit=n]`: the delivery log, newest first.
pub(crate) async fn deliveries(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, JsonError> {
    let mut limit = 100i64;
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "limit" => {
                limit = v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!("limit must be a positive integer, got '{v}'"))
                    })?
                    .min(1000)
            }
            other => {
                return Err(
                    ApiError::BadRequest(format!("unknown query parameter '{other}'")).into(),
                )
            }
        }
    }
    let rows = st.index.deliveries(limit).await?;
    Ok(Json(json!({
        "deliveries": rows.iter().map(record_json).collect::<Vec<_>>(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_retry_with_the_job_backoff_then_give_up() {
        assert_eq!(
            outcome(Ok(204), 1, 3, 0),
            DeliveryOutcome::Delivered { status: 204 }
        );
        assert_eq!(
            outcome(Ok(500), 2, 3, 1000),
            DeliveryOutcome::Retry {
                status: Some(500),
                error: "HTTP 500".into(),
                next_attempt_ms: 3000
            }
        );
        assert!(matches!(
            outcome(Err("refused".into()), 3, 3, 0),
            DeliveryOutcome::GaveUp { status: None, .. }
        ));
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_urls(&["http://a/x".into(), " ".into(), "http://a/x".into()]).unwrap(),
            ["http://a/x"]
        );
        assert!(parse_urls(&["ftp://a".into()]).is_err());
        assert!(parse_urls(&["/relative".into()]).is_err());
    }
}
