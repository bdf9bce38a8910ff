//! Writing a DICOMDIR (PS3.10 §8, PS3.3 Annex F): the Basic Directory of
//! a File-set, as on a patient's CD. Records form a tree (PATIENT → STUDY
//! → SERIES → IMAGE, …) linked by byte offsets; each offset counts from the
//! first byte of the file (the File Meta Information begins with the
//! preamble, PS3.10 §7.1), to the Item tag of the record it points at.
//! Explicit VR Little Endian, items and sequences of defined length.

use super::write::{file_meta_prefix, ElementWriter};

/// Media Storage Directory Storage (the DICOMDIR's SOP Class, PS3.6 Annex A).
pub(crate) const MEDIA_STORAGE_DIRECTORY: &str = "1.2.840.10008.1.3.10";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// One directory record and the records below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// Directory Record Type (0004,1430): `PATIENT`, `STUDY`, `SERIES`,
    /// `IMAGE`, `SR DOCUMENT`, …
    pub(crate) kind: &'static str,
    /// The file a leaf record references: (File ID components, SOP Class,
    /// SOP Instance, Transfer Syntax).
    pub(crate) file: Option<(Vec<String>, String, String, String)>,
    /// The record's keys, (group, element, VR, value) in tag order, all
    /// after group 0004; values are UTF-8 (declared ISO_IR 192 when needed).
    pub(crate) keys: Vec<(u16, u16, [u8; 2], String)>,
    pub(crate) children: Vec<Record>,
}

/// A record's item content with the offsets it links to.
fn encode_record(r: &Record, next: u32, lower: u32) -> Vec<u8> {
    let mut w = ElementWriter::default();
    w.raw(0x0004, 0x1400, b"UL", &next.to_le_bytes())
        .us(0x0004, 0x1410, 0xFFFF)
        .raw(0x0004, 0x1420, b"UL", &lower.to_le_bytes())
        .str(0x0004, 0x1430, b"CS", r.kind);
    if let Some((components, class, instance, syntax)) = &r.file {
        w.str(0x0004, 0x1500, b"CS", &components.join("\\"))
            .str(0x0004, 0x1510, b"UI", class)
            .str(0x0004, 0x1511, b"UI", instance)
            .str(0x0004, 0x1512, b"UI", syntax);
    }
    if r.keys.iter().any(|(_, _, _, v)| !v.is_ascii()) {
        w.str(0x0008, 0x0005, b"CS", "ISO_IR 192");
    }
    for (group, element, vr, value) in &r.keys {
        w.str(*group, *element, vr, value);
    }
    w.into_bytes()
}

/// The records in the order they are written (depth first), each with the
/// index of its next sibling and of its first child.
fn flatten(roots: &[Record]) -> Vec<(&Record, Option<usize>, Option<usize>)> {
    fn walk<'a>(level: &'a [Record], out: &mut Vec<(&'a Record, Option<usize>, Option<usize>)>) {
        let mut previous: Option<usize> = None;
        for r in level {
            let at = out.len();
            if let Some(p) = previous {
                out[p].1 = Some(at);
            }
            out.push((r, None, None));
            if !r.children.is_empty() {
                out[at].2 = Some(out.len());
                walk(&r.children, out);
            }
            previous = Some(at);
        }
    }
    let mut out = Vec::new();
    walk(roots, &mut out);
    out
}

/// The DICOMDIR file for `roots` (the root directory entity's records).
pub(crate) fn dicomdir(roots: &[Record], sop_instance_uid: &str) -> Vec<u8> {
    let prefix = file_meta_prefix(MEDIA_STORAGE_DIRECTORY, sop_instance_uid, EXPLICIT_VR_LE);
    let head = |first: u32, last: u32| {
        let mut w = ElementWriter::default();
        w.str(0x0004, 0x1130, b"CS", "")
            .raw(0x0004, 0x1200, b"UL", &first.to_le_bytes())
            .raw(0x0004, 0x1202, b"UL", &last.to_le_bytes())
            .us(0x0004, 0x1212, 0);
        w.into_bytes()
    };
    let flat = flatten(roots);
    // Offsets do not change sizes (UL values), so one pass with zeros
    // gives every item's place.
    let sq_header = 12;
    let mut offsets = Vec::with_capacity(flat.len());
    let mut at = prefix.len() + head(0, 0).len() + sq_header;
    for (r, _, _) in &flat {
        offsets.push(at);
        at += 8 + encode_record(r, 0, 0).len();
    }
    let offset = |i: Option<usize>| i.map_or(0, |i| offsets[i] as u32);
    let items: Vec<Vec<u8>> = flat
        .iter()
        .map(|(r, next, lower)| encode_record(r, offset(*next), offset(*lower)))
        .collect();
    let root_last = {
        let mut last = if flat.is_empty() { None } else { Some(0) };
        while let Some(n) = last.and_then(|i| flat[i].1) {
            last = Some(n);
        }
        last
    };
    let first = if flat.is_empty() { None } else { Some(0) };
    let mut out = prefix;
    out.extend_from_slice(&head(offset(first), offset(root_last)));
    let mut sq = ElementWriter::default();
    sq.sequence(0x0004, 0x1220, &items);
    out.extend_from_slice(&sq.into_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::scan::{scan_bytes, ScanLimits, Value};
    use crate::dicom::tags;

    fn leaf(n: &str) -> Record {
        Record {
            kind: "IMAGE",
            file: Some((
                vec!["DICOM".into(), n.into()],
                "1.2.840.10008.5.1.4.1.1.7".into(),
                format!("1.2.3.{}", n.len()),
                EXPLICIT_VR_LE.into(),
            )),
            keys: vec![(0x0020, 0x0013, *b"IS", "1".into())],
            children: vec![],
        }
    }

    #[test]
    fn offsets_point_at_the_items_they_name() {
        let series = |leaves: Vec<Record>| Record {
            kind: "SERIES",
            file: None,
            keys: vec![(0x0008, 0x0060, *b"CS", "CT".into())],
            children: leaves,
        };
        let patient = Record {
            kind: "PATIENT",
            file: None,
            keys: vec![(0x0010, 0x0010, *b"PN", "Nguyễn^Văn".into())],
            children: vec![Record {
                kind: "STUDY",
                file: None,
                keys: vec![],
                children: vec![
                    series(vec![leaf("IM1"), leaf("IM22")]),
                    series(vec![leaf("I")]),
                ],
            }],
        };
        let bytes = dicomdir(&[patient], "1.2.3");
        let scanned = scan_bytes(&bytes, &ScanLimits::default()).unwrap();
        let seq = scanned.get(tags::DIRECTORY_RECORD_SEQUENCE).unwrap();
        let Value::Sequence { items, .. } = &seq.value else {
            panic!("not a sequence")
        };
        assert_eq!(items.len(), 7);
        // An item's tag is 8 bytes before its first element's header (8
        // bytes before that element's value).
        let starts: Vec<u64> = items.iter().map(|i| i[0].offset - 16).collect();
        let ul = |item: &[crate::dicom::scan::Element], tag| {
            let e = crate::dicom::scan::find(item, tag).unwrap();
            let Value::Inline(b) = &e.value else { panic!() };
            u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let (next, lower) = (
            tags::OFFSET_OF_THE_NEXT_DIRECTORY_RECORD,
            tags::OFFSET_OF_REFERENCED_LOWER_LEVEL_DIRECTORY_ENTITY,
        );
        // PATIENT → STUDY → SERIES 1 → IM1 → IM22; SERIES 1 → SERIES 2 → I.
        assert_eq!(ul(&items[0], lower), starts[1]);
        assert_eq!(ul(&items[1], lower), starts[2]);
        assert_eq!(ul(&items[2], lower), starts[3]);
        assert_eq!(ul(&items[3], next), starts[4]);
        assert_eq!(ul(&items[4], next), 0);
        assert_eq!(ul(&items[2], next), starts[5]);
        assert_eq!(ul(&items[5], lower), starts[6]);
        assert_eq!(ul(&items[0], next), 0);
        let first = tags::OFFSET_OF_THE_FIRST_DIRECTORY_RECORD_OF_THE_ROOT_DIRECTORY_ENTITY;
        let root = scanned.get(first).unwrap();
        let Value::Inline(b) = &root.value else {
            panic!()
        };
        assert_eq!(
            u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            starts[0]
        );
    }
}
