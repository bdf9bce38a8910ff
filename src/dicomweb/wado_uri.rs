//! WADO-URI (PS3.18 §9): `GET /wado?requestType=WADO&studyUID=…&seriesUID=…
//! &objectUID=…`, what older EMRs and viewers link to.
//!
//! `contentType` (a comma-separated list, first supported wins; default
//! `image/jpeg`): `image/jpeg`, `image/png`, `image/gif` render one frame
//! (`frameNumber`, default 1) with `windowCenter`/`windowWidth`, `rows`/
//! `columns` (the image is scaled to fit, aspect kept) and `imageQuality`;
//! `application/dicom` sends the instance in `transferSyntax` (default
//! Explicit VR Little Endian, §9.1.2.? "transferSyntax"; `*` or the stored
//! UID sends the stored bytes), transcoding when needed.
//! `anonymize=yes` is refused (400): this server does not de-identify.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::path_uid;
use crate::dicom::transfer_syntax::EXPLICIT_VR_LE;
use crate::error::ApiError;
use crate::imaging::codec;
use crate::imaging::pixel::VoiFunction;
use crate::imaging::render::{self, Format, RenderParams, Viewport};
use crate::imaging::source::Source;
use crate::imaging::transcode;
use crate::index::Scope;
use crate::state::AppState;
use crate::store::ObjectKey;

enum Content {
    Image(Format),
    Dicom,
}

pub async fn wado(State(st): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let params: HashMap<String, String> =
        url::form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let get = |k: &str| params.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
    let bad = |m: String| ApiError::BadRequest(m);
    match get("requestType") {
        Some("WADO") => {}
        Some(other) => {
            return Err(bad(format!(
                "requestType '{other}' is not supported (WADO)"
            )))
        }
        None => return Err(bad("requestType=WADO is required (PS3.18 §9.1.2)".into())),
    }
    let uid = |k: &str| -> Result<crate::dicom::Uid, ApiError> {
        let v = get(k).ok_or_else(|| bad(format!("{k} is required")))?;
        path_uid(k, v)
    };
    let scope = Scope {
        study: uid("studyUID")?,
        series: Some(uid("seriesUID")?),
        instance: Some(uid("objectUID")?),
    };
    if get("anonymize").is_some_and(|a| a.eq_ignore_ascii_case("yes")) {
        return Err(bad("anonymize=yes is not supported by this server".into()));
    }
    let content = match get("contentType") {
        None => Content::Image(Format::Jpeg),
        Some(list) => list
            .split(',')
            .find_map(|m| {
                let m = m
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                if m == "application/dicom" {
                    Some(Content::Dicom)
                } else if m == "*/*" || m == "image/*" {
                    Some(Content::Image(Format::Jpeg))
                } else {
                    Format::from_media_type(&m).map(Content::Image)
                }
            })
            .ok_or_else(|| {
                ApiError::NotAcceptable(format!(
                    "contentType '{list}': image/jpeg, image/png, image/gif or application/dicom"
                ))
            })?,
    };
    let num = |k: &str| -> Result<Option<f64>, ApiError> {
        get(k)
            .map(|v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| bad(format!("{k} must be a number")))
            })
            .transpose()
    };
    match content {
        Content::Dicom => {
            let wanted = get("transferSyntax").unwrap_or(EXPLICIT_VR_LE).to_owned();
            let (inst, encoded) = st
                .index
                .instance_frames(&scope)
                .await?
                .ok_or_else(|| ApiError::NotFound("no such object".into()))?;
            if wanted == "*" || wanted == inst.transfer_syntax_uid {
                let key = ObjectKey::from_stored(&inst.object_key)
                    .map_err(|e| ApiError::Internal(format!("bad object key in index: {e}")))?;
                let body = st.store.get_stream(&key).await?;
                return Ok((
                    [(header::CONTENT_TYPE, "application/dicom")],
                    Body::from_stream(body),
                )
                    .into_response());
            }
            let target = codec::encode_target(&wanted).ok_or_else(|| {
                ApiError::NotAcceptable(format!(
                    "transferSyntax {wanted}: the object is stored in {} and can be sent in it, or transcoded to Explicit VR Little Endian, RLE Lossless, JPEG-LS Lossless, JPEG Lossless SV1, JPEG 2000 Lossless or JPEG Baseline (8-bit)",
                    inst.transfer_syntax_uid
                ))
            })?;
            let src = Source::with_row(st.index.as_ref(), &st.store, &scope, inst, encoded).await?;
            let body = transcode::instance(&st.store, &st.imaging, src, target).await?;
            Ok((
                [(header::CONTENT_TYPE, "application/dicom")],
                Body::from_stream(body),
            )
                .into_response())
        }
        Content::Image(format) => {
            let mut p = RenderParams {
                format,
                ..RenderParams::default()
            };
            match (num("windowCenter")?, num("windowWidth")?) {
                (Some(c), Some(w)) if w >= 1.0 => p.window = Some((c, w, VoiFunction::Linear)),
                (None, None) => {}
                _ => {
                    return Err(bad(
                        "windowCenter and windowWidth go together (width ≥ 1)".into()
                    ))
                }
            }
            if let Some(q) = num("imageQuality")? {
                if !(1.0..=100.0).contains(&q) {
                    return Err(bad("imageQuality must be 1 to 100".into()));
                }
                p.quality = q as u8;
            }
            let src = Source::open(st.index.as_ref(), &st.store, &scope)
                .await?
                .ok_or_else(|| ApiError::NotFound("no such object".into()))?;
            let frame = match num("frameNumber")? {
                None => 0,
                Some(n)
                    if n >= 1.0
                        && n.fract() == 0.0
                        && (n as u64) <= u64::from(src.frame_count()) =>
                {
                    n as u32 - 1
                }
                Some(n) => {
                    return Err(bad(format!(
                        "frameNumber {n}: the object has {} frame(s)",
                        src.frame_count()
                    )))
                }
            };
            let size = |k: &str| -> Result<Option<u32>, ApiError> {
                num(k)?
                    .map(|v| {
                        if (1.0..=4096.0).contains(&v) && v.fract() == 0.0 {
                            Ok(v as u32)
                        } else {
                            Err(bad(format!("{k} must be 1 to 4096")))
                        }
                    })
                    .transpose()
            };
            let (rows, cols) = (size("rows")?, size("columns")?);
            if rows.is_some() || cols.is_some() {
                // One of the two: the other follows from the aspect ratio.
                let (w, h) = (src.info.columns as f64, src.info.rows as f64);
                let (vw, vh) = match (cols, rows) {
                    (Some(c), Some(r)) => (c, r),
                    (Some(c), None) => (c, ((h * c as f64 / w).round() as u32).max(1)),
                    (None, Some(r)) => (((w * r as f64 / h).round() as u32).max(1), r),
                    (None, None) => (src.info.columns, src.info.rows),
                };
                p.viewport = Some(Viewport {
                    width: vw,
                    height: vh,
                    region: None,
                });
            }
            let img = src.render(&st.store, &st.imaging, frame, p).await?;
            let bytes = st
                .imaging
                .run(move || render::encode(&[img], p.format, p.quality))
                .await?;
            Ok(([(header::CONTENT_TYPE, p.format.media_type())], bytes).into_response())
        }
    }
}
