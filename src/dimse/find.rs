//! C-FIND SCP (PS3.4 Annex C, PS3.7 §9.1.2): Patient Root and Study Root
//! query models at PATIENT, STUDY, SERIES and IMAGE levels. Matching is the
//! QIDO-RS query model ([`crate::query`]): the same keys match the same way
//! over both protocols.

use std::collections::BTreeMap;

use base64::Engine;
use dicom_core::VR;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu, PresentationContextNegotiated};
use serde_json::{Map, Value as Json};

use super::command::{command_pdu, response, tag, Command, CommandError, DataSetBuffer};
use crate::dicom::scan::{is_binary_vr, Scanned, Value};
use crate::dicom::transfer_syntax;
use crate::dicom::write::ElementWriter;
use crate::index::Index;
use crate::query::{
    attribute_by_tag, parse_match, Filter, Include, Level, Match, Query, SequenceFilter,
    INDEXED_SEQUENCES,
};

pub(crate) const PATIENT_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.1.1";
pub(crate) const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
/// Matches returned for one C-FIND at most.
pub(crate) const MAX_MATCHES: i64 = 5000;
const MAX_IDENTIFIER: usize = 1 << 20;
use super::command::field::C_FIND_RSP;
use super::command::status::{
    IDENTIFIER_MISMATCH, OUT_OF_RESOURCES, PENDING, SUCCESS, UNABLE_TO_PROCESS,
};

/// A C-FIND whose identifier is arriving.
pub(crate) struct Finding {
    pc_id: u8,
    message_id: u16,
    sop_class: String,
    transfer_syntax: String,
    identifier: DataSetBuffer,
}

impl Finding {
    pub(crate) fn start(
        rq: &Command,
        pc: &PresentationContextNegotiated,
    ) -> Result<Finding, CommandError> {
        if !rq.has_data_set() {
            return Err(CommandError::Missing("identifier"));
        }
        Ok(Finding {
            pc_id: pc.id,
            message_id: rq.message_id()?,
            sop_class: rq
                .ui(tag::AFFECTED_SOP_CLASS_UID)
                .unwrap_or_else(|| pc.abstract_syntax.clone()),
            transfer_syntax: pc.transfer_syntax.trim_end_matches('\0').to_owned(),
            identifier: DataSetBuffer::new("C-FIND identifier", MAX_IDENTIFIER),
        })
    }

    pub(crate) fn pc_id(&self) -> u8 {
        self.pc_id
    }

    pub(crate) fn write(&mut self, fragment: &[u8]) -> Result<(), String> {
        self.identifier.push(fragment)
    }

    /// Runs the query; returns the responses (pending ones, then the final).
    pub(crate) async fn finish(self, index: &dyn Index, ae_title: &str, max_pdu: u32) -> Vec<Pdu> {
        let done = |status: u16, comment: Option<String>| {
            let mut rsp = response(C_FIND_RSP, &self.sop_class, self.message_id, status);
            if let Some(c) = comment {
                rsp = rsp.error_comment(&c);
            }
            command_pdu(self.pc_id, rsp.into_bytes())
        };
        let implicit = match transfer_syntax::lookup(&self.transfer_syntax) {
            Some(ts) if !ts.encoding.big_endian && !ts.encoding.deflated => {
                !ts.encoding.explicit_vr
            }
            _ => {
                return vec![done(
                    UNABLE_TO_PROCESS,
                    Some("transfer syntax not supported for C-FIND".into()),
                )]
            }
        };
        let scanned = match self.identifier.scan(&self.transfer_syntax) {
            Ok(s) => s,
            Err(e) => return vec![done(UNABLE_TO_PROCESS, Some(format!("identifier: {e}")))],
        };
        let (query, level_name) = match build_query(&scanned, &self.sop_class) {
            Ok(q) => q,
            Err(e) => return vec![done(IDENTIFIER_MISMATCH, Some(e))],
        };
        let found = match crate::search::run(index, &query, None).await {
            Ok((rows, more)) => {
                if more {
                    tracing::warn!(limit = MAX_MATCHES, "C-FIND: matches truncated");
                }
                rows
            }
            Err(e) => {
                tracing::error!(error = %e, "C-FIND failed");
                return vec![done(OUT_OF_RESOURCES, Some("index unavailable".into()))];
            }
        };
        let rows = if level_name == "PATIENT" {
            distinct_patients(found)
        } else {
            found
        };

        let requested: Vec<(u32, VR)> = scanned
            .dataset
            .iter()
            .map(|e| (((e.tag.0 as u32) << 16) | e.tag.1 as u32, e.vr))
            .filter(|(t, _)| *t != 0x0008_0005 && *t != 0x0008_0052 && *t != 0x0008_0054)
            .collect();
        let mut pdus = Vec::with_capacity(rows.len() * 2 + 1);
        for row in &rows {
            let data = encode_identifier(row, &requested, &level_name, ae_title, implicit);
            let rsp = response(C_FIND_RSP, &self.sop_class, self.message_id, PENDING)
                .us(tag::COMMAND_DATA_SET_TYPE, 0x0000)
                .into_bytes();
            pdus.push(command_pdu(self.pc_id, rsp));
            let chunk = (max_pdu.max(4096) as usize).saturating_sub(16);
            let pieces: Vec<&[u8]> = data.chunks(chunk).collect();
            let n = pieces.len();
            for (i, piece) in pieces.into_iter().enumerate() {
                pdus.push(Pdu::PData {
                    data: vec![PDataValue {
                        presentation_context_id: self.pc_id,
                        value_type: PDataValueType::Data,
                        is_last: i + 1 == n,
                        data: piece.to_vec(),
                    }],
                });
            }
        }
        pdus.push(done(SUCCESS, None));
        pdus
    }
}

/// The query of a C-FIND identifier (PS3.4 C.4.1.2.1).
fn build_query(scanned: &Scanned, sop_class: &str) -> Result<(Query, String), String> {
    let level_name = scanned
        .text(crate::dicom::tags::QUERY_RETRIEVE_LEVEL)
        .map(|l| l.to_ascii_uppercase())
        .ok_or("Query/Retrieve Level (0008,0052) missing")?;
    let level = match level_name.as_str() {
        "PATIENT" if sop_class == PATIENT_ROOT_FIND => Level::Study,
        "STUDY" => Level::Study,
        "SERIES" => Level::Series,
        "IMAGE" => Level::Instance,
        other => return Err(format!("Query/Retrieve Level {other} not supported")),
    };
    let mut query = Query::new(level);
    query.limit = MAX_MATCHES;
    query.combined_datetime = false;
    let charset = scanned.charset();
    let mut tags = Vec::new();
    for e in &scanned.dataset {
        let tag = ((e.tag.0 as u32) << 16) | e.tag.1 as u32;
        tags.push(tag);
        match &e.value {
            Value::Inline(bytes) if !is_binary_vr(e.vr) => {
                let Some(attribute) = attribute_by_tag(tag) else {
                    continue;
                };
                let text = charset.decode_vr(bytes, e.vr);
                let text = text.trim_matches([' ', '\0']);
                if let Some(matching) =
                    parse_match(attribute, text, false).map_err(|e| e.to_string())?
                {
                    query.filters.push(Filter {
                        attribute,
                        matching,
                    });
                }
            }
            Value::Sequence { items, .. } if INDEXED_SEQUENCES.contains(&tag) => {
                // Sequence matching: the keys of the (single) item.
                for item in items.iter().take(1) {
                    for inner in item {
                        let Value::Inline(bytes) = &inner.value else {
                            continue;
                        };
                        let text = charset.decode_vr(bytes, inner.vr);
                        let text = text.trim_matches([' ', '\0']);
                        if text.is_empty() || text == "*" {
                            continue;
                        }
                        let itag = ((inner.tag.0 as u32) << 16) | inner.tag.1 as u32;
                        query.sequence_filters.push(SequenceFilter {
                            path: format!("{tag:08X}.{itag:08X}"),
                            matching: if text.contains(['*', '?']) {
                                Match::Wildcard(text.to_owned())
                            } else {
                                Match::Single(text.to_owned())
                            },
                        });
                    }
                }
            }
            _ => {}
        }
    }
    query.include = Include::Tags(tags);
    Ok((query, level_name))
}

/// PATIENT level: one response per patient.
fn distinct_patients(rows: Vec<Map<String, Json>>) -> Vec<Map<String, Json>> {
    let mut seen = BTreeMap::new();
    for row in rows {
        let key = format!(
            "{}\u{1}{}",
            row.get("00100020")
                .map(|v| v.to_string())
                .unwrap_or_default(),
            row.get("00100010")
                .map(|v| v.to_string())
                .unwrap_or_default()
        );
        seen.entry(key).or_insert(row);
    }
    seen.into_values().collect()
}

/// The response identifier: the requested keys with their values.
fn encode_identifier(
    row: &Map<String, Json>,
    requested: &[(u32, VR)],
    level: &str,
    ae_title: &str,
    implicit: bool,
) -> Vec<u8> {
    let mut elements: BTreeMap<u32, (VR, Vec<u8>)> = BTreeMap::new();
    elements.insert(0x0008_0005, (VR::CS, b"ISO_IR 192".to_vec()));
    elements.insert(0x0008_0052, (VR::CS, level.as_bytes().to_vec()));
    elements.insert(0x0008_0054, (VR::AE, ae_title.as_bytes().to_vec()));
    for (tag, vr) in requested {
        let value = row.get(&format!("{tag:08X}"));
        let vr = value
            .and_then(|v| v.get("vr"))
            .and_then(|v| v.as_str())
            .and_then(|s| {
                VR::from_binary([
                    *s.as_bytes().first().unwrap_or(&b'U'),
                    *s.as_bytes().get(1).unwrap_or(&b'N'),
                ])
            })
            .unwrap_or(*vr);
        if vr == VR::SQ {
            let items = encode_items(value, implicit);
            elements.insert(*tag, (VR::SQ, items));
            continue;
        }
        elements.insert(
            *tag,
            (
                vr,
                value.map(|v| json_value_bytes(vr, v)).unwrap_or_default(),
            ),
        );
    }
    let mut w = if implicit {
        ElementWriter::implicit()
    } else {
        ElementWriter::default()
    };
    for (tag, (vr, bytes)) in elements {
        let vr_bytes: [u8; 2] = vr.to_string().as_bytes().try_into().unwrap_or(*b"UN");
        w.raw((tag >> 16) as u16, tag as u16, &vr_bytes, &bytes);
    }
    w.into_bytes()
}

/// Items of a sequence value, encoded with defined lengths.
fn encode_items(value: Option<&Json>, implicit: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let items = value
        .and_then(|v| v.get("Value"))
        .and_then(|v| v.as_array());
    for item in items.into_iter().flatten() {
        let Some(obj) = item.as_object() else {
            continue;
        };
        let mut w = if implicit {
            ElementWriter::implicit()
        } else {
            ElementWriter::default()
        };
        let mut keys: Vec<&String> = obj.keys().collect();
        keys.sort();
        for key in keys {
            let Ok(tag) = u32::from_str_radix(key, 16) else {
                continue;
            };
            let v = &obj[key];
            let vr_s = v.get("vr").and_then(|x| x.as_str()).unwrap_or("UN");
            let vr_b: [u8; 2] = vr_s.as_bytes().try_into().unwrap_or(*b"UN");
            if vr_s == "SQ" {
                w.raw(
                    (tag >> 16) as u16,
                    tag as u16,
                    b"SQ",
                    &encode_items(Some(v), implicit),
                );
            } else if let Some(vr) = VR::from_binary(vr_b) {
                w.raw(
                    (tag >> 16) as u16,
                    tag as u16,
                    &vr_b,
                    &json_value_bytes(vr, v),
                );
            }
        }
        let bytes = w.into_bytes();
        out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// A DICOM JSON attribute's value in binary form (PS3.18 F.2 inverted).
fn json_value_bytes(vr: VR, attr: &Json) -> Vec<u8> {
    if let Some(b64) = attr.get("InlineBinary").and_then(|v| v.as_str()) {
        return base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_default();
    }
    let Some(values) = attr.get("Value").and_then(|v| v.as_array()) else {
        return Vec::new();
    };
    let num = |v: &Json| {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(0.0)
    };
    let mut out = Vec::new();
    match vr {
        VR::US => values
            .iter()
            .for_each(|v| out.extend_from_slice(&(num(v) as u16).to_le_bytes())),
        VR::SS => values
            .iter()
            .for_each(|v| out.extend_from_slice(&(num(v) as i16).to_le_bytes())),
        VR::UL => values
            .iter()
            .for_each(|v| out.extend_from_slice(&(num(v) as u32).to_le_bytes())),
        VR::SL => values
            .iter()
            .for_each(|v| out.extend_from_slice(&(num(v) as i32).to_le_bytes())),
        VR::FL => values
            .iter()
            .for_each(|v| out.extend_from_slice(&(num(v) as f32).to_le_bytes())),
        VR::FD => values
            .iter()
            .for_each(|v| out.extend_from_slice(&num(v).to_le_bytes())),
        VR::AT => values.iter().for_each(|v| {
            let t = v
                .as_str()
                .and_then(|s| u32::from_str_radix(s, 16).ok())
                .unwrap_or(0);
            out.extend_from_slice(&((t >> 16) as u16).to_le_bytes());
            out.extend_from_slice(&(t as u16).to_le_bytes());
        }),
        _ => {
            let parts: Vec<String> = values
                .iter()
                .map(|v| match v {
                    Json::Null => String::new(),
                    Json::String(s) => s.clone(),
                    Json::Number(n) => n.to_string(),
                    Json::Object(pn) => ["Alphabetic", "Ideographic", "Phonetic"]
                        .iter()
                        .map(|k| pn.get(*k).and_then(|x| x.as_str()).unwrap_or(""))
                        .collect::<Vec<_>>()
                        .join("=")
                        .trim_end_matches('=')
                        .to_owned(),
                    other => other.to_string(),
                })
                .collect();
            out = parts.join("\\").into_bytes();
        }
    }
    out
}
