//! WADO-RS (PS3.18 §10.4): instances as stored, metadata, bulk data.
//!
//! Instances are streamed from the object store part by part; nothing is
//! parsed or buffered whole. Metadata comes from documents prepared at
//! ingest (one index query per request), bulk data from range reads.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{stream, StreamExt, TryStreamExt};

use super::media::{self, MediaRange};
use super::multipart::{self, closing, new_boundary, part_header};
use super::{base_url, scope};
use crate::dicom::frames::FrameIndex;
use crate::dicom::transfer_syntax::{self, EXPLICIT_VR_LE};
use crate::error::ApiError;
use crate::imaging::codec;
use crate::imaging::source::Source;
use crate::imaging::transcode::{self, can_transcode};
use crate::index::metadata::inflate as inflate_metadata;
use crate::index::{Scope, StoredInstance};
use crate::state::AppState;
use crate::store::ObjectKey;

/// Instances opened ahead of the one being streamed.
const READ_AHEAD: usize = 4;

fn not_found(scope: &Scope) -> ApiError {
    let what = match (&scope.series, &scope.instance) {
        (_, Some(i)) => format!("instance {i}"),
        (Some(s), None) => format!("series {s}"),
        _ => format!("study {}", scope.study),
    };
    ApiError::NotFound(format!("{what} not found"))
}

pub async fn retrieve_study(
    State(st): State<AppState>,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    retrieve(st, scope(&study, None, None)?, &headers).await
}

pub async fn retrieve_series(
    State(st): State<AppState>,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    retrieve(st, scope(&study, Some(&series), None)?, &headers).await
}

pub async fn retrieve_instance(
    State(st): State<AppState>,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    retrieve(st, scope(&study, Some(&series), Some(&instance))?, &headers).await
}

/// How instances will be sent.
#[derive(Debug, PartialEq)]
enum Delivery {
    /// multipart/related; type="application/dicom", stored transfer syntax.
    Multipart,
    /// A bare application/dicom body (single instance only).
    Single,
}

/// Accept negotiation for DICOM instances (PS3.18 §8.7.3). Without a
/// `transfer-syntax` parameter the default is Explicit VR Little Endian
/// (§8.7.3.5.2); `transfer-syntax=*` accepts the stored syntax. A missing
/// Accept or `*/*` gets the stored syntax (no decoding work for clients that
/// take anything). Instances not stored in the requested syntax are
/// transcoded when every one of them can be (`imaging::transcode`); the
/// second value is then the target.
fn negotiate_instances(
    headers: &HeaderMap,
    instances: &[StoredInstance],
) -> Result<(Delivery, Option<&'static str>), ApiError> {
    let ranges = media::accept_ranges(headers);
    if ranges.is_empty() {
        return Ok((Delivery::Multipart, None));
    }
    // None: as stored; Some(target): transcoded where needed; Err: neither.
    let syntax = |r: &MediaRange| -> Result<Option<&'static str>, ()> {
        let wanted = match r.param("transfer-syntax") {
            Some("*") => return Ok(None),
            Some(ts) => ts,
            None => EXPLICIT_VR_LE,
        };
        if instances.iter().all(|i| i.transfer_syntax_uid == wanted) {
            return Ok(None);
        }
        let target = codec::encode_target(wanted).ok_or(())?;
        if instances.iter().all(|i| {
            i.transfer_syntax_uid == target || can_transcode(&i.transfer_syntax_uid, target)
        }) {
            Ok(Some(target))
        } else {
            Err(())
        }
    };
    let mut wanted_other_syntax = false;
    for r in &ranges {
        match r.essence.as_str() {
            "*/*" | "multipart/*" => return Ok((Delivery::Multipart, None)),
            "multipart/related" => {
                let ty = r.param("type").unwrap_or("application/dicom");
                if !ty.eq_ignore_ascii_case("application/dicom") {
                    continue;
                }
                match syntax(r) {
                    Ok(t) => return Ok((Delivery::Multipart, t)),
                    Err(()) => wanted_other_syntax = true,
                }
            }
            "application/dicom" if instances.len() == 1 => match syntax(r) {
                Ok(t) => return Ok((Delivery::Single, t)),
                Err(()) => wanted_other_syntax = true,
            },
            _ => {}
        }
    }
    Err(ApiError::NotAcceptable(if wanted_other_syntax {
        "the instances cannot be sent in the requested transfer syntax: they are sent as stored \
         (transfer-syntax=*) or transcoded to Explicit VR Little Endian, RLE Lossless, JPEG-LS \
         Lossless, JPEG Lossless SV1, JPEG 2000 Lossless or 8-bit JPEG Baseline"
            .into()
    } else {
        "acceptable media type for instances: multipart/related; type=\"application/dicom\"".into()
    }))
}

async fn retrieve(st: AppState, scope: Scope, headers: &HeaderMap) -> Result<Response, ApiError> {
    let instances = st.index.instances(&scope).await?;
    if instances.is_empty() {
        return Err(not_found(&scope));
    }
    let (delivery, target) = negotiate_instances(headers, &instances)?;
    let base = base_url(&st, headers);
    tracing::debug!(study = %scope.study, count = instances.len(), "retrieve");

    if let Some(target) = target {
        return retrieve_transcoded(st, instances, delivery, target, base).await;
    }
    if delivery == Delivery::Single {
        let inst = &instances[0];
        let key = stored_key(inst)?;
        let body = st.store.get_stream(&key).await?;
        return Ok((
            [
                (
                    header::CONTENT_TYPE,
                    format!(
                        "application/dicom; transfer-syntax={}",
                        inst.transfer_syntax_uid
                    ),
                ),
                (header::CONTENT_LENGTH, inst.size.to_string()),
            ],
            Body::from_stream(body),
        )
            .into_response());
    }

    let boundary = new_boundary();
    let store = st.store.clone();
    let b = boundary.clone();
    // Objects are opened a few ahead (in order): on S3 each GET costs a
    // round trip that would otherwise stall between instances.
    let parts = stream::iter(instances)
        .map(move |inst| {
            let store = store.clone();
            let b = b.clone();
            let base = base.clone();
            async move {
                let key = stored_key(&inst).map_err(std::io::Error::other)?;
                let body = store.get_stream(&key).await.map_err(|e| {
                    tracing::error!(sop = %inst.sop_uid, error = %e, "stored object unreadable");
                    std::io::Error::other(e)
                })?;
                let head = part_header(
                    &b,
                    &[
                        (
                            "Content-Type",
                            format!(
                                "application/dicom; transfer-syntax={}",
                                inst.transfer_syntax_uid
                            ),
                        ),
                        ("Content-Length", inst.size.to_string()),
                        (
                            "Content-Location",
                            format!(
                                "{base}/studies/{}/series/{}/instances/{}",
                                inst.study_uid, inst.series_uid, inst.sop_uid
                            ),
                        ),
                    ],
                );
                Ok::<_, std::io::Error>(
                    stream::once(async move { Ok(head) })
                        .chain(body.map_err(std::io::Error::other)),
                )
            }
        })
        .buffered(READ_AHEAD)
        .try_flatten();
    Ok(multipart::response(parts, boundary, "application/dicom"))
}

/// Instances in `target`: the ones stored in it as they are, the others
/// transcoded one after the other (no Content-Length: the size is known
/// only once sent).
async fn retrieve_transcoded(
    st: AppState,
    instances: Vec<StoredInstance>,
    delivery: Delivery,
    target: &'static str,
    base: String,
) -> Result<Response, ApiError> {
    async fn one(
        st: &AppState,
        inst: &StoredInstance,
        target: &'static str,
    ) -> Result<futures::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>, ApiError>
    {
        if inst.transfer_syntax_uid == target {
            let body = st.store.get_stream(&stored_key(inst)?).await?;
            return Ok(body.map_err(std::io::Error::other).boxed());
        }
        let scope = Scope::of_instance(inst)
            .map_err(|e| ApiError::Internal(format!("bad UID in index: {e}")))?;
        let src = Source::open(st.index.as_ref(), &st.store, &scope)
            .await?
            .ok_or_else(|| not_found(&scope))?;
        Ok(transcode::instance(&st.store, &st.imaging, src, target).await?)
    }
    if delivery == Delivery::Single {
        let body = one(&st, &instances[0], target).await?;
        return Ok((
            [(
                header::CONTENT_TYPE,
                format!("application/dicom; transfer-syntax={target}"),
            )],
            Body::from_stream(body),
        )
            .into_response());
    }
    // The first instance is prepared before answering, so that an instance
    // that cannot be transcoded is a 406, not a cut stream.
    let mut instances = instances.into_iter();
    let Some(first) = instances.next() else {
        return Err(ApiError::NotFound("no instances".into()));
    };
    let first_body = one(&st, &first, target).await?;
    let boundary = new_boundary();
    let b = boundary.clone();
    let head = move |inst: &StoredInstance, b: &str| {
        part_header(
            b,
            &[
                (
                    "Content-Type",
                    format!("application/dicom; transfer-syntax={target}"),
                ),
                (
                    "Content-Location",
                    format!(
                        "{base}/studies/{}/series/{}/instances/{}",
                        inst.study_uid, inst.series_uid, inst.sop_uid
                    ),
                ),
            ],
        )
    };
    let first_part = stream::once({
        let h = head(&first, &b);
        async move { Ok(h) }
    })
    .chain(first_body);
    let rest = stream::iter(instances)
        .then(move |inst| {
            let (st, b, head) = (st.clone(), b.clone(), head.clone());
            async move {
                let body = one(&st, &inst, target).await.map_err(|e| {
                    tracing::warn!(sop = %inst.sop_uid, error = %e, "instance not transcoded");
                    std::io::Error::other(e.to_string())
                })?;
                let h = head(&inst, &b);
                Ok::<_, std::io::Error>(stream::once(async move { Ok(h) }).chain(body))
            }
        })
        .try_flatten();
    Ok(multipart::response(
        first_part.chain(rest),
        boundary,
        "application/dicom",
    ))
}

fn stored_key(inst: &StoredInstance) -> Result<ObjectKey, ApiError> {
    ObjectKey::from_stored(&inst.object_key)
        .map_err(|e| ApiError::Internal(format!("bad object key in index: {e}")))
}

pub async fn study_metadata(
    State(st): State<AppState>,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    metadata(st, scope(&study, None, None)?, &headers).await
}

pub async fn series_metadata(
    State(st): State<AppState>,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    metadata(st, scope(&study, Some(&series), None)?, &headers).await
}

pub async fn instance_metadata(
    State(st): State<AppState>,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    metadata(st, scope(&study, Some(&series), Some(&instance))?, &headers).await
}

async fn metadata(st: AppState, scope: Scope, headers: &HeaderMap) -> Result<Response, ApiError> {
    media::require_json(headers)?;
    let docs = st.index.metadata(&scope).await?;
    if docs.is_empty() {
        return Err(not_found(&scope));
    }
    let base = base_url(&st, headers);
    // Inflating a few hundred documents is CPU work: off the async workers.
    let body = tokio::task::spawn_blocking(move || -> Result<String, std::io::Error> {
        let needle = "\"BulkDataURI\":\"/";
        let with_base = format!("\"BulkDataURI\":\"{base}/");
        let mut out = String::with_capacity(docs.iter().map(|d| d.len() * 4).sum::<usize>() + 2);
        out.push('[');
        for (i, d) in docs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let json = inflate_metadata(d)?;
            out.push_str(&json.replace(needle, &with_base));
        }
        out.push(']');
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(format!("stored metadata unreadable: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/dicom+json")], body).into_response())
}

/// `…/bulkdata/{offset}/{length}`: the value bytes of one bulk element, as
/// written in the instance's BulkDataURI (PS3.18 §10.4.1.1.3). `Range`
/// (RFC 9110 §14) selects bytes within the value.
pub async fn bulkdata(
    State(st): State<AppState>,
    Path((study, series, instance, offset, length)): Path<(String, String, String, u64, u64)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let scope = scope(&study, Some(&series), Some(&instance))?;
    let inst = st
        .index
        .instances(&scope)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| not_found(&scope))?;
    let key = stored_key(&inst)?;
    let deflated = transfer_syntax::lookup(&inst.transfer_syntax_uid)
        .map(|t| t.encoding.deflated)
        .unwrap_or(false);
    let bad_ref = || ApiError::NotFound("no such bulk data in this instance".into());
    let end = offset.checked_add(length).ok_or_else(bad_ref)?;
    // Phim writes BulkDataURIs for values of at least one byte.
    if length == 0 {
        return Err(bad_ref());
    }

    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) => Some(parse_range(r, length)?),
        None => None,
    };
    let (from, to) = range.unwrap_or((0, length));

    let bytes = if deflated {
        // Offsets of a deflated data set are in its inflated form, so the
        // object is read whole: only for objects of a bounded size.
        if inst.size > 256 << 20 {
            return Err(ApiError::NotAcceptable(
                "bulk data of deflated instances over 256 MiB is not served; retrieve the instance"
                    .into(),
            ));
        }
        let all = st.store.get_bytes(&key).await?;
        let inflated =
            tokio::task::spawn_blocking(move || crate::dicom::scan::inflated_dataset(&all))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .map_err(|e| ApiError::Internal(format!("stored object unreadable: {e}")))?;
        if end > inflated.len() as u64 {
            return Err(bad_ref());
        }
        bytes::Bytes::copy_from_slice(&inflated[(offset + from) as usize..(offset + to) as usize])
    } else {
        if end > inst.size as u64 {
            return Err(bad_ref());
        }
        st.store.get_range(&key, offset + from..offset + to).await?
    };

    let wants_raw = media::accept_ranges(&headers)
        .first()
        .is_some_and(|r| r.essence == "application/octet-stream");
    if range.is_some() || wants_raw {
        let mut resp = (
            [(header::CONTENT_TYPE, "application/octet-stream".to_owned())],
            bytes,
        )
            .into_response();
        if range.is_some() {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            if let Ok(v) = format!("bytes {}-{}/{}", from, to.saturating_sub(1), length).parse() {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        return Ok(resp);
    }
    let boundary = new_boundary();
    let head = part_header(
        &boundary,
        &[
            ("Content-Type", "application/octet-stream".to_owned()),
            ("Content-Length", bytes.len().to_string()),
        ],
    );
    let body = stream::iter([
        Ok::<_, std::io::Error>(head),
        Ok(bytes),
        Ok(closing(&boundary)),
    ]);
    Ok((
        [(
            header::CONTENT_TYPE,
            format!("multipart/related; type=\"application/octet-stream\"; boundary={boundary}"),
        )],
        Body::from_stream(body),
    )
        .into_response())
}

/// Parses a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range into a
/// half-open interval within `len`.
fn parse_range(h: &str, len: u64) -> Result<(u64, u64), ApiError> {
    let bad =
        || ApiError::RangeNotSatisfiable(format!("unsatisfiable range '{h}' for {len} bytes"));
    let spec = h.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    if spec.contains(',') {
        return Err(ApiError::RangeNotSatisfiable(
            "multiple ranges are not supported".into(),
        ));
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (from, to) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| bad())?;
            (len.saturating_sub(n), len)
        }
        (a, "") => (a.parse().map_err(|_| bad())?, len),
        (a, b) => {
            let a: u64 = a.parse().map_err(|_| bad())?;
            let b: u64 = b.parse().map_err(|_| bad())?;
            (a, b.saturating_add(1).min(len))
        }
    };
    if from >= to || from >= len {
        return Err(bad());
    }
    Ok((from, to))
}

/// The media type of frames stored in a transfer syntax (PS3.18 Table
/// 8.7.3-2): native pixel data is application/octet-stream.
fn frame_media_type(ts: &str) -> Option<&'static str> {
    Some(match ts {
        "1.2.840.10008.1.2" | "1.2.840.10008.1.2.1" | "1.2.840.10008.1.2.2" => {
            "application/octet-stream"
        }
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => "image/jpeg",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.92" | "1.2.840.10008.1.2.4.93" => "image/jpx",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => {
            "image/jphc"
        }
        "1.2.840.10008.1.2.4.110" | "1.2.840.10008.1.2.4.111" | "1.2.840.10008.1.2.4.112" => {
            "image/jxl"
        }
        "1.2.840.10008.1.2.5" => "image/x-dicom-rle",
        "1.2.840.10008.1.2.1.98" => "application/octet-stream",
        _ => return None,
    })
}

/// How frames are served: as stored, or transcoded into `ts`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FrameForm {
    AsStored,
    Transcoded {
        media: &'static str,
        ts: &'static str,
    },
}

/// The form a compressed frame can be transcoded into for a requested
/// media type and transfer syntax (PS3.18 Table 8.7.3-2 defaults: Explicit
/// VR Little Endian for octet-stream, JPEG baseline for image/jpeg, JPEG-LS
/// lossless for image/jls, RLE for image/x-dicom-rle); `image/jpeg` with
/// `transfer-syntax=1.2.840.10008.1.2.4.70` is JPEG Lossless SV1, and the
/// lossy JPEG-LS (.81) and JPEG 2000 (.91) syntaxes are made when named.
fn transcode_target(ty: &str, tsp: Option<&str>) -> Option<FrameForm> {
    let (media, ts) = match (ty, tsp) {
        ("application/octet-stream", None) => ("application/octet-stream", EXPLICIT_VR_LE),
        ("application/octet-stream", Some(t)) if t == EXPLICIT_VR_LE => {
            ("application/octet-stream", EXPLICIT_VR_LE)
        }
        ("image/x-dicom-rle", None | Some(codec::RLE_LOSSLESS)) => {
            ("image/x-dicom-rle", codec::RLE_LOSSLESS)
        }
        ("image/jls", None | Some(codec::JPEG_LS_LOSSLESS)) => {
            ("image/jls", codec::JPEG_LS_LOSSLESS)
        }
        // Lossy targets only when named (PS3.18 Table 8.7.3-5 lists them
        // as optional for these media types; the defaults stay lossless).
        ("image/jls", Some(codec::JPEG_LS_NEAR)) => ("image/jls", codec::JPEG_LS_NEAR),
        ("image/jp2", Some(codec::JPEG_2000)) => ("image/jp2", codec::JPEG_2000),
        ("image/jpeg", None | Some(codec::JPEG_BASELINE)) => ("image/jpeg", codec::JPEG_BASELINE),
        ("image/jpeg", Some(codec::JPEG_LOSSLESS_SV1)) => ("image/jpeg", codec::JPEG_LOSSLESS_SV1),
        ("image/jp2", None | Some(codec::JPEG_2000_LOSSLESS)) => {
            ("image/jp2", codec::JPEG_2000_LOSSLESS)
        }
        _ => return None,
    };
    Some(FrameForm::Transcoded { media, ts })
}

/// Accept negotiation for frames (PS3.18 §8.7.3.5), in the client's order
/// of preference: the stored form when acceptable (native frames are
/// Explicit VR Little Endian bytes: Implicit VR LE pixel bytes are the
/// same, big-endian ones are swapped), else a transcoded one, else 406.
fn negotiate_frames(
    headers: &HeaderMap,
    media: &str,
    ts: &str,
    decodable: bool,
) -> Result<FrameForm, ApiError> {
    let ranges = media::accept_ranges(headers);
    if ranges.is_empty() {
        return Ok(FrameForm::AsStored);
    }
    let native = media == "application/octet-stream";
    for r in &ranges {
        let (ty, tsp) = match r.essence.as_str() {
            "*/*" | "multipart/*" => return Ok(FrameForm::AsStored),
            "multipart/related" => (
                r.param("type")
                    .unwrap_or("application/octet-stream")
                    .to_ascii_lowercase(),
                r.param("transfer-syntax"),
            ),
            other => (other.to_owned(), r.param("transfer-syntax")),
        };
        // `type=application/octet-stream; transfer-syntax=*` (what
        // cornerstone and OHIF send) accepts frames in any stored form.
        let any_form = ty == "application/octet-stream" && tsp == Some("*");
        let type_ok = any_form
            || ty == media
            || ty == "*/*"
            || (ty == "image/*" && media.starts_with("image/"));
        let ts_ok = match tsp {
            None | Some("*") => true,
            Some(t) => t == ts || (native && t == EXPLICIT_VR_LE),
        };
        if type_ok && ts_ok {
            return Ok(FrameForm::AsStored);
        }
        if decodable {
            if let Some(form) = transcode_target(&ty, tsp) {
                return Ok(form);
            }
        }
    }
    Err(ApiError::NotAcceptable(format!(
        "frames of this instance are available as {media} (transfer syntax {ts}) or transcoded to \
         application/octet-stream (Explicit VR Little Endian), image/x-dicom-rle, image/jls (lossless), \
         image/jpeg with transfer-syntax=1.2.840.10008.1.2.4.70 (lossless), image/jp2 (lossless) \
         or 8-bit image/jpeg"
    )))
}

/// `…/frames/{list}` (PS3.18 §10.4.1.1.4): the listed frames (1-based),
/// one part each, read as byte ranges of the stored object, transcoded on
/// the imaging pool when the client cannot take the stored form.
pub async fn frames(
    State(st): State<AppState>,
    Path((study, series, instance, list)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let scope = scope(&study, Some(&series), Some(&instance))?;
    let numbers = st.limits.frame_list(&list)?;
    let (inst, index) = st
        .index
        .instance_frames(&scope)
        .await?
        .ok_or_else(|| not_found(&scope))?;
    let ts = inst.transfer_syntax_uid.clone();
    let encoding = transfer_syntax::lookup(&ts).map(|t| t.encoding);
    let deflated = encoding.is_none_or(|e| e.deflated);
    let media = if deflated {
        "application/octet-stream"
    } else {
        frame_media_type(&ts).ok_or_else(|| {
            ApiError::NotAcceptable(format!("frames of transfer syntax {ts} are not served"))
        })?
    };
    let form = if deflated {
        // Deflated bytes are not addressable: always decoded.
        FrameForm::Transcoded {
            media: "application/octet-stream",
            ts: EXPLICIT_VR_LE,
        }
    } else {
        negotiate_frames(&headers, media, &ts, codec::can_decode(&ts))?
    };
    let boundary = new_boundary();
    let b = boundary.clone();
    let (parts, outer_type) = match form {
        FrameForm::AsStored => {
            let index = index.and_then(|b| FrameIndex::decode(&b)).ok_or_else(|| {
                ApiError::NotFound("this instance has no frames that can be served".into())
            })?;
            let mut plan = Vec::with_capacity(numbers.len());
            for n in &numbers {
                let ranges = index.ranges(u64::from(*n)).ok_or_else(|| {
                    ApiError::NotFound(format!(
                        "frame {} does not exist (the instance has {})",
                        n + 1,
                        index.frames()
                    ))
                })?;
                plan.push(ranges);
            }
            let big_endian = encoding.is_some_and(|e| e.big_endian);
            let swap = if big_endian { index.swap_width() } else { 0 };
            let part_type = if media == "application/octet-stream" {
                format!(
                    "application/octet-stream; transfer-syntax={}",
                    if big_endian || ts == "1.2.840.10008.1.2" {
                        EXPLICIT_VR_LE
                    } else {
                        &ts
                    }
                )
            } else {
                format!("{media}; transfer-syntax={ts}")
            };
            let key = stored_key(&inst)?;
            let store = st.store.clone();
            let parts = stream::iter(plan)
                .then(move |ranges| {
                    let (store, key, b, part_type) =
                        (store.clone(), key.clone(), b.clone(), part_type.clone());
                    async move {
                        let mut frame = Vec::new();
                        for (offset, len) in ranges {
                            let bytes = store
                                .get_range(&key, offset..offset + len)
                                .await
                                .map_err(std::io::Error::other)?;
                            frame.extend_from_slice(&bytes);
                        }
                        if swap > 1 {
                            frame.chunks_exact_mut(swap).for_each(|c| c.reverse());
                        }
                        Ok::<_, std::io::Error>(frame_part(&b, &part_type, frame))
                    }
                })
                .try_flatten()
                .boxed();
            (parts, media)
        }
        FrameForm::Transcoded { media, ts: target } => {
            let src = std::sync::Arc::new(
                Source::with_row(st.index.as_ref(), &st.store, &scope, inst, index).await?,
            );
            if let Some(n) = numbers.iter().find(|n| **n >= src.frame_count()) {
                return Err(ApiError::NotFound(format!(
                    "frame {} does not exist (the instance has {})",
                    n + 1,
                    src.frame_count()
                )));
            }
            codec::check_encodable(&src.info, target)?;
            let part_type = format!("{media}; transfer-syntax={target}");
            let transcode = move |st: AppState, src: std::sync::Arc<Source>, n: u32| async move {
                let frame = src.decode(&st.store, &st.imaging, n).await?;
                let info = src.info.clone();
                st.imaging
                    .run(move || codec::encode(&info, &frame, target, 90))
                    .await
                    .map_err(ApiError::from)
            };
            // The first frame is made before the answer starts: a frame that
            // cannot be decoded is then an error status, not a cut stream.
            let mut numbers = numbers.into_iter();
            let first_n = numbers.next().unwrap_or(0);
            let first = transcode(st.clone(), src.clone(), first_n).await?;
            let first = stream::iter([Ok::<_, ApiError>(frame_part(&b, &part_type, first))]);
            // The others decode in parallel on the imaging pool, sent in order.
            let width = st.imaging.threads().max(1);
            let parts = stream::iter(numbers)
                .map(move |n| {
                    let (st, src, b, part_type) =
                        (st.clone(), src.clone(), b.clone(), part_type.clone());
                    async move {
                        let bytes = transcode(st, src, n).await?;
                        Ok::<_, ApiError>(frame_part(&b, &part_type, bytes))
                    }
                })
                .buffered(width);
            let parts = first
                .chain(parts)
                .map_err(|e| {
                    tracing::warn!(error = %e, "frame not transcoded");
                    std::io::Error::other(e.to_string())
                })
                .try_flatten()
                .boxed();
            (parts, media)
        }
    };
    Ok(multipart::response(parts, boundary, outer_type))
}

fn frame_part(
    boundary: &str,
    part_type: &str,
    frame: Vec<u8>,
) -> stream::Iter<std::array::IntoIter<Result<bytes::Bytes, std::io::Error>, 2>> {
    let head = part_header(
        boundary,
        &[
            ("Content-Type", part_type.to_owned()),
            ("Content-Length", frame.len().to_string()),
        ],
    );
    stream::iter([Ok(head), Ok(bytes::Bytes::from(frame))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), (0, 10));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), (90, 100));
        assert_eq!(parse_range("bytes=-5", 100).unwrap(), (95, 100));
        assert_eq!(parse_range("bytes=10-500", 100).unwrap(), (10, 100));
        assert!(parse_range("bytes=100-", 100).is_err());
        assert!(parse_range("items=1-2", 100).is_err());
    }

    fn inst(ts: &str) -> StoredInstance {
        StoredInstance {
            study_uid: "1".into(),
            series_uid: "2".into(),
            sop_uid: "3".into(),
            sop_class_uid: "4".into(),
            instance_number: None,
            transfer_syntax_uid: ts.into(),
            object_key: "k".into(),
            size: 1,
            sha256: "x".into(),
        }
    }

    #[test]
    fn accept_negotiation() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT, v.parse().unwrap());
            m
        };
        let jpeg = [inst("1.2.840.10008.1.2.4.50")];
        let ele = [inst(EXPLICIT_VR_LE)];
        let mpeg = [inst("1.2.840.10008.1.2.4.100")];
        let any = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
        assert_eq!(
            negotiate_instances(&h(any), &jpeg).unwrap(),
            (Delivery::Multipart, None)
        );
        let default_ts = "multipart/related; type=\"application/dicom\"";
        assert_eq!(
            negotiate_instances(&h(default_ts), &ele).unwrap(),
            (Delivery::Multipart, None)
        );
        // The default syntax for a JPEG instance: transcoded.
        assert_eq!(
            negotiate_instances(&h(default_ts), &jpeg).unwrap(),
            (Delivery::Multipart, Some(EXPLICIT_VR_LE))
        );
        // Video cannot be decoded: 406.
        assert!(matches!(
            negotiate_instances(&h(default_ts), &mpeg),
            Err(ApiError::NotAcceptable(_))
        ));
        assert!(matches!(
            negotiate_instances(&h("image/png"), &ele),
            Err(ApiError::NotAcceptable(_))
        ));
        assert_eq!(
            negotiate_instances(&h("application/dicom"), &ele).unwrap(),
            (Delivery::Single, None)
        );
        assert_eq!(
            negotiate_instances(&HeaderMap::new(), &jpeg).unwrap(),
            (Delivery::Multipart, None)
        );
        // JPEG 2000 lossless is a target, and lossy JPEG 2000 when named.
        let to_j2k =
            "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.90";
        assert_eq!(
            negotiate_instances(&h(to_j2k), &ele).unwrap(),
            (Delivery::Multipart, Some(codec::JPEG_2000_LOSSLESS))
        );
        assert_eq!(
            negotiate_instances(&h(&to_j2k.replace(".90", ".91")), &ele).unwrap(),
            (Delivery::Multipart, Some(codec::JPEG_2000))
        );
        assert!(negotiate_instances(&h(&to_j2k.replace(".90", ".92")), &ele).is_err());
    }

    #[test]
    fn frames_to_jpeg_2000() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT, v.parse().unwrap());
            m
        };
        let rle = codec::RLE_LOSSLESS;
        let want = FrameForm::Transcoded {
            media: "image/jp2",
            ts: codec::JPEG_2000_LOSSLESS,
        };
        for accept in [
            "multipart/related; type=\"image/jp2\"",
            "multipart/related; type=\"image/jp2\"; transfer-syntax=1.2.840.10008.1.2.4.90",
        ] {
            let form = negotiate_frames(&h(accept), "image/x-dicom-rle", rle, true).unwrap();
            assert_eq!(form, want, "{accept}");
        }
        // Lossy JPEG 2000 only when named; JPEG 2000 Part 2 never; nothing
        // from undecodable frames.
        let lossy = "multipart/related; type=\"image/jp2\"; transfer-syntax=1.2.840.10008.1.2.4.91";
        assert_eq!(
            negotiate_frames(&h(lossy), "image/x-dicom-rle", rle, true).unwrap(),
            FrameForm::Transcoded {
                media: "image/jp2",
                ts: codec::JPEG_2000
            }
        );
        let part2 = lossy.replace(".91", ".92");
        assert!(negotiate_frames(&h(&part2), "image/x-dicom-rle", rle, true).is_err());
        let j2k = "multipart/related; type=\"image/jp2\"";
        assert!(negotiate_frames(&h(j2k), "image/x-dicom-rle", rle, false).is_err());
    }

    #[test]
    fn jpeg_lossless_sv1_is_a_target() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT, v.parse().unwrap());
            m
        };
        let sv1 = codec::JPEG_LOSSLESS_SV1;
        // Frames: image/jpeg with the SV1 syntax is transcoded to it,
        // image/jpeg alone stays baseline, a stored SV1 frame goes as is.
        let accept = format!("multipart/related; type=\"image/jpeg\"; transfer-syntax={sv1}");
        let rle = codec::RLE_LOSSLESS;
        assert_eq!(
            negotiate_frames(&h(&accept), "image/x-dicom-rle", rle, true).unwrap(),
            FrameForm::Transcoded {
                media: "image/jpeg",
                ts: sv1
            }
        );
        assert_eq!(
            negotiate_frames(
                &h("multipart/related; type=\"image/jpeg\""),
                "image/x-dicom-rle",
                rle,
                true
            )
            .unwrap(),
            FrameForm::Transcoded {
                media: "image/jpeg",
                ts: codec::JPEG_BASELINE
            }
        );
        assert_eq!(
            negotiate_frames(&h(&accept), "image/jpeg", sv1, true).unwrap(),
            FrameForm::AsStored
        );
        assert!(negotiate_frames(&h(&accept), "image/x-dicom-rle", rle, false).is_err());
        // Other lossless JPEG syntaxes are not encoded.
        let p1 = "multipart/related; type=\"image/jpeg\"; transfer-syntax=1.2.840.10008.1.2.4.57";
        assert!(negotiate_frames(&h(p1), "image/x-dicom-rle", rle, true).is_err());
        // Instances.
        let accept =
            format!("multipart/related; type=\"application/dicom\"; transfer-syntax={sv1}");
        assert_eq!(
            negotiate_instances(&h(&accept), &[inst(rle)]).unwrap(),
            (Delivery::Multipart, Some(sv1))
        );
        assert_eq!(
            negotiate_instances(&h(&accept), &[inst(sv1)]).unwrap(),
            (Delivery::Multipart, None)
        );
    }
}
