//! `…/bulkdata/{offset}/{length}` (PS3.18 §10.4.1.1.3): the value bytes of
//! one bulk element, by range reads.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::stream;

use super::super::media;
use super::super::multipart::{closing, new_boundary, part_header};
use super::super::scope;
use super::{not_found, stored_key};
use crate::dicom::transfer_syntax;
use crate::error::ApiError;
use crate::state::AppState;

/// `…/bulkdata/{offset}/{length}`: the value bytes of one bulk element, as
/// written in the instance's BulkDataURI (PS3.18 §10.4.1.1.3). `Range`
/// (RFC 9110 §14) selects bytes within the value.
pub(crate) async fn bulkdata(
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
}
