//! STOW-RS (PS3.18 §10.5): `POST /studies[/{study}]`.
//!
//! Parts are read as they arrive and spooled to disk; each complete part is
//! handed to the ingest pipeline ([`crate::ingest::batch`]) while the next
//! one is received, up to the pipeline's concurrency bound. One bad part
//! fails only itself. The response ([`Outcomes`]) is folded part by part.

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};

use super::limits::{exceeded, RequestLimits};
use super::media;
use super::multipart::{header_block_len, HeaderMeter, MeteredBody};
use super::{base_url, path_uid};
use crate::audit::{self, Action, Actor, Event, EventId};
use crate::auth::{Permission, Principal};
use crate::dicom::Uid;
use crate::error::{failure_reason, is_server_fault, ApiError};
use crate::ingest::batch::{Batch, PartResult};
use crate::ingest::{Ingest, IngestError, Spool, SpoolError};
use crate::state::AppState;

pub(crate) async fn store(
    State(state): State<AppState>,
    caller: Option<Extension<Principal>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    handle(state, caller.map(|c| c.0), headers, body, None).await
}

pub(crate) async fn store_in_study(
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
fn audit_stored(state: &AppState, caller: Option<&Principal>, per_study: &PerStudy) {
    let actor = caller.map(Actor::of).unwrap_or_else(Actor::phim);
    for (study, &(stored, failed)) in per_study {
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
            vec![study.clone()]
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

/// What one STOW request did so far, folded part by part as parts finish:
/// its size depends on what the response must list (one entry per stored
/// instance, at most `--stow-max-failures-listed` failures), never on how
/// many failed parts were sent.
struct Outcomes {
    base: String,
    max_failures_listed: usize,
    /// (part number, Referenced SOP Sequence item).
    referenced: Vec<(usize, serde_json::Value)>,
    /// (part number, Failed SOP Sequence item), the first ones.
    failed: Vec<(usize, serde_json::Value)>,
    /// Failures beyond the listed ones, by Failure Reason.
    unlisted: std::collections::BTreeMap<u16, u64>,
    failures: u64,
    /// The first few notes for `Warning` headers.
    warnings: Vec<String>,
    /// Stored and failed instances by study, for the audit trail;
    /// failures without a known study count under "".
    per_study: PerStudy,
}

/// Study UID → (stored, failed). A map: a request may name as many
/// studies as it has parts, and a list searched per part is quadratic.
type PerStudy = std::collections::HashMap<String, (i64, i64)>;

/// `Warning` headers per response (RFC 9111 §5.5 was RFC 7234's).
const MAX_WARNINGS: usize = 8;

impl Outcomes {
    fn new(base: String, max_failures_listed: usize) -> Outcomes {
        Outcomes {
            base,
            max_failures_listed,
            referenced: Vec::new(),
            failed: Vec::new(),
            unlisted: Default::default(),
            failures: 0,
            warnings: Vec::new(),
            per_study: PerStudy::new(),
        }
    }

    fn warn(&mut self, w: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(w);
        }
    }

    fn count(&mut self, study: &str, ok: bool) {
        if !self.per_study.contains_key(study) {
            self.per_study.insert(study.to_owned(), (0, 0));
        }
        if let Some(e) = self.per_study.get_mut(study) {
            e.0 += i64::from(ok);
            e.1 += i64::from(!ok);
        }
    }

    fn add(&mut self, part: usize, result: PartResult) {
        match result {
            Ok(s) => {
                self.count(s.study_uid.as_str(), true);
                let url = format!(
                    "{}/studies/{}/series/{}/instances/{}",
                    self.base, s.study_uid, s.series_uid, s.sop_uid
                );
                for w in &s.warnings {
                    tracing::warn!(sop = %s.sop_uid, warning = %w, "stored with a warning");
                    self.warn(format!("{}: {w}", s.sop_uid));
                }
                self.referenced.push((
                    part,
                    serde_json::json!({
                        "00081150": {"vr": "UI", "Value": [s.sop_class_uid]},
                        "00081155": {"vr": "UI", "Value": [s.sop_uid.as_str()]},
                        "00081190": {"vr": "UR", "Value": [url]},
                    }),
                ));
            }
            Err(f) => {
                self.count("", false);
                self.failures += 1;
                let reason = failure_reason(&f.error);
                let server_fault = is_server_fault(&f.error);
                if server_fault {
                    tracing::error!(part, sop = ?f.sop_instance_uid, error = %f.error, reason, "instance not stored");
                } else if self.failed.len() < self.max_failures_listed {
                    tracing::warn!(part, sop = ?f.sop_instance_uid, error = %f.error, reason, "instance rejected");
                } else {
                    // Summarised in the response; the log as well.
                    tracing::debug!(part, sop = ?f.sop_instance_uid, error = %f.error, reason, "instance rejected");
                }
                if self.failed.len() >= self.max_failures_listed {
                    *self.unlisted.entry(reason).or_insert(0) += 1;
                    return;
                }
                self.warn(format!(
                    "{}: {}",
                    f.sop_instance_uid.as_deref().unwrap_or("instance"),
                    if server_fault {
                        "processing failure".to_owned()
                    } else {
                        f.error.to_string()
                    }
                ));
                let mut item = serde_json::Map::new();
                if let Some(c) = f.sop_class_uid {
                    item.insert(
                        "00081150".into(),
                        serde_json::json!({"vr": "UI", "Value": [c]}),
                    );
                }
                if let Some(u) = f.sop_instance_uid {
                    item.insert(
                        "00081155".into(),
                        serde_json::json!({"vr": "UI", "Value": [u]}),
                    );
                }
                item.insert(
                    "00081197".into(),
                    serde_json::json!({"vr": "US", "Value": [reason]}),
                );
                self.failed.push((part, item.into()));
            }
        }
    }

    fn stored(&self) -> usize {
        self.referenced.len()
    }

    /// The Store Instances Response Module (PS3.18 Table 10.5.3-2) as DICOM
    /// JSON, and the status: 200 all stored, 202 some failed or warned, 409
    /// none stored (PS3.18 §10.5.3).
    fn respond(mut self, study: Option<&Uid>) -> Response {
        // Request order, whatever order the parts finished in.
        self.referenced.sort_by_key(|(i, _)| *i);
        self.failed.sort_by_key(|(i, _)| *i);
        let studies: Vec<&str> = self
            .per_study
            .iter()
            .filter(|(s, (stored, _))| !s.is_empty() && *stored > 0)
            .map(|(s, _)| s.as_str())
            .collect();
        let mut body = serde_json::Map::new();
        let retrieve_study = study.map(Uid::as_str).or(if studies.len() == 1 {
            Some(studies[0])
        } else {
            None
        });
        if let (Some(s), false) = (retrieve_study, self.referenced.is_empty()) {
            body.insert(
                "00081190".into(),
                serde_json::json!({"vr": "UR", "Value": [format!("{}/studies/{s}", self.base)]}),
            );
        }
        let unlisted: u64 = self.unlisted.values().sum();
        if unlisted > 0 {
            tracing::warn!(
                listed = self.failed.len(),
                unlisted,
                "more instances rejected than --stow-max-failures-listed"
            );
            let by_reason: Vec<String> = self
                .unlisted
                .iter()
                .map(|(r, n)| format!("{n} x {r:04X}"))
                .collect();
            self.warnings.truncate(MAX_WARNINGS - 1);
            self.warnings.insert(
                0,
                format!(
                    "{} failed instances are listed, {unlisted} more are not (--stow-max-failures-listed): {}",
                    self.failed.len(),
                    by_reason.join(", ")
                ),
            );
        }
        let status = if self.referenced.is_empty() {
            StatusCode::CONFLICT
        } else if self.failures == 0 {
            // Notes about stored instances (nothing coerced, so no
            // WarningReason) travel in Warning headers with a 200.
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        if !self.failed.is_empty() {
            let items: Vec<serde_json::Value> = self.failed.into_iter().map(|(_, v)| v).collect();
            body.insert(
                "00081198".into(),
                serde_json::json!({"vr": "SQ", "Value": items}),
            );
        }
        if !self.referenced.is_empty() {
            let items: Vec<serde_json::Value> =
                self.referenced.into_iter().map(|(_, v)| v).collect();
            body.insert(
                "00081199".into(),
                serde_json::json!({"vr": "SQ", "Value": items}),
            );
        }
        let mut resp = (
            status,
            [(header::CONTENT_TYPE, "application/dicom+json")],
            serde_json::Value::Object(body).to_string(),
        )
            .into_response();
        // Human-readable detail in Warning headers (RFC 7234 §5.5, as PS3.18
        // §8.6.4 uses them), at most a few.
        for w in &self.warnings {
            let text = w.replace(['"', '\\', '\r', '\n'], " ");
            if let Ok(v) = HeaderValue::from_str(&format!("299 phim \"{text}\"")) {
                resp.headers_mut().append(header::WARNING, v);
            }
        }
        resp
    }
}

async fn handle(
    state: AppState,
    caller: Option<Principal>,
    headers: HeaderMap,
    body: Body,
    study: Option<Uid>,
) -> Result<Response, ApiError> {
    let shape = shape(&headers)?;
    let limits = &state.limits;
    // The auth layer let the request in with Store or StoreDerived; the
    // latter alone is checked per instance against its SOP class.
    let derived_only = caller.as_ref().is_some_and(|c| !c.may(Permission::Store));
    let mut out = Outcomes::new(base_url(&state, &headers), limits.stow_max_failures_listed);
    let mut batch = Batch::new(&state.ingest, study.clone(), derived_only);
    let (n, over_limit) = match shape {
        Shape::Single => {
            match spool_stream(&state.ingest, body.into_data_stream()).await {
                Ok(spool) => batch.start(0, spool),
                Err(e) => out.add(0, Err(e.into())),
            }
            (1, None)
        }
        Shape::Multipart { boundary } => {
            read_parts(body, boundary, limits, &mut batch, &mut out).await?
        }
    };
    batch
        .finish(&mut |i, r| out.add(i, r))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    audit_stored(&state, caller.as_ref(), &out.per_study);
    if let Some(why) = over_limit {
        let done = if n == 0 {
            String::new()
        } else {
            format!(
                "; the {n} parts before were processed: {} stored, {} failed",
                out.stored(),
                out.failures
            )
        };
        return Err(ApiError::PayloadTooLarge(format!("{why}{done}")));
    }
    if n == 0 {
        return Err(ApiError::BadRequest("the request has no parts".into()));
    }
    Ok(out.respond(study.as_ref()))
}

/// Reads the parts of a multipart body, each started in the batch once it
/// is spooled (the next is read only when the batch has room); returns how
/// many parts were read and, when a request limit stopped the reading,
/// why. Parts before damage or a limit are processed and stay stored.
async fn read_parts(
    body: Body,
    boundary: String,
    limits: &RequestLimits,
    batch: &mut Batch,
    out: &mut Outcomes,
) -> Result<(usize, Option<String>), ApiError> {
    let meter = HeaderMeter::new(limits.stow_max_part_header);
    let body = MeteredBody::new(body.into_data_stream(), meter.clone());
    let mut mp = multer::Multipart::new(body, boundary);
    let mut header_bytes = 0u64;
    let mut n = 0usize;
    let malformed =
        |e: multer::Error| IngestError::Receive(format!("malformed multipart body: {e}")).into();
    loop {
        batch
            .make_room(&mut |i, r| out.add(i, r))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        meter.start();
        let next = mp.next_field().await;
        meter.stop();
        let field = match next {
            Ok(Some(f)) => f,
            Ok(None) => return Ok((n, None)),
            Err(_) if meter.tripped() => return Ok((n, Some(part_header_too_long(limits, n + 1)))),
            Err(e) if n == 0 => {
                return Err(ApiError::BadRequest(format!(
                    "malformed multipart body: {e}"
                )))
            }
            Err(e) => {
                // Parts before the damage are stored; say what broke.
                out.add(n, Err(malformed(e)));
                return Ok((n + 1, None));
            }
        };
        let block = header_block_len(field.headers());
        header_bytes += block as u64;
        if let Some(why) = part_limit(limits, n, block, header_bytes) {
            return Ok((n, Some(why)));
        }
        let i = n;
        n += 1;
        if let Some(ct) = field.content_type() {
            if ct.essence_str() != "application/dicom" {
                let why = format!(
                    "part Content-Type '{}' is not application/dicom",
                    ct.essence_str()
                );
                out.add(i, Err(IngestError::Receive(why).into()));
                continue;
            }
        }
        match spool_field(batch.ingest(), field).await {
            Ok(spool) => batch.start(i, spool),
            Err(PartError::Spool(e)) => out.add(i, Err(IngestError::from(e).into())),
            Err(PartError::Multipart(_)) if meter.tripped() => {
                return Ok((n, Some(part_header_too_long(limits, i + 2))))
            }
            Err(PartError::Multipart(e)) => {
                out.add(i, Err(malformed(e)));
                return Ok((n, None));
            }
        }
    }
}

/// Whether part `n` (0-based, its header block `block` bytes, all blocks
/// so far `header_bytes`) is over a request limit, and which.
fn part_limit(limits: &RequestLimits, n: usize, block: usize, header_bytes: u64) -> Option<String> {
    if n >= limits.stow_max_parts {
        return Some(exceeded(
            "stow-max-parts",
            limits.stow_max_parts as u64,
            format!(
                "the request has more than {} parts; part {} and those after it were not read",
                limits.stow_max_parts,
                n + 1
            ),
        ));
    }
    if block > limits.stow_max_part_header {
        return Some(part_header_too_long(limits, n + 1));
    }
    if header_bytes > limits.stow_max_header_bytes {
        return Some(exceeded(
            "stow-max-header-bytes",
            limits.stow_max_header_bytes,
            format!(
                "the part headers reach {header_bytes} bytes at part {}; it and the parts after it were not read",
                n + 1
            ),
        ));
    }
    None
}

fn part_header_too_long(limits: &RequestLimits, part: usize) -> String {
    exceeded(
        "stow-max-part-header",
        limits.stow_max_part_header as u64,
        format!(
            "the header block of part {part} is longer; it and the parts after it were not read"
        ),
    )
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
