//! `…/frames/{list}` (PS3.18 §10.4.1.1.4): frames as stored, by range
//! reads, or transcoded on the imaging pool.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{stream, StreamExt, TryStreamExt};

use super::super::media;
use super::super::multipart::{self, new_boundary, part_header};
use super::super::scope;
use super::{not_found, stored_key};
use crate::dicom::frames::FrameIndex;
use crate::dicom::transfer_syntax::{self, EXPLICIT_VR_LE};
use crate::error::ApiError;
use crate::imaging::codec;
use crate::imaging::source::Source;
use crate::index::{Scope, StoredInstance};
use crate::state::AppState;

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
pub(crate) async fn frames(
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
        FrameForm::AsStored => (stored_parts(&st, &inst, index, &numbers, media, b)?, media),
        FrameForm::Transcoded { media, ts: target } => (
            transcoded_parts(&st, &scope, inst, index, numbers, media, target, b).await?,
            media,
        ),
    };
    Ok(multipart::response(parts, boundary, outer_type))
}

/// The body of a frames answer: its parts, as they are made.
type Parts = futures::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>;

/// The listed frames as stored: byte ranges of the object (swapped to
/// little endian for big-endian native data).
fn stored_parts(
    st: &AppState,
    inst: &StoredInstance,
    index: Option<Vec<u8>>,
    numbers: &[u32],
    media: &'static str,
    b: String,
) -> Result<Parts, ApiError> {
    let ts = inst.transfer_syntax_uid.clone();
    let encoding = transfer_syntax::lookup(&ts).map(|t| t.encoding);
    let index = index.and_then(|b| FrameIndex::decode(&b)).ok_or_else(|| {
        ApiError::NotFound("this instance has no frames that can be served".into())
    })?;
    let mut plan = Vec::with_capacity(numbers.len());
    for n in numbers {
        let ranges = index.ranges(u64::from(*n)).ok_or_else(|| {
            ApiError::NotFound(format!(
                "frame {} does not exist (the instance has {})",
                n + 1,
                index.frames()
            ))
        })?;
        plan.push((*n, ranges));
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
    let key = stored_key(inst)?;
    let store = st.store.clone();
    let index = std::sync::Arc::new(index);
    let parts = stream::iter(plan)
        .then(move |(n, ranges)| {
            let index = index.clone();
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
                let mut frame = index.unswap_words(u64::from(n), frame);
                if swap > 1 {
                    frame.chunks_exact_mut(swap).for_each(|c| c.reverse());
                }
                Ok::<_, std::io::Error>(frame_part(&b, &part_type, frame))
            }
        })
        .try_flatten()
        .boxed();
    Ok(parts)
}

/// The listed frames decoded and encoded in `target`, on the imaging pool.
#[allow(clippy::too_many_arguments)]
async fn transcoded_parts(
    st: &AppState,
    scope: &Scope,
    inst: StoredInstance,
    index: Option<Vec<u8>>,
    numbers: Vec<u32>,
    media: &'static str,
    target: &'static str,
    b: String,
) -> Result<Parts, ApiError> {
    let st = st.clone();
    let src = std::sync::Arc::new(
        Source::with_row(st.index.as_ref(), &st.store, scope, inst, index).await?,
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
            let (st, src, b, part_type) = (st.clone(), src.clone(), b.clone(), part_type.clone());
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
    Ok(parts)
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
    use super::super::tests::inst;
    use super::super::{negotiate_instances, Delivery};
    use super::*;
    use axum::http::header;

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
