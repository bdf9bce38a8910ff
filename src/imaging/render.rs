//! Decoded frames to consumer images (PS3.18 §8.3.5, §10.4.1.1.5): the
//! grayscale pipeline of PS3.3 C.11 (Modality LUT or Rescale, VOI window or
//! LUT, MONOCHROME1 inversion) and the colour ones (RGB, YBR_FULL, palette
//! colour), then the viewport, then JPEG/PNG/GIF.

use image::{DynamicImage, GrayImage, RgbImage};

use super::frame::{ybr_to_rgb, Frame};
use super::pixel::{Lut, PixelInfo, Presentation, VoiFunction};
use super::ImagingError;

/// Consumer image media types (PS3.18 Table 8.7.4-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    Gif,
}

impl Format {
    pub(crate) fn media_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Gif => "image/gif",
        }
    }

    pub(crate) fn from_media_type(m: &str) -> Option<Format> {
        match m.trim().to_ascii_lowercase().as_str() {
            "image/jpeg" | "image/jpg" => Some(Format::Jpeg),
            "image/png" => Some(Format::Png),
            "image/gif" => Some(Format::Gif),
            _ => None,
        }
    }
}

/// The viewport (PS3.18 §8.3.5.1.3): output size, and optionally the
/// source region to show.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Viewport {
    pub width: u32,
    pub height: u32,
    pub region: Option<(u32, u32, u32, u32)>,
}

/// Query parameters of a rendered request, already validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenderParams {
    pub window: Option<(f64, f64, VoiFunction)>,
    pub viewport: Option<Viewport>,
    pub quality: u8,
    pub format: Format,
}

impl Default for RenderParams {
    fn default() -> Self {
        RenderParams {
            window: None,
            viewport: None,
            quality: 90,
            format: Format::Jpeg,
        }
    }
}

/// LUT data fetched for a presentation: modality, VOI, and palette.
#[derive(Debug, Default, Clone)]
pub struct Luts {
    pub modality: Option<Lut>,
    pub(crate) voi: Option<Lut>,
    pub(crate) palette: Option<[Lut; 3]>,
}

fn sample_reader(info: &PixelInfo) -> impl Fn(&[u8]) -> i64 {
    let bps = info.bytes_per_sample();
    let bits = u32::from(info.bits_stored);
    let signed = info.signed;
    move |b: &[u8]| {
        // Fixed-width reads: a variable-length copy per sample was a
        // memmove call per pixel (seen with perf on a 2000×2500 CR).
        let v = match (bps, b) {
            (1, [a, ..]) => u64::from(*a),
            (2, [a, b, ..]) => u64::from(u16::from_le_bytes([*a, *b])),
            (4, [a, b, c, d, ..]) => u64::from(u32::from_le_bytes([*a, *b, *c, *d])),
            _ => 0,
        };
        let mask = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        let v = v & mask;
        if signed && bits < 64 && v >> (bits - 1) & 1 == 1 {
            (v | !mask) as i64
        } else {
            v as i64
        }
    }
}

fn lut_at(lut: &Lut, v: i64) -> u16 {
    let i = (v - i64::from(lut.first)).clamp(0, lut.values.len() as i64 - 1);
    lut.values.get(i as usize).copied().unwrap_or(0)
}

/// The stored value range of the frame's samples.
fn stored_range(info: &PixelInfo) -> (i64, i64) {
    let bits = u32::from(info.bits_stored.min(32));
    if info.signed {
        (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
    } else {
        (0, (1i64 << bits) - 1)
    }
}

/// The window function of PS3.3 C.11.2.1.2 onto 0..=255.
fn window_fn(c: f64, w: f64, f: VoiFunction) -> impl Fn(f64) -> u8 {
    move |x: f64| {
        let y = match f {
            VoiFunction::Linear => {
                let w1 = (w - 1.0).max(0.0);
                if x <= c - 0.5 - w1 / 2.0 {
                    0.0
                } else if x > c - 0.5 + w1 / 2.0 || w1 == 0.0 {
                    1.0
                } else {
                    (x - (c - 0.5)) / w1 + 0.5
                }
            }
            VoiFunction::LinearExact => ((x - c) / w + 0.5).clamp(0.0, 1.0),
            VoiFunction::Sigmoid => 1.0 / (1.0 + (-4.0 * (x - c) / w).exp()),
        };
        (y * 255.0).round().clamp(0.0, 255.0) as u8
    }
}

/// Renders one decoded frame at full resolution, then applies the
/// viewport.
pub fn render(
    frame: &Frame,
    info: &PixelInfo,
    pres: &Presentation,
    luts: &Luts,
    params: &RenderParams,
) -> Result<DynamicImage, ImagingError> {
    let img = match (frame.samples, frame.photometric.as_str()) {
        (1, "MONOCHROME1" | "MONOCHROME2") => gray(frame, info, pres, luts, params)?,
        (1, "PALETTE COLOR") => palette(frame, info, luts)?,
        (3, "RGB" | "YBR_FULL") => color(frame, info)?,
        (s, p) => {
            return Err(ImagingError::Unsupported(format!(
                "rendering {s}-sample {p} images"
            )))
        }
    };
    apply_viewport(img, params.viewport)
}

/// MONOCHROME1/2: Modality LUT (or rescale), then the window asked for,
/// the stored one, a VOI LUT or the data's range; one table over the
/// stored values when they fit.
fn gray(
    frame: &Frame,
    info: &PixelInfo,
    pres: &Presentation,
    luts: &Luts,
    params: &RenderParams,
) -> Result<DynamicImage, ImagingError> {
    let (w, h) = (frame.columns, frame.rows);
    let pixels = info.pixels();
    let bps = usize::from(frame.bits_allocated / 8);
    let read = sample_reader(info);
    let photometric = frame.photometric.as_str();
    let modality = |v: i64| -> f64 {
        match &luts.modality {
            Some(l) => f64::from(lut_at(l, v)),
            None => v as f64 * pres.slope + pres.intercept,
        }
    };
    // The window: asked for, stored, a VOI LUT, or the data's range.
    let voi: Box<dyn Fn(f64) -> u8> = if let Some((c, w, f)) = params.window {
        Box::new(window_fn(c, w, f))
    } else if let Some(&(c, w)) = pres.windows.first() {
        Box::new(window_fn(c, w, pres.voi_function))
    } else if let Some(l) = &luts.voi {
        let max = ((1u32 << l.bits.min(16)) - 1) as f64;
        let l = l.clone();
        Box::new(move |x: f64| {
            (f64::from(lut_at(&l, x.round() as i64)) / max * 255.0)
                .round()
                .clamp(0.0, 255.0) as u8
        })
    } else {
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for s in frame.data.chunks_exact(bps).take(pixels) {
            let m = modality(read(s));
            lo = lo.min(m);
            hi = hi.max(m);
        }
        if lo > hi {
            (lo, hi) = (0.0, 1.0);
        }
        let width = (hi - lo).max(1.0);
        Box::new(window_fn(lo + width / 2.0, width, VoiFunction::LinearExact))
    };
    let invert = photometric == "MONOCHROME1";
    let out_of = |v: i64| {
        let y = voi(modality(v));
        if invert {
            255 - y
        } else {
            y
        }
    };
    let (lo, hi) = stored_range(info);
    let mut gray = Vec::with_capacity(pixels);
    if hi - lo < 1 << 17 {
        // Up to 16-bit data: one table over every stored value.
        let table: Vec<u8> = (lo..=hi).map(out_of).collect();
        for s in frame.data.chunks_exact(bps).take(pixels) {
            gray.push(table[(read(s) - lo) as usize]);
        }
    } else {
        for s in frame.data.chunks_exact(bps).take(pixels) {
            gray.push(out_of(read(s)));
        }
    }
    Ok(DynamicImage::ImageLuma8(
        GrayImage::from_raw(w, h, gray)
            .ok_or_else(|| ImagingError::Corrupt("short frame".into()))?,
    ))
}

/// PALETTE COLOR through its three lookup tables.
fn palette(frame: &Frame, info: &PixelInfo, luts: &Luts) -> Result<DynamicImage, ImagingError> {
    let (w, h) = (frame.columns, frame.rows);
    let pixels = info.pixels();
    let bps = usize::from(frame.bits_allocated / 8);
    let read = sample_reader(info);
    let pal = luts
        .palette
        .as_ref()
        .ok_or_else(|| ImagingError::Unsupported("PALETTE COLOR without palettes".into()))?;
    let scale = |l: &Lut, v: u16| if l.bits > 8 { (v >> 8) as u8 } else { v as u8 };
    let mut rgb = Vec::with_capacity(pixels * 3);
    for s in frame.data.chunks_exact(bps).take(pixels) {
        let v = read(s);
        for l in pal {
            rgb.push(scale(l, lut_at(l, v)));
        }
    }
    Ok(DynamicImage::ImageRgb8(
        RgbImage::from_raw(w, h, rgb).ok_or_else(|| ImagingError::Corrupt("short frame".into()))?,
    ))
}

/// RGB and YBR_FULL, scaled to 8 bits.
fn color(frame: &Frame, info: &PixelInfo) -> Result<DynamicImage, ImagingError> {
    let (w, h) = (frame.columns, frame.rows);
    let pixels = info.pixels();
    let bps = usize::from(frame.bits_allocated / 8);
    let read = sample_reader(info);
    let photometric = frame.photometric.as_str();
    let shift = info.bits_stored.saturating_sub(8);
    let mut rgb = Vec::with_capacity(pixels * 3);
    let ybr = photometric == "YBR_FULL";
    for px in frame.data.chunks_exact(bps * 3).take(pixels) {
        let v = |k: usize| (read(&px[k * bps..]).max(0) >> shift).min(255) as u8;
        let c = [v(0), v(1), v(2)];
        if ybr {
            rgb.extend_from_slice(&ybr_to_rgb(c[0], c[1], c[2]));
        } else {
            rgb.extend_from_slice(&c);
        }
    }
    Ok(DynamicImage::ImageRgb8(
        RgbImage::from_raw(w, h, rgb).ok_or_else(|| ImagingError::Corrupt("short frame".into()))?,
    ))
}

fn apply_viewport(
    mut img: DynamicImage,
    vp: Option<Viewport>,
) -> Result<DynamicImage, ImagingError> {
    let Some(vp) = vp else { return Ok(img) };
    if let Some((x, y, rw, rh)) = vp.region {
        if x >= img.width() || y >= img.height() || rw == 0 || rh == 0 {
            return Err(ImagingError::BadParameter(
                "the viewport's source region lies outside the image".into(),
            ));
        }
        img = img.crop_imm(x, y, rw.min(img.width() - x), rh.min(img.height() - y));
    }
    // Scaled to fit the viewport with the aspect ratio kept.
    if vp.width == img.width() && vp.height == img.height() {
        return Ok(img);
    }
    let scale = (f64::from(vp.width) / f64::from(img.width()))
        .min(f64::from(vp.height) / f64::from(img.height()));
    let nw = ((f64::from(img.width()) * scale).round() as u32).max(1);
    let nh = ((f64::from(img.height()) * scale).round() as u32).max(1);
    Ok(if scale < 1.0 {
        img.thumbnail_exact(nw, nh)
    } else {
        img.resize_exact(nw, nh, image::imageops::FilterType::Triangle)
    })
}

/// 8-bit JPEG baseline with `jpeg-encoder` (AVX2 where the CPU has it;
/// measured ~3× faster than `image`'s encoder on a 2000×2500 CR).
pub(crate) fn jpeg_baseline(
    data: &[u8],
    width: u32,
    height: u32,
    color: jpeg_encoder::ColorType,
    quality: u8,
) -> Result<Vec<u8>, ImagingError> {
    let (w, h) = match (u16::try_from(width), u16::try_from(height)) {
        (Ok(w), Ok(h)) => (w, h),
        _ => {
            return Err(ImagingError::Unsupported(format!(
                "JPEG holds at most 65535×65535 pixels, not {width}×{height}"
            )))
        }
    };
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100))
        .encode(data, w, h, color)
        .map_err(|e| ImagingError::Corrupt(format!("JPEG encoding: {e}")))?;
    Ok(out)
}

/// Encodes rendered frames: one image, or an animated GIF of several.
pub fn encode(
    frames: &[DynamicImage],
    format: Format,
    quality: u8,
) -> Result<Vec<u8>, ImagingError> {
    let fail = |e: image::ImageError| ImagingError::Corrupt(format!("image encoding: {e}"));
    let first = frames
        .first()
        .ok_or_else(|| ImagingError::Corrupt("nothing to encode".into()))?;
    let mut out = Vec::new();
    match format {
        Format::Jpeg => {
            let (bytes, color) = match first {
                DynamicImage::ImageLuma8(g) => (g.as_raw().clone(), jpeg_encoder::ColorType::Luma),
                other => (other.to_rgb8().into_raw(), jpeg_encoder::ColorType::Rgb),
            };
            return jpeg_baseline(&bytes, first.width(), first.height(), color, quality);
        }
        Format::Png => {
            let enc = image::codecs::png::PngEncoder::new(&mut out);
            first.write_with_encoder(enc).map_err(fail)?;
        }
        Format::Gif => {
            let mut enc = image::codecs::gif::GifEncoder::new_with_speed(&mut out, 10);
            enc.set_repeat(image::codecs::gif::Repeat::Infinite)
                .map_err(fail)?;
            for f in frames {
                let delay = image::Delay::from_numer_denom_ms(100, 1);
                enc.encode_frame(image::Frame::from_parts(f.to_rgba8(), 0, 0, delay))
                    .map_err(fail)?;
            }
            drop(enc);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(values: &[i16]) -> (Frame, PixelInfo) {
        let info = PixelInfo {
            rows: 1,
            columns: values.len() as u32,
            samples: 1,
            bits_allocated: 16,
            bits_stored: 16,
            signed: true,
            photometric: "MONOCHROME2".into(),
            planar: false,
            frames: 1,
        };
        let frame = Frame {
            rows: 1,
            columns: values.len() as u32,
            samples: 1,
            bits_allocated: 16,
            photometric: "MONOCHROME2".into(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        (frame, info)
    }

    fn pres() -> Presentation {
        Presentation {
            slope: 1.0,
            intercept: -1024.0,
            modality_lut: None,
            windows: vec![(40.0, 400.0)],
            voi_function: VoiFunction::Linear,
            voi_lut: None,
            palette: None,
        }
    }

    #[test]
    fn window_rescale_and_inversion() {
        let (f, mut info) = ct(&[0, 864, 1064, 1264, 3000]);
        let img = render(
            &f,
            &info,
            &pres(),
            &Luts::default(),
            &RenderParams::default(),
        )
        .unwrap();
        // HU -1024, -160 (lower edge), 40 (center), 240 (upper edge), 1976.
        assert_eq!(img.to_luma8().into_raw(), vec![0, 0, 128, 255, 255]);
        let mut f2 = f.clone();
        f2.photometric = "MONOCHROME1".into();
        info.photometric = "MONOCHROME1".into();
        let img = render(
            &f2,
            &info,
            &pres(),
            &Luts::default(),
            &RenderParams::default(),
        )
        .unwrap();
        assert_eq!(img.to_luma8().into_raw(), vec![255, 255, 127, 0, 0]);
        let p = RenderParams {
            window: Some((1976.0, 2.0, VoiFunction::Linear)),
            ..Default::default()
        };
        let img = render(&f2, &info, &pres(), &Luts::default(), &p).unwrap();
        assert_eq!(
            img.to_luma8().into_raw()[4],
            0,
            "inverted and above the window"
        );
    }

    #[test]
    fn viewport_keeps_aspect_ratio() {
        let img = DynamicImage::ImageLuma8(GrayImage::new(200, 100));
        let vp = Viewport {
            width: 64,
            height: 64,
            region: None,
        };
        let out = apply_viewport(img, Some(vp)).unwrap();
        assert_eq!((out.width(), out.height()), (64, 32));
    }
}
