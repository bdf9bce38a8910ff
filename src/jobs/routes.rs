//! The job queue for admins (`GET /api/jobs`, `POST /api/jobs/{id}/retry`):
//! what waits, what runs where, and the dead letters.

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde_json::{json, Value};

use crate::emr::changes::rfc3339_utc;
use crate::error::{ApiError, JsonError};
use crate::index::{now_ms, JobRecord};
use crate::state::AppState;

/// `GET /api/jobs?state=dead&kind=webhook&limit=100`, newest first.
pub(crate) async fn list(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, JsonError> {
    let (mut state, mut kind, mut limit) = (None, None, 100i64);
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "state" if matches!(v.as_ref(), "queued" | "running" | "dead") => {
                state = Some(v.into_owned())
            }
            "state" => {
                return Err(ApiError::BadRequest(format!(
                    "state must be queued, running or dead, got '{v}'"
                ))
                .into())
            }
            "kind" => kind = Some(v.into_owned()),
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
    let jobs = st
        .index
        .jobs(state.as_deref(), kind.as_deref(), limit)
        .await?;
    let counts = st.index.job_counts(now_ms()).await?;
    Ok(Json(json!({
        "jobs": jobs.iter().map(record_json).collect::<Vec<_>>(),
        "counts": counts.iter().map(|c| json!({
            "kind": c.kind, "state": c.state, "count": c.count,
        })).collect::<Vec<_>>(),
    })))
}

/// `POST /api/jobs/{id}/retry`: a dead job queued again, due now.
pub(crate) async fn retry(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, JsonError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("'{id}' is not a job id")))?;
    if !st.index.retry_job(id, now_ms()).await? {
        return Err(ApiError::NotFound(format!("no dead job {id}")).into());
    }
    tracing::info!(job = id, "dead job queued again by an admin");
    st.jobs_wake.notify_one();
    Ok(Json(json!({ "id": id, "state": "queued" })))
}

fn record_json(r: &JobRecord) -> Value {
    json!({
        "id": r.id,
        "kind": r.kind,
        "key": r.key,
        "state": r.state,
        // When it is due (queued) or when its lease runs out (running).
        "runAt": rfc3339_utc(r.run_at),
        "attempts": r.attempts,
        "maxAttempts": r.max_attempts,
        "owner": r.owner,
        "lastError": r.last_error,
        "createdAt": rfc3339_utc(r.created_ms),
        "updatedAt": rfc3339_utc(r.updated_ms),
    })
}
