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
use super::multipart::{closing, new_boundary, part_header};
use super::{base_url, path_uid};
use crate::dicom::frames::FrameIndex;
use crate::dicom::transfer_syntax::{self, EXPLICIT_VR_LE};
use crate::error::ApiError;
use crate::index::{Scope, StoredInstance};
use crate::ingest::inflate_metadata;
use crate::server::AppState;
use crate::store::ObjectKey;

/// Instances opened ahead of the one being streamed.
const READ_AHEAD: usize = 4;

fn scope(study: &str, series: Option<&str>, instance: Option<&str>) -> Result<Scope, ApiError> {
    Ok(Scope {
        study: path_uid("study", study)?,
        series: series.map(|s| path_uid("series", s)).transpose()?,
        instance: instance.map(|s| path_uid("instance", s)).transpose()?,
    })
}

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
/// Accept or `*/*` gets the stored syntax: no transcoding is done yet, so
/// that is the one representation this server can produce.
fn negotiate_instances(
    headers: &HeaderMap,
    instances: &[StoredInstance],
) -> Result<Delivery, ApiError> {
    let ranges = media::accept_ranges(headers);
    if ranges.is_empty() {
        return Ok(Delivery::Multipart);
    }
    let syntax_ok = |r: &MediaRange| match r.param("transfer-syntax") {
        Some("*") => true,
        Some(ts) => instances.iter().all(|i| i.transfer_syntax_uid == ts),
        None => instances
            .iter()
            .all(|i| i.transfer_syntax_uid == EXPLICIT_VR_LE),
    };
    let mut wanted_other_syntax = false;
    for r in &ranges {
        match r.essence.as_str() {
            "*/*" | "multipart/*" => return Ok(Delivery::Multipart),
            "multipart/related" => {
                let ty = r.param("type").unwrap_or("application/dicom");
                if !ty.eq_ignore_ascii_case("application/dicom") {
                    continue;
                }
                if syntax_ok(r) {
                    return Ok(Delivery::Multipart);
                }
                wanted_other_syntax = true;
            }
            "application/dicom" if instances.len() == 1 => {
                if syntax_ok(r) {
                    return Ok(Delivery::Single);
                }
                wanted_other_syntax = true;
            }
            _ => {}
        }
    }
    Err(ApiError::NotAcceptable(if wanted_other_syntax {
        "the instances are not stored in the requested transfer syntax and transcoding is not \
         supported yet: ask with transfer-syntax=* to receive them as stored"
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
    let delivery = negotiate_instances(headers, &instances)?;
    let base = base_url(&st, headers);
    tracing::debug!(study = %scope.study, count = instances.len(), "retrieve");

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
        .try_flatten()
        .chain(stream::once({
            let end = closing(&boundary);
            async move { Ok(end) }
        }));
    Ok((
        [(
            header::CONTENT_TYPE,
            format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        )],
        Body::from_stream(parts),
    )
        .into_response())
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

/// Checks that the client accepts DICOM JSON (PS3.18 §8.7.3.2); XML
/// metadata is not produced.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ranges = media::accept_ranges(headers);
    if ranges.is_empty()
        || ranges
            .iter()
            .any(|r| r.matches("application/dicom+json") || r.matches("application/json"))
    {
        Ok(())
    } else {
        Err(ApiError::NotAcceptable(
            "this resource is available as application/dicom+json".into(),
        ))
    }
}

async fn metadata(st: AppState, scope: Scope, headers: &HeaderMap) -> Result<Response, ApiError> {
    require_json(headers)?;
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

/// Accept negotiation for frames (PS3.18 §8.7.3.5): frames are served in
/// the stored form; native frames are Explicit VR Little Endian bytes
/// (Implicit VR LE pixel bytes are the same; big-endian ones are swapped).
fn negotiate_frames(headers: &HeaderMap, media: &str, ts: &str) -> Result<(), ApiError> {
    let ranges = media::accept_ranges(headers);
    if ranges.is_empty() {
        return Ok(());
    }
    let native = media == "application/octet-stream";
    for r in &ranges {
        let (ty, tsp) = match r.essence.as_str() {
            "*/*" | "multipart/*" => return Ok(()),
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
            return Ok(());
        }
    }
    Err(ApiError::NotAcceptable(format!(
        "frames of this instance are available as {media} (transfer syntax {ts}); transcoding is not supported yet"
    )))
}

/// `…/frames/{list}` (PS3.18 §10.4.1.1.4): the listed frames (1-based),
/// one part each, read as byte ranges of the stored object.
pub async fn frames(
    State(st): State<AppState>,
    Path((study, series, instance, list)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let scope = scope(&study, Some(&series), Some(&instance))?;
    let numbers: Vec<u64> = list
        .split(',')
        .map(|n| n.trim().parse::<u64>().ok().filter(|n| *n >= 1))
        .collect::<Option<Vec<_>>>()
        .filter(|v| !v.is_empty() && v.len() <= 10_000)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "malformed frame list '{list}': 1-based numbers separated by commas"
            ))
        })?;
    let (inst, index) = st
        .index
        .instance_frames(&scope)
        .await?
        .ok_or_else(|| not_found(&scope))?;
    let index = index.and_then(|b| FrameIndex::decode(&b)).ok_or_else(|| {
        ApiError::NotFound("this instance has no frames that can be served".into())
    })?;
    let ts = inst.transfer_syntax_uid.clone();
    let encoding = transfer_syntax::lookup(&ts).map(|t| t.encoding);
    if encoding.is_none_or(|e| e.deflated) {
        return Err(ApiError::NotAcceptable(
            "frames of deflated instances are not served; retrieve the instance".into(),
        ));
    }
    let media = frame_media_type(&ts).ok_or_else(|| {
        ApiError::NotAcceptable(format!("frames of transfer syntax {ts} are not served"))
    })?;
    negotiate_frames(&headers, media, &ts)?;
    let mut plan = Vec::with_capacity(numbers.len());
    for n in &numbers {
        let ranges = index.ranges(n - 1).ok_or_else(|| {
            ApiError::NotFound(format!(
                "frame {n} does not exist (the instance has {})",
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
    let boundary = new_boundary();
    let store = st.store.clone();
    let b = boundary.clone();
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
                let head = part_header(
                    &b,
                    &[
                        ("Content-Type", part_type),
                        ("Content-Length", frame.len().to_string()),
                    ],
                );
                Ok::<_, std::io::Error>(stream::iter([
                    Ok::<_, std::io::Error>(head),
                    Ok(bytes::Bytes::from(frame)),
                ]))
            }
        })
        .try_flatten()
        .chain(stream::once({
            let end = closing(&boundary);
            async move { Ok(end) }
        }));
    let outer_type = if media == "application/octet-stream" {
        "application/octet-stream".to_owned()
    } else {
        media.to_owned()
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            format!("multipart/related; type=\"{outer_type}\"; boundary={boundary}"),
        )],
        Body::from_stream(parts),
    )
        .into_response())
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
        let any = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
        assert_eq!(
            negotiate_instances(&h(any), &jpeg).unwrap(),
            Delivery::Multipart
        );
        let default_ts = "multipart/related; type=\"application/dicom\"";
        assert_eq!(
            negotiate_instances(&h(default_ts), &ele).unwrap(),
            Delivery::Multipart
        );
        assert!(matches!(
            negotiate_instances(&h(default_ts), &jpeg),
            Err(ApiError::NotAcceptable(_))
        ));
        assert!(matches!(
            negotiate_instances(&h("image/png"), &ele),
            Err(ApiError::NotAcceptable(_))
        ));
        assert_eq!(
            negotiate_instances(&h("application/dicom"), &ele).unwrap(),
            Delivery::Single
        );
        assert_eq!(
            negotiate_instances(&HeaderMap::new(), &jpeg).unwrap(),
            Delivery::Multipart
        );
    }
}
