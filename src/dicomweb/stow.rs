//! STOW-RS (PS3.18 §10.5): `POST /studies[/{study}]`.
//!
//! Parts are read as they arrive and spooled to disk; each complete part is
//! handed to the ingest pipeline while the next one is received, up to the
//! pipeline's concurrency bound. One bad part fails only itself.

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use tokio::task::JoinSet;

use super::media;
use super::{base_url, path_uid};
use crate::audit::{self, Action, Actor, Event, EventId};
use crate::auth::{Permission, Principal};
use crate::dicom::json::json_string;
use crate::dicom::Uid;
use crate::error::{failure_reason, is_server_fault, ApiError};
use crate::ingest::{Ingest, IngestError, IngestFailure, Spool, SpoolError, Stored};
use crate::server::AppState;

pub async fn store(
    State(state): State<AppState>,
    caller: Option<Extension<Principal>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    handle(state, caller.map(|c| c.0), headers, body, None).await
}

pub async fn store_in_study(
    State(state): State<AppState>,
    caller: Option<Extension<Principal>>,
    Path(study): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let study = path_uid("study", &study)?;
    handle(state, caller.map(|c| c.0), headers, body, Some(study)).await
}

/// The audit trail's "DICOM Instances Transferred" (action Create) for
/// what one request stored (PS3.15 A.5.3.2), one event per study.
fn audit_stored(state: &AppState, caller: Option<&Principal>, results: &[PartResult]) {
    let actor = caller.map(Actor::of).unwrap_or_else(Actor::phim);
    let mut per_study: Vec<(String, i64, i64)> = Vec::new();
    for r in results {
        let (study, ok) = match r {
            Ok(s) => (s.study_uid.to_string(), true),
            Err(_) => (String::new(), false),
        };
        match per_study.iter_mut().find(|(s, _, _)| *s == study) {
            Some(e) => {
                e.1 += i64::from(ok);
                e.2 += i64::from(!ok);
            }
            None => per_study.push((study, i64::from(ok), i64::from(!ok))),
        }
    }
    for (study, stored, failed) in per_study {
        let outcome = if failed == 0 {
            audit::Outcome::Success
        } else if stored > 0 {
            audit::Outcome::MinorFailure
        } else {
            audit::Outcome::SeriousFailure
        };
        let studies = if study.is_empty() {
            Vec::new()
        } else {
            vec![study]
        };
        state.audit.record(
            Event::new(
                EventId::InstancesTransferred,
                Action::C,
                outcome,
                actor.clone(),
            )
            .studies(studies)
            .instances(stored)
            .detail(format!("STOW-RS: {stored} stored, {failed} failed")),
        );
    }
}

/// What the request body is.
enum Shape {
    Multipart { boundary: String },
    Single,
}

fn shape(headers: &HeaderMap) -> Result<Shape, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::UnsupportedMediaType("Content-Type is required".into()))?;
    let mt = media::parse_one(ct).ok_or_else(|| {
        ApiError::UnsupportedMediaType(format!("unparseable Content-Type '{ct}'"))
    })?;
    match mt.essence.as_str() {
        "multipart/related" => {
            match mt.param("type").map(|t| t.to_ascii_lowercase()) {
                None => {}
                Some(t) if t == "application/dicom" => {}
                Some(t) => {
                    return Err(ApiError::UnsupportedMediaType(format!(
                        "multipart/related type '{t}' is not supported: send type=\"application/dicom\" parts"
                    )))
                }
            }
            let boundary = mt
                .param("boundary")
                .filter(|b| !b.is_empty())
                .ok_or_else(|| ApiError::BadRequest("multipart/related without a boundary".into()))?;
            Ok(Shape::Multipart {
                boundary: boundary.to_owned(),
            })
        }
        "application/dicom" => Ok(Shape::Single),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type '{other}' is not accepted: use multipart/related; type=\"application/dicom\""
        ))),
    }
}

/// The outcome of one part, in request order.
type PartResult = Result<Stored, IngestFailure>;

async fn handle(
    state: AppState,
    caller: Option<Principal>,
    headers: HeaderMap,
    body: Body,
    study: Option<Uid>,
) -> Result<Response, ApiError> {
    let shape = shape(&headers)?;
    let ingest = state.ingest.clone();
    // The auth layer let the request in with Store or StoreDerived; the
    // latter alone is checked per instance against its SOP class.
    let derived_only = caller.as_ref().is_some_and(|c| !c.may(Permission::Store));
    let mut tasks: JoinSet<(usize, PartResult)> = JoinSet::new();
    let mut immediate: Vec<(usize, PartResult)> = Vec::new();
    let mut n = 0usize;

    let spawn = |tasks: &mut JoinSet<(usize, PartResult)>, i: usize, spool: Spool| {
        let ingest = ingest.clone();
        let study = study.clone();
        tasks.spawn(async move {
            (
                i,
                ingest.ingest_as(spool, study.as_ref(), derived_only).await,
            )
        });
    };

    match shape {
        Shape::Single => {
            match spool_stream(&ingest, body.into_data_stream()).await {
                Ok(spool) => spawn(&mut tasks, 0, spool),
                Err(e) => immediate.push((0, Err(e.into()))),
            }
            n = 1;
        }
        Shape::Multipart { boundary } => {
            let mut mp = multer::Multipart::new(body.into_data_stream(), boundary);
            loop {
                let field = match mp.next_field().await {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        if n == 0 {
                            return Err(ApiError::BadRequest(format!(
                                "malformed multipart body: {e}"
                            )));
                        }
                        // Parts before the damage are stored; say what broke.
                        immediate.push((
                            n,
                            Err(
                                IngestError::Receive(format!("malformed multipart body: {e}"))
                                    .into(),
                            ),
                        ));
                        n += 1;
                        break;
                    }
                };
                let i = n;
                n += 1;
                if let Some(ct) = field.content_type() {
                    if ct.essence_str() != "application/dicom" {
                        immediate.push((
                            i,
                            Err(IngestError::Receive(format!(
                                "part Content-Type '{}' is not application/dicom",
                                ct.essence_str()
                            ))
                            .into()),
                        ));
                        continue;
                    }
                }
                match spool_field(&ingest, field).await {
                    Ok(spool) => spawn(&mut tasks, i, spool),
                    Err(PartError::Spool(e)) => {
                        immediate.push((i, Err(IngestError::from(e).into())))
                    }
                    Err(PartError::Multipart(e)) => {
                        immediate.push((
                            i,
                            Err(
                                IngestError::Receive(format!("malformed multipart body: {e}"))
                                    .into(),
                            ),
                        ));
                        break;
                    }
                }
            }
        }
    }

    let mut results: Vec<Option<PartResult>> = (0..n).map(|_| None).collect();
    for (i, r) in immediate {
        results[i] = Some(r);
    }
    while let Some(joined) = tasks.join_next().await {
        let (i, r) = joined.map_err(|e| ApiError::Internal(format!("ingest task failed: {e}")))?;
        results[i] = Some(r);
    }
    if n == 0 {
        return Err(ApiError::BadRequest("the request has no parts".into()));
    }
    let results: Vec<PartResult> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(IngestError::Internal("part lost".into()).into())))
        .collect();
    audit_stored(&state, caller.as_ref(), &results);
    Ok(respond(
        &base_url(&state, &headers),
        study.as_ref(),
        &results,
    ))
}

enum PartError {
    Spool(SpoolError),
    Multipart(multer::Error),
}

async fn spool_field(ingest: &Ingest, mut field: multer::Field<'_>) -> Result<Spool, PartError> {
    let mut writer = ingest.spool_writer().await.map_err(PartError::Spool)?;
    let mut failed = None;
    while let Some(chunk) = field.chunk().await.map_err(PartError::Multipart)? {
        if failed.is_some() {
            continue; // drain an oversized part so the next one can be read
        }
        if let Err(e) = writer.write(&chunk).await {
            failed = Some(e);
        }
    }
    match failed {
        Some(e) => Err(PartError::Spool(e)),
        None => writer.finish().await.map_err(PartError::Spool),
    }
}

async fn spool_stream<S, E>(ingest: &Ingest, mut body: S) -> Result<Spool, IngestError>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut writer = ingest.spool_writer().await?;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| IngestError::Receive(e.to_string()))?;
        writer.write(&chunk).await?;
    }
    Ok(writer.finish().await?)
}

/// The Store Instances Response Module (PS3.18 Table 10.5.3-2) as DICOM
/// JSON, and the status: 200 all stored, 202 some failed or warned, 409 none
/// stored (PS3.18 §10.5.3).
fn respond(base: &str, study: Option<&Uid>, results: &[PartResult]) -> Response {
    let mut referenced = Vec::new();
    let mut failed = Vec::new();
    let mut warnings = Vec::new();
    let mut studies: Vec<&Uid> = Vec::new();
    for r in results {
        match r {
            Ok(s) => {
                if !studies.contains(&&s.study_uid) {
                    studies.push(&s.study_uid);
                }
                let url = format!(
                    "{base}/studies/{}/series/{}/instances/{}",
                    s.study_uid, s.series_uid, s.sop_uid
                );
                for w in &s.warnings {
                    tracing::warn!(sop = %s.sop_uid, warning = %w, "stored with a warning");
                    warnings.push(format!("{}: {w}", s.sop_uid));
                }
                referenced.push(format!(
                    "{{\"00081150\":{{\"vr\":\"UI\",\"Value\":[{}]}},\"00081155\":{{\"vr\":\"UI\",\"Value\":[\"{}\"]}},\"00081190\":{{\"vr\":\"UR\",\"Value\":[{}]}}}}",
                    json_string(&s.sop_class_uid),
                    s.sop_uid,
                    json_string(&url)
                ));
            }
            Err(f) => {
                let reason = failure_reason(&f.error);
                if is_server_fault(&f.error) {
                    tracing::error!(sop = ?f.sop_instance_uid, error = %f.error, reason, "instance not stored");
                } else {
                    tracing::warn!(sop = ?f.sop_instance_uid, error = %f.error, reason, "instance rejected");
                }
                warnings.push(format!(
                    "{}: {}",
                    f.sop_instance_uid.as_deref().unwrap_or("instance"),
                    if is_server_fault(&f.error) {
                        "processing failure".to_owned()
                    } else {
                        f.error.to_string()
                    }
                ));
                let mut item = String::from("{");
                if let Some(c) = &f.sop_class_uid {
                    item.push_str(&format!(
                        "\"00081150\":{{\"vr\":\"UI\",\"Value\":[{}]}},",
                        json_string(c)
                    ));
                }
                if let Some(u) = &f.sop_instance_uid {
                    item.push_str(&format!(
                        "\"00081155\":{{\"vr\":\"UI\",\"Value\":[{}]}},",
                        json_string(u)
                    ));
                }
                item.push_str(&format!(
                    "\"00081197\":{{\"vr\":\"US\",\"Value\":[{reason}]}}}}"
                ));
                failed.push(item);
            }
        }
    }

    let mut body = String::from("{");
    let retrieve_study = study.or(if studies.len() == 1 {
        Some(studies[0])
    } else {
        None
    });
    let mut fields = Vec::new();
    if let (Some(s), false) = (retrieve_study, referenced.is_empty()) {
        fields.push(format!(
            "\"00081190\":{{\"vr\":\"UR\",\"Value\":[{}]}}",
            json_string(&format!("{base}/studies/{s}"))
        ));
    }
    if !failed.is_empty() {
        fields.push(format!(
            "\"00081198\":{{\"vr\":\"SQ\",\"Value\":[{}]}}",
            failed.join(",")
        ));
    }
    if !referenced.is_empty() {
        fields.push(format!(
            "\"00081199\":{{\"vr\":\"SQ\",\"Value\":[{}]}}",
            referenced.join(",")
        ));
    }
    body.push_str(&fields.join(","));
    body.push('}');

    let status = if referenced.is_empty() {
        StatusCode::CONFLICT
    } else if failed.is_empty() {
        // Notes about stored instances (nothing coerced, so no
        // WarningReason) travel in Warning headers with a 200.
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/dicom+json")],
        body,
    )
        .into_response();
    // Human-readable detail in Warning headers (RFC 7234 §5.5, as PS3.18
    // §8.6.4 uses them), at most a few.
    for w in warnings.iter().take(8) {
        let text = w.replace(['"', '\\', '\r', '\n'], " ");
        if let Ok(v) = HeaderValue::from_str(&format!("299 phim \"{text}\"")) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}
