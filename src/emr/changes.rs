//! The change feed: a study that received instances and then none for
//! `--stable-after` seconds is announced once as `study.stable` (again when
//! it grows later). The detector is a periodic `study-stable` job, so one
//! server at a time runs it; the index also claims each announcement
//! atomically, so a study is announced once even if two runs overlap (a
//! lease that ran out). Readers page with `GET /api/changes?since=`.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use super::StudyUrls;
use crate::dicomweb::public_root;
use crate::error::{ApiError, JsonError};
use crate::index::{now_ms, ChangeEvent, ClaimedJob, JobEnd};
use crate::jobs::Handler;
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
pub(crate) fn poll_period(stable_after: Duration) -> Duration {
    (stable_after / 2).clamp(Duration::from_millis(250), Duration::from_secs(5))
}

/// Runs the periodic `study-stable` job: one look for stable studies.
pub(crate) struct Detector {
    pub(crate) st: AppState,
}

#[async_trait::async_trait]
impl Handler for Detector {
    async fn run(&self, _job: &ClaimedJob) -> JobEnd {
        let st = &self.st;
        let stable_ms = i64::try_from(st.emr.stable_after.as_millis()).unwrap_or(i64::MAX);
        let period = i64::try_from(poll_period(st.emr.stable_after).as_millis()).unwrap_or(5000);
        let result = st
            .index
            .announce_stable_studies(
                now_ms(),
                stable_ms,
                &st.emr.webhook_urls,
                i64::from(st.emr.webhook_max_attempts),
            )
            .await;
        let error = match result {
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
                    // Their deliveries are due now.
                    st.jobs_wake.notify_one();
                }
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "change detector: index unavailable");
                Some(e.to_string())
            }
        };
        JobEnd::Reschedule {
            at: now_ms().saturating_add(period),
            error,
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
