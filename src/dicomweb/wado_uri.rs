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

/// A WADO-URI request, checked (PS3.18 §9.1.2); what depends on the
/// object (its frame count and size) is checked once it is open.
pub(crate) struct Request {
    scope: Scope,
    content: Content,
    /// `transferSyntax` (for `application/dicom`).
    transfer_syntax: String,
    /// Window, quality and format; the viewport is set from `rows`/`columns`.
    params: RenderParams,
    frame_number: Option<f64>,
    rows: Option<u32>,
    columns: Option<u32>,
}

pub(crate) async fn wado(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let req = parse(q.as_deref().unwrap_or(""))?;
    match req.content {
        Content::Dicom => dicom(&st, &req.scope, &req.transfer_syntax).await,
        Content::Image(_) => image(&st, &req).await,
    }
}

pub(crate) fn parse(query: &str) -> Result<Request, ApiError> {
    let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
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
        Some(list) => content_type(list)?,
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
    let mut p = RenderParams {
        format: match content {
            Content::Image(f) => f,
            Content::Dicom => Format::Jpeg,
        },
        ..RenderParams::default()
    };
    if let Content::Image(_) = content {
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
    }
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
    let image = matches!(content, Content::Image(_));
    Ok(Request {
        scope,
        transfer_syntax: get("transferSyntax").unwrap_or(EXPLICIT_VR_LE).to_owned(),
        params: p,
        frame_number: if image { num("frameNumber")? } else { None },
        rows: if image { size("rows")? } else { None },
        columns: if image { size("columns")? } else { None },
        content,
    })
}

/// `contentType`: the first supported media type of the list.
fn content_type(list: &str) -> Result<Content, ApiError> {
    list.split(',')
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
        })
}

/// `application/dicom`: the stored bytes, or the instance transcoded to
/// `wanted`.
async fn dicom(st: &AppState, scope: &Scope, wanted: &str) -> Result<Response, ApiError> {
    let (inst, encoded) = st
        .index
        .instance_frames(scope)
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
    let target = codec::encode_target(wanted).ok_or_else(|| {
        ApiError::NotAcceptable(format!(
            "transferSyntax {wanted}: the object is stored in {} and can be sent in it, or transcoded to Explicit VR Little Endian, RLE Lossless, JPEG-LS Lossless, JPEG Lossless SV1, JPEG 2000 Lossless or JPEG Baseline (8-bit)",
            inst.transfer_syntax_uid
        ))
    })?;
    let src = Source::with_row(st.index.as_ref(), &st.store, scope, inst, encoded).await?;
    let body = transcode::instance(&st.store, &st.imaging, src, target).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/dicom")],
        Body::from_stream(body),
    )
        .into_response())
}

/// An image: one frame rendered, scaled to `rows`/`columns` (aspect kept
/// when one of them is given).
async fn image(st: &AppState, req: &Request) -> Result<Response, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let mut p = req.params;
    let src = Source::open(st.index.as_ref(), &st.store, &req.scope)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such object".into()))?;
    let frame = match req.frame_number {
        None => 0,
        Some(n) if n >= 1.0 && n.fract() == 0.0 && (n as u64) <= u64::from(src.frame_count()) => {
            n as u32 - 1
        }
        Some(n) => {
            return Err(bad(format!(
                "frameNumber {n}: the object has {} frame(s)",
                src.frame_count()
            )))
        }
    };
    if req.rows.is_some() || req.columns.is_some() {
        // One of the two: the other follows from the aspect ratio.
        let (w, h) = (src.info.columns as f64, src.info.rows as f64);
        let (vw, vh) = match (req.columns, req.rows) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const UIDS: &str = "requestType=WADO&studyUID=1.2&seriesUID=1.2.3&objectUID=1.2.3.4";

    fn status(q: &str) -> Option<axum::http::StatusCode> {
        parse(q).err().map(|e| e.status())
    }

    #[test]
    fn requests() {
        let r = parse(UIDS).unwrap();
        assert!(matches!(r.content, Content::Image(Format::Jpeg)));
        assert_eq!(r.transfer_syntax, EXPLICIT_VR_LE);
        let r = parse(&format!(
            "{UIDS}&contentType=image/gif,application/dicom&windowCenter=40&windowWidth=400&imageQuality=80&rows=128&frameNumber=2"
        ))
        .unwrap();
        assert!(matches!(r.content, Content::Image(Format::Gif)));
        assert_eq!(r.params.window.map(|w| (w.0, w.1)), Some((40.0, 400.0)));
        assert_eq!((r.params.quality, r.rows, r.columns), (80, Some(128), None));
        assert_eq!(r.frame_number, Some(2.0));
        // Image parameters are not read for application/dicom.
        let r = parse(&format!(
            "{UIDS}&contentType=application/dicom&transferSyntax=*&rows=0"
        ))
        .unwrap();
        assert!(matches!(r.content, Content::Dicom));
        assert_eq!(r.transfer_syntax, "*");

        use axum::http::StatusCode as S;
        for (q, want) in [
            (
                "requestType=WADO&studyUID=1.2&seriesUID=1.2.3",
                S::BAD_REQUEST,
            ),
            (
                "studyUID=1.2&seriesUID=1.2.3&objectUID=1.2.3.4",
                S::BAD_REQUEST,
            ),
            (
                &format!("{UIDS}&contentType=text/html") as &str,
                S::NOT_ACCEPTABLE,
            ),
            (&format!("{UIDS}&windowCenter=40"), S::BAD_REQUEST),
            (
                &format!("{UIDS}&windowCenter=40&windowWidth=0.5"),
                S::BAD_REQUEST,
            ),
            (&format!("{UIDS}&imageQuality=0"), S::BAD_REQUEST),
            (&format!("{UIDS}&rows=5000"), S::BAD_REQUEST),
            (&format!("{UIDS}&columns=1.5"), S::BAD_REQUEST),
            (&format!("{UIDS}&frameNumber=one"), S::BAD_REQUEST),
            (&format!("{UIDS}&anonymize=yes"), S::BAD_REQUEST),
        ] {
            assert_eq!(status(q), Some(want), "{q}");
        }
    }
}
