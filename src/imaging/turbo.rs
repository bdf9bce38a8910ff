//! 12-bit DCT JPEG (JPEG Extended, PS3.5 A.4.2: `1.2.840.10008.1.2.4.51`
//! with 12-bit samples) through libjpeg-turbo's TurboJPEG 3 API.
//!
//! This is the one module of the crate where `unsafe` is allowed. No Rust
//! crate on the registry decodes 12-bit DCT JPEG (`jpeg-decoder` and
//! `zune-jpeg` stop at 8 bits); the reference libjpeg-turbo (3.1, built
//! from source by `turbojpeg-sys` with cmake) does, but only through its C
//! API. The `unsafe` stays behind this module's safe functions, which are
//! the only door to it:
//!
//! - the frame header is read first and checked against what the data set
//!   says (rows, columns, components, precision) before anything is
//!   allocated; the output buffer is ours, sized by us from those checked
//!   numbers, and libjpeg-turbo is told to refuse images of more pixels;
//! - every return code is checked, warnings (a truncated or corrupt
//!   stream) are errors, null handles are errors;
//! - a handle is destroyed by its `Drop`, whatever happens;
//! - libjpeg-turbo reports errors with `setjmp`/`longjmp` inside its own C
//!   frames and never unwinds into Rust; nothing here panics across the
//!   boundary (no callbacks are handed to C).

#![allow(unsafe_code)]

use std::ffi::{c_int, CStr};

use turbojpeg_sys as tj;

use super::ImagingError;

/// The colour space of a JPEG stream, as libjpeg-turbo reads it from the
/// component count, the JFIF/Adobe markers and the component identifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Colour {
    Grey,
    Rgb,
    YCbCr,
    Cmyk,
    Ycck,
}

impl Colour {
    fn from_tj(cs: c_int) -> Option<Colour> {
        let cs = tj::TJCS::try_from(cs).ok()?;
        Some(match cs {
            tj::TJCS_TJCS_GRAY => Colour::Grey,
            tj::TJCS_TJCS_RGB => Colour::Rgb,
            tj::TJCS_TJCS_YCbCr => Colour::YCbCr,
            tj::TJCS_TJCS_CMYK => Colour::Cmyk,
            tj::TJCS_TJCS_YCCK => Colour::Ycck,
            _ => return None,
        })
    }

    pub(crate) fn components(self) -> u16 {
        match self {
            Colour::Grey => 1,
            Colour::Rgb | Colour::YCbCr => 3,
            Colour::Cmyk | Colour::Ycck => 4,
        }
    }
}

/// What a JPEG stream's frame header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub width: u32,
    pub height: u32,
    pub(crate) precision: u8,
    pub(crate) colour: Colour,
    /// Chrominance subsampling (a `TJSAMP_*` value; -1 when unusual).
    pub(crate) subsampling: c_int,
}

/// A decoded 12-bit frame: samples colour-by-pixel (RGB for colour
/// streams, converted from YCbCr when the stream says so), row by row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decoded12 {
    pub header: Header,
    pub samples: Vec<i16>,
}

/// A TurboJPEG instance, destroyed when dropped. Holds a raw pointer, so
/// it is neither `Send` nor `Sync`: it lives on the thread that made it.
struct Handle(tj::tjhandle);

impl Handle {
    fn new(kind: tj::TJINIT) -> Result<Handle, ImagingError> {
        let kind = c_int::try_from(kind)
            .map_err(|_| ImagingError::Unsupported("libjpeg-turbo init kind".into()))?;
        // SAFETY: tj3Init takes a plain integer and returns either a new
        // instance that we own (destroyed once, by Drop) or null.
        let h = unsafe { tj::tj3Init(kind) };
        if h.is_null() {
            return Err(ImagingError::Unsupported(
                "libjpeg-turbo could not create an instance".into(),
            ));
        }
        Ok(Handle(h))
    }

    /// The instance's last error message.
    fn error(&self) -> String {
        // SAFETY: the handle is a live instance; tj3GetErrorStr returns a
        // pointer to a NUL-terminated buffer inside the instance (or a
        // thread-local one) that stays valid until the next call on this
        // instance; it is copied before anything else is called.
        let p = unsafe { tj::tj3GetErrorStr(self.0) };
        if p.is_null() {
            return "unknown libjpeg-turbo error".into();
        }
        // SAFETY: non-null and NUL-terminated (above); read only here.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    fn set(&self, param: tj::TJPARAM, value: c_int) -> Result<(), ImagingError> {
        let param = c_int::try_from(param)
            .map_err(|_| ImagingError::Unsupported("libjpeg-turbo parameter".into()))?;
        // SAFETY: live handle; tj3Set validates the parameter and value
        // and only writes into the instance.
        if unsafe { tj::tj3Set(self.0, param, value) } != 0 {
            return Err(ImagingError::Unsupported(format!(
                "libjpeg-turbo: {}",
                self.error()
            )));
        }
        Ok(())
    }

    fn get(&self, param: tj::TJPARAM) -> c_int {
        let Ok(param) = c_int::try_from(param) else {
            return -1;
        };
        // SAFETY: live handle; tj3Get only reads the instance (-1 for an
        // unknown parameter).
        unsafe { tj::tj3Get(self.0, param) }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came non-null from tj3Init and is destroyed
        // exactly once, here.
        unsafe { tj::tj3Destroy(self.0) };
    }
}

/// The length of a stream as libjpeg-turbo's `size_t`.
fn stream_len(data: &[u8]) -> Result<tj::size_t, ImagingError> {
    tj::size_t::try_from(data.len())
        .map_err(|_| ImagingError::Unsupported("a JPEG stream too long".into()))
}

fn corrupt(h: &Handle) -> ImagingError {
    ImagingError::Corrupt(format!("JPEG: {}", h.error()))
}

/// Reads the frame header of `data` into `h` (which then holds the
/// stream's parameters).
fn read_header(h: &Handle, data: &[u8]) -> Result<Header, ImagingError> {
    if data.is_empty() {
        return Err(ImagingError::Corrupt("an empty JPEG stream".into()));
    }
    let len = stream_len(data)?;
    // SAFETY: live decompression handle; the pointer and length are those
    // of a borrowed slice that outlives the call, and libjpeg-turbo only
    // reads from it.
    if unsafe { tj::tj3DecompressHeader(h.0, data.as_ptr(), len) } != 0 {
        return Err(corrupt(h));
    }
    let dim = |p, name: &str| {
        u32::try_from(h.get(p))
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| ImagingError::Corrupt(format!("JPEG without a valid {name}")))
    };
    let width = dim(tj::TJPARAM_TJPARAM_JPEGWIDTH, "width")?;
    let height = dim(tj::TJPARAM_TJPARAM_JPEGHEIGHT, "height")?;
    let precision = u8::try_from(h.get(tj::TJPARAM_TJPARAM_PRECISION))
        .map_err(|_| ImagingError::Corrupt("JPEG without a valid sample precision".into()))?;
    let colour = Colour::from_tj(h.get(tj::TJPARAM_TJPARAM_COLORSPACE)).ok_or_else(|| {
        ImagingError::Unsupported("JPEG in an unknown colour space (tables only?)".into())
    })?;
    let subsampling = h.get(tj::TJPARAM_TJPARAM_SUBSAMP);
    Ok(Header {
        width,
        height,
        precision,
        colour,
        subsampling,
    })
}

/// The frame header of a JPEG stream.
pub(crate) fn header(data: &[u8]) -> Result<Header, ImagingError> {
    let h = Handle::new(tj::TJINIT_TJINIT_DECOMPRESS)?;
    read_header(&h, data)
}

/// Most scans a (progressive) stream may have: libjpeg-turbo's advice
/// against streams built to spin (its fuzzers use 500).
const SCAN_LIMIT: c_int = 500;

/// Decodes a JPEG stream of 9 to 12 bits per sample (12-bit DCT JPEG, or
/// lossless JPEG of that precision) that must be `columns` × `rows` with
/// `components` samples per pixel (1 or 3); anything else is refused
/// before the output is allocated.
// long: the checks that make the `unsafe` decompression sound (see its
// SAFETY note) stay in the function that makes the call.
pub(crate) fn decode_12(
    data: &[u8],
    rows: u32,
    columns: u32,
    components: u16,
) -> Result<Decoded12, ImagingError> {
    let h = Handle::new(tj::TJINIT_TJINIT_DECOMPRESS)?;
    let pixels = u64::from(rows) * u64::from(columns);
    let too_big = || ImagingError::Unsupported(format!("a {columns}×{rows} JPEG is too large"));
    // The decoder refuses an image of more pixels than the data set's,
    // whatever the stream says when it is read again for decoding.
    h.set(
        tj::TJPARAM_TJPARAM_MAXPIXELS,
        c_int::try_from(pixels).map_err(|_| too_big())?,
    )?;
    // Intermediate buffers (progressive streams keep all coefficients:
    // two bytes per sample): twice that, and 16 MiB of slack.
    let max_mib = pixels * u64::from(components) * 4 / (1 << 20) + 16;
    h.set(
        tj::TJPARAM_TJPARAM_MAXMEMORY,
        c_int::try_from(max_mib).map_err(|_| too_big())?,
    )?;
    h.set(tj::TJPARAM_TJPARAM_SCANLIMIT, SCAN_LIMIT)?;
    // A corrupt or truncated stream is an error, not a grey-filled image.
    h.set(tj::TJPARAM_TJPARAM_STOPONWARNING, 1)?;

    let header = read_header(&h, data)?;
    if header.width != columns || header.height != rows || header.colour.components() != components
    {
        return Err(ImagingError::Corrupt(format!(
            "the JPEG stream is {}×{}×{}, the data set says {columns}×{rows}×{components}",
            header.width,
            header.height,
            header.colour.components()
        )));
    }
    if !(9..=12).contains(&header.precision) {
        return Err(ImagingError::Unsupported(format!(
            "a JPEG of {}-bit samples is not decoded as 12-bit",
            header.precision
        )));
    }
    let grey_sampling = header.subsampling == tj::TJSAMP_TJSAMP_GRAY;
    if grey_sampling != (header.colour == Colour::Grey) {
        return Err(ImagingError::Corrupt(
            "the JPEG's subsampling contradicts its colour space".into(),
        ));
    }
    let format = match components {
        1 => tj::TJPF_TJPF_GRAY,
        3 => tj::TJPF_TJPF_RGB,
        n => {
            return Err(ImagingError::Unsupported(format!(
                "12-bit JPEG with {n} components"
            )))
        }
    };
    // Samples per row, and the buffer: ours, sized from checked numbers.
    let pitch = usize::try_from(columns)
        .ok()
        .and_then(|c| c.checked_mul(usize::from(components)))
        .ok_or_else(too_big)?;
    let len = usize::try_from(rows)
        .ok()
        .and_then(|r| r.checked_mul(pitch))
        .ok_or_else(too_big)?;
    let pitch_c = c_int::try_from(pitch).map_err(|_| too_big())?;
    let data_len = stream_len(data)?;
    let mut samples = vec![0i16; len];
    // SAFETY: live decompression handle whose header was read from these
    // same bytes. `samples` holds rows × pitch i16 values, and pitch is
    // columns × components: tj3Decompress12 (no scaling, no cropping: a
    // fresh instance) writes `height` rows of `width` pixels of the
    // format's component count at that pitch. It re-reads the header from
    // the same immutable bytes, so width, height and components are the
    // ones checked above, and MAXPIXELS makes it refuse any larger image.
    // `data` is only read.
    let rc = unsafe {
        tj::tj3Decompress12(
            h.0,
            data.as_ptr(),
            data_len,
            samples.as_mut_ptr(),
            pitch_c,
            format,
        )
    };
    if rc != 0 {
        return Err(corrupt(&h));
    }
    // What was decoded is what was checked (cheap, and the witness that
    // the buffer was the right size).
    let now = |p| u32::try_from(h.get(p)).ok();
    if now(tj::TJPARAM_TJPARAM_JPEGWIDTH) != Some(header.width)
        || now(tj::TJPARAM_TJPARAM_JPEGHEIGHT) != Some(header.height)
    {
        return Err(ImagingError::Corrupt(
            "the JPEG header changed while decoding".into(),
        ));
    }
    Ok(Decoded12 { header, samples })
}

/// Test-only: encodes 12-bit samples (colour-by-pixel, 1 or 3 components)
/// as a 12-bit DCT JPEG (SOF1) of `quality`, no chroma subsampling.
#[cfg(test)]
pub(crate) fn encode_12(
    samples: &[i16],
    width: u32,
    height: u32,
    components: u16,
    quality: c_int,
) -> Result<Vec<u8>, ImagingError> {
    let h = Handle::new(tj::TJINIT_TJINIT_COMPRESS)?;
    let (format, sampling) = match components {
        1 => (tj::TJPF_TJPF_GRAY, tj::TJSAMP_TJSAMP_GRAY),
        _ => (tj::TJPF_TJPF_RGB, tj::TJSAMP_TJSAMP_444),
    };
    h.set(tj::TJPARAM_TJPARAM_QUALITY, quality)?;
    h.set(tj::TJPARAM_TJPARAM_SUBSAMP, sampling)?;
    let w = c_int::try_from(width).map_err(|_| ImagingError::Corrupt("width".into()))?;
    let ht = c_int::try_from(height).map_err(|_| ImagingError::Corrupt("height".into()))?;
    let need = width as usize * height as usize * usize::from(components);
    if samples.len() < need || samples.iter().any(|v| !(0..4096).contains(v)) {
        return Err(ImagingError::Corrupt("12-bit samples expected".into()));
    }
    let mut buf: *mut u8 = std::ptr::null_mut();
    let mut size: tj::size_t = 0;
    // SAFETY: live compression handle; `samples` holds height rows of
    // width × components values (checked above), all within 12 bits;
    // buf/size point at our locals, and a null buf asks libjpeg-turbo to
    // allocate the output (freed below with tj3Free).
    let rc =
        unsafe { tj::tj3Compress12(h.0, samples.as_ptr(), w, 0, ht, format, &mut buf, &mut size) };
    let out = if rc == 0 && !buf.is_null() {
        // SAFETY: on success buf points at `size` bytes of JPEG.
        Ok(unsafe { std::slice::from_raw_parts(buf, size as usize) }.to_vec())
    } else {
        Err(corrupt(&h))
    };
    // SAFETY: buf is null or was allocated by libjpeg-turbo; freed once.
    unsafe { tj::tj3Free(buf.cast()) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth 12-bit image with an edge and a full-range ramp.
    fn image(w: u32, h: u32, components: u16) -> Vec<i16> {
        let mut out = Vec::new();
        for y in 0..h {
            for x in 0..w {
                for c in 0..components {
                    let v = if x < w / 2 {
                        (x * 4095 / w.max(1)) as i16
                    } else {
                        (1000 + 300 * i32::from(c) + (y as i32 * 7) % 500) as i16
                    };
                    out.push(v);
                }
            }
        }
        out
    }

    #[test]
    fn twelve_bit_round_trip_within_tolerance() {
        for (w, h, comps) in [(64, 48, 1), (37, 29, 1), (40, 24, 3), (1, 1, 1)] {
            let src = image(w, h, comps);
            let jpeg = encode_12(&src, w, h, comps, 98).unwrap();
            // SOF1: extended sequential, precision 12.
            let sof = jpeg.windows(2).position(|m| m == [0xFF, 0xC1]).unwrap();
            assert_eq!(jpeg[sof + 4], 12);
            let hd = header(&jpeg).unwrap();
            assert_eq!((hd.width, hd.height, hd.precision), (w, h, 12));
            let dec = decode_12(&jpeg, h, w, comps).unwrap();
            assert_eq!(dec.samples.len(), src.len());
            let diff: Vec<i32> = src
                .iter()
                .zip(&dec.samples)
                .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
                .collect();
            let mean = diff.iter().sum::<i32>() as f64 / diff.len() as f64;
            let max = diff.iter().copied().max().unwrap();
            assert!(
                mean < 8.0 && max < 200,
                "{w}×{h}×{comps}: mean {mean}, max {max}"
            );
            assert!(dec.samples.iter().all(|v| (0..4096).contains(v)));
        }
    }

    #[test]
    fn mismatches_are_refused_before_decoding() {
        let jpeg = encode_12(&image(16, 8, 1), 16, 8, 1, 90).unwrap();
        for (rows, cols, comps) in [(8, 17, 1), (9, 16, 1), (8, 16, 3), (4, 32, 1)] {
            assert!(
                matches!(
                    decode_12(&jpeg, rows, cols, comps),
                    Err(ImagingError::Corrupt(_))
                ),
                "{rows}×{cols}×{comps}"
            );
        }
        assert!(decode_12(&[], 8, 16, 1).is_err());
        assert!(decode_12(b"not a jpeg", 8, 16, 1).is_err());
        // Colour streams ask for three components.
        let rgb = encode_12(&image(8, 8, 3), 8, 8, 3, 90).unwrap();
        assert_eq!(header(&rgb).unwrap().colour, Colour::YCbCr);
        assert!(decode_12(&rgb, 8, 8, 1).is_err());
    }

    /// Truncated and mutated streams fail (or decode) quickly; nothing
    /// panics, and a truncated stream is an error, not a grey-filled frame.
    #[test]
    fn malformed_streams_fail_fast() {
        let (w, h) = (48, 40);
        let jpeg = encode_12(&image(w, h, 1), w, h, 1, 95).unwrap();
        let t = std::time::Instant::now();
        for n in 0..jpeg.len() - 2 {
            assert!(decode_12(&jpeg[..n], h, w, 1).is_err(), "cut at {n}");
        }
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for k in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut bad = jpeg.clone();
            for j in 0..1 + k % 4 {
                let at = ((x >> (8 * j)) as usize) % bad.len();
                bad[at] = match k % 3 {
                    0 => 0xFF,
                    1 => bad[at] ^ (1 << (x % 8)),
                    _ => (x >> 40) as u8,
                };
            }
            if let Ok(d) = decode_12(&bad, h, w, 1) {
                assert_eq!(d.samples.len(), (w * h) as usize);
            }
        }
        assert!(t.elapsed().as_secs() < 20, "{} ms", t.elapsed().as_millis());
    }
}
