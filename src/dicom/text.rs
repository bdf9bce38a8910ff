//! Decoding of DICOM text values to UTF-8 (PS3.5 §6.1, PS3.3 C.12.1.1.2).
//!
//! Values are decoded whole and split on `\` afterwards: in GBK/GB18030 a
//! trail byte may be 0x5C, and so may either byte of a JIS X 0208/0212
//! character between `ESC $ B` and `ESC ( B`; splitting raw bytes first
//! corrupts them. The decoder itself never reads a byte that belongs to a
//! multi-byte character as a delimiter.
//!
//! Every Defined Term of PS3.3 C.12.1.1.2 is handled:
//! - without code extensions: the default repertoire (ISO IR 6), the
//!   single-byte ISO_IR 100, 101, 109, 110, 144, 127, 126, 138, 148, 166 and
//!   13, and the multi-byte ISO_IR 192 (UTF-8), GB18030 and GBK;
//! - with code extensions (multi-valued (0008,0005) and the `ISO 2022 IR`
//!   terms): an ISO/IEC 2022 decoder ([`Iso2022`]) with G0 and G1 designated
//!   by the escape sequences of PS3.3 Tables C.12-3 and C.12-4 (G0 invoked
//!   in GL, G1 in GR, no locking shifts), which returns to the initial state
//!   given by value 1 at the places of PS3.5 §6.1.2.5.3.
//!
//! The character tables are encoding_rs's (WHATWG) where they agree with the
//! national standards; the few code points where the WHATWG tables follow a
//! vendor mapping instead (JIS X 0208 row 1 as in CP932, GB 2312 row 1 as in
//! GBK) are mapped here as in the standards' own mappings, which are also
//! what Python's codecs (and so pydicom) use. JIS X 0212 (ISO IR 159) is
//! decoded through the JIS X 0212 table encoding_rs carries for EUC-JP.

use dicom_core::VR;
use encoding_rs::Encoding;

const ESC: u8 = 0x1B;
const REPLACEMENT: char = '\u{FFFD}';

/// The character repertoire declared by (0008,0005).
///
/// Small and `Copy`: it is passed by value down the data set tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charset {
    scheme: Scheme,
    /// A declared term Phim does not know; decoded with the default.
    pub unknown: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// ISO_IR 192.
    Utf8,
    /// GB18030 and GBK: multi-byte encodings without code extensions,
    /// decoded whole (encoding_rs decodes GBK as GB18030, its superset).
    Gb18030,
    Gbk,
    /// Everything else: single-byte sets and ISO 2022 code extensions.
    Iso2022(Iso2022),
}

/// The initial state of the ISO 2022 decoder, given by value 1 of
/// (0008,0005), and the repertoire used for GR bytes while no G1 set is
/// designated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Iso2022 {
    g0: G0,
    g1: G1,
    /// Decodes GR bytes while G1 is [`G1::None`]. Conformant data never has
    /// them; writers that omit the G1 escape sequence mostly meant the one
    /// multi-byte G1 set they declared, others meant Latin-1.
    unassigned_gr: G1,
}

/// The graphic set designated to G0 (invoked into GL, bytes 0x21–0x7E).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum G0 {
    /// ISO IR 6 (ISO 646 IRV, ASCII): `ESC ( B`.
    Ascii,
    /// ISO IR 14 (JIS X 0201 Romaji): `ESC ( J`. Decoded as ASCII, like
    /// Python's `shift_jis`: 0x5C stays the value delimiter `\`.
    Roman,
    /// ISO IR 87 (JIS X 0208): `ESC $ B` (also `ESC $ @`).
    Jis0208,
    /// ISO IR 159 (JIS X 0212): `ESC $ ( D`.
    Jis0212,
}

/// The graphic set designated to G1 (invoked into GR, bytes 0xA0–0xFF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum G1 {
    None,
    /// The upper half of a single-byte set (ISO 8859 parts, TIS 620):
    /// `ESC - A` etc.
    Upper(Upper),
    /// ISO IR 13 (JIS X 0201 Katakana): `ESC ) I`.
    Katakana,
    /// ISO IR 149 (KS X 1001): `ESC $ ) C`.
    KsX1001,
    /// ISO IR 58 (GB 2312): `ESC $ ) A`.
    Gb2312,
}

/// Where the decoder returns to its initial state besides the start of the
/// field and the control characters CR, LF, FF and TAB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resets {
    /// At `\`, the start of each value of a multi-valued VR.
    backslash: bool,
    /// At `^` and `=`, the component and component group delimiters of PN.
    pn: bool,
}

impl Default for Charset {
    /// The default repertoire (ISO IR 6, ASCII). Bytes above 0x7F are
    /// decoded as Latin-1 (Windows-1252), which is what most writers that
    /// omit (0008,0005) meant.
    fn default() -> Self {
        Charset {
            scheme: Scheme::Iso2022(Iso2022 {
                g0: G0::Ascii,
                g1: G1::None,
                unassigned_gr: G1::Upper(Upper::Ir100),
            }),
            unknown: false,
        }
    }
}

/// What one Defined Term of (0008,0005) stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Term {
    Utf8,
    Gb18030,
    Gbk,
    /// A term for ISO 2022 sets: what it designates to G0 and G1.
    Sets(Option<G0>, G1),
}

impl Charset {
    /// Builds the charset from the raw (0008,0005) value (all values,
    /// backslashes included).
    ///
    /// Value 1 (ISO IR 6 when empty) sets the initial state; values 2–n
    /// name the code extensions. Escape sequences in values are honoured
    /// whether or not their set was declared. A term Phim does not know sets
    /// `unknown`; an unknown value 1 means the default repertoire.
    pub(crate) fn from_declared(raw: &str) -> Charset {
        let mut terms = raw.split('\\').map(|t| t.trim_matches([' ', '\0']));
        let first = terms.next().unwrap_or("");
        let mut unknown = false;
        let mut extension_g1 = G1::None;
        for t in terms {
            match term(t) {
                Some(Term::Sets(_, g1 @ (G1::KsX1001 | G1::Gb2312))) => {
                    if extension_g1 == G1::None {
                        extension_g1 = g1;
                    }
                }
                Some(_) => {}
                // An empty value 2–n declares nothing.
                None if t.is_empty() => {}
                None => unknown = true,
            }
        }
        let scheme = match term(first) {
            // Stand-alone sets: further values are not allowed and ignored.
            Some(Term::Utf8) => Scheme::Utf8,
            Some(Term::Gb18030) => Scheme::Gb18030,
            Some(Term::Gbk) => Scheme::Gbk,
            Some(Term::Sets(g0, g1)) => Scheme::Iso2022(Iso2022 {
                // A multi-byte G0 set is invoked by its escape sequence
                // even when named first; the initial G0 is single-byte.
                g0: match g0 {
                    Some(G0::Roman) => G0::Roman,
                    _ => G0::Ascii,
                },
                g1,
                unassigned_gr: match extension_g1 {
                    G1::None => G1::Upper(Upper::Ir100),
                    g1 => g1,
                },
            }),
            None => {
                return Charset {
                    unknown: true,
                    ..Charset::default()
                }
            }
        };
        Charset { scheme, unknown }
    }

    /// Decodes one whole value field (all values, backslashes included) of
    /// any text VR.
    ///
    /// The ISO 2022 state returns to the initial one at CR, LF, FF and TAB
    /// (PS3.5 §6.1.2.5.3), which holds for every VR. It does not at `\`,
    /// `^` or `=`: these are characters in LT, ST and UT and in the
    /// non-PN string VRs, and conformant writers of multi-valued and PN
    /// values are back in the initial state before them anyway. Use
    /// [`Charset::decode_vr`] when the VR is known.
    pub fn decode(&self, bytes: &[u8]) -> String {
        self.decode_with(
            bytes,
            Resets {
                backslash: false,
                pn: false,
            },
        )
    }

    /// Decodes one whole value field of an element of VR `vr`, returning to
    /// the initial state also at the start of each value (after `\`) of a
    /// multi-valued VR, and at each `^` and `=` of PN. Only bytes decoded
    /// as single-byte characters count as delimiters.
    pub(crate) fn decode_vr(&self, bytes: &[u8], vr: VR) -> String {
        self.decode_with(
            bytes,
            Resets {
                backslash: !matches!(vr, VR::LT | VR::ST | VR::UT | VR::UR),
                pn: vr == VR::PN,
            },
        )
    }

    fn decode_with(&self, bytes: &[u8], resets: Resets) -> String {
        match self.scheme {
            Scheme::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
            Scheme::Gb18030 => decode_whole(encoding_rs::GB18030, bytes),
            Scheme::Gbk => decode_whole(encoding_rs::GBK, bytes),
            Scheme::Iso2022(init) => {
                if bytes.is_ascii() && !bytes.contains(&ESC) {
                    // Fast path: G0 is ASCII or JIS X 0201 Romaji (decoded as
                    // ASCII) in every initial state.
                    return String::from_utf8_lossy(bytes).into_owned();
                }
                init.decode(bytes, resets)
            }
        }
    }
}

/// Maps a Defined Term of PS3.3 Tables C.12-2 to C.12-5 (with the common
/// misspellings pydicom also accepts: `ISO IR 100`, `ISO-IR 100`,
/// `ISO_2022_IR 87`).
fn term(t: &str) -> Option<Term> {
    if let Some(found) = term_exact(t) {
        return Some(found);
    }
    let b = t.as_bytes();
    if b.len() > 6 && b.starts_with(b"ISO") && b[3] != b'_' && &b[4..6] == b"IR" {
        return term_exact(&format!("ISO_IR{}", t.get(6..)?));
    }
    if b.len() > 12
        && b.starts_with(b"ISO")
        && &b[4..8] == b"2022"
        && &b[9..11] == b"IR"
        && !t.starts_with("ISO 2022 IR ")
    {
        return term_exact(&format!("ISO 2022 IR {}", t.get(12..)?));
    }
    None
}

fn term_exact(t: &str) -> Option<Term> {
    let upper = |set| Term::Sets(Some(G0::Ascii), G1::Upper(set));
    Some(match t {
        "" | "ISO_IR 6" | "ISO 2022 IR 6" => Term::Sets(Some(G0::Ascii), G1::None),
        "ISO_IR 192" => Term::Utf8,
        "GB18030" => Term::Gb18030,
        "GBK" => Term::Gbk,
        "ISO_IR 100" | "ISO 2022 IR 100" => upper(Upper::Ir100),
        "ISO_IR 101" | "ISO 2022 IR 101" => upper(Upper::Ir101),
        "ISO_IR 109" | "ISO 2022 IR 109" => upper(Upper::Ir109),
        "ISO_IR 110" | "ISO 2022 IR 110" => upper(Upper::Ir110),
        "ISO_IR 144" | "ISO 2022 IR 144" => upper(Upper::Ir144),
        "ISO_IR 127" | "ISO 2022 IR 127" => upper(Upper::Ir127),
        "ISO_IR 126" | "ISO 2022 IR 126" => upper(Upper::Ir126),
        "ISO_IR 138" | "ISO 2022 IR 138" => upper(Upper::Ir138),
        "ISO_IR 148" | "ISO 2022 IR 148" => upper(Upper::Ir148),
        "ISO_IR 166" | "ISO 2022 IR 166" => upper(Upper::Ir166),
        "ISO_IR 13" | "ISO 2022 IR 13" => Term::Sets(Some(G0::Roman), G1::Katakana),
        "ISO 2022 IR 87" => Term::Sets(Some(G0::Jis0208), G1::None),
        "ISO 2022 IR 159" => Term::Sets(Some(G0::Jis0212), G1::None),
        "ISO 2022 IR 149" => Term::Sets(None, G1::KsX1001),
        "ISO 2022 IR 58" => Term::Sets(None, G1::Gb2312),
        _ => return None,
    })
}

/// A designation made by one escape sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Designation {
    G0(G0),
    G1(G1),
}

/// Parses the escape sequence at the start of `bytes` (which starts with
/// ESC): ESC, intermediate bytes 0x20–0x2F, one final byte 0x30–0x7E
/// (ISO/IEC 2022 §13.1). Returns the bytes it spans and the designation,
/// `None` for a sequence Phim does not know or a malformed one.
fn escape(bytes: &[u8]) -> (usize, Option<Designation>) {
    use Designation::{G0 as D0, G1 as D1};
    let mut n = 1;
    while bytes.get(n).is_some_and(|b| (0x20..=0x2F).contains(b)) {
        n += 1;
    }
    match bytes.get(n) {
        Some(f @ 0x30..=0x7E) => {
            let d = match (&bytes[1..n], f) {
                (b"(", b'B') => Some(D0(G0::Ascii)),
                (b"(", b'J') => Some(D0(G0::Roman)),
                (b"$", b'B' | b'@') | (b"$(", b'B' | b'@') => Some(D0(G0::Jis0208)),
                (b"$(", b'D') => Some(D0(G0::Jis0212)),
                (b")", b'I') => Some(D1(G1::Katakana)),
                (b"$)", b'C') => Some(D1(G1::KsX1001)),
                (b"$)", b'A') => Some(D1(G1::Gb2312)),
                (b"-", f) => Upper::designated_by(*f).map(|set| D1(G1::Upper(set))),
                _ => None,
            };
            (n + 1, d)
        }
        // Truncated or broken: skip ESC and the intermediates only, the
        // byte after them is decoded as usual.
        _ => (n, None),
    }
}

/// The 96-character sets of PS3.3 Table C.12-3 (the upper halves of
/// ISO 8859 parts and of TIS 620), by ISO IR number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upper {
    Ir100,
    Ir101,
    Ir109,
    Ir110,
    Ir126,
    Ir127,
    Ir138,
    Ir144,
    Ir148,
    Ir166,
}

impl Upper {
    /// The set designated to G1 by `ESC - f`.
    fn designated_by(f: u8) -> Option<Upper> {
        Some(match f {
            b'A' => Upper::Ir100,
            b'B' => Upper::Ir101,
            b'C' => Upper::Ir109,
            b'D' => Upper::Ir110,
            b'F' => Upper::Ir126,
            b'G' => Upper::Ir127,
            b'H' => Upper::Ir138,
            b'L' => Upper::Ir144,
            b'M' => Upper::Ir148,
            b'T' => Upper::Ir166,
            _ => return None,
        })
    }

    /// The encoding_rs encoding that decodes the set's bytes 0xA0–0xFF.
    ///
    /// ISO 8859-1, -9 and TIS 620 (ISO 8859-11) are Windows-1252, -1254 and
    /// -874 there. Bytes 0x80–0x9F are C1 controls in ISO 8859, which DICOM
    /// does not allow; these encodings give them the characters they most
    /// likely meant (Python's ISO 8859 codecs give the controls).
    fn encoding(self) -> &'static Encoding {
        use encoding_rs as e;
        match self {
            Upper::Ir100 => e::WINDOWS_1252,
            Upper::Ir101 => e::ISO_8859_2,
            Upper::Ir109 => e::ISO_8859_3,
            Upper::Ir110 => e::ISO_8859_4,
            Upper::Ir126 => e::ISO_8859_7,
            Upper::Ir127 => e::ISO_8859_6,
            Upper::Ir138 => e::ISO_8859_8,
            Upper::Ir144 => e::ISO_8859_5,
            Upper::Ir148 => e::WINDOWS_1254,
            Upper::Ir166 => e::WINDOWS_874,
        }
    }
}

fn decode_whole(enc: &'static Encoding, bytes: &[u8]) -> String {
    enc.decode_without_bom_handling(bytes).0.into_owned()
}

impl Iso2022 {
    fn decode(self, bytes: &[u8], resets: Resets) -> String {
        let mut out = Out::with_capacity(bytes.len());
        let (mut g0, mut g1) = (self.g0, self.g1);
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            match b {
                ESC => {
                    let (n, d) = escape(&bytes[i..]);
                    match d {
                        Some(Designation::G0(set)) => g0 = set,
                        Some(Designation::G1(set)) => g1 = set,
                        None => out.push_char(REPLACEMENT),
                    }
                    i += n;
                }
                b'\t' | b'\n' | 0x0C | b'\r' => {
                    out.push_char(char::from(b));
                    (g0, g1) = (self.g0, self.g1);
                    i += 1;
                }
                // Other controls, SPACE and DEL are the same in every set.
                0x00..=0x20 | 0x7F => {
                    out.push_char(char::from(b));
                    i += 1;
                }
                0x21..=0x7E => match g0 {
                    G0::Ascii | G0::Roman => {
                        out.push_char(char::from(b));
                        let delimiter = match b {
                            b'\\' => resets.backslash,
                            b'^' | b'=' => resets.pn,
                            _ => false,
                        };
                        if delimiter {
                            (g0, g1) = (self.g0, self.g1);
                        }
                        i += 1;
                    }
                    G0::Jis0208 | G0::Jis0212 => match bytes.get(i + 1) {
                        Some(&t @ 0x21..=0x7E) => {
                            out.push_jis(g0 == G0::Jis0212, b, t);
                            i += 2;
                        }
                        _ => {
                            out.push_char(REPLACEMENT);
                            i += 1;
                        }
                    },
                },
                0x80..=0xFF => {
                    let set = if g1 == G1::None {
                        self.unassigned_gr
                    } else {
                        g1
                    };
                    i += out.push_gr(set, b, bytes.get(i + 1).copied());
                }
            }
        }
        out.finish()
    }
}

/// The decoded text, with runs of bytes for one encoding_rs encoding
/// collected and decoded together.
struct Out {
    text: String,
    run: Vec<u8>,
    run_encoding: Option<&'static Encoding>,
}

impl Out {
    fn with_capacity(n: usize) -> Out {
        Out {
            text: String::with_capacity(n + n / 2),
            run: Vec::new(),
            run_encoding: None,
        }
    }

    /// Appends the bytes of whole characters of `enc`.
    fn push_encoded(&mut self, enc: &'static Encoding, bytes: &[u8]) {
        if self.run_encoding != Some(enc) {
            self.flush();
            self.run_encoding = Some(enc);
        }
        self.run.extend_from_slice(bytes);
    }

    fn push_char(&mut self, c: char) {
        self.flush();
        self.text.push(c);
    }

    fn flush(&mut self) {
        if let Some(enc) = self.run_encoding.take() {
            let (text, _) = enc.decode_without_bom_handling(&self.run);
            self.text.push_str(&text);
            self.run.clear();
        }
    }

    fn finish(mut self) -> String {
        self.flush();
        self.text
    }

    /// A JIS X 0208 or JIS X 0212 character in GL (row `r`, cell `c` plus
    /// 0x20), decoded as EUC-JP.
    fn push_jis(&mut self, jis0212: bool, r: u8, c: u8) {
        if jis0212 && (r, c) == (0x22, 0x37) {
            // TILDE in the JIS X 0212 mapping (and Python's), FULLWIDTH
            // TILDE in the WHATWG table.
            self.push_char('~');
        } else if jis0212 {
            self.push_encoded(encoding_rs::EUC_JP, &[0x8F, r | 0x80, c | 0x80]);
        } else if let Some(ch) = jis0208_standard(r, c) {
            self.push_char(ch);
        } else {
            self.push_encoded(encoding_rs::EUC_JP, &[r | 0x80, c | 0x80]);
        }
    }

    /// Decodes the GR byte `b` (followed by `next`) in G1 set `set`;
    /// returns the number of bytes used.
    fn push_gr(&mut self, set: G1, b: u8, next: Option<u8>) -> usize {
        match set {
            G1::Upper(set) => {
                self.push_encoded(set.encoding(), &[b]);
                1
            }
            G1::Katakana => match (b, next) {
                // JIS X 0201 Katakana 0xA1–0xDF are U+FF61–U+FF9F.
                (0xA1..=0xDF, _) => {
                    self.push_char(
                        char::from_u32(0xFF61 + u32::from(b - 0xA1)).unwrap_or(REPLACEMENT),
                    );
                    1
                }
                // Not JIS X 0201 but a Shift_JIS double-byte character, as
                // writers that declare ISO_IR 13 for Shift_JIS text write
                // (pydicom decodes ISO_IR 13 as Shift_JIS too). Its trail
                // byte may be 0x5C: decoded together, never a delimiter.
                (0x81..=0x9F | 0xE0..=0xFC, Some(t @ (0x40..=0x7E | 0x80..=0xFC))) => {
                    self.push_encoded(encoding_rs::SHIFT_JIS, &[b, t]);
                    2
                }
                _ => {
                    self.push_char(REPLACEMENT);
                    1
                }
            },
            G1::KsX1001 | G1::Gb2312 => {
                let korean = set == G1::KsX1001;
                match next {
                    // A GR pair (KS X 1001 and GB 2312 proper are 0xA1–0xFE
                    // both; leads and trails from 0x81 are the UHC and GBK
                    // extensions, decoded too). UHC also has trails that
                    // are ASCII letters, never a delimiter.
                    Some(t)
                        if (0x81..=0xFE).contains(&b)
                            && ((0x81..=0xFE).contains(&t)
                                || (korean && t.is_ascii_alphabetic())) =>
                    {
                        if korean {
                            self.push_encoded(encoding_rs::EUC_KR, &[b, t]);
                        } else if let Some(ch) = gb2312_standard(b, t) {
                            self.push_char(ch);
                        } else {
                            self.push_encoded(encoding_rs::GBK, &[b, t]);
                        }
                        2
                    }
                    _ => {
                        self.push_char(REPLACEMENT);
                        1
                    }
                }
            }
            // Not reachable (G1::None is replaced by the unassigned-GR set);
            // decoded as Latin-1 all the same.
            G1::None => {
                self.push_encoded(encoding_rs::WINDOWS_1252, &[b]);
                1
            }
        }
    }
}

/// JIS X 0208 code points where the WHATWG table (from CP932) departs from
/// the JIS X 0208 mapping (as in Python's `iso2022_jp`).
fn jis0208_standard(r: u8, c: u8) -> Option<char> {
    Some(match (r, c) {
        (0x21, 0x41) => '\u{301C}', // WAVE DASH, not FULLWIDTH TILDE
        (0x21, 0x42) => '\u{2016}', // DOUBLE VERTICAL LINE, not PARALLEL TO
        (0x21, 0x5D) => '\u{2212}', // MINUS SIGN, not FULLWIDTH HYPHEN-MINUS
        (0x21, 0x71) => '\u{00A2}', // CENT SIGN, not FULLWIDTH
        (0x21, 0x72) => '\u{00A3}', // POUND SIGN, not FULLWIDTH
        (0x22, 0x4C) => '\u{00AC}', // NOT SIGN, not FULLWIDTH
        _ => return None,
    })
}

/// GB 2312 code points where the WHATWG table (GBK) departs from the
/// GB 2312 mapping (as in Python's `gb2312`).
fn gb2312_standard(b: u8, t: u8) -> Option<char> {
    Some(match (b, t) {
        (0xA1, 0xA4) => '\u{30FB}', // KATAKANA MIDDLE DOT, not MIDDLE DOT
        (0xA1, 0xAA) => '\u{2015}', // HORIZONTAL BAR, not EM DASH
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(declared: &str) -> Charset {
        let c = Charset::from_declared(declared);
        assert!(!c.unknown, "{declared:?} should be known");
        c
    }

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
        assert_eq!(gbk.decode_vr(b"\x81\x5c\\\x81\x5c", VR::LO), "乗\\乗");
        let gb18030 = Charset::from_declared("GB18030");
        assert_eq!(gb18030.decode_vr(b"\x81\x5c\\x", VR::PN), "乗\\x");
    }

    #[test]
    fn single_byte_sets() {
        // The pydicom/dcmtk character set test files (chr*.dcm) and a few
        // names for the sets they lack.
        let cases: &[(&str, &[u8], &str)] = &[
            ("", b"Doe^John", "Doe^John"),
            ("ISO_IR 6", b"Doe^John", "Doe^John"),
            ("ISO_IR 100", b"\xc4neas^R\xfcdiger", "Äneas^Rüdiger"),
            ("ISO_IR 101", b"Wa\xb3\xeasa^Lech", "Wałęsa^Lech"),
            ("ISO_IR 109", b"\xd5u\xbfeppi^Bor\xf5", "Ġużeppi^Borġ"),
            ("ISO_IR 110", b"B\xbarzi\xf1\xb9^J\xe0nis", "Bērziņš^Jānis"),
            ("ISO_IR 144", b"\xbb\xee\xdace\xdc\xd1yp\xd3", "Люкceмбypг"),
            (
                "ISO_IR 127",
                b"\xe2\xc8\xc7\xe6\xea^\xe4\xe6\xd2\xc7\xd1",
                "قباني^لنزار",
            ),
            (
                "ISO_IR 126",
                b"\xc4\xe9\xef\xed\xf5\xf3\xe9\xef\xf2",
                "Διονυσιος",
            ),
            (
                "ISO_IR 138",
                b"\xf9\xf8\xe5\xef^\xe3\xe1\xe5\xf8\xe4",
                "שרון^דבורה",
            ),
            ("ISO_IR 148", b"\xd6zt\xfcrk^\xde\xfckr\xfc", "Öztürk^Şükrü"),
            (
                "ISO_IR 166",
                b"\xca\xc1\xaa\xd2\xc2^\xe3\xa8\xb4\xd5",
                "สมชาย^ใจดี",
            ),
            // JIS X 0201: Romaji in G0, Katakana in G1.
            ("ISO_IR 13", b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3", "ﾔﾏﾀﾞ^ﾀﾛｳ"),
            ("ISO 2022 IR 100", b"Buc^J\xe9r\xf4me", "Buc^Jérôme"),
            ("ISO 2022 IR 144", b"\xbb\xee\xdace", "Люкce"),
        ];
        for (declared, bytes, want) in cases {
            assert_eq!(cs(declared).decode(bytes), *want, "{declared}");
            assert_eq!(cs(declared).decode_vr(bytes, VR::PN), *want, "{declared}");
        }
    }

    #[test]
    fn absent_or_unknown_charset_is_latin1() {
        for declared in ["", "ISO_IR 6", "ISO_IR 999", "UTF-8"] {
            let c = Charset::from_declared(declared);
            assert_eq!(c.decode(b"J\xe9r\xf4me"), "Jérôme");
        }
        assert_eq!(Charset::default().decode(b"J\xe9r\xf4me"), "Jérôme");
        assert!(!Charset::default().unknown);
        assert!(Charset::from_declared("ISO_IR 999").unknown);
        // An unknown code extension is flagged too; the known ones work.
        let c = Charset::from_declared("\\ISO 2022 IR 87\\ISO 2022 IR 999");
        assert!(c.unknown);
        assert_eq!(c.decode(b"\x1b$B;3ED\x1b(B"), "山田");
        // Misspellings pydicom also accepts.
        assert_eq!(cs("ISO IR 100").decode(b"\xe9"), "é");
        assert_eq!(cs("ISO-IR 144").decode(b"\xbb"), "Л");
        assert_eq!(cs("\\ISO_2022_IR 87").decode(b"\x1b$B;3\x1b(B"), "山");
        // Stand-alone sets ignore further values.
        assert_eq!(cs("ISO_IR 192\\ISO 2022 IR 87").decode("é".as_bytes()), "é");
    }

    /// PS3.5 Example H.3-1: value 1 empty (ISO IR 6), value 2 ISO 2022 IR 87.
    #[test]
    fn annex_h_japanese_jis_x_0208() {
        let bytes = b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\
                      \x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B";
        let want = "Yamada^Tarou=山田^太郎=やまだ^たろう";
        for declared in ["\\ISO 2022 IR 87", "ISO 2022 IR 6\\ISO 2022 IR 87"] {
            assert_eq!(cs(declared).decode(bytes), want);
            assert_eq!(cs(declared).decode_vr(bytes, VR::PN), want);
        }
    }

    /// PS3.5 Example H.3-2: value 1 ISO 2022 IR 13 (JIS X 0201 Romaji in
    /// G0, Katakana in G1), value 2 ISO 2022 IR 87, `ESC ( J` back to G0.
    #[test]
    fn annex_h_japanese_jis_x_0201_and_0208() {
        let bytes = b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J=\
                      \x1b$B$d$^$@\x1b(J^\x1b$B$?$m$&\x1b(J";
        let c = cs("ISO 2022 IR 13\\ISO 2022 IR 87");
        let want = "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう";
        assert_eq!(c.decode(bytes), want);
        assert_eq!(c.decode_vr(bytes, VR::PN), want);
    }

    /// ISO 2022 IR 159 (JIS X 0212) in G0 by `ESC $ ( D`.
    #[test]
    fn japanese_jis_x_0212() {
        let c = cs("ISO 2022 IR 6\\ISO 2022 IR 87\\ISO 2022 IR 159");
        assert_eq!(
            c.decode(b"\x1b$(D\x30\x21\x22\x37\x1b$B;3\x1b(B^x"),
            "丂~山^x"
        );
    }

    /// Bytes 0x5C, 0x5E and 0x3D inside JIS X 0208 characters are not
    /// delimiters.
    #[test]
    fn jis_x_0208_bytes_are_not_delimiters() {
        let c = cs("\\ISO 2022 IR 87");
        // 移 0x305C, 棔 0x5C21, 殉 0x3D5E, 渊 0x5E3D.
        let bytes = b"\x1b$B\x30\x5c\x5c\x21\x3d\x5e\x5e\x3d\x1b(B\\a^b=c";
        for vr in [VR::PN, VR::LO, VR::LT] {
            assert_eq!(c.decode_vr(bytes, vr), "移棔殉渊\\a^b=c");
        }
    }

    /// JIS X 0208 row 1 and GB 2312 row 1 as in the national standards
    /// (and Python), not as in the CP932/GBK-based WHATWG tables.
    #[test]
    fn standard_mappings_of_row_1() {
        let jis = cs("\\ISO 2022 IR 87");
        assert_eq!(
            jis.decode(b"\x1b$B!A!B!]!q!r\"L\x1b(B"),
            "\u{301C}\u{2016}\u{2212}\u{A2}\u{A3}\u{AC}"
        );
        let gb = cs("\\ISO 2022 IR 58");
        assert_eq!(gb.decode(b"\x1b$)A\xa1\xa4\xa1\xaa"), "\u{30FB}\u{2015}");
    }

    /// PS3.5 Example I.2-1.
    #[test]
    fn annex_i_korean_person_name() {
        let bytes = b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\
                      \x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf";
        let c = cs("\\ISO 2022 IR 149");
        let want = "Hong^Gildong=洪^吉洞=홍^길동";
        assert_eq!(c.decode(bytes), want);
        assert_eq!(c.decode_vr(bytes, VR::PN), want);
    }

    /// PS3.5 Example I.3-1: KS X 1001 in G1, one escape sequence per line.
    #[test]
    fn annex_i_korean_long_text() {
        let bytes = b"\x1b$)CThe first line includes \xc7\xd1\xb1\xdb.\r\n\
                      \x1b$)CThe second line includes \xc7\xd1\xb1\xdb, too.\r\n\
                      The third line.\r\n";
        let want = "The first line includes 한글.\r\n\
                    The second line includes 한글, too.\r\nThe third line.\r\n";
        assert_eq!(cs("\\ISO 2022 IR 149").decode_vr(bytes, VR::LT), want);
    }

    /// PS3.5 Examples J.1-1 to J.4-1: UTF-8 and GB18030 (and GBK).
    #[test]
    fn annex_j_chinese_utf8_gb18030_gbk() {
        let utf8 = cs("ISO_IR 192");
        assert_eq!(
            utf8.decode("Wang^XiaoDong=王^小東=".as_bytes()),
            "Wang^XiaoDong=王^小東="
        );
        let pn = b"Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab=";
        let lt: &[u8] = b"The first line includes\xd6\xd0\xce\xc4.\r\n\
              The second line includes\xd6\xd0\xce\xc4, too.\r\nThe third line.\r\n";
        for declared in ["GB18030", "GBK"] {
            assert_eq!(cs(declared).decode(pn), "Wang^XiaoDong=王^小东=");
            assert_eq!(
                cs(declared).decode_vr(lt, VR::LT),
                "The first line includes中文.\r\nThe second line includes中文, too.\r\n\
                 The third line.\r\n"
            );
        }
        // Four-byte GB18030 sequences, in and beyond the BMP.
        assert_eq!(cs("GB18030").decode(b"\x81\x36\x83\x33"), "ẽ");
        assert_eq!(cs("GB18030").decode(b"\x94\x39\xfc\x36"), "😀");
    }

    /// PS3.5 Examples K.2-1 and K.3-1: GB 2312 in G1.
    #[test]
    fn annex_k_chinese_gb2312() {
        let c = cs("\\ISO 2022 IR 58");
        let pn = b"Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab= ";
        assert_eq!(c.decode_vr(pn, VR::PN), "Zhang^XiaoDong=张^小东= ");
        let lt = b"1.\x1b$)A\xb5\xda\xd2\xbb\xd0\xd0\xce\xc4\xd7\xd6\xa1\xa3\r\n\
                   2.\x1b$)A\xb5\xda\xb6\xfe\xd0\xd0\xce\xc4\xd7\xd6\xa1\xa3\r\n\
                   3.\x1b$)A\xb5\xda\xc8\xfd\xd0\xd0\xce\xc4\xd7\xd6\xa1\xa3\r\n";
        let want = "1.第一行文字。\r\n2.第二行文字。\r\n3.第三行文字。\r\n";
        assert_eq!(c.decode_vr(lt, VR::LT), want);
        // The 2015 edition of the example switched G0 back explicitly.
        let lt_2015 = b"1.\x1b$)A\xb5\xda\xd2\xbb\xd0\xd0\xce\xc4\xd7\xd6\xa1\xa3\x1b(B\r\n";
        assert_eq!(c.decode_vr(lt_2015, VR::LT), "1.第一行文字。\r\n");
    }

    /// G1 single-byte code extensions (`ESC - F` etc.) and the return to
    /// the initial state (value 1) at the places of PS3.5 §6.1.2.5.3.
    #[test]
    fn state_returns_to_initial() {
        let c = cs("ISO 2022 IR 100\\ISO 2022 IR 126\\ISO 2022 IR 144");
        // Greek after `ESC - F`, Latin-1 again after each reset point.
        let b = b"\x1b-F\xc4^\xc4=\xc4\\\xc4\r\xc4";
        assert_eq!(c.decode_vr(b, VR::PN), "Δ^Ä=Ä\\Ä\rÄ");
        assert_eq!(c.decode_vr(b, VR::LO), "Δ^Δ=Δ\\Ä\rÄ");
        assert_eq!(c.decode_vr(b, VR::LT), "Δ^Δ=Δ\\Δ\rÄ");
        assert_eq!(c.decode(b), "Δ^Δ=Δ\\Δ\rÄ");
        for ctl in [b'\n', b'\t', 0x0C] {
            let b = [0x1B, b'-', b'L', 0xBB, ctl, 0xBB];
            let want = format!("Л{}»", char::from(ctl));
            assert_eq!(c.decode(&b), want);
        }
        // ESC - A designates Latin-1 back explicitly.
        assert_eq!(c.decode(b"\x1b-L\xbb\x1b-A\xbb"), "Л»");
        // JIS X 0208 ends at the reset points too (a non-conformant writer
        // that never switched back).
        let j = cs("\\ISO 2022 IR 87");
        assert_eq!(j.decode(b"\x1b$B;3\rab"), "山\rab");
    }

    /// Writers that declare a multi-byte G1 set but omit its escape
    /// sequence get it anyway; otherwise GR bytes are Latin-1.
    #[test]
    fn gr_bytes_without_designation() {
        assert_eq!(cs("\\ISO 2022 IR 149").decode(b"\xc7\xd1\xb1\xdb"), "한글");
        assert_eq!(cs("\\ISO 2022 IR 58").decode(b"\xd5\xc5"), "张");
        assert_eq!(cs("ISO 2022 IR 149").decode(b"\xc7\xd1"), "한");
        assert_eq!(cs("\\ISO 2022 IR 87").decode(b"\xe9"), "é");
        // UHC (CP949) syllables outside KS X 1001, trail an ASCII letter.
        assert_eq!(cs("\\ISO 2022 IR 149").decode(b"\x1b$)C\x81\x41"), "갂");
    }

    /// Shift_JIS text declared as ISO_IR 13 (JIS X 0201) is decoded as
    /// Shift_JIS, with 0x5C trail bytes kept inside their characters.
    #[test]
    fn shift_jis_declared_as_iso_ir_13() {
        let c = cs("ISO_IR 13");
        // 山田 0x8E52 0x9363, ソ 0x835C, 表 0x955C, then ﾔ and a delimiter.
        let bytes = b"\x8e\x52\x93\x63^\x83\x5c\x95\x5c\xd4\\x";
        assert_eq!(c.decode_vr(bytes, VR::PN), "山田^ソ表ﾔ\\x");
    }

    /// Malformed bytes never panic and never turn a byte of a broken
    /// multi-byte character into a delimiter.
    #[test]
    fn malformed_input() {
        let j = cs("\\ISO 2022 IR 87");
        assert_eq!(j.decode(b"\x1b"), "\u{FFFD}");
        assert_eq!(j.decode(b"a\x1b$"), "a\u{FFFD}");
        assert_eq!(j.decode(b"\x1b$)"), "\u{FFFD}");
        assert_eq!(j.decode(b"\x1b$)Zb"), "\u{FFFD}b");
        assert_eq!(j.decode(b"\x1bZb"), "\u{FFFD}b");
        assert_eq!(j.decode(b"\x1b\xe9b"), "\u{FFFD}éb");
        assert_eq!(j.decode(b"\x1b-Zb"), "\u{FFFD}b");
        // Truncated JIS X 0208 character, and one broken by a control.
        assert_eq!(j.decode(b"\x1b$B;"), "\u{FFFD}");
        assert_eq!(j.decode(b"\x1b$B;\rx"), "\u{FFFD}\rx");
        assert_eq!(j.decode(b"\x1b$(D\x30"), "\u{FFFD}");
        // A JIS X 0208 code with no character.
        assert_eq!(j.decode(b"\x1b$B\x7e\x7e\x1b(B"), "\u{FFFD}");
        let k = cs("\\ISO 2022 IR 149");
        assert_eq!(k.decode(b"\x1b$)C\xb1"), "\u{FFFD}");
        assert_eq!(k.decode_vr(b"\x1b$)C\xb1\\x", VR::LO), "\u{FFFD}\\x");
        assert_eq!(k.decode_vr(b"\x1b$)C\xb1^x", VR::PN), "\u{FFFD}^x");
        assert_eq!(k.decode(b"\x1b$)C\xff\xff"), "\u{FFFD}\u{FFFD}");
        let g = cs("\\ISO 2022 IR 58");
        assert_eq!(g.decode_vr(b"\x1b$)A\xb5\\x", VR::LO), "\u{FFFD}\\x");
        let kana = cs("ISO_IR 13");
        assert_eq!(
            kana.decode(b"\x80\xa0\xff\xe0"),
            "\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}"
        );
        assert_eq!(cs("ISO_IR 192").decode(b"a\xe4\xb8"), "a\u{FFFD}");
        assert_eq!(cs("GB18030").decode(b"a\x81\x30\x81"), "a\u{FFFD}");
        assert!(!cs("GB18030").decode(b"\x81").is_empty());

        // Pseudo-random garbage in every set: no panic, and a value
        // delimiter in the output always comes from a 0x5C byte.
        let declared = [
            "",
            "ISO_IR 100",
            "ISO_IR 13",
            "ISO_IR 192",
            "GB18030",
            "GBK",
            "\\ISO 2022 IR 87",
            "ISO 2022 IR 13\\ISO 2022 IR 87\\ISO 2022 IR 159",
            "\\ISO 2022 IR 149",
            "\\ISO 2022 IR 58",
            "ISO 2022 IR 100\\ISO 2022 IR 126",
        ];
        let alphabet =
            b"\x1b$()-BJICADF@\\^=\r\n\t ab\x21\x30\x5c\x7e\x7f\x80\x81\xa1\xb1\xd5\xfe\xff\x00";
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..4000 {
            let len = (seed % 24) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            let backslashes = bytes.iter().filter(|&&b| b == b'\\').count();
            for d in declared {
                let c = Charset::from_declared(d);
                for vr in [VR::PN, VR::LO, VR::LT] {
                    let s = c.decode_vr(&bytes, vr);
                    assert!(
                        s.matches('\\').count() <= backslashes,
                        "{d:?} {bytes:x?} -> {s:?}"
                    );
                }
                let _ = c.decode(&bytes);
            }
        }
    }

    #[test]
    fn charset_is_small_and_copy() {
        fn copy<T: Copy>() {}
        copy::<Charset>();
        assert!(std::mem::size_of::<Charset>() <= 8);
    }
}
