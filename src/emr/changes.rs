//! The change feed: a study that received instances and then none for
//! `--stable-after` seconds is announced once as `study.stable` (again when
//! it grows later). The detector runs on every `phim serve`; the index
//! claims each announcement atomically, so servers sharing PostgreSQL
//! announce a study once. Readers page with `GET /api/changes?since=`.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::StudyUrls;
use crate::dicomweb::public_root;
use crate::error::{ApiError, JsonError};
use crate::index::{now_ms, ChangeEvent};
use crate::state::AppState;

pub(crate) const DEFAULT_LIMIT: i64 = 100;
pub(crate) const MAX_LIMIT: i64 = 1000;

/// An event as JSON; links start at `root` (Phim's public root).
pub(crate) fn event_json(e: &ChangeEvent, root: &str) -> Value {
    let u = StudyUrls::new(root, &e.study_uid);
    json!({
        "seq": e.seq,
        "type": e.event_type,
        "time": rfc3339_utc(e.time_ms),
        "studyInstanceUID": e.study_uid,
        "accessionNumber": e.accession_number,
        "patientID": e.patient_id,
        "numberOfInstances": e.num_instances,
        "links": {
            "viewer": u.viewer,
            "wado": u.wado,
            "fhir": u.fhir,
            "thumbnail": u.thumbnail,
        },
    })
}

/// Milliseconds since the epoch as RFC 3339 UTC (`2026-11-26T12:31:40.123Z`).
pub(crate) fn rfc3339_utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `GET /api/changes?since=<seq>&limit=<n>` → `{"events": […], "next": seq}`;
/// `next` is the `since` of the following call.
pub(crate) async fn changes(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, JsonError> {
    let mut since = 0i64;
    let mut limit = DEFAULT_LIMIT;
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let n = |min: i64| {
            v.parse::<i64>().ok().filter(|n| *n >= min).ok_or_else(|| {
                ApiError::BadRequest(format!("{k} must be an integer ≥ {min}, got '{v}'"))
            })
        };
        match k.as_ref() {
            "since" => since = n(0)?,
            "limit" => limit = n(1)?.min(MAX_LIMIT),
            other => {
                return Err(
                    ApiError::BadRequest(format!("unknown query parameter '{other}'")).into(),
                )
            }
        }
    }
    let events = st.index.changes(since, limit).await?;
    let root = public_root(&st, &headers);
    let next = events.last().map_or(since, |e| e.seq);
    Ok(Json(json!({
        "events": events.iter().map(|e| event_json(e, &root)).collect::<Vec<_>>(),
        "next": next,
    })))
}

/// How often the detector looks: often enough to announce within a fraction
/// of the quiet period, never busier than 4 times a second.
fn poll_period(stable_after: Duration) -> Duration {
    (stable_after / 2).clamp(Duration::from_millis(250), Duration::from_secs(5))
}

/// The detector loop of `serve`, until `shutdown`.
pub(crate) async fn run_detector(st: AppState, shutdown: CancellationToken) {
    let stable_after = st.emr.stable_after;
    let period = poll_period(stable_after);
    let stable_ms = i64::try_from(stable_after.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(period) => {}
        }
        match st
            .index
            .announce_stable_studies(now_ms(), stable_ms, &st.emr.webhook_urls)
            .await
        {
            Ok(events) => {
                for e in &events {
                    tracing::info!(
                        seq = e.seq,
                        study = %e.study_uid,
                        instances = e.num_instances,
                        "study stable: announced"
                    );
                }
                if !events.is_empty() {
                    st.emr_wake.notify_one();
                }
            }
            Err(e) => tracing::warn!(error = %e, "change detector: index unavailable"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_utc(1_795_696_300_123), "2026-11-26T12:31:40.123Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn polls() {
        assert_eq!(
            poll_period(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
        assert_eq!(poll_period(Duration::from_secs(60)), Duration::from_secs(5));
        assert_eq!(poll_period(Duration::ZERO), Duration::from_millis(250));
    }

    #[test]
    fn event_shape() {
        let e = ChangeEvent {
            seq: 7,
            event_type: "study.stable".into(),
            time_ms: 0,
            study_uid: "1.2.3".into(),
            accession_number: Some("A1".into()),
            patient_id: None,
            num_instances: 4,
        };
        let j = event_json(&e, "http://h:1");
        assert_eq!(j["links"]["fhir"], "http://h:1/fhir/ImagingStudy/1.2.3");
        assert_eq!(j["patientID"], Value::Null);
        assert_eq!(j["numberOfInstances"], 4);
    }
}
