//! Rendered and thumbnail resources (PS3.18 §10.4.1.1.5–6, §8.3.5).
//!
//! - `…/instances/{i}/rendered`: a single-frame instance as one image; a
//!   multi-frame instance as an animated `image/gif` when GIF is acceptable,
//!   else its first frame.
//! - `…/frames/{list}/rendered`: one frame as one image; several frames
//!   only as an animated `image/gif`.
//! - `…/series/{se}/rendered`, `…/studies/{s}/rendered`: every instance's
//!   first frame, as `multipart/related` of images.
//! - `…/thumbnail` at every level: see `imaging::thumbnail` for the
//!   representative image; 128×128 unless `viewport` says otherwise.
//!
//! Query parameters: `window=center,width[,function]`,
//! `viewport=vw,vh[,sx,sy,sw,sh]`, `quality` (1–100), and `accept`, which
//! wins over the Accept header (§8.3.3.1).

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures::{stream, StreamExt};

use super::media::{self, MediaRange};
use super::multipart::{self, new_boundary, part_header};
use super::scope;
use crate::error::ApiError;
use crate::imaging::pixel::VoiFunction;
use crate::imaging::render::{self, Format, RenderParams, Viewport};
use crate::imaging::source::Source;
use crate::imaging::thumbnail::DEFAULT_SIZE;
use crate::index::Scope;
use crate::state::AppState;

/// Instances rendered in one study or series response.
const MAX_RENDERED_INSTANCES: usize = 2000;
/// Frames in one animated GIF.
const MAX_GIF_FRAMES: usize = 500;
/// Pixels in one animated GIF, all frames together (~200 MB rendered).
const MAX_GIF_PIXELS: u64 = 64_000_000;

/// Parses the rendering query parameters (PS3.18 §8.3.5.1).
pub(crate) fn parse_params(
    raw: Option<&str>,
    headers: &HeaderMap,
    allow_gif: bool,
) -> Result<RenderParams, ApiError> {
    let mut p = RenderParams::default();
    let mut accept: Option<Vec<MediaRange>> = None;
    let bad = |k: &str, why: &str| ApiError::BadRequest(format!("query parameter '{k}': {why}"));
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let nums = || -> Result<Vec<f64>, ApiError> {
            v.split(',')
                .map(|n| n.trim().parse::<f64>().ok().filter(|n| n.is_finite()))
                .collect::<Option<Vec<f64>>>()
                .ok_or_else(|| bad(&k, "numbers separated by commas expected"))
        };
        match k.as_ref() {
            "window" => {
                let parts: Vec<&str> = v.split(',').collect();
                if parts.len() < 2 || parts.len() > 3 {
                    return Err(bad(&k, "center,width[,function] expected"));
                }
                let c: f64 = parts[0].trim().parse().map_err(|_| bad(&k, "bad center"))?;
                let w: f64 = parts[1].trim().parse().map_err(|_| bad(&k, "bad width"))?;
                if !c.is_finite() || !w.is_finite() || w < 1.0 {
                    return Err(bad(&k, "the width must be at least 1"));
                }
                let f = match parts.get(2) {
                    Some(f) => VoiFunction::parse(f).ok_or_else(|| {
                        bad(&k, "function must be linear, linear-exact or sigmoid")
                    })?,
                    None => VoiFunction::Linear,
                };
                p.window = Some((c, w, f));
            }
            "viewport" => {
                let n = nums()?;
                let pos = |x: f64| (0.0..=65535.0).contains(&x) && x.fract() == 0.0;
                if !(n.len() == 2 || n.len() == 6) || !n.iter().all(|x| pos(*x)) {
                    return Err(bad(
                        &k,
                        "vw,vh[,sx,sy,sw,sh] with non-negative integers expected",
                    ));
                }
                if n[0] < 1.0 || n[1] < 1.0 || n[0] > 4096.0 || n[1] > 4096.0 {
                    return Err(bad(&k, "the viewport must be 1 to 4096 pixels each way"));
                }
                p.viewport = Some(Viewport {
                    width: n[0] as u32,
                    height: n[1] as u32,
                    region: (n.len() == 6)
                        .then(|| (n[2] as u32, n[3] as u32, n[4] as u32, n[5] as u32)),
                });
            }
            "quality" => {
                let q: u8 = v.trim().parse().map_err(|_| bad(&k, "1 to 100 expected"))?;
                if !(1..=100).contains(&q) {
                    return Err(bad(&k, "1 to 100 expected"));
                }
                p.quality = q;
            }
            "accept" => accept = Some(media::parse_accept(&v)),
            // Known PS3.18 parameters this server does not apply.
            "annotation" | "charset" | "iccprofile" => {}
            other => return Err(bad(other, "not a parameter of rendered resources")),
        }
    }
    let ranges = accept.unwrap_or_else(|| media::accept_ranges(headers));
    p.format = negotiate(&ranges, allow_gif)?;
    Ok(p)
}

/// The first acceptable consumer format in the client's order; JPEG for
/// `*/*` and `image/*` (PS3.18 §8.7.4: image/jpeg is the default).
fn negotiate(ranges: &[MediaRange], allow_gif: bool) -> Result<Format, ApiError> {
    if ranges.is_empty() {
        return Ok(Format::Jpeg);
    }
    for r in ranges {
        match r.essence.as_str() {
            "*/*" | "image/*" => return Ok(Format::Jpeg),
            m => {
                if let Some(f) = Format::from_media_type(m) {
                    if f != Format::Gif || allow_gif {
                        return Ok(f);
                    }
                }
            }
        }
    }
    Err(ApiError::NotAcceptable(
        "rendered images are available as image/jpeg, image/png or (for several frames) image/gif"
            .into(),
    ))
}

fn image_response(bytes: Vec<u8>, format: Format) -> Response {
    (
        [
            (header::CONTENT_TYPE, format.media_type()),
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        bytes,
    )
        .into_response()
}

async fn open(st: &AppState, scope: &Scope) -> Result<Source, ApiError> {
    Source::open(st.index.as_ref(), &st.store, scope)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such instance".into()))
}

/// Renders frames (0-based) of one instance into one image or a GIF.
async fn render_frames(
    st: &AppState,
    src: &Source,
    frames: &[u32],
    params: RenderParams,
) -> Result<Response, ApiError> {
    // An animated GIF holds every rendered frame until encoded: bound it.
    let area = params.viewport.map_or(
        u64::from(src.info.rows) * u64::from(src.info.columns),
        |v| u64::from(v.width) * u64::from(v.height),
    );
    if frames.len() as u64 * area > MAX_GIF_PIXELS {
        return Err(ApiError::BadRequest(format!(
            "{} frames of {area} pixels exceed what one animated GIF may hold ({} Mpixels): \
             ask for fewer frames or a smaller viewport",
            frames.len(),
            MAX_GIF_PIXELS / 1_000_000
        )));
    }
    let mut images = Vec::with_capacity(frames.len());
    for n in frames {
        images.push(src.render(&st.store, &st.imaging, *n, params).await?);
    }
    let (format, quality) = (params.format, params.quality);
    let bytes = st
        .imaging
        .run(move || render::encode(&images, format, quality))
        .await?;
    Ok(image_response(bytes, format))
}

pub(crate) async fn instance(
    State(st): State<AppState>,
    Path((study, series, instance)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let scope = scope(&study, Some(&series), Some(&instance))?;
    let params = parse_params(q.as_deref(), &headers, true)?;
    let src = open(&st, &scope).await?;
    let frames: Vec<u32> = if params.format == Format::Gif {
        (0..src.frame_count().min(MAX_GIF_FRAMES as u32)).collect()
    } else {
        vec![0]
    };
    render_frames(&st, &src, &frames, params).await
}

pub(crate) async fn frames(
    State(st): State<AppState>,
    Path((study, series, instance, list)): Path<(String, String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let scope = scope(&study, Some(&series), Some(&instance))?;
    let numbers = st.limits.frame_list(&list)?;
    let params = parse_params(q.as_deref(), &headers, true)?;
    if numbers.len() > 1 && params.format != Format::Gif {
        return Err(ApiError::NotAcceptable(
            "several frames are rendered only as an animated image/gif; ask for one frame for image/jpeg or image/png".into(),
        ));
    }
    if numbers.len() > MAX_GIF_FRAMES {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_GIF_FRAMES} frames per rendered request"
        )));
    }
    let src = open(&st, &scope).await?;
    if let Some(n) = numbers.iter().find(|n| **n >= src.frame_count()) {
        return Err(ApiError::NotFound(format!(
            "frame {} does not exist (the instance has {})",
            n + 1,
            src.frame_count()
        )));
    }
    render_frames(&st, &src, &numbers, params).await
}

/// Study and series: each instance's first frame, one part each.
async fn many(
    st: AppState,
    scope: Scope,
    q: Option<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = parse_params(q.as_deref(), &headers, false)?;
    let instances = st.index.instances(&scope).await?;
    if instances.is_empty() {
        return Err(ApiError::NotFound(
            "no instances in this study or series".into(),
        ));
    }
    if instances.len() > MAX_RENDERED_INSTANCES {
        return Err(ApiError::BadRequest(format!(
            "{} instances: render at most {MAX_RENDERED_INSTANCES} at once; ask series by series",
            instances.len()
        )));
    }
    let boundary = new_boundary();
    let b = boundary.clone();
    let format = params.format;
    let parts = stream::iter(instances)
        .then(move |inst| {
            let st = st.clone();
            let b = b.clone();
            async move {
                let scope = Scope::of_instance(&inst)
                    .map_err(|e| ApiError::Internal(format!("bad UID in index: {e}")))?;
                let src = open(&st, &scope).await?;
                let img = src.render(&st.store, &st.imaging, 0, params).await?;
                let bytes = st
                    .imaging
                    .run(move || render::encode(&[img], format, params.quality))
                    .await?;
                let head = part_header(
                    &b,
                    &[
                        ("Content-Type", format.media_type().to_owned()),
                        ("Content-Length", bytes.len().to_string()),
                    ],
                );
                Ok::<_, ApiError>(stream::iter([Ok(head), Ok(bytes::Bytes::from(bytes))]))
            }
        })
        .map(|r| match r {
            Ok(s) => s.left_stream(),
            Err(e) => {
                // Headers are sent: the error ends the body, and is logged.
                tracing::warn!(error = %e, "rendered part failed");
                stream::iter([Err(std::io::Error::other(e.to_string()))]).right_stream()
            }
        })
        .flatten();
    Ok(multipart::response(parts, boundary, format.media_type()))
}

pub(crate) async fn study(
    State(st): State<AppState>,
    Path(study): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    many(st, scope(&study, None, None)?, q, headers).await
}

pub(crate) async fn series(
    State(st): State<AppState>,
    Path((study, series)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    many(st, scope(&study, Some(&series), None)?, q, headers).await
}

// ---------------------------------------------------------------- thumbnails

fn thumbnail_params(q: Option<&str>, headers: &HeaderMap) -> Result<RenderParams, ApiError> {
    let mut p = parse_params(q, headers, false)?;
    if q.is_none_or(|q| !q.contains("quality")) {
        p.quality = 80;
    }
    Ok(p)
}

async fn cached_thumbnail(
    st: AppState,
    scope: Scope,
    q: Option<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = thumbnail_params(q.as_deref(), &headers)?;
    let bytes = st.thumbnails().get(&scope, params).await?;
    Ok(image_response(bytes.to_vec(), params.format))
}

pub(crate) async fn study_thumbnail(
    State(st): State<AppState>,
    Path(study): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    cached_thumbnail(st, scope(&study, None, None)?, q, headers).await
}

pub(crate) async fn series_thumbnail(
    State(st): State<AppState>,
    Path((study, series)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    cached_thumbnail(st, scope(&study, Some(&series), None)?, q, headers).await
}

pub(crate) async fn instance_thumbnail(
    State(st): State<AppState>,
    Path((study, series, instance)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let scope = scope(&study, Some(&series), Some(&instance))?;
    let params = thumbnail_params(q.as_deref(), &headers)?;
    let size = params
        .viewport
        .map_or((DEFAULT_SIZE, DEFAULT_SIZE), |v| (v.width, v.height));
    let bytes = st
        .thumbnails()
        .render_instance(&scope, None, params, size)
        .await?;
    Ok(image_response(bytes.to_vec(), params.format))
}

pub(crate) async fn frame_thumbnail(
    State(st): State<AppState>,
    Path((study, series, instance, list)): Path<(String, String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let scope = scope(&study, Some(&series), Some(&instance))?;
    let numbers = st.limits.frame_list(&list)?;
    let params = thumbnail_params(q.as_deref(), &headers)?;
    let size = params
        .viewport
        .map_or((DEFAULT_SIZE, DEFAULT_SIZE), |v| (v.width, v.height));
    let bytes = st
        .thumbnails()
        .render_instance(&scope, numbers.first().copied(), params, size)
        .await?;
    Ok(image_response(bytes.to_vec(), params.format))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        let h = HeaderMap::new();
        let p = parse_params(Some("window=40,400&viewport=64,32&quality=50"), &h, false).unwrap();
        assert_eq!(p.window, Some((40.0, 400.0, VoiFunction::Linear)));
        assert_eq!(p.viewport.map(|v| (v.width, v.height)), Some((64, 32)));
        assert_eq!((p.quality, p.format), (50, Format::Jpeg));
        let p = parse_params(Some("accept=image/png"), &h, false).unwrap();
        assert_eq!(p.format, Format::Png);
        for bad in [
            "window=40",
            "window=a,b",
            "window=1,0",
            "viewport=0,10",
            "quality=0",
            "nope=1",
        ] {
            assert!(parse_params(Some(bad), &h, false).is_err(), "{bad}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, "application/dicom".parse().unwrap());
        assert!(matches!(
            parse_params(None, &h, false),
            Err(ApiError::NotAcceptable(_))
        ));
        h.insert(header::ACCEPT, "image/gif".parse().unwrap());
        assert_eq!(parse_params(None, &h, true).unwrap().format, Format::Gif);
    }
}
