//! One frame, compressed or native, to native samples and back.
//!
//! Decoded frames are little endian and colour-by-pixel, in containers of
//! Bits Allocated, ready to be served as Explicit VR Little Endian or to be
//! rendered. Each decoder's header is checked against the Image Pixel
//! module before it may allocate: a codec never sizes its output from an
//! unchecked header.

use super::frame::ybr_to_rgb;
use super::frame::Frame;
use super::pixel::PixelInfo;
use super::{j2k, jpeg_lossless, rle, ImagingError};
use crate::dicom::transfer_syntax as ts;

pub const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
pub(crate) const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";
pub(crate) const JPEG_LOSSLESS: &str = "1.2.840.10008.1.2.4.57";
pub const JPEG_LOSSLESS_SV1: &str = "1.2.840.10008.1.2.4.70";
pub const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
pub const JPEG_LS_NEAR: &str = "1.2.840.10008.1.2.4.81";
pub const JPEG_2000_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";
/// JPEG 2000 (lossless or lossy; Phim encodes it lossy, on request only).
pub const JPEG_2000: &str = "1.2.840.10008.1.2.4.91";
/// NEAR of JPEG-LS near-lossless encoding (on request only): every sample
/// within ±2 of the original (ISO 14495-1; PS3.5 §8.2.3).
pub(crate) const JPEG_LS_NEAR_BOUND: i32 = 2;
pub const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// The transfer syntaxes whose frames this module decodes.
pub(crate) fn can_decode(uid: &str) -> bool {
    is_native(uid)
        || matches!(
            uid,
            JPEG_BASELINE
                | JPEG_EXTENDED
                | JPEG_LOSSLESS
                | JPEG_LOSSLESS_SV1
                | JPEG_LS_LOSSLESS
                | JPEG_LS_NEAR
                | RLE_LOSSLESS
        )
        || is_j2k(uid)
}

pub(crate) fn is_native(uid: &str) -> bool {
    matches!(
        uid,
        ts::IMPLICIT_VR_LE | ts::EXPLICIT_VR_LE | ts::EXPLICIT_VR_BE | ts::DEFLATED_EXPLICIT_VR_LE
    )
}

pub(crate) fn is_j2k(uid: &str) -> bool {
    matches!(
        uid,
        "1.2.840.10008.1.2.4.90"
            | JPEG_2000
            | "1.2.840.10008.1.2.4.92"
            | "1.2.840.10008.1.2.4.93"
            | "1.2.840.10008.1.2.4.201"
            | "1.2.840.10008.1.2.4.202"
            | "1.2.840.10008.1.2.4.203"
    )
}

/// Whether a transfer syntax loses information (PS3.5 Table A-1 and
/// §8.2): targets that would are only chosen when asked for.
pub(crate) fn is_lossy(uid: &str) -> bool {
    matches!(
        uid,
        JPEG_BASELINE
            | JPEG_EXTENDED
            | JPEG_LS_NEAR
            | JPEG_2000
            | "1.2.840.10008.1.2.4.93"
            | "1.2.840.10008.1.2.4.203"
    )
}

/// Decodes frame bytes stored in transfer syntax `uid`. `data` of native
/// syntaxes is the frame's bytes as stored (big endian swapped here).
pub fn decode(info: &PixelInfo, uid: &str, data: &[u8]) -> Result<Frame, ImagingError> {
    let frame = |data: Vec<u8>, photometric: &str| Frame {
        photometric: photometric.to_owned(),
        ..Frame::of(info, data)
    };
    let bps = info.bytes_per_sample();
    let samples = usize::from(info.samples);
    if is_native(uid) {
        let need = info.native_frame_len() as usize;
        let bytes = data.get(..need).ok_or_else(|| {
            ImagingError::Corrupt(format!(
                "a frame needs {need} bytes, {} are stored",
                data.len()
            ))
        })?;
        let mut bytes = bytes.to_vec();
        if uid == ts::EXPLICIT_VR_BE && bps > 1 {
            bytes.chunks_exact_mut(bps).for_each(|c| c.reverse());
        }
        if info.photometric == "YBR_FULL_422" && samples == 3 {
            return Ok(frame(ybr422_to_rgb(info, &bytes)?, "RGB"));
        }
        if info.planar && samples == 3 {
            bytes = interleave(&bytes, info.pixels(), bps);
        }
        return Ok(frame(bytes, &info.photometric));
    }
    match uid {
        RLE_LOSSLESS => {
            let out = rle::decode(data, info.pixels(), samples, bps)?;
            Ok(frame(out, &info.photometric))
        }
        JPEG_BASELINE | JPEG_EXTENDED | JPEG_LOSSLESS | JPEG_LOSSLESS_SV1 => {
            let lossless = matches!(uid, JPEG_LOSSLESS | JPEG_LOSSLESS_SV1);
            let (out, photometric) = decode_jpeg(info, data, lossless)?;
            Ok(frame(out, &photometric))
        }
        JPEG_LS_LOSSLESS | JPEG_LS_NEAR => {
            Ok(frame(decode_jpeg_ls(info, data)?, &info.photometric))
        }
        u if is_j2k(u) => {
            let out = decode_j2k(info, data)?;
            let photometric = match info.photometric.as_str() {
                "YBR_ICT" | "YBR_RCT" => "RGB",
                p => p,
            };
            Ok(frame(out, photometric))
        }
        other => Err(ImagingError::Unsupported(format!(
            "frames in transfer syntax {other} are not decoded"
        ))),
    }
}

/// Samples in a container of `bits_allocated`, little endian.
fn put(out: &mut Vec<u8>, v: i64, bps: usize) {
    out.extend_from_slice(&v.to_le_bytes()[..bps]);
}

fn interleave(planes: &[u8], pixels: usize, bps: usize) -> Vec<u8> {
    let mut out = vec![0u8; planes.len()];
    for s in 0..3 {
        for p in 0..pixels {
            let src = (s * pixels + p) * bps;
            let dst = (p * 3 + s) * bps;
            out[dst..dst + bps].copy_from_slice(&planes[src..src + bps]);
        }
    }
    out
}

/// Native YBR_FULL_422 (8-bit): Y1 Y2 Cb Cr per pair of pixels.
fn ybr422_to_rgb(info: &PixelInfo, data: &[u8]) -> Result<Vec<u8>, ImagingError> {
    if info.bits_allocated != 8 || info.columns % 2 != 0 {
        return Err(ImagingError::Unsupported(
            "YBR_FULL_422 other than 8-bit with an even number of columns".into(),
        ));
    }
    let mut out = Vec::with_capacity(info.pixels() * 3);
    for q in data.chunks_exact(4).take(info.pixels() / 2) {
        for y in [q[0], q[1]] {
            out.extend_from_slice(&ybr_to_rgb(y, q[2], q[3]));
        }
    }
    Ok(out)
}

fn check_size(info: &PixelInfo, width: u32, height: u32, comps: u32) -> Result<(), ImagingError> {
    if width != info.columns || height != info.rows || comps != u32::from(info.samples) {
        return Err(ImagingError::Corrupt(format!(
            "the codestream is {width}×{height}×{comps}, the data set says {}×{}×{}",
            info.columns, info.rows, info.samples
        )));
    }
    Ok(())
}

fn decode_jpeg(
    info: &PixelInfo,
    data: &[u8],
    lossless: bool,
) -> Result<(Vec<u8>, String), ImagingError> {
    use jpeg_decoder::{ColorTransform, Decoder, PixelFormat, UnsupportedFeature};
    let corrupt = |e: jpeg_decoder::Error| match e {
        jpeg_decoder::Error::Unsupported(f) => {
            ImagingError::Unsupported(format!("JPEG feature not supported: {f:?}"))
        }
        other => ImagingError::Corrupt(format!("JPEG: {other}")),
    };
    let mut dec = Decoder::new(data);
    dec.set_max_decoding_buffer_size(info.decoded_frame_len() as usize * 2 + 4096);
    // Lossy colour JPEG: the JFIF/Adobe markers say whether the components
    // are YCbCr (the decoder converts to RGB) or RGB, as libjpeg decides
    // (files labelled RGB often hold YCbCr). Lossless JPEG is never colour
    // transformed: the data set's Photometric Interpretation holds.
    let photometric = if info.samples == 3 && !lossless {
        "RGB".to_owned()
    } else {
        info.photometric.clone()
    };
    if lossless || (info.samples == 3 && info.photometric == "RGB" && !jpeg_colour_markers(data)) {
        // Without JFIF/Adobe markers libjpeg would assume YCbCr; the data
        // set saying RGB is the better witness (pydicom decides the same).
        dec.set_color_transform(if info.samples == 3 {
            ColorTransform::None
        } else {
            ColorTransform::Grayscale
        });
    }
    if let Err(e) = dec.read_info() {
        // 12-bit DCT JPEG (Extended, SOF1; progressive too), which
        // jpeg-decoder refuses on reading its frame header: libjpeg-turbo.
        return match e {
            jpeg_decoder::Error::Unsupported(UnsupportedFeature::SamplePrecision(p))
                if !lossless && (9..=12).contains(&p) =>
            {
                decode_jpeg_12(info, data)
            }
            e => Err(corrupt(e)),
        };
    }
    let meta = dec
        .info()
        .ok_or_else(|| ImagingError::Corrupt("JPEG without a frame header".into()))?;
    let comps = match meta.pixel_format {
        PixelFormat::L8 | PixelFormat::L16 => 1,
        PixelFormat::RGB24 => 3,
        PixelFormat::CMYK32 => 4,
    };
    check_size(info, u32::from(meta.width), u32::from(meta.height), comps)?;
    let pixels = dec.decode().map_err(corrupt)?;
    let bps = info.bytes_per_sample();
    let count = info.pixels() * comps as usize;
    let mut out = Vec::with_capacity(info.decoded_frame_len() as usize);
    // Samples of more or fewer than 8 bits come as native-endian u16 (for
    // lossless JPEG of any precision but 8, colour too, whatever the
    // reported pixel format says).
    if pixels.len() == count * 2 {
        for c in pixels.chunks_exact(2) {
            let v = u16::from_ne_bytes([c[0], c[1]]);
            if bps == 1 && v > 0xFF {
                return Err(ImagingError::Corrupt(
                    "JPEG samples wider than the 8 bits allocated".into(),
                ));
            }
            put(&mut out, i64::from(v), bps);
        }
    } else if bps == 1 {
        out = pixels;
    } else {
        for v in pixels {
            put(&mut out, i64::from(v), bps);
        }
    }
    if out.len() < info.decoded_frame_len() as usize {
        return Err(ImagingError::Corrupt("JPEG decoded short".into()));
    }
    // Lossless JPEG codes Bits Stored-bit patterns: signed values are
    // sign-extended into their container (as pydicom and GDCM do).
    if lossless && info.signed {
        sign_extend(&mut out, bps, info.bits_stored);
    }
    Ok((out, photometric))
}

/// 12-bit DCT JPEG through libjpeg-turbo (`turbo`), which checks the
/// stream's header against the data set before it allocates. Samples go
/// into containers of Bits Allocated (16 or 32), little endian; colour
/// comes out as RGB, as with 8-bit JPEG.
fn decode_jpeg_12(info: &PixelInfo, data: &[u8]) -> Result<(Vec<u8>, String), ImagingError> {
    let bps = info.bytes_per_sample();
    if bps < 2 {
        return Err(ImagingError::Corrupt(format!(
            "12-bit JPEG samples in a Bits Allocated of {}",
            info.bits_allocated
        )));
    }
    if info.samples == 3 && info.photometric == "RGB" && !jpeg_colour_markers(data) {
        // Without JFIF/Adobe markers the data set's RGB is the better
        // witness (see decode_jpeg), but libjpeg-turbo decides the colour
        // space itself (YCbCr unless the components are named R, G, B)
        // and cannot be told otherwise: refuse rather than convert.
        if super::turbo::header(data)?.colour == super::turbo::Colour::YCbCr {
            return Err(ImagingError::Unsupported(
                "12-bit colour JPEG labelled RGB without JFIF/Adobe markers".into(),
            ));
        }
    }
    let decoded = super::turbo::decode_12(data, info.rows, info.columns, info.samples)?;
    let mut out = Vec::with_capacity(info.decoded_frame_len() as usize);
    for v in decoded.samples {
        let v = u16::try_from(v)
            .map_err(|_| ImagingError::Corrupt("a negative 12-bit JPEG sample".into()))?;
        put(&mut out, i64::from(v), bps);
    }
    let photometric = if info.samples == 3 {
        "RGB".to_owned()
    } else {
        info.photometric.clone()
    };
    Ok((out, photometric))
}

/// Whether a JPEG stream has a JFIF (APP0) or Adobe (APP14) segment
/// before its first scan: the markers that say what the components are.
fn jpeg_colour_markers(data: &[u8]) -> bool {
    let mut i = 2; // after SOI
    while i + 4 <= data.len() {
        if data[i] != 0xFF {
            return false;
        }
        let marker = data[i + 1];
        if marker == 0xDA {
            return false;
        }
        let len = usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]]));
        let body = data
            .get(i + 4..(i + 2 + len).min(data.len()))
            .unwrap_or_default();
        // An Adobe segment counts when whole (12 bytes up to its transform
        // flag); a truncated one says nothing.
        if (marker == 0xE0 && body.starts_with(b"JFIF"))
            || (marker == 0xEE && body.starts_with(b"Adobe") && body.len() >= 12)
        {
            return true;
        }
        i += 2 + len.max(2);
    }
    false
}

/// The interleave mode of a JPEG-LS stream, from its first SOS (ISO
/// 14495-1 C.2.3): a scan of one component means colour-by-plane output.
fn jls_planar(data: &[u8]) -> bool {
    let mut i = 0;
    while i + 4 < data.len() {
        if data[i] == 0xFF && data[i + 1] == 0xDA {
            return data.get(i + 4) == Some(&1);
        }
        i += 1;
    }
    false
}

fn decode_jpeg_ls(info: &PixelInfo, data: &[u8]) -> Result<Vec<u8>, ImagingError> {
    // CharLS spends seconds on a truncated stream (measured: ~5 s for a
    // 32×32 frame cut short): a stream must end with EOI (ISO 14495-1 C.1.1;
    // a DICOM fragment may add one padding byte).
    let end = data.iter().rposition(|b| *b != 0).unwrap_or(0);
    if end < 1 || data[end - 1] != 0xFF || data[end] != 0xD9 {
        return Err(ImagingError::Corrupt(
            "JPEG-LS stream without its end marker (truncated)".into(),
        ));
    }
    let mut codec = charls::CharLS::default();
    let corrupt = |e: charls::Error| ImagingError::Corrupt(format!("JPEG-LS: {e}"));
    let fi = codec.get_frame_info(data).map_err(corrupt)?;
    check_size(info, fi.width, fi.height, fi.component_count.max(0) as u32)?;
    if fi.bits_per_sample < 2 || fi.bits_per_sample > 16 {
        return Err(ImagingError::Corrupt(format!(
            "JPEG-LS with {} bits per sample",
            fi.bits_per_sample
        )));
    }
    // A CharLS decoder reads one header: a fresh one decodes.
    let out = charls::CharLS::default().decode(data).map_err(corrupt)?;
    let src_bps = if fi.bits_per_sample > 8 { 2 } else { 1 };
    let bps = info.bytes_per_sample();
    let samples = usize::from(info.samples);
    let mut out = if src_bps == bps {
        out
    } else {
        let mut v = Vec::with_capacity(out.len() / src_bps * bps);
        for c in out.chunks_exact(src_bps) {
            let s = if src_bps == 2 {
                i64::from(u16::from_le_bytes([c[0], c[1]]))
            } else {
                i64::from(c[0])
            };
            put(&mut v, s, bps);
        }
        v
    };
    if samples == 3 && jls_planar(data) {
        out = interleave(&out, info.pixels(), bps);
    }
    if info.signed {
        sign_extend(&mut out, bps, info.bits_stored);
    }
    if out.len() < info.decoded_frame_len() as usize {
        return Err(ImagingError::Corrupt("JPEG-LS decoded short".into()));
    }
    Ok(out)
}

fn decode_j2k(info: &PixelInfo, data: &[u8]) -> Result<Vec<u8>, ImagingError> {
    let corrupt = |e: jpeg2k::error::Error| ImagingError::Corrupt(format!("JPEG 2000: {e}"));
    {
        let head = jpeg2k::DumpImage::from_bytes(data).map_err(corrupt)?;
        let img = &head.img;
        check_size(info, img.width(), img.height(), img.num_components())?;
    }
    let img = jpeg2k::Image::from_bytes(data).map_err(corrupt)?;
    let comps = img.components();
    check_size(info, img.width(), img.height(), comps.len() as u32)?;
    let pixels = info.pixels();
    if comps.iter().any(|c| c.data().len() < pixels) {
        return Err(ImagingError::Unsupported(
            "JPEG 2000 with subsampled components".into(),
        ));
    }
    let bps = info.bytes_per_sample();
    let mut out = Vec::with_capacity(info.decoded_frame_len() as usize);
    // A codestream that says unsigned where Pixel Representation says
    // signed (seen in the wild): the data set wins, values are read as
    // two's complement of Bits Stored and sign-extended (as GDCM and
    // pydicom do).
    let bits = u32::from(info.bits_stored).clamp(1, 32);
    let fix = |c: &jpeg2k::ImageComponent, v: i32| -> i64 {
        let v = i64::from(v);
        if info.signed && !c.is_signed() && bits < 32 && v >= 1 << (bits - 1) {
            v - (1 << bits)
        } else {
            v
        }
    };
    for p in 0..pixels {
        for c in comps {
            put(&mut out, fix(c, c.data()[p]), bps);
        }
    }
    Ok(out)
}

/// Encodes a decoded frame into `uid`. Lossless targets only take data
/// they keep exactly; JPEG baseline only takes 8-bit data (dicom-pixeldata
/// silently narrowed 16-bit images: not here).
pub fn encode(
    info: &PixelInfo,
    frame: &Frame,
    uid: &str,
    quality: u8,
) -> Result<Vec<u8>, ImagingError> {
    let bps = usize::from(frame.bits_allocated / 8);
    let samples = usize::from(frame.samples);
    match uid {
        u if is_native(u) && u != ts::EXPLICIT_VR_BE && u != ts::DEFLATED_EXPLICIT_VR_LE => {
            Ok(frame.data.clone())
        }
        RLE_LOSSLESS => rle::encode(
            &frame.data,
            frame.rows as usize,
            frame.columns as usize,
            samples,
            bps,
        ),
        JPEG_LS_LOSSLESS | JPEG_LS_NEAR => {
            check_encodable(info, uid)?;
            let mut codec = charls::CharLS::default();
            if bps > 2 {
                return Err(ImagingError::Unsupported("JPEG-LS of 32-bit data".into()));
            }
            let data: Vec<u8> = if bps == 2 {
                stored_bits(info, frame)
                    .into_iter()
                    .flat_map(u16::to_le_bytes)
                    .collect()
            } else {
                stored_bits(info, frame)
                    .into_iter()
                    .map(|v| v as u8)
                    .collect()
            };
            if samples == 3 {
                codec
                    .set_interleave_mode(charls::InterleaveMode::Sample)
                    .map_err(|e| ImagingError::Unsupported(format!("JPEG-LS: {e}")))?;
            }
            codec
                .encode(
                    charls::FrameInfo {
                        width: frame.columns,
                        height: frame.rows,
                        bits_per_sample: i32::from(info.bits_stored),
                        component_count: samples as i32,
                    },
                    if uid == JPEG_LS_NEAR {
                        JPEG_LS_NEAR_BOUND
                    } else {
                        0
                    },
                    &data,
                )
                .map_err(|e| ImagingError::Unsupported(format!("JPEG-LS: {e}")))
        }
        JPEG_LOSSLESS_SV1 => {
            check_encodable(info, uid)?;
            jpeg_lossless::encode(
                &stored_bits(info, frame),
                frame.columns,
                frame.rows,
                samples,
                info.bits_stored as u8,
            )
        }
        JPEG_2000_LOSSLESS => j2k::encode(info, frame, false),
        JPEG_2000 => j2k::encode(info, frame, true),
        JPEG_BASELINE => {
            if info.signed {
                return Err(ImagingError::Unsupported(
                    "JPEG baseline of signed samples".into(),
                ));
            }
            if frame.bits_allocated != 8 || info.bits_stored > 8 {
                return Err(ImagingError::Unsupported(format!(
                    "JPEG baseline holds 8-bit samples; this image has {} bits stored",
                    info.bits_stored
                )));
            }
            let color = match (samples, frame.photometric.as_str()) {
                (1, _) => jpeg_encoder::ColorType::Luma,
                (3, "RGB") => jpeg_encoder::ColorType::Rgb,
                _ => {
                    return Err(ImagingError::Unsupported(format!(
                        "JPEG baseline of {} data",
                        frame.photometric
                    )))
                }
            };
            super::render::jpeg_baseline(&frame.data, frame.columns, frame.rows, color, quality)
        }
        other => Err(ImagingError::Unsupported(format!(
            "encoding into transfer syntax {other} is not supported"
        ))),
    }
}

/// The samples of a decoded frame as the unsigned Bits Stored-bit values
/// the lossless JPEG codecs code: signed values go as their bit patterns
/// (sign-extended again on decoding).
fn stored_bits(info: &PixelInfo, frame: &Frame) -> Vec<u16> {
    let mask = ((1u32 << info.bits_stored.min(16)) - 1) as u16;
    if frame.bits_allocated == 16 {
        frame
            .data
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) & mask)
            .collect()
    } else {
        frame.data.iter().map(|b| u16::from(*b) & mask).collect()
    }
}

/// Whether frames of an image can be encoded into `uid` (checked before a
/// response starts, so the client gets a 406 rather than a cut stream).
pub(crate) fn check_encodable(info: &PixelInfo, uid: &str) -> Result<(), ImagingError> {
    let refuse = |m: String| Err(ImagingError::Unsupported(m));
    match uid {
        u if is_native(u) && u != ts::EXPLICIT_VR_BE && u != ts::DEFLATED_EXPLICIT_VR_LE => Ok(()),
        RLE_LOSSLESS if usize::from(info.samples) * info.bytes_per_sample() <= 15 => Ok(()),
        JPEG_LS_LOSSLESS | JPEG_LS_NEAR
            if (2..=16).contains(&info.bits_stored) && info.bits_allocated <= 16 =>
        {
            // JPEG-LS codes signed samples as their Bits Stored-bit patterns
            // (PS3.5 §8.2.3), where the largest positive and the most negative
            // value are neighbours: an error of NEAR could turn -2048
            // padding into +2046 bone. Near-lossless takes unsigned data only.
            if uid == JPEG_LS_NEAR && info.signed {
                refuse(
                    "JPEG-LS near-lossless of signed samples (errors would wrap across the sign)"
                        .into(),
                )
            } else {
                Ok(())
            }
        }
        JPEG_LOSSLESS_SV1
            if (2..=16).contains(&info.bits_stored)
                && info.bits_allocated <= 16
                && matches!(info.samples, 1 | 3) =>
        {
            Ok(())
        }
        JPEG_2000_LOSSLESS | JPEG_2000 => j2k::check(info),
        // Signed samples would be coded as bit patterns in which +127 and
        // -128 are neighbours: a lossy error could swap them.
        JPEG_BASELINE if info.signed => refuse("JPEG baseline of signed samples".into()),
        JPEG_BASELINE if info.bits_allocated == 8 && info.bits_stored <= 8 => {
            if info.samples == 1 || info.photometric != "YBR_FULL" {
                Ok(())
            } else {
                refuse("JPEG baseline of YBR_FULL data".into())
            }
        }
        JPEG_BASELINE => refuse(format!(
            "JPEG baseline holds 8-bit samples; this image has {} bits stored (not narrowed)",
            info.bits_stored
        )),
        other => refuse(format!("frames of this image cannot be encoded in {other}")),
    }
}

/// Sign-extends samples of `bits` bits in little-endian containers of
/// `bps` bytes (codecs that return Bits Stored bit patterns).
fn sign_extend(data: &mut [u8], bps: usize, bits: u16) {
    let bits = u32::from(bits);
    if bits >= (bps * 8) as u32 || bits == 0 {
        return;
    }
    for c in data.chunks_exact_mut(bps) {
        let mut raw = [0u8; 8];
        raw[..bps].copy_from_slice(c);
        let v = u64::from_le_bytes(raw) & ((1u64 << bits) - 1);
        let v = if v >> (bits - 1) & 1 == 1 {
            v | !((1u64 << bits) - 1)
        } else {
            v
        };
        c.copy_from_slice(&v.to_le_bytes()[..bps]);
    }
}

/// The transfer syntaxes this module encodes into.
pub(crate) fn can_encode(uid: &str) -> bool {
    encode_target(uid).is_some()
}

/// The transfer syntaxes frames and instances are transcoded into, as
/// static UIDs. Implicit VR LE is not one of DICOMweb's (PS3.18 answers
/// Explicit VR LE); DICOM peers get it (`transcode::can_transcode`).
pub(crate) fn encode_target(uid: &str) -> Option<&'static str> {
    [
        ts::EXPLICIT_VR_LE,
        RLE_LOSSLESS,
        JPEG_LS_LOSSLESS,
        JPEG_LS_NEAR,
        JPEG_LOSSLESS_SV1,
        JPEG_BASELINE,
        JPEG_2000_LOSSLESS,
        JPEG_2000,
    ]
    .into_iter()
    .find(|t| *t == uid)
}

/// The Photometric Interpretation of a decoded frame of `photometric`
/// once encoded in `uid` (JPEG 2000 codes RGB with its reversible colour
/// transform: YBR_RCT, PS3.5 §8.2.4).
pub(crate) fn encoded_photometric<'a>(uid: &str, samples: u16, photometric: &'a str) -> &'a str {
    match uid {
        JPEG_2000_LOSSLESS => j2k::photometric(samples, photometric, false),
        JPEG_2000 => j2k::photometric(samples, photometric, true),
        _ => photometric,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(rows: u32, cols: u32, samples: u16, bits: u16) -> PixelInfo {
        PixelInfo {
            rows,
            columns: cols,
            samples,
            bits_allocated: bits,
            bits_stored: bits,
            signed: false,
            photometric: if samples == 3 { "RGB" } else { "MONOCHROME2" }.into(),
            planar: false,
            frames: 1,
        }
    }

    #[test]
    fn native_big_endian_and_planar() {
        let i = info(1, 2, 1, 16);
        let f = decode(&i, ts::EXPLICIT_VR_BE, &[0x01, 0x02, 0x03, 0x04]).unwrap();
        assert_eq!(f.data, vec![0x02, 0x01, 0x04, 0x03]);
        let mut i = info(1, 2, 3, 8);
        i.planar = true;
        let f = decode(&i, ts::EXPLICIT_VR_LE, &[1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(f.data, vec![1, 3, 5, 2, 4, 6]);
        assert!(decode(&i, ts::EXPLICIT_VR_LE, &[1, 2]).is_err());
    }

    #[test]
    fn jpeg_ls_and_rle_round_trip() {
        let i = info(16, 16, 1, 16);
        let data: Vec<u8> = (0..256u32)
            .flat_map(|v| ((v * 13) as u16 & 0x0fff).to_le_bytes())
            .collect();
        let mut i12 = i.clone();
        i12.bits_stored = 12;
        let f = Frame {
            rows: 16,
            columns: 16,
            samples: 1,
            bits_allocated: 16,
            photometric: "MONOCHROME2".into(),
            data: data.clone(),
        };
        for uid in [JPEG_LS_LOSSLESS, RLE_LOSSLESS] {
            let enc = encode(&i12, &f, uid, 90).unwrap();
            assert_eq!(decode(&i12, uid, &enc).unwrap().data, data, "{uid}");
        }
        assert!(encode(&i12, &f, JPEG_BASELINE, 90).is_err());
    }

    /// A smooth 12-bit grey frame (a lossy codec's ordinary input) with a
    /// little noise, and a colour one.
    fn smooth(rows: u32, cols: u32, samples: u16) -> (PixelInfo, Frame) {
        let mut i = info(rows, cols, samples, if samples == 3 { 8 } else { 16 });
        let noise = noise(5, (rows * cols * u32::from(samples)) as usize);
        let mut data = Vec::new();
        for (n, r) in noise.iter().enumerate() {
            let p = n / usize::from(samples);
            let (y, x) = ((p as u32 / cols) as f64, (p as u32 % cols) as f64);
            let v = 0.5 + 0.4 * (x / 9.0).sin() * (y / 13.0).cos() + (*r % 9) as f64 / 1000.0;
            if samples == 3 {
                data.push((v * 255.0) as u8);
            } else {
                data.extend_from_slice(&((v * 4095.0) as u16).to_le_bytes());
            }
        }
        if samples == 1 {
            i.bits_stored = 12;
        }
        let f = Frame::of(&i, data);
        (i, f)
    }

    #[test]
    fn lossy_targets_stay_within_their_bounds() {
        // JPEG-LS near-lossless: every sample within NEAR of the original.
        for samples in [1, 3] {
            let (i, f) = smooth(40, 56, samples);
            let enc = encode(&i, &f, JPEG_LS_NEAR, 90).unwrap();
            let dec = decode(&i, JPEG_LS_NEAR, &enc).unwrap();
            let bps = usize::from(f.bits_allocated / 8);
            let sample = |d: &[u8], k: usize| -> i32 {
                if bps == 2 {
                    i32::from(u16::from_le_bytes([d[2 * k], d[2 * k + 1]]))
                } else {
                    i32::from(d[k])
                }
            };
            let worst = (0..f.data.len() / bps)
                .map(|k| (sample(&f.data, k) - sample(&dec.data, k)).abs())
                .max()
                .unwrap();
            assert!(
                worst <= JPEG_LS_NEAR_BOUND,
                "samples={samples}: error {worst}"
            );
            assert!(worst > 0 || samples == 3, "near-lossless changed nothing");
        }
        // Signed samples are refused: an error across the sign boundary of
        // their bit patterns would be the whole range.
        let (mut signed, f) = smooth(8, 8, 1);
        signed.signed = true;
        assert!(encode(&signed, &f, JPEG_LS_NEAR, 90).is_err());
        assert!(encode(&signed, &f, JPEG_LS_LOSSLESS, 90).is_ok());
        let mut signed8 = info(8, 8, 1, 8);
        signed8.signed = true;
        let f8 = Frame::of(&signed8, vec![0x80; 64]);
        assert!(check_encodable(&signed8, JPEG_BASELINE).is_err());
        assert!(encode(&signed8, &f8, JPEG_BASELINE, 90).is_err());
        // Lossy JPEG 2000: about a tenth of the bits, close to the original.
        let (i, f) = smooth(128, 128, 1);
        let enc = encode(&i, &f, JPEG_2000, 90).unwrap();
        let lossless = encode(&i, &f, JPEG_2000_LOSSLESS, 90).unwrap();
        assert!(
            enc.len() * 2 < lossless.len(),
            "{} vs {}",
            enc.len(),
            lossless.len()
        );
        let dec = decode(&i, JPEG_2000, &enc).unwrap();
        let mse = f
            .data
            .chunks_exact(2)
            .zip(dec.data.chunks_exact(2))
            .map(|(a, b)| {
                let d = f64::from(u16::from_le_bytes([a[0], a[1]]))
                    - f64::from(u16::from_le_bytes([b[0], b[1]]));
                d * d
            })
            .sum::<f64>()
            / (128.0 * 128.0);
        let psnr = 10.0 * (4095.0f64 * 4095.0 / mse.max(1e-9)).log10();
        assert!(psnr > 40.0, "PSNR {psnr:.1} dB");
        // Colour goes through the irreversible colour transform.
        assert_eq!(encoded_photometric(JPEG_2000, 3, "RGB"), "YBR_ICT");
        assert_eq!(encoded_photometric(JPEG_2000_LOSSLESS, 3, "RGB"), "YBR_RCT");
    }

    #[test]
    fn jpeg_baseline_8_bit() {
        let i = info(8, 8, 1, 8);
        let f = Frame {
            rows: 8,
            columns: 8,
            samples: 1,
            bits_allocated: 8,
            photometric: "MONOCHROME2".into(),
            data: vec![100; 64],
        };
        let enc = encode(&i, &f, JPEG_BASELINE, 95).unwrap();
        let dec = decode(&i, JPEG_BASELINE, &enc).unwrap();
        assert!(dec.data.iter().all(|v| v.abs_diff(100) <= 2));
        // A header that disagrees with the data set is refused.
        let i2 = info(9, 8, 1, 8);
        assert!(matches!(
            decode(&i2, JPEG_BASELINE, &enc),
            Err(ImagingError::Corrupt(_))
        ));
        assert!(decode(&i, JPEG_BASELINE, &enc[..20]).is_err());
    }

    /// 12-bit DCT JPEG (SOF1), made by libjpeg-turbo's encoder, decoded
    /// through `decode` into 16-bit containers: grey and colour.
    #[test]
    fn jpeg_extended_12_bit() {
        let mut i = info(24, 40, 1, 16);
        i.bits_stored = 12;
        let src: Vec<i16> = (0..24 * 40).map(|p| ((p * 37) % 97 * 40) as i16).collect();
        let enc = super::super::turbo::encode_12(&src, 40, 24, 1, 100).unwrap();
        let f = decode(&i, JPEG_EXTENDED, &enc).unwrap();
        assert_eq!(
            (f.bits_allocated, f.photometric.as_str()),
            (16, "MONOCHROME2")
        );
        assert_eq!(f.data.len(), 24 * 40 * 2);
        let got: Vec<i32> = f
            .data
            .chunks_exact(2)
            .map(|c| i32::from(u16::from_le_bytes([c[0], c[1]])))
            .collect();
        let mean = src
            .iter()
            .zip(&got)
            .map(|(a, b)| (i32::from(*a) - b).abs())
            .sum::<i32>() as f64
            / got.len() as f64;
        assert!(mean < 40.0, "mean difference {mean}");
        assert!(got.iter().any(|v| *v > 255), "12-bit values kept");
        // Colour (YCbCr in the stream) comes out RGB.
        let mut c = info(8, 16, 3, 16);
        c.bits_stored = 12;
        c.photometric = "YBR_FULL".into();
        let rgb: Vec<i16> = (0..8 * 16).flat_map(|_| [4000i16, 2000, 100]).collect();
        let enc3 = super::super::turbo::encode_12(&rgb, 16, 8, 3, 100).unwrap();
        let f = decode(&c, JPEG_EXTENDED, &enc3).unwrap();
        assert_eq!(f.photometric, "RGB");
        for px in f.data.chunks_exact(6) {
            let v: Vec<i32> = px
                .chunks_exact(2)
                .map(|c| i32::from(u16::from_le_bytes([c[0], c[1]])))
                .collect();
            assert!(
                (v[0] - 4000).abs() < 24 && (v[1] - 2000).abs() < 24 && (v[2] - 100).abs() < 24,
                "{v:?}"
            );
        }
        // Labelled RGB with a JFIF marker: YCbCr, converted. Without the
        // marker, YCbCr as libjpeg guesses: ambiguous, refused rather
        // than guessed.
        c.photometric = "RGB".into();
        assert_eq!(decode(&c, JPEG_EXTENDED, &enc3).unwrap().data, f.data);
        assert_eq!(&enc3[2..4], &[0xFF, 0xE0]);
        let app0 = 2 + 2 + usize::from(u16::from_be_bytes([enc3[4], enc3[5]]));
        let bare = [&enc3[..2], &enc3[app0..]].concat();
        assert!(matches!(
            decode(&c, JPEG_EXTENDED, &bare),
            Err(ImagingError::Unsupported(_))
        ));
        c.photometric = "YBR_FULL".into();
        assert_eq!(decode(&c, JPEG_EXTENDED, &bare).unwrap().data, f.data);
        // 12-bit samples do not fit Bits Allocated 8; sizes must agree.
        let mut i8 = info(24, 40, 1, 8);
        i8.bits_stored = 8;
        assert!(decode(&i8, JPEG_EXTENDED, &enc).is_err());
        assert!(matches!(
            decode(&info(24, 41, 1, 16), JPEG_EXTENDED, &enc),
            Err(ImagingError::Corrupt(_))
        ));
        // Lossless syntaxes never take the 12-bit DCT path.
        assert!(decode(&i, JPEG_LOSSLESS_SV1, &enc).is_err());
    }

    /// Mutated bitstreams: errors or (caught) panics, never an abort or a
    /// runaway allocation (the process would die and fail the test).
    #[test]
    fn mutated_bitstreams_do_not_take_the_process_down() {
        let i = info(32, 32, 1, 16);
        let mut i12 = i.clone();
        i12.bits_stored = 12;
        let data: Vec<u8> = (0..1024u32)
            .flat_map(|v| ((v * 37 % 4096) as u16).to_le_bytes())
            .collect();
        let f = Frame {
            rows: 32,
            columns: 32,
            samples: 1,
            bits_allocated: 16,
            photometric: "MONOCHROME2".into(),
            data,
        };
        let i8 = info(32, 32, 1, 8);
        let f8 = Frame {
            bits_allocated: 8,
            data: (0..1024u32).map(|v| (v % 251) as u8).collect(),
            ..f.clone()
        };
        let cases = [
            (
                i12.clone(),
                JPEG_LS_LOSSLESS,
                encode(&i12, &f, JPEG_LS_LOSSLESS, 90).unwrap(),
            ),
            (
                i12.clone(),
                JPEG_LOSSLESS_SV1,
                encode(&i12, &f, JPEG_LOSSLESS_SV1, 90).unwrap(),
            ),
            (
                i12.clone(),
                JPEG_2000_LOSSLESS,
                encode(&i12, &f, JPEG_2000_LOSSLESS, 90).unwrap(),
            ),
            (
                i12.clone(),
                RLE_LOSSLESS,
                encode(&i12, &f, RLE_LOSSLESS, 90).unwrap(),
            ),
            (
                i8.clone(),
                JPEG_BASELINE,
                encode(&i8, &f8, JPEG_BASELINE, 90).unwrap(),
            ),
            (
                i12.clone(),
                JPEG_EXTENDED,
                super::super::turbo::encode_12(
                    &(0..1024)
                        .map(|v| (v * 37 % 4096) as i16)
                        .collect::<Vec<_>>(),
                    32,
                    32,
                    1,
                    90,
                )
                .unwrap(),
            ),
        ];
        let mut seed = 12345u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (info, uid, good) in &cases {
            for _ in 0..300 {
                let mut m = good.clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() % m.len() as u64) as usize;
                    m[at] = next() as u8;
                }
                if next() % 5 == 0 {
                    m.truncate((next() % m.len() as u64) as usize);
                }
                let t = std::time::Instant::now();
                let _ = std::panic::catch_unwind(|| decode(info, uid, &m));
                // CharLS spent ~5 s on truncated streams before the EOI check.
                assert!(
                    t.elapsed().as_secs() < 2,
                    "{uid}: {} ms",
                    t.elapsed().as_millis()
                );
            }
        }
    }

    /// A seeded xorshift: noise without a dependency.
    fn noise(seed: u64, n: usize) -> Vec<u64> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            })
            .collect()
    }

    /// Encodes into JPEG Lossless SV1 and decodes with jpeg-decoder.
    fn sv1_round_trip(i: &PixelInfo, data: Vec<u8>) {
        let f = Frame::of(i, data);
        check_encodable(i, JPEG_LOSSLESS_SV1).unwrap();
        let enc = encode(i, &f, JPEG_LOSSLESS_SV1, 90).unwrap();
        assert_eq!(&enc[..2], &[0xFF, 0xD8]);
        assert_eq!(&enc[enc.len() - 2..], &[0xFF, 0xD9]);
        let dec = decode(i, JPEG_LOSSLESS_SV1, &enc).unwrap();
        assert_eq!(
            dec.data, f.data,
            "{}x{}x{} {} bits",
            i.rows, i.columns, i.samples, i.bits_stored
        );
    }

    fn words(v: impl IntoIterator<Item = u16>) -> Vec<u8> {
        v.into_iter().flat_map(u16::to_le_bytes).collect()
    }

    #[test]
    fn jpeg_lossless_sv1_round_trips() {
        // 8-bit: a ramp, extremes side by side, noise.
        let i = info(17, 23, 1, 8);
        sv1_round_trip(&i, (0..17 * 23).map(|v| v as u8).collect());
        sv1_round_trip(
            &i,
            (0..17 * 23)
                .map(|v| if v % 2 == 0 { 0 } else { 255 })
                .collect(),
        );
        sv1_round_trip(&i, noise(1, 17 * 23).iter().map(|v| *v as u8).collect());
        // 12-bit in 16: extremes and noise.
        let mut i12 = info(31, 9, 1, 16);
        i12.bits_stored = 12;
        let n = 31 * 9;
        sv1_round_trip(
            &i12,
            words((0..n).map(|v| if v % 3 == 0 { 0 } else { 4095 })),
        );
        sv1_round_trip(&i12, words(noise(2, n).iter().map(|v| *v as u16 & 0x0FFF)));
        // 16-bit: full-range jumps make differences of ±65535 and exactly
        // 32768 (category 16).
        let i16 = info(8, 8, 1, 16);
        sv1_round_trip(
            &i16,
            words((0..64).map(|v| [0, 65535, 32768, 0, 32768, 65535][v % 6])),
        );
        sv1_round_trip(&i16, words(noise(3, 64).iter().map(|v| *v as u16)));
        sv1_round_trip(&i16, words([32768; 64]));
        // Signed 16-bit, and signed 12-bit (coded as 12-bit patterns,
        // sign-extended on decoding).
        let mut s16 = info(5, 7, 1, 16);
        s16.signed = true;
        sv1_round_trip(
            &s16,
            (0..35)
                .flat_map(|v| [i16::MIN, i16::MAX, -1, 0, 1][v % 5].to_le_bytes())
                .collect(),
        );
        let mut s12 = s16.clone();
        s12.bits_stored = 12;
        sv1_round_trip(
            &s12,
            (0..35)
                .flat_map(|v| [-2048i16, 2047, -1, 0, 1, -7][v % 6].to_le_bytes())
                .collect(),
        );
        // 8-bit RGB, each component its own history; odd sizes; 1×1;
        // a 16-bit RGB; 2-bit data.
        let rgb = info(13, 11, 3, 8);
        sv1_round_trip(
            &rgb,
            noise(4, 13 * 11 * 3).iter().map(|v| *v as u8).collect(),
        );
        sv1_round_trip(
            &rgb,
            (0..13 * 11)
                .flat_map(|p| [255u8, (p % 256) as u8, 0])
                .collect(),
        );
        sv1_round_trip(&info(1, 1, 1, 8), vec![77]);
        sv1_round_trip(&info(1, 1, 3, 8), vec![0, 128, 255]);
        sv1_round_trip(&info(1, 1, 1, 16), words([65535]));
        sv1_round_trip(&info(1, 257, 1, 8), (0..257).map(|v| v as u8).collect());
        sv1_round_trip(&info(257, 1, 1, 8), (0..257).map(|v| v as u8).collect());
        sv1_round_trip(
            &info(3, 5, 3, 16),
            words(noise(5, 45).iter().map(|v| *v as u16)),
        );
        let mut two = info(4, 4, 1, 8);
        two.bits_stored = 2;
        sv1_round_trip(&two, (0..16).map(|v| (v % 4) as u8).collect());
    }

    #[test]
    fn jpeg_lossless_sv1_refusals() {
        let mut i = info(2, 2, 1, 32);
        assert!(check_encodable(&i, JPEG_LOSSLESS_SV1).is_err());
        i = info(2, 2, 1, 8);
        i.bits_stored = 1;
        assert!(check_encodable(&i, JPEG_LOSSLESS_SV1).is_err());
        assert!(check_encodable(&info(2, 2, 4, 8), JPEG_LOSSLESS_SV1).is_err());
        assert!(can_encode(JPEG_LOSSLESS_SV1));
        assert!(!is_lossy(JPEG_LOSSLESS_SV1));
    }

    /// Truncated and mutated lossless streams fail or decode; nothing
    /// panics and nothing is allocated beyond the data set's frame size.
    #[test]
    fn jpeg_lossless_malformed_input_does_not_panic() {
        let mut i = info(6, 5, 3, 16);
        i.bits_stored = 12;
        let data = words(noise(6, 90).iter().map(|v| *v as u16 & 0x0FFF));
        let enc = encode(&i, &Frame::of(&i, data), JPEG_LOSSLESS_SV1, 90).unwrap();
        for n in 0..enc.len() {
            let _ = decode(&i, JPEG_LOSSLESS_SV1, &enc[..n]);
        }
        for (k, r) in noise(7, enc.len() * 4).into_iter().enumerate() {
            let mut bad = enc.clone();
            let at = k % enc.len();
            bad[at] = match k / enc.len() {
                0 => 0,
                1 => 0xFF,
                2 => bad[at] ^ 1,
                _ => r as u8,
            };
            let _ = decode(&i, JPEG_LOSSLESS_SV1, &bad);
        }
        // Two components, with consistent SOF and SOS lengths (the
        // decoder's pixel formats have no two-component case).
        let sof = enc.windows(2).position(|w| w == [0xFF, 0xC3]).unwrap();
        let sos = enc.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let mut two = enc[..sof].to_vec();
        two.extend_from_slice(&[0xFF, 0xC3, 0, 14, 12, 0, 6, 0, 5, 2, 1, 0x11, 0, 2, 0x11, 0]);
        two.extend_from_slice(&[0xFF, 0xDA, 0, 10, 2, 1, 0x00, 2, 0x10, 1, 0, 0]);
        two.extend_from_slice(&enc[sos + 14..]);
        let mut i2 = i.clone();
        i2.samples = 2;
        assert!(decode(&i2, JPEG_LOSSLESS_SV1, &two).is_err());
        assert!(decode(&i, JPEG_LOSSLESS_SV1, &two).is_err());
        // A header that disagrees with the data set is refused.
        assert!(matches!(
            decode(&info(6, 5, 1, 16), JPEG_LOSSLESS_SV1, &enc),
            Err(ImagingError::Corrupt(_))
        ));
    }
}
