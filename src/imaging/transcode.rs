//! Whole instances into another transfer syntax (PS3.18 §8.7.3.5), as a
//! stream: the header (everything before Pixel Data) is read by one range
//! read and re-encoded as Explicit VR Little Endian; the frames follow one
//! by one, decoded and encoded on the imaging pool a few at a time. A
//! 2 GB multi-frame object never sits whole in memory.
//!
//! What changes besides Pixel Data (PS3.5 §8, PS3.3 C.7.6.3): the meta
//! group's Transfer Syntax UID, Photometric Interpretation when decoding
//! converted the colour space (YBR JPEG and JPEG 2000 colour transforms
//! decode to RGB), Planar Configuration (0: colour-by-pixel), the Extended
//! Offset Table (dropped), and Lossy Image Compression "01" when the target
//! is lossy. Elements after Pixel Data (rare: padding, signatures) are not
//! carried over; re-encoding invalidates digital signatures anyway.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use super::codec;
use super::pixel::PixelInfo;
use super::source::Source;
use super::{Imaging, ImagingError};
use crate::dicom::scan::{scan_bytes, scan_dataset, Element, ScanLimits, Scanned, Value};
use crate::dicom::transfer_syntax::{self, EXPLICIT_VR_LE};
use crate::dicom::write::{file_meta_prefix, long_form};
use crate::store::Store;

/// Whether an instance stored in `from` can be sent in `to` (Implicit VR
/// Little Endian too, for DICOM peers; DICOMweb never asks for it).
pub(crate) fn can_transcode(from: &str, to: &str) -> bool {
    from != transfer_syntax::EXPLICIT_VR_BE
        && codec::can_decode(from)
        && (codec::can_encode(to) || to == transfer_syntax::IMPLICIT_VR_LE)
}

const PIXEL_DATA: u32 = 0x7FE0_0010;

/// An element header, Little Endian; without its VR (and with a 4-byte
/// length) for Implicit VR (PS3.5 §7.1.3).
fn header(out: &mut Vec<u8>, tag: u32, vr: &[u8; 2], len: u32, explicit: bool) {
    out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&(tag as u16).to_le_bytes());
    if !explicit {
        out.extend_from_slice(&len.to_le_bytes());
        return;
    }
    out.extend_from_slice(vr);
    if long_form(vr) {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&len.to_le_bytes());
    } else {
        out.extend_from_slice(&(len as u16).to_le_bytes());
    }
}

fn tag_of(e: &Element) -> u32 {
    (u32::from(e.tag.group()) << 16) | u32::from(e.tag.element())
}

/// Re-encodes elements as Explicit (or, `explicit` false, Implicit) VR
/// Little Endian. `src` holds the bytes the scanner's offsets point into;
/// `signed` resolves implicit US/SS.
fn encode_elements(
    elements: &[Element],
    src: &[u8],
    (signed, explicit): (bool, bool),
    out: &mut Vec<u8>,
) -> Result<(), ImagingError> {
    for e in elements {
        let tag = tag_of(e);
        // Group lengths are recomputed by nobody: drop them (PS3.5 §7.2).
        if tag & 0xFFFF == 0 {
            continue;
        }
        match &e.value {
            Value::Sequence { items, .. } => {
                header(out, tag, b"SQ", u32::MAX, explicit);
                for item in items {
                    out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
                    encode_elements(item, src, (signed, explicit), out)?;
                    out.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
                }
                out.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
            }
            Value::Encapsulated { .. } => {
                return Err(ImagingError::Unsupported(
                    "encapsulated data outside Pixel Data".into(),
                ))
            }
            value => {
                let bytes: &[u8] = match value {
                    Value::Inline(b) => b,
                    _ => src
                        .get(e.offset as usize..(e.offset + e.length) as usize)
                        .ok_or_else(|| {
                            ImagingError::Corrupt("element outside the header".into())
                        })?,
                };
                let vr_s = e.vr.to_string();
                let mut vr: [u8; 2] = vr_s
                    .as_bytes()
                    .get(..2)
                    .and_then(|v| v.try_into().ok())
                    .unwrap_or(*b"UN");
                if e.ambiguous_xs {
                    vr = if signed { *b"SS" } else { *b"US" };
                }
                if !long_form(&vr) && bytes.len() > 0xFFFF {
                    vr = *b"UN";
                }
                let pad = bytes.len() % 2;
                header(out, tag, &vr, (bytes.len() + pad) as u32, explicit);
                out.extend_from_slice(bytes);
                if pad == 1 {
                    out.push(if &vr == b"UI" || &vr == b"OB" || &vr == b"UN" {
                        0
                    } else {
                        b' '
                    });
                }
            }
        }
    }
    Ok(())
}

/// The start of the Pixel Data element in `prefix` (which ends inside or
/// right before it).
fn pixel_element_start(src: &Source, prefix_len: u64, prefix: &[u8]) -> Option<u64> {
    if codec::is_native(src.frame_syntax()) {
        let explicit =
            transfer_syntax::lookup(src.frame_syntax()).is_some_and(|t| t.encoding.explicit_vr);
        return prefix_len.checked_sub(if explicit { 12 } else { 8 });
    }
    // Encapsulated Pixel Data is Explicit VR LE with undefined length (its
    // VR is OB, though OW and UN are seen in the wild).
    prefix
        .windows(12)
        .rposition(|w| {
            w[..4] == [0xE0, 0x7F, 0x10, 0x00] && w[6..8] == [0, 0] && w[8..] == [0xFF; 4]
        })
        .map(|p| p as u64)
}

/// The meta group and the data set up to Pixel Data, re-encoded as
/// Explicit VR Little Endian (Implicit for that target) with the attributes
/// the new syntax changes.
/// CPU work (a header can hold tens of thousands of elements): run on the
/// imaging pool.
fn encoded_header(
    head: &[u8],
    dataset_only: bool,
    info: &PixelInfo,
    photometric: &str,
    (sop_class, sop): (&str, &str),
    target: &str,
) -> Result<Vec<u8>, ImagingError> {
    let limits = ScanLimits::default();
    let scanned: Scanned = if dataset_only {
        scan_dataset(head, EXPLICIT_VR_LE, &limits)
    } else {
        scan_bytes(head, &limits)
    }
    .map_err(|e| ImagingError::Corrupt(format!("the header does not scan: {e}")))?;
    let lossy = codec::is_lossy(target);
    let explicit = target != transfer_syntax::IMPLICIT_VR_LE;
    let mut top: Vec<(u32, Vec<u8>)> = Vec::new();
    for e in &scanned.dataset {
        let tag = tag_of(e);
        if matches!(
            tag,
            0x0028_0004 | 0x0028_0006 | 0x7FE0_0001 | 0x7FE0_0002 | PIXEL_DATA
        ) || (lossy && tag == 0x0028_2110)
        {
            continue;
        }
        let mut b = Vec::new();
        encode_elements(
            std::slice::from_ref(e),
            head,
            (info.signed, explicit),
            &mut b,
        )?;
        top.push((tag, b));
    }
    let mut el = |tag: u32, vr: &[u8; 2], value: &[u8]| {
        let mut b = Vec::new();
        let pad = value.len() % 2;
        header(&mut b, tag, vr, (value.len() + pad) as u32, explicit);
        b.extend_from_slice(value);
        if pad == 1 {
            b.push(b' ');
        }
        top.push((tag, b));
    };
    el(
        0x0028_0004,
        b"CS",
        codec::encoded_photometric(target, info.samples, photometric).as_bytes(),
    );
    if info.samples > 1 {
        el(0x0028_0006, b"US", &0u16.to_le_bytes());
    }
    if lossy {
        el(0x0028_2110, b"CS", b"01");
    }
    top.sort_by_key(|(t, _)| *t);

    let mut out = file_meta_prefix(sop_class, sop, target);
    for (_, b) in top {
        out.extend_from_slice(&b);
    }
    Ok(out)
}

/// The Pixel Data element's header: a defined length of `total` bytes
/// (padded to even) for native data, undefined with an empty Basic Offset
/// Table for encapsulated data.
fn pixel_data_header(
    out: &mut Vec<u8>,
    info: &PixelInfo,
    total: u64,
    (native, explicit): (bool, bool),
) -> Result<(), ImagingError> {
    if native {
        if total + 1 > u64::from(u32::MAX) {
            return Err(ImagingError::Unsupported(
                "the decoded pixel data exceeds 4 GiB".into(),
            ));
        }
        let vr = if info.bits_allocated > 8 {
            b"OW"
        } else {
            b"OB"
        };
        header(out, PIXEL_DATA, vr, (total + total % 2) as u32, explicit);
    } else {
        header(out, PIXEL_DATA, b"OB", u32::MAX, true);
        out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
    }
    Ok(())
}

/// One encapsulated frame: an Item of even length (PS3.5 A.4).
fn fragment(bytes: &[u8]) -> Vec<u8> {
    let pad = bytes.len() % 2;
    let mut part = Vec::with_capacity(bytes.len() + 8 + pad);
    part.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
    part.extend_from_slice(&((bytes.len() + pad) as u32).to_le_bytes());
    part.extend_from_slice(bytes);
    part.resize(part.len() + pad, 0);
    part
}

/// The stored object up to its Pixel Data element (and whether it is a
/// bare data set: the inflated data set of a deflated object).
async fn stored_header(store: &Store, src: &Source) -> Result<(Vec<u8>, bool), ImagingError> {
    let first = src.first_frame_offset();
    let (prefix, dataset_only) = src.header_bytes(store, first).await?;
    let start = pixel_element_start(src, first, &prefix).ok_or_else(|| {
        ImagingError::Corrupt("Pixel Data not found before the first frame".into())
    })?;
    let head = prefix
        .get(..start as usize)
        .ok_or_else(|| ImagingError::Corrupt("Pixel Data outside the header".into()))?
        .to_vec();
    Ok((head, dataset_only))
}

/// A transcoded instance: its Part 10 bytes as a stream.
pub async fn instance(
    store: &Store,
    imaging: &Imaging,
    src: Source,
    target: &'static str,
) -> Result<BoxStream<'static, Result<Bytes, std::io::Error>>, ImagingError> {
    if !can_transcode(&src.inst.transfer_syntax_uid, target) {
        return Err(ImagingError::Unsupported(format!(
            "an instance stored in {} cannot be sent in {target}",
            src.inst.transfer_syntax_uid
        )));
    }
    codec::check_encodable(&src.info, target)?;
    let (head, dataset_only) = stored_header(store, &src).await?;
    let src = Arc::new(src);
    let frame0 = src.decode(store, imaging, 0).await?;
    let info = src.info.clone();
    let mut out = {
        let (info, photometric) = (info.clone(), frame0.photometric.clone());
        let ids = (src.inst.sop_class_uid.clone(), src.inst.sop_uid.clone());
        imaging
            .run(move || {
                encoded_header(
                    &head,
                    dataset_only,
                    &info,
                    &photometric,
                    (&ids.0, &ids.1),
                    target,
                )
            })
            .await?
    };
    // Frame 1 is decoded and encoded before the answer starts: data that
    // fails there is an error status, not a 200 cut short. A later frame
    // that fails ends the stream without its closing delimiter (the
    // connection closes), which clients tell from a complete answer.
    let encoded0 = {
        let info = info.clone();
        imaging
            .run(move || codec::encode(&info, &frame0, target, 90))
            .await?
    };
    let frames = src.frame_count();
    let native = codec::is_native(target);
    let frame_len = info.decoded_frame_len();
    let total = frame_len * u64::from(frames);
    let explicit = target != transfer_syntax::IMPLICIT_VR_LE;
    pixel_data_header(&mut out, &info, total, (native, explicit))?;
    let store = store.clone();
    let width = imaging.threads().max(1);
    let imaging = imaging.clone();
    let frame0 = Arc::new(std::sync::Mutex::new(Some(encoded0)));
    let body = stream::iter(0..frames)
        .map(move |n| {
            let (store, imaging, src, info, frame0) = (
                store.clone(),
                imaging.clone(),
                src.clone(),
                info.clone(),
                frame0.clone(),
            );
            async move {
                let cached: Option<Vec<u8>> = if n == 0 {
                    frame0.lock().ok().and_then(|mut f| f.take())
                } else {
                    None
                };
                let bytes = match cached {
                    Some(b) => b,
                    None => {
                        let frame = src.decode(&store, &imaging, n).await?;
                        imaging
                            .run(move || codec::encode(&info, &frame, target, 90))
                            .await?
                    }
                };
                Ok::<_, ImagingError>(Bytes::from(if native { bytes } else { fragment(&bytes) }))
            }
        })
        .buffered(width)
        .map_err(|e| {
            tracing::warn!(error = %e, "transcoding stopped");
            std::io::Error::other(e.to_string())
        });
    let tail = if native {
        Bytes::from(vec![0u8; (total % 2) as usize])
    } else {
        Bytes::from_static(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0])
    };
    Ok(stream::once(async move { Ok(Bytes::from(out)) })
        .chain(body)
        .chain(stream::once(async move { Ok(tail) }))
        .boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::write::ElementWriter;

    #[test]
    fn implicit_elements_become_explicit() {
        let mut w = ElementWriter::implicit();
        w.str(0x0008, 0x0060, b"CS", "CT").us(0x0028, 0x0010, 4);
        let ds = w.into_bytes();
        let scanned =
            scan_dataset(&ds, transfer_syntax::IMPLICIT_VR_LE, &ScanLimits::default()).unwrap();
        let mut out = Vec::new();
        encode_elements(&scanned.dataset, &ds, (false, true), &mut out).unwrap();
        let again = scan_dataset(&out, EXPLICIT_VR_LE, &ScanLimits::default()).unwrap();
        assert_eq!(
            again
                .text(crate::dicom::tags::MODALITY)
                .as_deref()
                .map(str::trim),
            Some("CT")
        );
        assert_eq!(again.uint(crate::dicom::tags::ROWS), Some(4));
    }
}
