//! Decoding of DICOM text values to UTF-8 (PS3.5 §6.1, PS3.3 C.12.1.1.2).
//!
//! Values are decoded whole and split on `\` afterwards: in GBK/GB18030 a
//! trail byte may be 0x5C, so splitting raw bytes first corrupts them.
//!
//! Single-valued Specific Character Sets are handled here. ISO 2022 code
//! extensions (multi-valued (0008,0005), e.g. `\ISO 2022 IR 87`) are decoded
//! through their first value for now; full escape-sequence handling belongs
//! to the QIDO character-set work.

use encoding_rs::Encoding;

/// The character repertoire declared by (0008,0005).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charset {
    encoding: Option<&'static Encoding>,
    /// A declared term Phim does not know; decoded with the default.
    pub unknown: bool,
}

impl Default for Charset {
    /// The default repertoire (ISO IR 6, ASCII). Bytes above 0x7F are
    /// decoded as Latin-1, which is what most writers that omit
    /// (0008,0005) meant.
    fn default() -> Self {
        Charset {
            encoding: Some(encoding_rs::WINDOWS_1252),
            unknown: false,
        }
    }
}

impl Charset {
    /// Builds the charset from the raw (0008,0005) value.
    pub fn from_declared(raw: &str) -> Charset {
        let terms: Vec<&str> = raw.split('\\').map(|t| t.trim()).collect();
        // With code extensions the first value names the G0 set of the
        // initial state; an empty first value means ISO IR 6.
        let first = terms.iter().copied().find(|t| !t.is_empty()).unwrap_or("");
        match term_encoding(first) {
            Some(enc) => Charset {
                encoding: enc,
                unknown: false,
            },
            None => Charset {
                unknown: true,
                ..Charset::default()
            },
        }
    }

    /// Decodes one whole value field (all values, backslashes included).
    pub fn decode(&self, bytes: &[u8]) -> String {
        if bytes.is_ascii() {
            // Fast path, and the only correct one for pure ASCII in every set.
            return String::from_utf8_lossy(bytes).into_owned();
        }
        match self.encoding {
            Some(enc) => enc.decode_without_bom_handling(bytes).0.into_owned(),
            None => String::from_utf8_lossy(bytes).into_owned(),
        }
    }
}

/// Maps a Defined Term of PS3.3 Table C.12-2/-3/-4/-5 to an encoding.
/// `Some(None)` means UTF-8 handled by `from_utf8_lossy`.
fn term_encoding(term: &str) -> Option<Option<&'static Encoding>> {
    let enc = match term {
        "" | "ISO_IR 6" | "ISO 2022 IR 6" | "ISO_IR 100" | "ISO 2022 IR 100" => {
            encoding_rs::WINDOWS_1252
        }
        "ISO_IR 192" => return Some(None),
        "ISO_IR 101" | "ISO 2022 IR 101" => encoding_rs::ISO_8859_2,
        "ISO_IR 109" | "ISO 2022 IR 109" => encoding_rs::ISO_8859_3,
        "ISO_IR 110" | "ISO 2022 IR 110" => encoding_rs::ISO_8859_4,
        "ISO_IR 144" | "ISO 2022 IR 144" => encoding_rs::ISO_8859_5,
        "ISO_IR 127" | "ISO 2022 IR 127" => encoding_rs::ISO_8859_6,
        "ISO_IR 126" | "ISO 2022 IR 126" => encoding_rs::ISO_8859_7,
        "ISO_IR 138" | "ISO 2022 IR 138" => encoding_rs::ISO_8859_8,
        "ISO_IR 148" | "ISO 2022 IR 148" => encoding_rs::WINDOWS_1254,
        "ISO_IR 166" | "ISO 2022 IR 166" => encoding_rs::WINDOWS_874,
        "ISO_IR 13" | "ISO 2022 IR 13" => encoding_rs::SHIFT_JIS,
        "GB18030" => encoding_rs::GB18030,
        "GBK" => encoding_rs::GBK,
        _ => return None,
    };
    Some(Some(enc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_and_utf8() {
        let l1 = Charset::from_declared("ISO_IR 100");
        assert_eq!(l1.decode(b"Buc^J\xe9r\xf4me"), "Buc^Jérôme");
        let u8 = Charset::from_declared("ISO_IR 192");
        assert_eq!(u8.decode("Nguyễn^Văn An".as_bytes()), "Nguyễn^Văn An");
        assert!(Charset::from_declared("NOPE").unknown);
    }

    #[test]
    fn gbk_trail_byte_0x5c_is_not_a_delimiter() {
        // 乗 in GBK is 0x81 0x5C.
        let gbk = Charset::from_declared("GBK");
        assert_eq!(gbk.decode(b"\x81\x5c"), "乗");
    }
}
