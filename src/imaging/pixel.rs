//! What a frame's pixels mean, read from the instance's stored DICOM JSON
//! (prepared at ingest): the Image Pixel module (PS3.3 C.7.6.3) and the
//! attributes of the grayscale and colour pipelines (C.11: Modality LUT,
//! VOI LUT, palette colour), including the per-frame functional groups of
//! enhanced objects (C.7.6.16).
//!
//! Everything is validated before any decoder sees the data: a frame's
//! declared size must be sane and match the bytes present (pitfall: codecs
//! that allocate by header and panic or abort on mutated input).

use serde_json::Value;

use super::ImagingError;

/// The largest decoded frame served (rows × columns × samples × bytes):
/// 1 GiB covers whole-slide tiles and large CR/DX plates with margin.
pub(crate) const MAX_FRAME_BYTES: u64 = 1 << 30;

/// The Image Pixel module of one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelInfo {
    pub rows: u32,
    pub columns: u32,
    pub samples: u16,
    pub bits_allocated: u16,
    pub(crate) bits_stored: u16,
    pub signed: bool,
    pub(crate) photometric: String,
    /// Planar Configuration 1: colour-by-plane in native data.
    pub(crate) planar: bool,
    pub frames: u32,
}

impl PixelInfo {
    pub fn from_json(doc: &Value) -> Result<PixelInfo, ImagingError> {
        let need = |tag: &str, name: &str| {
            num(doc, tag).ok_or_else(|| {
                ImagingError::Unsupported(format!("the instance has no {name} ({tag})"))
            })
        };
        let rows = need("00280010", "Rows")?;
        let columns = need("00280011", "Columns")?;
        let bits_allocated = need("00280100", "Bits Allocated")?;
        let samples = num(doc, "00280002").unwrap_or(1.0);
        let bits_stored = num(doc, "00280101").unwrap_or(bits_allocated);
        let info = PixelInfo {
            rows: rows as u32,
            columns: columns as u32,
            samples: samples as u16,
            bits_allocated: bits_allocated as u16,
            bits_stored: bits_stored as u16,
            signed: num(doc, "00280103") == Some(1.0),
            photometric: text(doc, "00280004")
                .unwrap_or_else(|| "MONOCHROME2".into())
                .trim()
                .to_ascii_uppercase(),
            planar: num(doc, "00280006") == Some(1.0),
            frames: num(doc, "00280008").map_or(1, |n| n.max(1.0) as u32),
        };
        info.validate()?;
        Ok(info)
    }

    fn validate(&self) -> Result<(), ImagingError> {
        let bad = |m: String| Err(ImagingError::Unsupported(m));
        if self.rows == 0 || self.columns == 0 {
            return bad("Rows and Columns must be non-zero".into());
        }
        if !matches!(self.samples, 1 | 3) {
            return bad(format!("{} samples per pixel", self.samples));
        }
        if !matches!(self.bits_allocated, 8 | 16 | 32) {
            return bad(format!(
                "Bits Allocated {} (8, 16 and 32 are served)",
                self.bits_allocated
            ));
        }
        if self.bits_stored == 0 || self.bits_stored > self.bits_allocated {
            return bad(format!(
                "Bits Stored {} with Bits Allocated {}",
                self.bits_stored, self.bits_allocated
            ));
        }
        if self.decoded_frame_len() > MAX_FRAME_BYTES {
            return bad(format!(
                "a {}×{} frame is larger than {} MiB",
                self.columns,
                self.rows,
                MAX_FRAME_BYTES >> 20
            ));
        }
        Ok(())
    }

    pub fn pixels(&self) -> usize {
        self.rows as usize * self.columns as usize
    }

    pub(crate) fn bytes_per_sample(&self) -> usize {
        usize::from(self.bits_allocated / 8)
    }

    /// Bytes of one decoded frame, colour-by-pixel, full resolution.
    pub(crate) fn decoded_frame_len(&self) -> u64 {
        self.rows as u64
            * self.columns as u64
            * self.samples as u64
            * (self.bits_allocated / 8) as u64
    }

    /// Bytes of one frame as stored natively: YBR_FULL_422 keeps two
    /// luminance samples per chrominance pair (PS3.3 C.7.6.3.1.2).
    pub(crate) fn native_frame_len(&self) -> u64 {
        if self.photometric == "YBR_FULL_422" && self.samples == 3 {
            self.rows as u64 * self.columns as u64 * 2 * (self.bits_allocated / 8) as u64
        } else {
            self.decoded_frame_len()
        }
    }
}

/// How a VOI window maps values to output (PS3.3 C.11.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoiFunction {
    Linear,
    LinearExact,
    Sigmoid,
}

impl VoiFunction {
    pub fn parse(s: &str) -> Option<VoiFunction> {
        match s.trim().to_ascii_uppercase().as_str() {
            "LINEAR" => Some(VoiFunction::Linear),
            "LINEAR_EXACT" => Some(VoiFunction::LinearExact),
            "SIGMOID" => Some(VoiFunction::Sigmoid),
            _ => None,
        }
    }
}

/// Where a lookup table's data is: inline in the metadata, or a byte range
/// of the stored object (a BulkDataURI written at ingest).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LutSource {
    Inline(Vec<u8>),
    Bulk { offset: u64, length: u64 },
}

/// A LUT before its data is fetched: descriptor (entries, first mapped
/// value, bits per entry; PS3.3 C.11.1.1) and data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LutRef {
    pub(crate) entries: u32,
    pub first: i32,
    pub(crate) bits: u16,
    pub data: LutSource,
}

/// A LUT with its data: `values[i]` is the output for input `first + i`.
#[derive(Debug, Clone, PartialEq)]
pub struct Lut {
    pub first: i32,
    pub(crate) bits: u16,
    pub(crate) values: Vec<u16>,
}

impl LutRef {
    /// Decodes fetched LUT bytes (US or OW, little endian; 8-bit tables
    /// may be packed one entry per byte, PS3.3 C.7.6.3.1.5).
    pub(crate) fn resolve(&self, bytes: &[u8]) -> Result<Lut, ImagingError> {
        let n = self.entries as usize;
        let values: Vec<u16> = if bytes.len() >= n * 2 {
            bytes
                .chunks_exact(2)
                .take(n)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect()
        } else if self.bits == 8 && bytes.len() >= n {
            bytes[..n].iter().map(|b| u16::from(*b)).collect()
        } else {
            return Err(ImagingError::Corrupt(format!(
                "a LUT of {n} entries has {} data bytes",
                bytes.len()
            )));
        };
        Ok(Lut {
            first: self.first,
            bits: self.bits,
            values,
        })
    }
}

/// The presentation attributes of one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Presentation {
    pub(crate) slope: f64,
    pub(crate) intercept: f64,
    pub(crate) modality_lut: Option<LutRef>,
    /// Stored windows (center, width), first is the default.
    pub windows: Vec<(f64, f64)>,
    pub(crate) voi_function: VoiFunction,
    pub(crate) voi_lut: Option<LutRef>,
    /// Red, green, blue palettes of PALETTE COLOR images.
    pub(crate) palette: Option<[LutRef; 3]>,
}

impl Presentation {
    /// Attributes for frame `frame` (0-based): top level, then the shared
    /// functional groups, then the frame's own (PS3.3 C.7.6.16).
    pub fn from_json(doc: &Value, frame: u32) -> Result<Presentation, ImagingError> {
        let mut p = Presentation {
            slope: 1.0,
            intercept: 0.0,
            modality_lut: None,
            windows: Vec::new(),
            voi_function: VoiFunction::Linear,
            voi_lut: None,
            palette: None,
        };
        p.apply(doc)?;
        for (groups, index) in [("52009229", 0usize), ("52009230", frame as usize)] {
            if let Some(item) = items(doc, groups).get(index) {
                // Pixel Value Transformation, Frame VOI LUT.
                for seq in ["00289145", "00289132"] {
                    if let Some(inner) = items(item, seq).first() {
                        p.apply(inner)?;
                    }
                }
            }
        }
        if matches!(
            text(doc, "00280004").as_deref().map(str::trim),
            Some("PALETTE COLOR")
        ) {
            let pal = |desc: &str, data: &str, name: &str| {
                lut_ref(doc, desc, data).ok_or_else(|| {
                    ImagingError::Unsupported(format!(
                        "PALETTE COLOR without a usable {name} palette (segmented palettes are not rendered)"
                    ))
                })
            };
            p.palette = Some([
                pal("00281101", "00281201", "red")?,
                pal("00281102", "00281202", "green")?,
                pal("00281103", "00281203", "blue")?,
            ]);
        }
        Ok(p)
    }

    fn apply(&mut self, doc: &Value) -> Result<(), ImagingError> {
        if let Some(s) = num(doc, "00281053") {
            if s.is_finite() && s != 0.0 {
                self.slope = s;
            }
        }
        if let Some(i) = num(doc, "00281052") {
            if i.is_finite() {
                self.intercept = i;
            }
        }
        if let Some(item) = items(doc, "00283000").first() {
            self.modality_lut = lut_ref(item, "00283002", "00283006");
        }
        let centers = nums(doc, "00281050");
        let widths = nums(doc, "00281051");
        if !centers.is_empty() && !widths.is_empty() {
            self.windows = centers
                .iter()
                .zip(widths.iter())
                .filter(|(c, w)| c.is_finite() && w.is_finite() && **w >= 1.0)
                .map(|(c, w)| (*c, *w))
                .collect();
        }
        if let Some(f) = text(doc, "00281056").and_then(|f| VoiFunction::parse(&f)) {
            self.voi_function = f;
        }
        if let Some(item) = items(doc, "00283010").first() {
            self.voi_lut = lut_ref(item, "00283002", "00283006");
        }
        Ok(())
    }
}

fn lut_ref(doc: &Value, desc_tag: &str, data_tag: &str) -> Option<LutRef> {
    let desc = nums(doc, desc_tag);
    if desc.len() != 3 {
        return None;
    }
    // PS3.3 C.11.1.1.1: 0 entries means 65536; the first mapped value is
    // US or SS depending on the pixel representation.
    let entries = if desc[0] == 0.0 {
        65536
    } else {
        desc[0] as u32
    };
    let first = desc[1] as i32;
    let bits = desc[2] as u16;
    if !(1..=16).contains(&bits) || entries == 0 || entries > 65536 {
        return None;
    }
    let el = doc.get(data_tag)?;
    let data = if let Some(b64) = el.get("InlineBinary").and_then(Value::as_str) {
        use base64::Engine;
        LutSource::Inline(base64::engine::general_purpose::STANDARD.decode(b64).ok()?)
    } else if let Some(uri) = el.get("BulkDataURI").and_then(Value::as_str) {
        let mut parts = uri.trim_end_matches('/').rsplit('/');
        let length = parts.next()?.parse().ok()?;
        let offset = parts.next()?.parse().ok()?;
        LutSource::Bulk { offset, length }
    } else if let Some(values) = el.get("Value").and_then(Value::as_array) {
        // US/SS tables written as numbers.
        let mut bytes = Vec::with_capacity(values.len() * 2);
        for v in values {
            bytes.extend_from_slice(&(v.as_f64()? as i64 as u16).to_le_bytes());
        }
        LutSource::Inline(bytes)
    } else {
        return None;
    };
    Some(LutRef {
        entries,
        first,
        bits,
        data,
    })
}

fn values<'a>(doc: &'a Value, tag: &str) -> &'a [Value] {
    doc.get(tag)
        .and_then(|e| e.get("Value"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn items<'a>(doc: &'a Value, tag: &str) -> &'a [Value] {
    values(doc, tag)
}

/// Numbers of an element: JSON numbers, or IS/DS strings.
pub(crate) fn nums(doc: &Value, tag: &str) -> Vec<f64> {
    values(doc, tag)
        .iter()
        .filter_map(|v| match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
        .collect()
}

pub(crate) fn num(doc: &Value, tag: &str) -> Option<f64> {
    nums(doc, tag).into_iter().next()
}

pub fn text(doc: &Value, tag: &str) -> Option<String> {
    values(doc, tag).first().and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o
            .get("Alphabetic")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_pixel_module_and_functional_groups() {
        let doc = json!({
            "00280010": {"vr": "US", "Value": [4]},
            "00280011": {"vr": "US", "Value": [2]},
            "00280100": {"vr": "US", "Value": [16]},
            "00280101": {"vr": "US", "Value": [12]},
            "00280103": {"vr": "US", "Value": [1]},
            "00280004": {"vr": "CS", "Value": ["MONOCHROME1 "]},
            "00280008": {"vr": "IS", "Value": ["3"]},
            "00281050": {"vr": "DS", "Value": ["40", "300"]},
            "00281051": {"vr": "DS", "Value": ["400", "1500"]},
            "52009230": {"vr": "SQ", "Value": [
                {}, {"00289145": {"vr": "SQ", "Value": [{
                    "00281053": {"vr": "DS", "Value": ["2"]},
                    "00281052": {"vr": "DS", "Value": ["-1024"]}}]}}
            ]}
        });
        let info = PixelInfo::from_json(&doc).unwrap();
        assert_eq!((info.rows, info.columns, info.frames), (4, 2, 3));
        assert!(info.signed);
        assert_eq!(info.photometric, "MONOCHROME1");
        let p0 = Presentation::from_json(&doc, 0).unwrap();
        assert_eq!((p0.slope, p0.intercept), (1.0, 0.0));
        assert_eq!(p0.windows, vec![(40.0, 400.0), (300.0, 1500.0)]);
        let p1 = Presentation::from_json(&doc, 1).unwrap();
        assert_eq!((p1.slope, p1.intercept), (2.0, -1024.0));
    }

    #[test]
    fn rejects_insane_sizes() {
        let doc = json!({
            "00280010": {"vr": "US", "Value": [65535]},
            "00280011": {"vr": "US", "Value": [65535]},
            "00280100": {"vr": "US", "Value": [32]},
            "00280002": {"vr": "US", "Value": [3]},
        });
        assert!(matches!(
            PixelInfo::from_json(&doc),
            Err(ImagingError::Unsupported(_))
        ));
        let doc = json!({"00280010": {"vr": "US", "Value": [4]}});
        assert!(PixelInfo::from_json(&doc).is_err());
    }

    #[test]
    fn lut_from_bulk_uri() {
        let doc = json!({
            "00281101": {"vr": "US", "Value": [256, 0, 16]},
            "00281201": {"vr": "OW", "BulkDataURI": "/studies/1/series/2/instances/3/bulkdata/1000/512"}
        });
        let l = lut_ref(&doc, "00281101", "00281201").unwrap();
        assert_eq!(
            l.data,
            LutSource::Bulk {
                offset: 1000,
                length: 512
            }
        );
        assert_eq!(l.entries, 256);
    }
}
