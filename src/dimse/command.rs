//! DIMSE command sets (PS3.7 §9.3, §E): group 0000 elements, always
//! Implicit VR Little Endian, parsed and written here.

use std::collections::BTreeMap;

/// Command Field values (PS3.7 Table E.1-1 and §9.3).
pub(crate) mod field {
    pub(crate) const C_STORE_RQ: u16 = 0x0001;
    pub(crate) const C_STORE_RSP: u16 = 0x8001;
    pub(crate) const C_GET_RQ: u16 = 0x0010;
    pub(crate) const C_FIND_RQ: u16 = 0x0020;
    pub(crate) const C_MOVE_RQ: u16 = 0x0021;
    pub(crate) const C_ECHO_RQ: u16 = 0x0030;
    pub(crate) const C_ECHO_RSP: u16 = 0x8030;
    pub(crate) const C_CANCEL_RQ: u16 = 0x0FFF;
    pub(crate) const C_FIND_RSP: u16 = 0x8020;
    pub(crate) const C_GET_RSP: u16 = 0x8010;
    pub(crate) const C_MOVE_RSP: u16 = 0x8021;
    pub(crate) const N_EVENT_REPORT_RQ: u16 = 0x0100;
    pub(crate) const N_EVENT_REPORT_RSP: u16 = 0x8100;
    pub(crate) const N_ACTION_RQ: u16 = 0x0130;
    pub(crate) const N_ACTION_RSP: u16 = 0x8130;
}

/// DIMSE status codes (one table with STOW-RS's, in `dicom::status`).
pub(crate) use crate::dicom::status;

/// Command elements used by Phim (tag numbers within group 0000).
pub(crate) mod tag {
    pub(crate) const GROUP_LENGTH: u32 = 0x0000_0000;
    pub(crate) const AFFECTED_SOP_CLASS_UID: u32 = 0x0000_0002;
    pub(crate) const COMMAND_FIELD: u32 = 0x0000_0100;
    pub(crate) const MESSAGE_ID: u32 = 0x0000_0110;
    pub(crate) const MESSAGE_ID_BEING_RESPONDED_TO: u32 = 0x0000_0120;
    pub(crate) const PRIORITY: u32 = 0x0000_0700;
    pub(crate) const COMMAND_DATA_SET_TYPE: u32 = 0x0000_0800;
    pub(crate) const STATUS: u32 = 0x0000_0900;
    pub(crate) const ERROR_COMMENT: u32 = 0x0000_0902;
    pub(crate) const AFFECTED_SOP_INSTANCE_UID: u32 = 0x0000_1000;
    pub(crate) const REQUESTED_SOP_CLASS_UID: u32 = 0x0000_0003;
    pub(crate) const MOVE_DESTINATION: u32 = 0x0000_0600;
    pub(crate) const REQUESTED_SOP_INSTANCE_UID: u32 = 0x0000_1001;
    pub(crate) const EVENT_TYPE_ID: u32 = 0x0000_1002;
    pub(crate) const ACTION_TYPE_ID: u32 = 0x0000_1008;
    pub(crate) const REMAINING_SUB_OPERATIONS: u32 = 0x0000_1020;
    pub(crate) const COMPLETED_SUB_OPERATIONS: u32 = 0x0000_1021;
    pub(crate) const FAILED_SUB_OPERATIONS: u32 = 0x0000_1022;
    pub(crate) const WARNING_SUB_OPERATIONS: u32 = 0x0000_1023;
    pub(crate) const MOVE_ORIGINATOR_AE_TITLE: u32 = 0x0000_1030;
    pub(crate) const MOVE_ORIGINATOR_MESSAGE_ID: u32 = 0x0000_1031;
}

/// (0000,0800) value meaning "no data set follows".
pub(crate) const NO_DATA_SET: u16 = 0x0101;
/// (0000,0800) value meaning "a data set follows" (any other than 0101).
pub(crate) const DATA_SET: u16 = 0x0000;

/// Largest command set accepted (they are a few hundred bytes).
pub(crate) const MAX_COMMAND_LEN: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum CommandError {
    #[error("command set truncated")]
    Truncated,
    #[error("command set larger than {MAX_COMMAND_LEN} bytes")]
    TooLarge,
    #[error("element outside group 0000 in a command set")]
    NotCommandGroup,
    #[error("command set lacks {0}")]
    Missing(&'static str),
}

/// A parsed command set: raw values by tag.
#[derive(Debug, Clone, Default)]
pub(crate) struct Command {
    elements: BTreeMap<u32, Vec<u8>>,
}

impl Command {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Command, CommandError> {
        if bytes.len() > MAX_COMMAND_LEN {
            return Err(CommandError::TooLarge);
        }
        let mut elements = BTreeMap::new();
        let mut pos = 0usize;
        while pos < bytes.len() {
            let head = bytes.get(pos..pos + 8).ok_or(CommandError::Truncated)?;
            let group = u16::from_le_bytes([head[0], head[1]]);
            let element = u16::from_le_bytes([head[2], head[3]]);
            let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
            if group != 0x0000 {
                return Err(CommandError::NotCommandGroup);
            }
            pos += 8;
            let value = bytes
                .get(pos..pos.checked_add(len).ok_or(CommandError::Truncated)?)
                .ok_or(CommandError::Truncated)?;
            elements.insert(element as u32, value.to_vec());
            pos += len;
        }
        Ok(Command { elements })
    }

    pub(crate) fn us(&self, tag: u32) -> Option<u16> {
        let v = self.elements.get(&tag)?;
        Some(u16::from_le_bytes([*v.first()?, *v.get(1)?]))
    }

    pub(crate) fn ui(&self, tag: u32) -> Option<String> {
        let v = self.elements.get(&tag)?;
        let s = String::from_utf8_lossy(v);
        let s = s.trim_end_matches(['\0', ' ']).trim_start();
        (!s.is_empty()).then(|| s.to_owned())
    }

    pub(crate) fn field(&self) -> Result<u16, CommandError> {
        self.us(tag::COMMAND_FIELD)
            .ok_or(CommandError::Missing("Command Field"))
    }

    pub(crate) fn message_id(&self) -> Result<u16, CommandError> {
        self.us(tag::MESSAGE_ID)
            .ok_or(CommandError::Missing("Message ID"))
    }

    pub(crate) fn has_data_set(&self) -> bool {
        self.us(tag::COMMAND_DATA_SET_TYPE)
            .is_some_and(|t| t != NO_DATA_SET)
    }
}

/// Writes a command set: elements in tag order after (0000,0000).
#[derive(Debug, Default)]
pub(crate) struct CommandWriter {
    elements: BTreeMap<u32, Vec<u8>>,
}

impl CommandWriter {
    pub(crate) fn us(mut self, tag: u32, v: u16) -> Self {
        self.elements.insert(tag, v.to_le_bytes().to_vec());
        self
    }

    /// UI values are padded with NUL, other text with a space (PS3.5 §6.2).
    pub(crate) fn ui(mut self, tag: u32, v: &str) -> Self {
        let mut b = v.as_bytes().to_vec();
        if b.len() % 2 == 1 {
            b.push(0);
        }
        self.elements.insert(tag, b);
        self
    }

    pub(crate) fn text(mut self, tag: u32, v: &str) -> Self {
        let mut b = v.as_bytes().to_vec();
        if b.len() % 2 == 1 {
            b.push(b' ');
        }
        self.elements.insert(tag, b);
        self
    }

    /// Error Comment (0000,0902): LO, so at most 64 printable ASCII
    /// characters; the rest is dropped.
    pub(crate) fn error_comment(self, text: &str) -> Self {
        let c: String = text
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .take(64)
            .collect();
        self.text(tag::ERROR_COMMENT, &c)
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        let body_len: usize = self.elements.values().map(|v| 8 + v.len()).sum();
        let mut out = Vec::with_capacity(12 + body_len);
        let mut put = |tag: u32, v: &[u8]| {
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(&(tag as u16).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        };
        put(tag::GROUP_LENGTH, &(body_len as u32).to_le_bytes());
        for (t, v) in &self.elements {
            put(*t, v);
        }
        out
    }
}

/// A response command for a request with `message_id`.
pub(crate) fn response(field: u16, sop_class: &str, message_id: u16, status: u16) -> CommandWriter {
    CommandWriter::default()
        .ui(tag::AFFECTED_SOP_CLASS_UID, sop_class)
        .us(tag::COMMAND_FIELD, field)
        .us(tag::MESSAGE_ID_BEING_RESPONDED_TO, message_id)
        .us(tag::COMMAND_DATA_SET_TYPE, NO_DATA_SET)
        .us(tag::STATUS, status)
}

/// A data set arriving in P-DATA fragments (C-FIND/C-MOVE/C-GET
/// identifiers, N-ACTION information), bounded in size.
#[derive(Debug)]
pub(crate) struct DataSetBuffer {
    bytes: Vec<u8>,
    max: usize,
    what: &'static str,
}

impl DataSetBuffer {
    pub(crate) fn new(what: &'static str, max: usize) -> DataSetBuffer {
        DataSetBuffer {
            bytes: Vec::new(),
            max,
            what,
        }
    }

    pub(crate) fn push(&mut self, fragment: &[u8]) -> Result<(), String> {
        if self.bytes.len() + fragment.len() > self.max {
            return Err(format!("{} larger than {} bytes", self.what, self.max));
        }
        self.bytes.extend_from_slice(fragment);
        Ok(())
    }

    /// Scans the complete data set, encoded in `transfer_syntax`.
    pub(crate) fn scan(
        &self,
        transfer_syntax: &str,
    ) -> Result<crate::dicom::scan::Scanned, crate::dicom::scan::ScanError> {
        crate::dicom::scan::scan_dataset(
            &self.bytes,
            transfer_syntax,
            &crate::dicom::scan::ScanLimits::default(),
        )
    }
}

/// A P-DATA PDU carrying one whole command set.
pub(crate) fn command_pdu(pc_id: u8, data: Vec<u8>) -> dicom_ul::pdu::Pdu {
    use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};
    Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc_id,
            value_type: PDataValueType::Command,
            is_last: true,
            data,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = response(field::C_ECHO_RSP, "1.2.840.10008.1.1", 7, 0)
            .text(tag::ERROR_COMMENT, "odd")
            .into_bytes();
        let c = Command::parse(&bytes).unwrap();
        assert_eq!(c.field().unwrap(), field::C_ECHO_RSP);
        assert_eq!(c.us(tag::MESSAGE_ID_BEING_RESPONDED_TO), Some(7));
        assert_eq!(
            c.ui(tag::AFFECTED_SOP_CLASS_UID).as_deref(),
            Some("1.2.840.10008.1.1")
        );
        assert!(!c.has_data_set());
        // Group length counts the bytes after it.
        assert_eq!(
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            bytes.len() - 12
        );
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            Command::parse(&[0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0x7F]).unwrap_err(),
            CommandError::Truncated
        );
        assert_eq!(
            Command::parse(&[8, 0, 0, 1, 0, 0, 0, 0]).unwrap_err(),
            CommandError::NotCommandGroup
        );
        assert!(Command::parse(&[0, 0, 0]).is_err());
    }
}
