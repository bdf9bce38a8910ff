//! A decoded frame: what the codecs (`codec`, `j2k`) produce and `render`
//! and the encoders consume. Its own module, so that those depend on it
//! rather than on each other.

use super::pixel::PixelInfo;

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub rows: u32,
    pub columns: u32,
    pub samples: u16,
    pub bits_allocated: u16,
    /// The photometric interpretation of `data` (decoders of YBR JPEG and
    /// JPEG 2000 with a colour transform give RGB).
    pub(crate) photometric: String,
    /// Little endian, colour-by-pixel.
    pub data: Vec<u8>,
}

impl Frame {
    /// A frame of `data` laid out as the Image Pixel module says.
    pub fn of(info: &PixelInfo, data: Vec<u8>) -> Frame {
        Frame {
            rows: info.rows,
            columns: info.columns,
            samples: info.samples,
            bits_allocated: info.bits_allocated,
            photometric: info.photometric.clone(),
            data,
        }
    }
}

/// YBR_FULL to RGB (PS3.3 C.7.6.3.1.2).
pub(crate) fn ybr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let (y, cb, cr) = (f32::from(y), f32::from(cb) - 128.0, f32::from(cr) - 128.0);
    let c = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    [
        c(y + 1.402 * cr),
        c(y - 0.344_136 * cb - 0.714_136 * cr),
        c(y + 1.772 * cb),
    ]
}
