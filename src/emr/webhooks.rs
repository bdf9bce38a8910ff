//! Webhooks: each change event is POSTed as JSON to every `--webhook-url`.
//! Deliveries live in the index (one row per event and URL): a server
//! claims a due delivery with a lease before each attempt, so servers that
//! share PostgreSQL do not deliver it twice at once; failures are retried
//! with exponential backoff up to `--webhook-max-attempts`, and every
//! attempt's outcome is logged (`GET /api/webhooks/deliveries`).

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::changes::{event_json, rfc3339_utc};
use crate::dicomweb::public_root;
use crate::error::{ApiError, JsonError};
use crate::index::{now_ms, ClaimedDelivery, DeliveryOutcome, DeliveryRecord};
use crate::redact::redact_url;
use crate::state::AppState;

/// One attempt may take this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// A claim outlives the attempt; a server that dies mid-attempt leaves the
/// delivery to another one after this.
const LEASE_MS: i64 = 60_000;
/// Looks for due deliveries at least this often (and when woken).
const POLL: Duration = Duration::from_millis(500);
/// Deliveries claimed at once.
const BATCH: i64 = 16;
/// First retry delay; doubled per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(600);

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

/// The delay before attempt `attempts + 1`.
pub(crate) fn backoff(attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
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
        let delay = i64::try_from(backoff(attempts).as_millis()).unwrap_or(i64::MAX);
        DeliveryOutcome::Retry {
            status,
            error,
            next_attempt_ms: now.saturating_add(delay),
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

/// The delivery loop of `serve`, until `shutdown`.
pub(crate) async fn run_deliveries(st: AppState, shutdown: CancellationToken) {
    let client = match reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks: cannot build the HTTP client; no deliveries");
            return;
        }
    };
    let root = public_root(&st, &HeaderMap::new());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = st.emr_wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
        let claimed = match st.index.claim_deliveries(now_ms(), LEASE_MS, BATCH).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: index unavailable");
                continue;
            }
        };
        // An attempt in flight when shutting down is abandoned: its lease
        // expires and it is tried again (here after a restart, or by another
        // server), rather than holding up the shutdown for its timeout.
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = deliver(&st, &client, &root, claimed) => {}
        }
    }
}

/// Attempts each claimed delivery once, all at once (each attempt ends
/// within its timeout, well inside the lease), and records the outcomes.
async fn deliver(
    st: &AppState,
    client: &reqwest::Client,
    root: &str,
    claimed: Vec<ClaimedDelivery>,
) {
    futures::future::join_all(claimed.into_iter().map(|d| attempt(st, client, root, d))).await;
}

async fn attempt(st: &AppState, client: &reqwest::Client, root: &str, d: ClaimedDelivery) {
    let body = event_json(&d.event, root);
    let result = post(client, &d, &body).await;
    let out = outcome(result, d.attempts, st.emr.webhook_max_attempts, now_ms());
    match &out {
        DeliveryOutcome::Delivered { status } => tracing::info!(
            delivery = d.id, seq = d.event.seq, study = %d.event.study_uid,
            attempts = d.attempts, status, "webhook delivered"
        ),
        DeliveryOutcome::Retry { error, .. } => tracing::warn!(
            delivery = d.id, seq = d.event.seq, attempts = d.attempts, error = %error,
            "webhook failed; will retry"
        ),
        DeliveryOutcome::GaveUp { error, .. } => tracing::error!(
            delivery = d.id, seq = d.event.seq, attempts = d.attempts, error = %error,
            "webhook failed; giving up"
        ),
    }
    if let Err(e) = st.index.record_delivery(d.id, &out, now_ms()).await {
        tracing::warn!(delivery = d.id, error = %e, "webhooks: cannot record the outcome");
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
    fn backs_off_exponentially_and_bounded() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(30), MAX_BACKOFF);
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
