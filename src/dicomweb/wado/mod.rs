//! WADO-RS (PS3.18 §10.4), one module per resource: instances, series and
//! studies here; [`metadata`], [`bulkdata`], [`frames`] (rendered images
//! and thumbnails are in `dicomweb::rendered`).
//!
//! Instances are streamed from the object store part by part; nothing is
//! parsed or buffered whole. Metadata comes from documents prepared at
//! ingest (one index query per request), bulk data from range reads.

mod bulkdata;
mod frames;
mod metadata;
mod zip;

pub(crate) use bulkdata::bulkdata;
pub(crate) use frames::frames;
pub(crate) use metadata::{instance_metadata, series_metadata, study_metadata};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures::{stream, StreamExt, TryStreamExt};

use super::media::{self, MediaRange};
use super::multipart::{self, new_boundary, part_header};
use super::{base_url, scope};
use crate::dicom::transfer_syntax::EXPLICIT_VR_LE;
use crate::error::ApiError;
use crate::imaging::codec;
use crate::imaging::source::Source;
use crate::imaging::transcode::{self, can_transcode};
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

pub(crate) async fn retrieve_study(
    State(st): State<AppState>,
    Path(study): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    retrieve(st, scope(&study, None, None)?, q.as_deref(), &headers).await
}

pub(crate) async fn retrieve_series(
    State(st): State<AppState>,
    Path((study, series)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    retrieve(
        st,
        scope(&study, Some(&series), None)?,
        q.as_deref(),
        &headers,
    )
    .await
}

pub(crate) async fn retrieve_instance(
    State(st): State<AppState>,
    Path((study, series, instance)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let scope = scope(&study, Some(&series), Some(&instance))?;
    retrieve(st, scope, q.as_deref(), &headers).await
}

/// How instances will be sent.
#[derive(Debug, PartialEq)]
enum Delivery {
    /// multipart/related; type="application/dicom", stored transfer syntax.
    Multipart,
    /// A bare application/dicom body (single instance only).
    Single,
    /// application/zip: the stored objects in one archive (`zip`).
    Zip,
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
            // As stored: an archive is a copy of what the archive holds.
            "application/zip" => match r.param("transfer-syntax") {
                None | Some("*") => return Ok((Delivery::Zip, None)),
                Some(ts) if instances.iter().all(|i| i.transfer_syntax_uid == ts) => {
                    return Ok((Delivery::Zip, None))
                }
                Some(_) => wanted_other_syntax = true,
            },
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
        "acceptable media types for instances: multipart/related; type=\"application/dicom\", \
         application/zip"
            .into()
    }))
}

/// `?dicomdir=true`: a ZIP with a DICOMDIR (no other query parameter is
/// defined for these resources).
fn wants_dicomdir(query: Option<&str>) -> Result<bool, ApiError> {
    let mut wants = false;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match (k.as_ref(), v.as_ref()) {
            ("dicomdir", "true") => wants = true,
            ("dicomdir", "false") => wants = false,
            ("dicomdir", other) => {
                return Err(ApiError::BadRequest(format!(
                    "dicomdir must be true or false, not '{other}'"
                )))
            }
            _ => {}
        }
    }
    Ok(wants)
}

async fn retrieve(
    st: AppState,
    scope: Scope,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let with_dicomdir = wants_dicomdir(query)?;
    let instances = st.index.instances(&scope).await?;
    if instances.is_empty() {
        return Err(not_found(&scope));
    }
    let (delivery, target) = negotiate_instances(headers, &instances)?;
    let base = base_url(&st, headers);
    tracing::debug!(study = %scope.study, count = instances.len(), "retrieve");

    if delivery == Delivery::Zip {
        let dicomdir = if with_dicomdir {
            Some(zip::dicomdir(
                &instances,
                &metadata_by_sop(&st, &scope).await?,
            ))
        } else {
            None
        };
        return Ok(zip::response(st.store.clone(), &scope, instances, dicomdir));
    }
    if with_dicomdir {
        return Err(ApiError::NotAcceptable(
            "dicomdir=true comes with Accept: application/zip".into(),
        ));
    }
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

/// The metadata documents of a scope, by SOP Instance UID.
async fn metadata_by_sop(
    st: &AppState,
    scope: &Scope,
) -> Result<std::collections::HashMap<String, serde_json::Value>, ApiError> {
    let mut out = std::collections::HashMap::new();
    for doc in st.index.metadata(scope).await? {
        let json = crate::index::metadata::inflate(&doc)
            .map_err(|e| ApiError::Internal(format!("stored metadata unreadable: {e}")))?;
        let value: serde_json::Value = serde_json::from_str(&json)
            .map_err(|e| ApiError::Internal(format!("stored metadata unreadable: {e}")))?;
        let sop = value
            .get("00080018")
            .and_then(|e| e.get("Value"))
            .and_then(|v| v.get(0))
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        if let Some(sop) = sop {
            out.insert(sop, value);
        }
    }
    Ok(out)
}

fn stored_key(inst: &StoredInstance) -> Result<ObjectKey, ApiError> {
    ObjectKey::from_stored(&inst.object_key)
        .map_err(|e| ApiError::Internal(format!("bad object key in index: {e}")))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(super) fn inst(ts: &str) -> StoredInstance {
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
}
