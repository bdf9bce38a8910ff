//! Writing DICOM: the Part 10 file meta prefix (PS3.10 §7.1) and a minimal
//! Explicit VR Little Endian element writer. Used to wrap data sets received
//! over DIMSE (which arrive without a meta group) and to generate test data;
//! never to re-encode a received instance.

/// Phim's Implementation Class UID (a UUID-derived UID, PS3.5 §B.2).
pub(crate) const IMPLEMENTATION_CLASS_UID: &str = "2.25.147690874763686019522257458576886255617";
/// Phim's Implementation Version Name (at most 16 characters).
pub(crate) const IMPLEMENTATION_VERSION_NAME: &str = "PHIM_0_1";

/// Builds a Little Endian data set (Explicit VR by default), elements in
/// tag order.
pub struct ElementWriter {
    buf: Vec<u8>,
    explicit: bool,
}

impl Default for ElementWriter {
    fn default() -> Self {
        ElementWriter {
            buf: Vec::new(),
            explicit: true,
        }
    }
}

/// Whether a VR has the 4-byte length form in explicit VR (PS3.5 §7.1.2).
pub(crate) fn long_form(vr: &[u8; 2]) -> bool {
    matches!(
        vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"SV"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"UV"
    )
}

impl ElementWriter {
    /// A writer for Implicit VR Little Endian (PS3.5 §7.1.3).
    pub(crate) fn implicit() -> ElementWriter {
        ElementWriter {
            buf: Vec::new(),
            explicit: false,
        }
    }

    /// Appends a sequence whose items are already encoded (defined lengths).
    pub(crate) fn sequence(&mut self, group: u16, element: u16, items: &[Vec<u8>]) -> &mut Self {
        let mut value = Vec::new();
        for item in items {
            value.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
            value.extend_from_slice(&(item.len() as u32).to_le_bytes());
            value.extend_from_slice(item);
        }
        self.raw(group, element, b"SQ", &value)
    }

    /// Appends an element; odd-length values are padded (NUL for UI and OB,
    /// space otherwise, PS3.5 §6.2).
    pub fn raw(&mut self, group: u16, element: u16, vr: &[u8; 2], value: &[u8]) -> &mut Self {
        let pad = value.len() % 2 == 1;
        let len = value.len() + pad as usize;
        self.buf.extend_from_slice(&group.to_le_bytes());
        self.buf.extend_from_slice(&element.to_le_bytes());
        if !self.explicit {
            self.buf.extend_from_slice(&(len as u32).to_le_bytes());
        } else if long_form(vr) {
            self.buf.extend_from_slice(vr);
            self.buf.extend_from_slice(&[0, 0]);
            self.buf.extend_from_slice(&(len as u32).to_le_bytes());
        } else {
            self.buf.extend_from_slice(vr);
            self.buf.extend_from_slice(&(len as u16).to_le_bytes());
        }
        self.buf.extend_from_slice(value);
        if pad {
            self.buf
                .push(if vr == b"UI" || vr == b"OB" { 0 } else { b' ' });
        }
        self
    }

    pub fn str(&mut self, group: u16, element: u16, vr: &[u8; 2], value: &str) -> &mut Self {
        self.raw(group, element, vr, value.as_bytes())
    }

    pub fn us(&mut self, group: u16, element: u16, value: u16) -> &mut Self {
        self.raw(group, element, b"US", &value.to_le_bytes())
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// The 128-byte preamble, "DICM" and the file meta group for a data set.
pub fn file_meta_prefix(sop_class: &str, sop_instance: &str, transfer_syntax: &str) -> Vec<u8> {
    let mut meta = ElementWriter::default();
    meta.raw(0x0002, 0x0001, b"OB", &[0, 1])
        .str(0x0002, 0x0002, b"UI", sop_class)
        .str(0x0002, 0x0003, b"UI", sop_instance)
        .str(0x0002, 0x0010, b"UI", transfer_syntax)
        .str(0x0002, 0x0012, b"UI", IMPLEMENTATION_CLASS_UID)
        .str(0x0002, 0x0013, b"SH", IMPLEMENTATION_VERSION_NAME);
    let meta = meta.into_bytes();
    let mut out = Vec::with_capacity(132 + 12 + meta.len());
    out.resize(128, 0);
    out.extend_from_slice(b"DICM");
    let mut gl = ElementWriter::default();
    gl.raw(0x0002, 0x0000, b"UL", &(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&gl.into_bytes());
    out.extend_from_slice(&meta);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::scan::{scan_bytes, ScanLimits};
    use crate::dicom::tags;

    #[test]
    fn meta_prefix_and_dataset_scan() {
        let mut ds = ElementWriter::default();
        ds.str(0x0008, 0x0018, b"UI", "1.2.3")
            .str(0x0010, 0x0010, b"PN", "Doe^J");
        let mut file =
            file_meta_prefix("1.2.840.10008.5.1.4.1.1.7", "1.2.3", "1.2.840.10008.1.2.1");
        file.extend(ds.into_bytes());
        let s = scan_bytes(&file, &ScanLimits::default()).unwrap();
        assert_eq!(s.text(tags::SOP_INSTANCE_UID).as_deref(), Some("1.2.3"));
        assert_eq!(s.text(tags::PATIENT_NAME).as_deref(), Some("Doe^J"));
        assert_eq!(s.transfer_syntax.uid, "1.2.840.10008.1.2.1");
    }
}
