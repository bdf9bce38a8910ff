//! A bounded, offset-recording walker over DICOM Part 10 files.
//!
//! Why not `dicom-object` for ingest: it allocates a value's *declared*
//! length before reading it (a 674-byte file with an undefined-length UN
//! element made it allocate 3.6 GB), it keeps every value in memory, and it
//! does not tell where a value lies in the file. Indexing needs the header,
//! metadata needs bulk values *by reference*, and frame and bulk-data
//! retrieval need byte offsets to read ranges from object storage. This
//! walker reads small values, skips (seeks over) large ones while recording
//! their offset and length, and checks every length against the bytes that
//! are actually there before using it. It never decodes pixels.
//!
//! Encodings: Explicit/Implicit VR Little Endian, Explicit VR Big Endian,
//! Deflated (inflated into memory under a cap), undefined-length sequences
//! and items, encapsulated Pixel Data, and undefined-length UN elements,
//! which PS3.5 §6.2.2 Note 4 (CP-246) says are encoded as Implicit VR Little
//! Endian sequences.

use std::fs::File;
use std::io::{self, BufReader, Cursor, Read, Seek};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use super::tags;
use super::text::Charset;
use super::transfer_syntax::{self, Encoding, TransferSyntax};

/// Limits that bound what a scan may allocate, whatever the input declares.
#[derive(Debug, Clone)]
pub struct ScanLimits {
    /// Binary values (OB, OW, UN, …) at most this long are kept inline;
    /// longer ones are recorded by offset (PS3.18 bulk data).
    pub(crate) inline_binary_max: u64,
    /// Other values at most this long are kept; longer ones become bulk data.
    pub(crate) inline_text_max: u64,
    /// Total bytes of values kept in memory for one instance.
    pub(crate) max_kept_bytes: u64,
    /// Elements (at every depth) in one instance.
    pub(crate) max_elements: usize,
    /// Sequence nesting depth.
    pub(crate) max_depth: usize,
    /// Largest inflated data set accepted for Deflated transfer syntaxes.
    pub(crate) max_inflated: u64,
    /// The character set assumed when (0008,0005) is absent or empty
    /// (`--default-charset`).
    pub default_charset: Charset,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits {
            inline_binary_max: 1024,
            inline_text_max: 1 << 20,
            max_kept_bytes: 256 << 20,
            max_elements: 4_000_000,
            max_depth: 24,
            max_inflated: 512 << 20,
            default_charset: Charset::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("not a DICOM Part 10 file (no 'DICM' prefix)")]
    NotPart10,
    #[error("file is truncated: {0}")]
    Truncated(String),
    #[error("malformed data set at byte {offset}: {reason}")]
    Malformed { offset: u64, reason: String },
    #[error("unknown transfer syntax {0}")]
    UnknownTransferSyntax(String),
    #[error("instance exceeds a limit: {0}")]
    Limit(String),
    #[error("I/O error while reading the instance: {0}")]
    Io(#[from] io::Error),
}

/// One data element as found in the file.
#[derive(Debug, Clone)]
pub struct Element {
    pub(crate) tag: Tag,
    pub(crate) vr: VR,
    /// The implicit-VR dictionary said US-or-SS (resolved later with
    /// Pixel Representation).
    pub(crate) ambiguous_xs: bool,
    /// Offset of the value in the data set stream (the file offset, except
    /// for deflated transfer syntaxes where it is in the inflated stream).
    pub offset: u64,
    /// Value length in bytes; for undefined-length values, the bytes up to
    /// and including the delimiter.
    pub length: u64,
    pub value: Value,
}

#[derive(Debug, Clone)]
pub enum Value {
    /// The raw value bytes (in the stream's byte order).
    Inline(Vec<u8>),
    /// Not read: lies at `offset`, `length` bytes.
    Bulk,
    /// Sequence items. `implicit_le` is set for CP-246 UN sequences.
    Sequence {
        items: Vec<Vec<Element>>,
        implicit_le: bool,
    },
    /// Encapsulated Pixel Data: the items (Basic Offset Table first), and
    /// the Basic Offset Table's bytes.
    Encapsulated {
        fragments: Vec<Fragment>,
        offset_table: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    pub offset: u64,
    pub length: u64,
}

/// The result of scanning one Part 10 file.
#[derive(Debug)]
pub struct Scanned {
    pub has_preamble: bool,
    /// The file meta information group (0002,xxxx).
    pub meta: Vec<Element>,
    pub transfer_syntax: &'static TransferSyntax,
    /// How the data set is actually encoded (differs from the transfer
    /// syntax's when a file says explicit VR but is written implicitly).
    pub encoding: Encoding,
    /// Warnings about what the walker had to assume.
    pub(crate) warnings: Vec<String>,
    /// Byte offset where the data set starts in the file.
    pub dataset_offset: u64,
    pub dataset: Vec<Element>,
    /// Total size of the file.
    pub file_size: u64,
    /// Assumed when (0008,0005) is absent or empty.
    pub default_charset: Charset,
}

impl Scanned {
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// A top-level element of the data set.
    pub fn get(&self, tag: Tag) -> Option<&Element> {
        find(&self.dataset, tag)
    }

    /// The Specific Character Set of the top level.
    pub(crate) fn charset(&self) -> Charset {
        match self.get(tags::SPECIFIC_CHARACTER_SET).map(|e| &e.value) {
            Some(Value::Inline(b)) if !String::from_utf8_lossy(b).trim().is_empty() => {
                let declared = Charset::from_declared(&String::from_utf8_lossy(b));
                if declared.unknown {
                    // An unknown term: the configured default, flagged.
                    let mut c = self.default_charset;
                    c.unknown = true;
                    c
                } else {
                    declared
                }
            }
            _ => self.default_charset,
        }
    }

    /// Whether (0008,0005) is absent (or empty) while some top-level text
    /// value has bytes above 0x7F: the default character set was a guess.
    pub(crate) fn undeclared_non_ascii(&self) -> bool {
        let declared = matches!(
            self.get(tags::SPECIFIC_CHARACTER_SET).map(|e| &e.value),
            Some(Value::Inline(b)) if !String::from_utf8_lossy(b).trim().is_empty()
        );
        !declared
            && self.dataset.iter().any(|e| {
                matches!(
                    e.vr,
                    VR::SH | VR::LO | VR::ST | VR::LT | VR::UC | VR::UT | VR::PN
                ) && matches!(&e.value, Value::Inline(b) if !b.is_ascii())
            })
    }

    /// A top-level text value, decoded, with padding trimmed; `None` when
    /// absent or empty.
    pub fn text(&self, tag: Tag) -> Option<String> {
        let e = self.get(tag)?;
        let Value::Inline(bytes) = &e.value else {
            return None;
        };
        let s = self.charset().decode_vr(bytes, e.vr);
        let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
        (!s.is_empty()).then(|| s.to_owned())
    }

    /// A top-level unsigned integer (US, UL, or an IS string).
    pub(crate) fn uint(&self, tag: Tag) -> Option<u64> {
        let e = self.get(tag)?;
        let Value::Inline(bytes) = &e.value else {
            return None;
        };
        let be = self.encoding().big_endian;
        match e.vr {
            VR::US | VR::SS => {
                let b: [u8; 2] = bytes.get(..2)?.try_into().ok()?;
                Some(if be {
                    u16::from_be_bytes(b)
                } else {
                    u16::from_le_bytes(b)
                } as u64)
            }
            VR::UL | VR::SL => {
                let b: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
                Some(if be {
                    u32::from_be_bytes(b)
                } else {
                    u32::from_le_bytes(b)
                } as u64)
            }
            VR::IS | VR::DS => {
                let s = String::from_utf8_lossy(bytes);
                let first = s
                    .split('\\')
                    .next()?
                    .trim_matches(|c: char| c == ' ' || c == '\0');
                first
                    .parse::<i64>()
                    .ok()
                    .and_then(|v| u64::try_from(v).ok())
            }
            _ => None,
        }
    }
}

/// Finds an element by tag in one level of a data set (sorted or not).
pub fn find(elements: &[Element], tag: Tag) -> Option<&Element> {
    elements.iter().find(|e| e.tag == tag)
}

/// Scans a Part 10 file on disk.
pub(crate) fn scan_file(file: File, limits: &ScanLimits) -> Result<Scanned, ScanError> {
    let size = file.metadata()?.len();
    let reader = BufReader::with_capacity(64 * 1024, file);
    scan(reader, size, limits)
}

/// Scans a Part 10 file in memory.
pub fn scan_bytes(bytes: &[u8], limits: &ScanLimits) -> Result<Scanned, ScanError> {
    scan(Cursor::new(bytes), bytes.len() as u64, limits)
}

/// Scans a bare data set (no preamble, no meta group) encoded in
/// `transfer_syntax`: what DIMSE carries in P-DATA.
pub(crate) fn scan_dataset(
    bytes: &[u8],
    transfer_syntax: &str,
    limits: &ScanLimits,
) -> Result<Scanned, ScanError> {
    let ts = transfer_syntax::lookup(transfer_syntax)
        .ok_or_else(|| ScanError::UnknownTransferSyntax(transfer_syntax.to_owned()))?;
    let inflated;
    let data: &[u8] = if ts.encoding.deflated {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(bytes)
            .take(limits.max_inflated + 1)
            .read_to_end(&mut out)
            .map_err(|e| ScanError::Malformed {
                offset: 0,
                reason: format!("deflated data set does not inflate: {e}"),
            })?;
        if out.len() as u64 > limits.max_inflated {
            return Err(ScanError::Limit("inflated data set too large".into()));
        }
        inflated = out;
        &inflated
    } else {
        bytes
    };
    let mut w = Walker {
        src: Cursor::new(data),
        pos: 0,
        end: data.len() as u64,
        limits,
        kept: 0,
        count: 0,
    };
    let dataset = w.read_dataset(ts.encoding)?;
    Ok(Scanned {
        has_preamble: false,
        meta: Vec::new(),
        transfer_syntax: ts,
        encoding: ts.encoding,
        warnings: Vec::new(),
        dataset_offset: 0,
        dataset,
        file_size: bytes.len() as u64,
        default_charset: limits.default_charset,
    })
}

/// The inflated data set of a Deflated Explicit VR Little Endian file.
pub(crate) fn inflated_dataset(bytes: &[u8]) -> Result<Vec<u8>, ScanError> {
    let limits = ScanLimits::default();
    let mut w = Walker {
        src: Cursor::new(bytes),
        pos: 0,
        end: bytes.len() as u64,
        limits: &limits,
        kept: 0,
        count: 0,
    };
    let mut warnings = Vec::new();
    w.read_preamble_and_meta(bytes.len() as u64, &mut warnings)?;
    let rest = bytes.get(w.pos as usize..).unwrap_or_default();
    let mut inflated = Vec::new();
    flate2::read::DeflateDecoder::new(rest)
        .take(limits.max_inflated + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| ScanError::Malformed {
            offset: w.pos,
            reason: format!("deflated data set does not inflate: {e}"),
        })?;
    if inflated.len() as u64 > limits.max_inflated {
        return Err(ScanError::Limit("inflated data set too large".into()));
    }
    Ok(inflated)
}

/// Skip-capable byte source.
pub trait Source: Read {
    fn skip(&mut self, n: i64) -> io::Result<()>;
}

impl Source for BufReader<File> {
    fn skip(&mut self, n: i64) -> io::Result<()> {
        self.seek_relative(n)
    }
}

impl<T: AsRef<[u8]>> Source for Cursor<T> {
    fn skip(&mut self, n: i64) -> io::Result<()> {
        self.seek(io::SeekFrom::Current(n)).map(|_| ())
    }
}

fn scan<R: Source>(reader: R, size: u64, limits: &ScanLimits) -> Result<Scanned, ScanError> {
    let mut w = Walker {
        src: reader,
        pos: 0,
        end: size,
        limits,
        kept: 0,
        count: 0,
    };

    let mut warnings = Vec::new();
    let (has_preamble, meta) = w.read_preamble_and_meta(size, &mut warnings)?;
    let dataset_offset = w.pos;

    let declared = find(&meta, tags::TRANSFER_SYNTAX_UID).and_then(|e| match &e.value {
        Value::Inline(b) => Some(
            String::from_utf8_lossy(b)
                .trim_end_matches(['\0', ' '])
                .to_owned(),
        ),
        _ => None,
    });
    let ts = match &declared {
        Some(uid) => transfer_syntax::lookup(uid)
            .ok_or_else(|| ScanError::UnknownTransferSyntax(uid.clone()))?,
        None => {
            let guessed = w.guess_le_encoding()?;
            warnings.push(format!(
                "no Transfer Syntax UID in the file meta; the data set reads as {}",
                guessed.name
            ));
            guessed
        }
    };
    // A file whose transfer syntax says explicit VR but whose data set is
    // written implicitly (seen from some converters): follow the bytes, as
    // other toolkits do.
    let mut encoding = ts.encoding;
    if encoding.explicit_vr && !encoding.big_endian && !encoding.deflated {
        let guessed = w.guess_le_encoding()?;
        if !guessed.encoding.explicit_vr {
            warnings.push(format!(
                "{} declared but the data set is Implicit VR",
                ts.name
            ));
            encoding = guessed.encoding;
        }
    }

    let dataset = if ts.encoding.deflated {
        let mut inflated = Vec::new();
        let remaining = w.end - w.pos;
        let decoder = flate2::read::DeflateDecoder::new((&mut w.src).take(remaining));
        decoder
            .take(limits.max_inflated + 1)
            .read_to_end(&mut inflated)
            .map_err(|e| ScanError::Malformed {
                offset: dataset_offset,
                reason: format!("deflated data set does not inflate: {e}"),
            })?;
        if inflated.len() as u64 > limits.max_inflated {
            return Err(ScanError::Limit("inflated data set too large".into()));
        }
        let len = inflated.len() as u64;
        let mut inner = Walker {
            src: Cursor::new(inflated),
            pos: 0,
            end: len,
            limits,
            kept: 0,
            count: 0,
        };
        inner.read_dataset(encoding)?
    } else {
        w.read_dataset(encoding)?
    };

    Ok(Scanned {
        has_preamble,
        meta,
        transfer_syntax: ts,
        encoding,
        warnings,
        dataset_offset,
        dataset,
        file_size: size,
        default_charset: limits.default_charset,
    })
}

const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_DELIMITATION: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_DELIMITATION: Tag = Tag(0xFFFE, 0xE0DD);
const UNDEFINED: u32 = 0xFFFF_FFFF;
const IMPLICIT_LE: Encoding = Encoding {
    explicit_vr: false,
    big_endian: false,
    deflated: false,
};

struct Walker<'l, R> {
    src: R,
    pos: u64,
    end: u64,
    limits: &'l ScanLimits,
    kept: u64,
    count: usize,
}

fn has_long_length(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB
            | VR::OD
            | VR::OF
            | VR::OL
            | VR::OV
            | VR::OW
            | VR::SQ
            | VR::SV
            | VR::UC
            | VR::UN
            | VR::UR
            | VR::UT
            | VR::UV
    )
}

pub(crate) fn is_binary_vr(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::UN
    )
}

impl<R: Source> Walker<'_, R> {
    fn malformed(&self, reason: impl Into<String>) -> ScanError {
        ScanError::Malformed {
            offset: self.pos,
            reason: reason.into(),
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ScanError> {
        if self.pos + buf.len() as u64 > self.end {
            return Err(ScanError::Truncated(format!(
                "needed {} bytes at offset {}, the file has {}",
                buf.len(),
                self.pos,
                self.end
            )));
        }
        self.src.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                ScanError::Truncated(format!("unexpected end at offset {}", self.pos))
            } else {
                ScanError::Io(e)
            }
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn skip_to(&mut self, target: u64) -> Result<(), ScanError> {
        if target > self.end {
            return Err(ScanError::Truncated(format!(
                "a value ends at {target}, past the end of the file ({})",
                self.end
            )));
        }
        let delta = target as i64 - self.pos as i64;
        self.src.skip(delta)?;
        self.pos = target;
        Ok(())
    }

    fn u16(&mut self, be: bool) -> Result<u16, ScanError> {
        let mut b = [0u8; 2];
        self.read_exact(&mut b)?;
        Ok(if be {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32(&mut self, be: bool) -> Result<u32, ScanError> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b)?;
        Ok(if be {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn tag(&mut self, be: bool) -> Result<Tag, ScanError> {
        let g = self.u16(be)?;
        let e = self.u16(be)?;
        Ok(Tag(g, e))
    }

    /// Reads the preamble (if any), "DICM" and the file meta group.
    fn read_preamble_and_meta(
        &mut self,
        size: u64,
        warnings: &mut Vec<String>,
    ) -> Result<(bool, Vec<Element>), ScanError> {
        let w = self;
        // Preamble: 128 bytes then "DICM"; some writers omit the preamble.
        let has_preamble = {
            let mut head = [0u8; 4];
            w.read_exact(&mut head)?;
            if &head == b"DICM" {
                false
            } else {
                if size < 132 {
                    return Err(ScanError::NotPart10);
                }
                w.skip_to(128)?;
                w.read_exact(&mut head)?;
                if &head != b"DICM" {
                    return Err(ScanError::NotPart10);
                }
                true
            }
        };

        let meta = w.read_meta(warnings)?;
        Ok((has_preamble, meta))
    }

    /// Peeks at the first element of the data set to tell explicit from
    /// implicit VR (little endian).
    fn guess_le_encoding(&mut self) -> Result<&'static TransferSyntax, ScanError> {
        let implicit = transfer_syntax::lookup(transfer_syntax::IMPLICIT_VR_LE);
        let explicit = transfer_syntax::lookup(transfer_syntax::EXPLICIT_VR_LE);
        let (Some(implicit), Some(explicit)) = (implicit, explicit) else {
            return Err(self.malformed("transfer syntax table incomplete"));
        };
        if self.end - self.pos < 6 {
            return Ok(explicit);
        }
        let mut b = [0u8; 6];
        self.read_exact(&mut b)?;
        self.src.skip(-6)?;
        self.pos -= 6;
        Ok(if VR::from_binary([b[4], b[5]]).is_some() {
            explicit
        } else {
            implicit
        })
    }

    /// Reads the file meta group: Explicit VR Little Endian by PS3.10 §7.1,
    /// though some writers encode it implicitly or omit its group length.
    fn read_meta(&mut self, warnings: &mut Vec<String>) -> Result<Vec<Element>, ScanError> {
        let mut meta = Vec::new();
        loop {
            if self.end - self.pos < 8 {
                break;
            }
            let mut head = [0u8; 6];
            self.read_exact(&mut head)?;
            self.src.skip(-6)?;
            self.pos -= 6;
            if u16::from_le_bytes([head[0], head[1]]) != 0x0002 {
                break;
            }
            let explicit = VR::from_binary([head[4], head[5]]).is_some();
            if !explicit && meta.is_empty() {
                warnings.push("file meta group is not Explicit VR".into());
            }
            let enc = Encoding {
                explicit_vr: explicit,
                big_endian: false,
                deflated: false,
            };
            match self.read_element(enc, 0)? {
                Some(e) => meta.push(e),
                None => return Err(self.malformed("delimiter in the file meta group")),
            }
        }
        if meta.is_empty() {
            return Err(ScanError::NotPart10);
        }
        Ok(meta)
    }

    fn read_dataset(&mut self, enc: Encoding) -> Result<Vec<Element>, ScanError> {
        let end = self.end;
        self.read_elements(enc, Some(end), 0)
    }

    /// Reads elements until `end` (defined length) or an Item Delimitation
    /// Item (undefined length, `end == None`).
    fn read_elements(
        &mut self,
        enc: Encoding,
        end: Option<u64>,
        depth: usize,
    ) -> Result<Vec<Element>, ScanError> {
        let mut out = Vec::new();
        loop {
            match end {
                Some(e) if self.pos >= e => {
                    if self.pos > e {
                        return Err(self.malformed("an element overruns its item"));
                    }
                    break;
                }
                None if self.pos >= self.end => {
                    return Err(ScanError::Truncated("item has no delimiter".into()));
                }
                _ => {}
            }
            // Trailing padding of less than an element header at top level.
            if depth == 0 && self.end - self.pos < 8 {
                let rest = self.end - self.pos;
                let mut pad = vec![0u8; rest as usize];
                self.read_exact(&mut pad)?;
                if pad.iter().all(|&b| b == 0) {
                    break;
                }
                return Err(ScanError::Truncated(
                    "data set ends inside an element header".into(),
                ));
            }
            match self.read_element(enc, depth)? {
                Some(e) => out.push(e),
                None => {
                    if end.is_none() {
                        break;
                    }
                    // An item delimiter inside a defined-length item is
                    // tolerated (seen in the wild) and ends the item.
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The VR and value length after a tag (and whether the VR is one of
    /// the ambiguous US/SS/OB/OW of Implicit VR).
    fn vr_and_length(
        &mut self,
        enc: Encoding,
        tag: Tag,
        start: u64,
    ) -> Result<(VR, u32, bool), ScanError> {
        let be = enc.big_endian;
        if !enc.explicit_vr {
            let (vr, xs) = implicit_vr(tag);
            return Ok((vr, self.u32(be)?, xs));
        }
        let mut vrb = [0u8; 2];
        self.read_exact(&mut vrb)?;
        Ok(match VR::from_binary(vrb) {
            Some(vr) if has_long_length(vr) => {
                self.u16(be)?;
                (vr, self.u32(be)?, false)
            }
            Some(vr) => (vr, self.u16(be)? as u32, false),
            None => {
                // PS3.5 §6.2: a VR unknown to the reader has the 32-bit
                // length form of newer VRs and is handled as UN.
                if !vrb.iter().all(|b| b.is_ascii_uppercase()) {
                    return Err(ScanError::Malformed {
                        offset: start,
                        reason: format!("invalid VR bytes {vrb:02X?} for {tag}"),
                    });
                }
                self.u16(be)?;
                (VR::UN, self.u32(be)?, false)
            }
        })
    }

    /// A sequence, or an undefined-length UN read as one (CP-246: its
    /// items are Implicit VR Little Endian).
    fn read_sequence(
        &mut self,
        enc: Encoding,
        tag: Tag,
        vr: VR,
        len: u32,
        depth: usize,
    ) -> Result<Element, ScanError> {
        let value_offset = self.pos;
        let cp246 = vr == VR::UN && len == UNDEFINED;
        if depth + 1 > self.limits.max_depth {
            return Err(self.malformed("sequences nested too deeply"));
        }
        let item_enc = if cp246 { IMPLICIT_LE } else { enc };
        let seq_end = if len == UNDEFINED {
            None
        } else {
            let e = value_offset + len as u64;
            if e > self.end {
                return Err(ScanError::Truncated(format!(
                    "sequence {tag} declares {len} bytes past the end of the file"
                )));
            }
            Some(e)
        };
        let items = self.read_items(item_enc, seq_end, depth + 1)?;
        Ok(Element {
            tag,
            vr: VR::SQ,
            ambiguous_xs: false,
            offset: value_offset,
            length: self.pos - value_offset,
            value: Value::Sequence {
                items,
                implicit_le: cp246 && enc != IMPLICIT_LE,
            },
        })
    }

    /// Reads one element; `None` at an Item Delimitation Item.
    fn read_element(&mut self, enc: Encoding, depth: usize) -> Result<Option<Element>, ScanError> {
        let be = enc.big_endian;
        let start = self.pos;
        let tag = self.tag(be)?;
        if tag == ITEM_DELIMITATION {
            let _ = self.u32(be)?;
            return Ok(None);
        }
        if tag.0 == 0xFFFE {
            return Err(ScanError::Malformed {
                offset: start,
                reason: format!("unexpected delimiter {tag} among elements"),
            });
        }
        self.count += 1;
        if self.count > self.limits.max_elements {
            return Err(ScanError::Limit("too many data elements".into()));
        }

        let (vr, len, ambiguous_xs) = self.vr_and_length(enc, tag, start)?;

        let value_offset = self.pos;

        // Sequences, and CP-246 undefined-length UN.
        if vr == VR::SQ || (vr == VR::UN && len == UNDEFINED) {
            return self.read_sequence(enc, tag, vr, len, depth).map(Some);
        }

        if len == UNDEFINED {
            if tag == tags::PIXEL_DATA || matches!(vr, VR::OB | VR::OW) {
                let (fragments, offset_table) = self.read_fragments(be)?;
                return Ok(Some(Element {
                    tag,
                    vr: if vr == VR::OW { VR::OW } else { VR::OB },
                    ambiguous_xs: false,
                    offset: value_offset,
                    length: self.pos - value_offset,
                    value: Value::Encapsulated {
                        fragments,
                        offset_table,
                    },
                }));
            }
            return Err(ScanError::Malformed {
                offset: start,
                reason: format!("undefined length on {tag} with VR {}", vr.to_string()),
            });
        }

        let len = len as u64;
        if value_offset + len > self.end {
            return Err(ScanError::Truncated(format!(
                "element {tag} declares {len} bytes at offset {value_offset}, past the end of the file ({})",
                self.end
            )));
        }

        let vr = if vr == VR::UN && !enc.big_endian {
            un_as_known(tag)
        } else {
            vr
        };

        let keep_max = if is_binary_vr(vr) {
            self.limits.inline_binary_max
        } else {
            self.limits.inline_text_max
        };
        let value = if len <= keep_max && tag != tags::PIXEL_DATA {
            self.kept += len;
            if self.kept > self.limits.max_kept_bytes {
                return Err(ScanError::Limit("header values too large".into()));
            }
            let mut buf = vec![0u8; len as usize];
            self.read_exact(&mut buf)?;
            Value::Inline(buf)
        } else {
            self.skip_to(value_offset + len)?;
            Value::Bulk
        };
        Ok(Some(Element {
            tag,
            vr,
            ambiguous_xs,
            offset: value_offset,
            length: len,
            value,
        }))
    }

    fn read_items(
        &mut self,
        enc: Encoding,
        seq_end: Option<u64>,
        depth: usize,
    ) -> Result<Vec<Vec<Element>>, ScanError> {
        let be = enc.big_endian;
        let mut items = Vec::new();
        loop {
            if let Some(e) = seq_end {
                if self.pos >= e {
                    if self.pos > e {
                        return Err(self.malformed("an item overruns its sequence"));
                    }
                    break;
                }
            }
            let at = self.pos;
            let tag = self.tag(be)?;
            let len = self.u32(be)?;
            if tag == SEQUENCE_DELIMITATION {
                break;
            }
            if tag != ITEM {
                return Err(ScanError::Malformed {
                    offset: at,
                    reason: format!("expected an item, found {tag}"),
                });
            }
            let item_end = if len == UNDEFINED {
                None
            } else {
                let e = self.pos + len as u64;
                if e > self.end || seq_end.is_some_and(|s| e > s) {
                    return Err(ScanError::Truncated(format!(
                        "item at {at} declares {len} bytes past its container"
                    )));
                }
                Some(e)
            };
            items.push(self.read_elements(enc, item_end, depth)?);
        }
        Ok(items)
    }

    /// Reads the items of encapsulated Pixel Data (PS3.5 §A.4).
    fn read_fragments(&mut self, be: bool) -> Result<(Vec<Fragment>, Vec<u8>), ScanError> {
        let mut fragments = Vec::new();
        let mut offset_table = Vec::new();
        loop {
            let at = self.pos;
            let tag = self.tag(be)?;
            let len = self.u32(be)? as u64;
            if tag == SEQUENCE_DELIMITATION {
                break;
            }
            if tag != ITEM || len == UNDEFINED as u64 {
                return Err(ScanError::Malformed {
                    offset: at,
                    reason: format!("expected a pixel data fragment, found {tag}"),
                });
            }
            let offset = self.pos;
            if fragments.is_empty() && len > 0 && len <= self.limits.inline_text_max {
                // The Basic Offset Table: 4 bytes per frame.
                self.kept += len;
                if self.kept > self.limits.max_kept_bytes {
                    return Err(ScanError::Limit("header values too large".into()));
                }
                offset_table = vec![0u8; len as usize];
                self.read_exact(&mut offset_table)?;
            } else {
                self.skip_to(offset + len)?;
            }
            fragments.push(Fragment {
                offset,
                length: len,
            });
            if fragments.len() > self.limits.max_elements {
                return Err(ScanError::Limit("too many pixel data fragments".into()));
            }
        }
        Ok((fragments, offset_table))
    }
}

/// Explicit UN for a tag the dictionary knows: reinterpreted, as the
/// value is encoded as in Implicit VR Little Endian (PS3.5 §6.2.2); a
/// private creator is LO (PS3.5 §7.8.1).
fn un_as_known(tag: Tag) -> VR {
    if tag.0 % 2 == 0 {
        match StandardDataDictionary.by_tag(tag).map(|e| e.vr()) {
            Some(VirtualVr::Exact(v)) => v,
            _ => VR::UN,
        }
    } else if (0x0010..=0x00FF).contains(&tag.1) {
        VR::LO
    } else {
        VR::UN
    }
}

/// The VR of an element in an Implicit VR data set (PS3.5 §7.1.3): the
/// dictionary's, UL for group lengths, LO for private creators, UN else.
fn implicit_vr(tag: Tag) -> (VR, bool) {
    if tag.1 == 0x0000 {
        return (VR::UL, false);
    }
    if tag.0 % 2 == 1 {
        if (0x0010..=0x00FF).contains(&tag.1) {
            return (VR::LO, false);
        }
        return (VR::UN, false);
    }
    if tag == tags::PIXEL_DATA {
        return (VR::OW, false);
    }
    match StandardDataDictionary.by_tag(tag).map(|e| e.vr()) {
        Some(VirtualVr::Xs) => (VR::US, true),
        Some(v) => (v.relaxed(), false),
        None => (VR::UN, false),
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// Builds a minimal Explicit VR LE Part 10 file.
    pub(crate) fn part10(dataset: &[u8], ts: &str) -> Vec<u8> {
        let mut meta = Vec::new();
        let push = |out: &mut Vec<u8>, g: u16, e: u16, vr: &[u8; 2], v: &[u8]| {
            out.extend_from_slice(&g.to_le_bytes());
            out.extend_from_slice(&e.to_le_bytes());
            out.extend_from_slice(vr);
            if vr == b"OB" {
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            } else {
                out.extend_from_slice(&(v.len() as u16).to_le_bytes());
            }
            out.extend_from_slice(v);
        };
        let mut tsv = ts.as_bytes().to_vec();
        if tsv.len() % 2 == 1 {
            tsv.push(0);
        }
        push(&mut meta, 2, 1, b"OB", &[0, 1]);
        push(&mut meta, 2, 0x10, b"UI", &tsv);
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        push(&mut out, 2, 0, b"UL", &(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(dataset);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::tests_support::part10;

    fn el(g: u16, e: u16, vr: &[u8; 2], v: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&g.to_le_bytes());
        out.extend_from_slice(&e.to_le_bytes());
        out.extend_from_slice(vr);
        if has_long_length(VR::from_binary(*vr).unwrap_or(VR::UN)) {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(v);
        out
    }

    #[test]
    fn reads_explicit_le_and_records_bulk_offsets() {
        let mut ds = el(0x0010, 0x0010, b"PN", b"Doe^John");
        ds.extend(el(0x0020, 0x000D, b"UI", b"1.2.3\0"));
        let pixels = vec![7u8; 4096];
        ds.extend(el(0x7FE0, 0x0010, b"OW", &pixels));
        let file = part10(&ds, "1.2.840.10008.1.2.1");
        let s = scan_bytes(&file, &ScanLimits::default()).unwrap();
        assert!(s.has_preamble);
        assert_eq!(s.text(tags::PATIENT_NAME).as_deref(), Some("Doe^John"));
        let px = s.get(tags::PIXEL_DATA).unwrap();
        assert!(matches!(px.value, Value::Bulk));
        assert_eq!(px.length, 4096);
        assert_eq!(&file[px.offset as usize..][..4096], &pixels[..]);
    }

    #[test]
    fn huge_declared_length_is_an_error_not_an_allocation() {
        let mut ds = el(0x0010, 0x0010, b"PN", b"Doe^John");
        let mut bad = el(0x0009, 0x1010, b"OB", b"xx");
        // Patch the 32-bit length to 0xFFFFFFF0.
        let n = bad.len();
        bad[n - 6..n - 2].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        ds.extend(bad);
        let file = part10(&ds, "1.2.840.10008.1.2.1");
        assert!(matches!(
            scan_bytes(&file, &ScanLimits::default()),
            Err(ScanError::Truncated(_))
        ));
    }

    #[test]
    fn cp246_undefined_length_un_is_read_as_implicit_sequence() {
        // (0008,1140) UN, undefined length, one item with (0008,1155) UI.
        let mut ds = Vec::new();
        ds.extend_from_slice(&0x0008u16.to_le_bytes());
        ds.extend_from_slice(&0x1140u16.to_le_bytes());
        ds.extend_from_slice(b"UN\0\0");
        ds.extend_from_slice(&UNDEFINED.to_le_bytes());
        // Item, undefined length.
        ds.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        ds.extend_from_slice(&UNDEFINED.to_le_bytes());
        // (0008,1155) implicit: tag, 4-byte length, value.
        ds.extend_from_slice(&[0x08, 0x00, 0x55, 0x11]);
        ds.extend_from_slice(&6u32.to_le_bytes());
        ds.extend_from_slice(b"1.2.3\0");
        ds.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        ds.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        ds.extend(el(0x0010, 0x0010, b"PN", b"After^Seq"));
        let file = part10(&ds, "1.2.840.10008.1.2.1");
        let s = scan_bytes(&file, &ScanLimits::default()).unwrap();
        let seq = s.get(Tag(0x0008, 0x1140)).unwrap();
        let Value::Sequence { items, .. } = &seq.value else {
            panic!("not a sequence")
        };
        assert_eq!(items.len(), 1);
        assert_eq!(items[0][0].vr, VR::UI);
        assert_eq!(s.text(tags::PATIENT_NAME).as_deref(), Some("After^Seq"));
    }

    #[test]
    fn not_part10_and_truncated() {
        assert!(matches!(
            scan_bytes(&[0u8; 300], &ScanLimits::default()),
            Err(ScanError::NotPart10)
        ));
        let ds = el(0x0010, 0x0010, b"PN", b"Doe^John");
        let file = part10(&ds, "1.2.840.10008.1.2.1");
        let cut = &file[..file.len() - 3];
        assert!(matches!(
            scan_bytes(cut, &ScanLimits::default()),
            Err(ScanError::Truncated(_))
        ));
    }
}
