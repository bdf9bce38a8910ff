//! The DICOM JSON Model (PS3.18 Annex F) written from scanned elements.
//!
//! `dicom-json` cannot be used for metadata as is: it inlines every binary
//! value (whole Pixel Data included) and never writes `BulkDataURI`. This
//! writer emits bulk values (binary values over the inline threshold, and
//! encapsulated Pixel Data) as `BulkDataURI`s that point at byte ranges of the
//! stored object, so serving them is a range read, never a re-parse.

use base64::Engine;
use dicom_core::{Tag, VR};

use super::scan::{find, is_binary_vr, Element, Value};
use super::tags;
use super::text::Charset;
use super::transfer_syntax::Encoding;

/// What the JSON writer needs besides the elements.
pub struct JsonOptions<'a> {
    pub encoding: Encoding,
    /// The URI (relative to the DICOMweb root) of the instance, e.g.
    /// `/studies/1.2/series/1.3/instances/1.4`; bulk data URIs extend it.
    pub instance_path: &'a str,
    /// Assumed when (0008,0005) is absent.
    pub default_charset: Charset,
    /// The stored transfer syntax, written as Available Transfer Syntax UID
    /// (0008,3002) when the data set has none: a client (the viewer) then
    /// knows how frames come before it asks for one.
    pub available_transfer_syntax: Option<&'a str>,
}

/// Available Transfer Syntax UID (PS3.3 C.12.1).
const AVAILABLE_TRANSFER_SYNTAX_UID: Tag = Tag(0x0008, 0x3002);

/// Writes one data set as a DICOM JSON object.
pub fn write_dataset(out: &mut String, elements: &[Element], opts: &JsonOptions<'_>) {
    let charset = charset_of(elements).unwrap_or(opts.default_charset);
    let pixel_rep = find(elements, tags::PIXEL_REPRESENTATION)
        .and_then(|e| match &e.value {
            Value::Inline(b) if b.len() >= 2 => Some(if opts.encoding.big_endian {
                u16::from_be_bytes([b[0], b[1]])
            } else {
                u16::from_le_bytes([b[0], b[1]])
            }),
            _ => None,
        })
        .unwrap_or(0);
    let mut w = Writer {
        out,
        opts,
        pixel_rep,
    };
    let extra = opts
        .available_transfer_syntax
        .filter(|_| find(elements, AVAILABLE_TRANSFER_SYNTAX_UID).is_none());
    w.object(elements, charset, extra);
}

/// The Specific Character Set declared in one data set or item.
fn charset_of(elements: &[Element]) -> Option<Charset> {
    match &find(elements, tags::SPECIFIC_CHARACTER_SET)?.value {
        Value::Inline(b) => Some(Charset::from_declared(&String::from_utf8_lossy(b))),
        _ => None,
    }
}

struct Writer<'o, 'a> {
    out: &'o mut String,
    opts: &'o JsonOptions<'a>,
    pixel_rep: u16,
}

/// Tags that never appear in the JSON model: group lengths (retired), the
/// file meta group and item delimiters. Data Set Trailing Padding
/// (FFFC,FFFC) is kept (inline, or as bulk data when large): it is an
/// element of the stored data set like any other, and PS3.18 Annex F
/// does not set it apart (pydicom's `to_json_dict` keeps it too).
fn excluded(tag: Tag) -> bool {
    tag.1 == 0x0000 || tag.0 == 0x0002 || tag.0 == 0xFFFE
}

impl Writer<'_, '_> {
    /// One data set; `available` is the Available Transfer Syntax UID to
    /// add in tag order (top level only).
    fn object(&mut self, elements: &[Element], charset: Charset, mut available: Option<&str>) {
        self.out.push('{');
        let mut first = true;
        let mut separate = |out: &mut String| {
            if !first {
                out.push(',');
            }
            first = false;
        };
        for e in elements {
            if excluded(e.tag) {
                continue;
            }
            if let Some(ts) = available.filter(|_| e.tag > AVAILABLE_TRANSFER_SYNTAX_UID) {
                separate(self.out);
                self.available_transfer_syntax(ts);
                available = None;
            }
            separate(self.out);
            self.element(e, charset);
        }
        if let Some(ts) = available {
            separate(self.out);
            self.available_transfer_syntax(ts);
        }
        self.out.push('}');
    }

    fn available_transfer_syntax(&mut self, ts: &str) {
        self.out.push_str("\"00083002\":{\"vr\":\"UI\",\"Value\":[");
        self.out.push_str(&json_string(ts));
        self.out.push_str("]}");
    }

    fn element(&mut self, e: &Element, charset: Charset) {
        use std::fmt::Write;
        let vr = if e.ambiguous_xs && self.pixel_rep == 1 {
            VR::SS
        } else {
            e.vr
        };
        let _ = write!(
            self.out,
            "\"{:04X}{:04X}\":{{\"vr\":\"{}\"",
            e.tag.0,
            e.tag.1,
            vr.to_string()
        );
        match &e.value {
            // An empty sequence has no Value (PS3.18 F.2.5).
            Value::Sequence { items, .. } if items.is_empty() => {}
            Value::Sequence { items, .. } => {
                self.out.push_str(",\"Value\":[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    let item_charset = charset_of(item).unwrap_or(charset);
                    self.object(item, item_charset, None);
                }
                self.out.push(']');
            }
            Value::Bulk | Value::Encapsulated { .. } => {
                let _ = write!(
                    self.out,
                    ",\"BulkDataURI\":\"{}/bulkdata/{}/{}\"",
                    self.opts.instance_path, e.offset, e.length
                );
            }
            Value::Inline(bytes) => self.inline(vr, bytes, charset),
        }
        self.out.push('}');
    }

    fn inline(&mut self, vr: VR, bytes: &[u8], charset: Charset) {
        if bytes.is_empty() {
            return;
        }
        if is_binary_vr(vr) {
            self.out.push_str(",\"InlineBinary\":\"");
            self.out
                .push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
            self.out.push('"');
            return;
        }
        let be = self.opts.encoding.big_endian;
        let mut values: Vec<String> = Vec::new();
        match vr {
            VR::US => each::<2>(bytes, |b| {
                values.push(num(be, b, u16::from_le_bytes, u16::from_be_bytes).to_string())
            }),
            VR::SS => each::<2>(bytes, |b| {
                values.push(num(be, b, i16::from_le_bytes, i16::from_be_bytes).to_string())
            }),
            VR::UL => each::<4>(bytes, |b| {
                values.push(num(be, b, u32::from_le_bytes, u32::from_be_bytes).to_string())
            }),
            VR::SL => each::<4>(bytes, |b| {
                values.push(num(be, b, i32::from_le_bytes, i32::from_be_bytes).to_string())
            }),
            VR::UV => each::<8>(bytes, |b| {
                values.push(big_int(
                    num(be, b, u64::from_le_bytes, u64::from_be_bytes) as i128
                ))
            }),
            VR::SV => each::<8>(bytes, |b| {
                values.push(big_int(
                    num(be, b, i64::from_le_bytes, i64::from_be_bytes) as i128
                ))
            }),
            VR::FL => each::<4>(bytes, |b| {
                values.push(float(
                    num(be, b, f32::from_le_bytes, f32::from_be_bytes) as f64
                ))
            }),
            VR::FD => each::<8>(bytes, |b| {
                values.push(float(num(be, b, f64::from_le_bytes, f64::from_be_bytes)))
            }),
            VR::AT => each::<4>(bytes, |b| {
                let g = num(be, [b[0], b[1]], u16::from_le_bytes, u16::from_be_bytes);
                let el = num(be, [b[2], b[3]], u16::from_le_bytes, u16::from_be_bytes);
                values.push(json_string(&format!("{g:04X}{el:04X}")));
            }),
            VR::PN => {
                let text = charset.decode_vr(bytes, vr);
                for v in split_values(&text, vr) {
                    values.push(person_name(v));
                }
            }
            VR::IS | VR::DS => {
                let text = String::from_utf8_lossy(bytes);
                for v in split_values(&text, vr) {
                    values.push(number_string(v, vr == VR::IS));
                }
            }
            _ => {
                let text = if matches!(vr, VR::SH | VR::LO | VR::ST | VR::LT | VR::UC | VR::UT) {
                    charset.decode_vr(bytes, vr)
                } else {
                    String::from_utf8_lossy(bytes).into_owned()
                };
                for v in split_values(&text, vr) {
                    values.push(if v.is_empty() {
                        "null".into()
                    } else {
                        json_string(v)
                    });
                }
            }
        }
        if values.is_empty() || values.iter().all(|v| v == "null") {
            return;
        }
        self.out.push_str(",\"Value\":[");
        self.out.push_str(&values.join(","));
        self.out.push(']');
    }
}

fn each<const N: usize>(bytes: &[u8], mut f: impl FnMut([u8; N])) {
    for chunk in bytes.chunks_exact(N) {
        let mut a = [0u8; N];
        a.copy_from_slice(chunk);
        f(a);
    }
}

fn num<T, const N: usize>(
    be: bool,
    b: [u8; N],
    le_f: fn([u8; N]) -> T,
    be_f: fn([u8; N]) -> T,
) -> T {
    if be {
        be_f(b)
    } else {
        le_f(b)
    }
}

/// 64-bit integers beyond JavaScript's safe range are written as strings
/// (PS3.18 F.2.3.1 allows either for SV/UV).
fn big_int(v: i128) -> String {
    if v.unsigned_abs() <= (1u128 << 53) {
        v.to_string()
    } else {
        format!("\"{v}\"")
    }
}

fn float(v: f64) -> String {
    if v.is_finite() {
        serde_json::Number::from_f64(v)
            .map(|n| n.to_string())
            .unwrap_or_else(|| "null".into())
    } else if v.is_nan() {
        "\"NaN\"".into()
    } else if v > 0.0 {
        "\"inf\"".into()
    } else {
        "\"-inf\"".into()
    }
}

/// Splits a decoded value field into values and trims padding. LT, ST, UT
/// and UR are single-valued: a backslash there is a character.
fn split_values(text: &str, vr: VR) -> Vec<&str> {
    let single = matches!(vr, VR::LT | VR::ST | VR::UT | VR::UR);
    let trim_leading = !matches!(vr, VR::LT | VR::ST | VR::UT);
    if single {
        vec![trim_value(text, trim_leading)]
    } else {
        text.split('\\')
            .map(|v| trim_value(v, trim_leading))
            .collect()
    }
}

fn trim_value(v: &str, trim_leading: bool) -> &str {
    let v = v.trim_end_matches([' ', '\0']);
    if trim_leading {
        v.trim_start_matches(' ')
    } else {
        v
    }
}

/// IS and DS are written as JSON numbers (PS3.18 F.2.3); a value that is
/// not a valid number is kept as a string rather than dropped.
fn number_string(v: &str, integer: bool) -> String {
    if v.is_empty() {
        return "null".into();
    }
    if integer {
        if let Ok(i) = v.trim_start_matches('+').parse::<i64>() {
            return i.to_string();
        }
    } else if let Ok(f) = v.parse::<f64>() {
        if f.is_finite() {
            if let Some(n) = serde_json::Number::from_f64(f) {
                return n.to_string();
            }
        }
    }
    json_string(v)
}

/// PN values as objects with up to three component groups (PS3.18 F.2.2).
fn person_name(v: &str) -> String {
    if v.is_empty() {
        return "null".into();
    }
    let mut parts = v.splitn(3, '=');
    let mut fields = Vec::new();
    for key in ["Alphabetic", "Ideographic", "Phonetic"] {
        if let Some(group) = parts.next() {
            if !group.is_empty() {
                fields.push(format!("\"{key}\":{}", json_string(group)));
            }
        }
    }
    if fields.is_empty() {
        return "null".into();
    }
    format!("{{{}}}", fields.join(","))
}

pub(crate) fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::scan::{scan_bytes, ScanLimits};
    use crate::dicom::transfer_syntax::EXPLICIT_VR_LE;

    #[test]
    fn writes_values_and_bulk_uris() {
        let mut ds = Vec::new();
        let mut el = |g: u16, e: u16, vr: &[u8; 2], v: &[u8], long: bool| {
            ds.extend_from_slice(&g.to_le_bytes());
            ds.extend_from_slice(&e.to_le_bytes());
            ds.extend_from_slice(vr);
            if long {
                ds.extend_from_slice(&[0, 0]);
                ds.extend_from_slice(&(v.len() as u32).to_le_bytes());
            } else {
                ds.extend_from_slice(&(v.len() as u16).to_le_bytes());
            }
            ds.extend_from_slice(v);
        };
        el(0x0008, 0x0005, b"CS", b"ISO_IR 192", false);
        el(
            0x0010,
            0x0010,
            b"PN",
            "Nguyễn^Văn An=阮^文安".as_bytes(),
            false,
        );
        el(0x0018, 0x0050, b"DS", b"2.50", false);
        el(0x0020, 0x0013, b"IS", b"7 ", false);
        el(0x0028, 0x0010, b"US", &512u16.to_le_bytes(), false);
        el(0x0028, 0x1050, b"DS", b"40\\400 ", false);
        el(0x7FE0, 0x0010, b"OW", &[1u8; 2048], true);
        let file = crate::dicom::scan::tests_support::part10(&ds, EXPLICIT_VR_LE);
        let s = scan_bytes(&file, &ScanLimits::default()).unwrap();
        let mut out = String::new();
        write_dataset(
            &mut out,
            &s.dataset,
            &JsonOptions {
                encoding: s.encoding(),
                instance_path: "/i",
                default_charset: Charset::default(),
                available_transfer_syntax: None,
            },
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["00100010"]["Value"][0]["Alphabetic"], "Nguyễn^Văn An");
        assert_eq!(v["00100010"]["Value"][0]["Ideographic"], "阮^文安");
        assert_eq!(v["00180050"]["Value"][0], 2.5);
        assert_eq!(v["00200013"]["Value"][0], 7);
        assert_eq!(v["00280010"]["Value"][0], 512);
        assert_eq!(v["00281050"]["Value"][1], 400.0);
        let px = s.get(tags::PIXEL_DATA).unwrap();
        assert_eq!(
            v["7FE00010"]["BulkDataURI"],
            format!("/i/bulkdata/{}/2048", px.offset)
        );
    }
}
