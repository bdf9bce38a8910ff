//! Fuzz targets: each takes arbitrary bytes and drives one parser that
//! reads what a client sends, the way the server does, with the server's
//! limits. A target passes when it returns: errors are the expected
//! outcome of most inputs; a panic, a hang or an abort is a bug.
//!
//! The same functions run two ways: under cargo-fuzz (libFuzzer, nightly,
//! `fuzz/`) to search, and on stable in `tests/fuzz.rs` (a seeded corpus
//! of real instances, mutated, for a bounded number of cases, plus every
//! input kept in `tests/fuzz/corpus/`) in every test run.

use crate::dicom::scan::{scan_bytes, scan_dataset, ScanLimits};
use crate::dicom::transfer_syntax::KNOWN;
use crate::imaging::pixel::{PixelInfo, Presentation};
use crate::query::{Level, ATTRIBUTES};

/// Decoded frames larger than this are not decoded by the targets (the
/// server allows 1 GiB; a fuzzer would spend its time allocating).
const MAX_FUZZ_FRAME: u64 = 16 << 20;

/// The names of the targets, for the harnesses.
pub const TARGETS: &[&str] = &["instance", "frame", "multipart", "qido", "dimse", "text"];

/// Runs target `name` on `data`; `false` for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "instance" => instance(data),
        "frame" => frame(data),
        "multipart" => multipart(data),
        "qido" => qido(data),
        "dimse" => dimse(data),
        "text" => text(data),
        _ => return false,
    }
    true
}

/// A Part 10 file as STOW-RS, C-STORE and `phim import` receive it: the
/// header scan, the DICOM JSON written at ingest, the frame index, what
/// the pixel pipeline reads from that JSON, and the first frame decoded
/// from the byte ranges the index gives.
pub fn instance(data: &[u8]) {
    let Ok(scanned) = scan_bytes(data, &ScanLimits::default()) else {
        return;
    };
    let Ok(doc) = crate::ingest::metadata_document(&scanned, "/studies/1/series/2/instances/3")
    else {
        return;
    };
    let Ok(json) = crate::index::metadata::inflate(&doc) else {
        return;
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&json) else {
        panic!("ingest wrote DICOM JSON that does not parse");
    };
    let index = crate::dicom::frames::frame_index(&scanned);
    let (Ok(info), Some(index)) = (PixelInfo::from_json(&value), index) else {
        return;
    };
    let _ = Presentation::from_json(&value, 0);
    if info.decoded_frame_len() > MAX_FUZZ_FRAME {
        return;
    }
    let Some(ranges) = index.ranges(0) else {
        return;
    };
    let mut bytes = Vec::new();
    for (offset, len) in ranges {
        let (Ok(start), Ok(len)) = (usize::try_from(offset), usize::try_from(len)) else {
            return;
        };
        let Some(part) = start.checked_add(len).and_then(|end| data.get(start..end)) else {
            return;
        };
        bytes.extend_from_slice(part);
    }
    let _ = crate::imaging::codec::decode(&info, scanned.transfer_syntax.uid, &bytes);
}

/// One frame's bytes given to a decoder: the first bytes choose the
/// transfer syntax and the image's shape (small), the rest is the stream.
pub fn frame(data: &[u8]) {
    let [ts, shape, size, rest @ ..] = data else {
        return;
    };
    let ts = &KNOWN[usize::from(*ts) % KNOWN.len()];
    let samples: u16 = if shape & 1 == 0 { 1 } else { 3 };
    let bits_allocated: u16 = if shape & 2 == 0 { 8 } else { 16 };
    let bits_stored: u16 = if bits_allocated == 8 {
        8
    } else {
        [12, 16][usize::from(shape >> 2 & 1)]
    };
    let rows = u32::from(size & 0x0F) + 1;
    let columns = u32::from(size >> 4) + 1;
    let us = |v: u32| serde_json::json!({ "vr": "US", "Value": [v] });
    let doc = serde_json::json!({
        "00280002": us(u32::from(samples)),
        "00280004": { "vr": "CS", "Value": [if samples == 1 { "MONOCHROME2" } else { "RGB" }] },
        "00280010": us(rows),
        "00280011": us(columns),
        "00280100": us(u32::from(bits_allocated)),
        "00280101": us(u32::from(bits_stored)),
        "00280102": us(u32::from(bits_stored - 1)),
        "00280103": us(0),
    });
    let Ok(info) = PixelInfo::from_json(&doc) else {
        return;
    };
    let _ = crate::imaging::codec::decode(&info, ts.uid, rest);
}

/// A STOW-RS body: multipart/related with boundary `B`, read through the
/// metered body (16 KiB part headers) as the handler reads it.
pub fn multipart(data: &[u8]) {
    use crate::dicomweb::multipart::{header_block_len, HeaderMeter, MeteredBody};
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    rt.block_on(async {
        let body = bytes::Bytes::copy_from_slice(data);
        let stream = futures::stream::iter([Ok::<_, axum::Error>(body)]);
        let meter = HeaderMeter::new(16 * 1024);
        let mut mp = multer::Multipart::new(MeteredBody::new(stream, meter.clone()), "B");
        for _ in 0..64 {
            meter.start();
            let next = mp.next_field().await;
            meter.stop();
            let Ok(Some(mut field)) = next else { return };
            let _ = header_block_len(field.headers());
            let _ = field.content_type();
            while let Ok(Some(_chunk)) = field.chunk().await {}
        }
    });
}

/// A QIDO-RS query string at each level, and the SQL it becomes.
pub fn qido(data: &[u8]) {
    let query = String::from_utf8_lossy(data);
    for level in [Level::Study, Level::Series, Level::Instance] {
        if let Ok(q) = crate::dicomweb::qido::parse_query(Some(&query), level) {
            let _ = crate::index::sql::where_clause(&q);
        }
    }
}

/// What a DICOM peer sends: a PDU (read as dicom-ul reads it, strict and
/// lenient), a command set, and an identifier data set in each transfer
/// syntax an association may use.
pub fn dimse(data: &[u8]) {
    for strict in [true, false] {
        let _ = dicom_ul::read_pdu(data, 16 * 1024, strict);
    }
    if let Ok(cmd) = crate::dimse::command::Command::parse(data) {
        let _ = cmd.field();
        let _ = cmd.has_data_set();
    }
    for ts in KNOWN.iter().filter(|t| !t.encoding.deflated) {
        if let Ok(s) = scan_dataset(data, ts.uid, &ScanLimits::default()) {
            let _ = s.text(dicom_core::Tag(0x0008, 0x0052));
        }
    }
}

/// The small text parsers a request reaches: UIDs, media types and Accept
/// headers, frame lists, WADO-URI parameters, matching values of every
/// indexed attribute (plain and fuzzy), person names, character sets.
pub fn text(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let _ = crate::dicom::Uid::parse(&s);
    let _ = crate::dicomweb::media::parse_one(&s);
    let _ = crate::dicomweb::media::parse_accept(&s);
    let _ = crate::dicomweb::limits::RequestLimits::default().frame_list(&s);
    let _ = crate::dicomweb::wado_uri::parse(&s);
    for a in ATTRIBUTES {
        let _ = crate::query::parse_match(a, &s, false);
        let _ = crate::query::parse_match(a, &s, true);
    }
    let _ = crate::query::names::pn_query(&s);
    let _ = crate::query::names::fuzzy_words(&s);
    if let Some((declared, text)) = s.split_once('\n') {
        let charset = crate::dicom::text::Charset::from_declared(declared);
        let _ = charset.decode(text.as_bytes());
    }
}

/// Valid inputs to start from: what mutations of real requests look like
/// is what reaches deep into a parser. Deterministic (seeded generators).
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    match name {
        "instance" => instance_seeds(),
        "frame" => frame_seeds(),
        "multipart" => {
            let parts = [b"DICM-part-one".as_slice(), b"second\r\n--Bnot-a-boundary"];
            let mut body = Vec::new();
            for p in parts {
                body.extend_from_slice(b"--B\r\nContent-Type: application/dicom\r\n\r\n");
                body.extend_from_slice(p);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"--B--\r\n");
            vec![body, b"--B\r\n\r\n\r\n--B--".to_vec()]
        }
        "qido" => [
            "PatientName=Nguy*&StudyDate=20240101-20241231&limit=10&offset=5",
            "00100020=P1,P2&ModalitiesInStudy=CT\\MR&includefield=all&fuzzymatching=true",
            "StudyDate=20240102&StudyTime=080000-&00400275.00401001=RP*",
            "SeriesNumber=1,2,3&InstanceNumber=7&SOPInstanceUID=1.2.3,1.2.4",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect(),
        "dimse" => dimse_seeds(),
        "text" => [
            "1.2.840.10008.5.1.4.1.1.2",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*, image/jpeg;q=0.5",
            "1,2,3-7,9",
            "requestType=WADO&studyUID=1.2&seriesUID=1.2.3&objectUID=1.2.3.4&contentType=image/png&rows=64",
            "Nguyễn^Văn An=グエン^バン=Nguyen",
            "ISO 2022 IR 87\\ISO 2022 IR 159\n\u{1b}$B;3ED\u{1b}(B^\u{1b}$BB@O:\u{1b}(B",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect(),
        _ => Vec::new(),
    }
}

fn instance_seeds() -> Vec<Vec<u8>> {
    use crate::synth::{instance_sized, Kind, StudySpec};
    let kinds = [Kind::Ct, Kind::Mr, Kind::Cr, Kind::UsCine { frames: 3 }];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            let spec = StudySpec {
                index: i as u64,
                kind,
                instances: 1,
            };
            instance_sized(7, &spec, 1, Some((16, 16)))
        })
        .collect()
}

/// `[transfer syntax index, shape, size]` + a frame encoded in that
/// transfer syntax (for each one Phim can encode).
fn frame_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (ti, ts) in KNOWN.iter().enumerate() {
        let Some(target) = crate::imaging::codec::encode_target(ts.uid) else {
            continue;
        };
        for shape in [0u8, 1, 2, 6] {
            let (samples, bits): (u16, u16) = (
                if shape & 1 == 0 { 1 } else { 3 },
                if shape & 2 == 0 { 8 } else { 16 },
            );
            let size = 0x77u8; // 8 × 8
            let mut frame = [ti as u8, shape, size].to_vec();
            let input_len = 64 * usize::from(samples) * usize::from(bits / 8);
            let data: Vec<u8> = (0..input_len).map(|i| (i * 7 % 251) as u8).collect();
            let doc = serde_json::json!({
                "00280002": { "vr": "US", "Value": [samples] },
                "00280004": { "vr": "CS", "Value": [if samples == 1 { "MONOCHROME2" } else { "RGB" }] },
                "00280010": { "vr": "US", "Value": [8] },
                "00280011": { "vr": "US", "Value": [8] },
                "00280100": { "vr": "US", "Value": [bits] },
                "00280101": { "vr": "US", "Value": [if bits == 8 { 8 } else { 12 }] },
                "00280102": { "vr": "US", "Value": [if bits == 8 { 7 } else { 11 }] },
                "00280103": { "vr": "US", "Value": [0] },
            });
            let Ok(info) = PixelInfo::from_json(&doc) else {
                continue;
            };
            let decoded = crate::imaging::frame::Frame {
                rows: 8,
                columns: 8,
                samples,
                bits_allocated: bits,
                photometric: if samples == 1 { "MONOCHROME2" } else { "RGB" }.into(),
                data,
            };
            if let Ok(encoded) = crate::imaging::codec::encode(&info, &decoded, target, 90) {
                frame.extend_from_slice(&encoded);
                out.push(frame);
            }
        }
    }
    out
}

/// A C-FIND-RQ command set, the same in a P-DATA PDU, and an identifier.
fn dimse_seeds() -> Vec<Vec<u8>> {
    use crate::dimse::command::{command_pdu, tag, CommandWriter};
    let command = CommandWriter::default()
        .ui(tag::AFFECTED_SOP_CLASS_UID, "1.2.840.10008.5.1.4.1.2.2.1")
        .us(tag::COMMAND_FIELD, 0x0020)
        .us(tag::MESSAGE_ID, 7)
        .us(tag::PRIORITY, 0)
        .us(tag::COMMAND_DATA_SET_TYPE, 0x0102)
        .into_bytes();
    let mut pdu = Vec::new();
    let _ = dicom_ul::write_pdu(&mut pdu, &command_pdu(1, command.clone()));
    let mut identifier = crate::dicom::write::ElementWriter::default();
    identifier
        .str(0x0008, 0x0052, b"CS", "STUDY")
        .str(0x0010, 0x0010, b"PN", "Nguy*")
        .str(0x0020, 0x000D, b"UI", "");
    vec![command, pdu, identifier.into_bytes()]
}
