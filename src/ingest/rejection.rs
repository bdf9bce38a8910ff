//! IHE IOCM rejection notes: a Key Object Selection document whose title
//! (Concept Name Code Sequence) is one of PS3.16 CID 7011 "Rejected for
//! Quality Reasons", "Rejected for Patient Safety Reasons", "Incorrect
//! Modality Worklist Entry" or "Data Retention Policy Expired". The note is
//! stored like any instance; the instances it lists in its Current Requested
//! Procedure Evidence Sequence are then hidden from every query and
//! retrieval (moved to the trash, `crate::trash`), and refused when sent
//! again (IHE RAD TF-2 4.66, "Image Manager/Archive").

use crate::dicom::scan::{find, Element, Scanned, Value};
use crate::dicom::tags;

/// Key Object Selection Document Storage (PS3.4 B.5).
pub(crate) const KEY_OBJECT_SELECTION: &str = "1.2.840.10008.5.1.4.1.1.88.59";

/// PS3.16 CID 7011 "Rejected for Quality Reasons" and its siblings: the
/// document titles (scheme DCM) that make a KOS a rejection note.
const CID_7011: &[(&str, &str)] = &[
    ("113001", "Rejected for Quality Reasons"),
    ("113037", "Rejected for Patient Safety Reasons"),
    ("113038", "Incorrect Modality Worklist Entry"),
    ("113039", "Data Retention Policy Expired"),
];

/// What a rejection note rejects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RejectionNote {
    /// The CID 7011 code value and its meaning (as the standard words it).
    pub(crate) code: &'static str,
    pub(crate) meaning: &'static str,
    /// (study, series, SOP instance) of every referenced instance.
    pub(crate) references: Vec<(String, String, String)>,
}

/// The rejection note a scanned instance is, if it is one.
pub(crate) fn rejection_note(scanned: &Scanned, sop_class_uid: &str) -> Option<RejectionNote> {
    if sop_class_uid != KEY_OBJECT_SELECTION {
        return None;
    }
    let title = first_item(scanned.get(tags::CONCEPT_NAME_CODE_SEQUENCE)?)?;
    if text(title, tags::CODING_SCHEME_DESIGNATOR)? != "DCM" {
        return None;
    }
    let value = text(title, tags::CODE_VALUE)?;
    let &(code, meaning) = CID_7011.iter().find(|(c, _)| *c == value)?;
    let mut references = Vec::new();
    let evidence = scanned.get(tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE)?;
    for study_item in items(evidence) {
        let Some(study) = text(study_item, tags::STUDY_INSTANCE_UID) else {
            continue;
        };
        let Some(series_seq) = find(study_item, tags::REFERENCED_SERIES_SEQUENCE) else {
            continue;
        };
        for series_item in items(series_seq) {
            let Some(series) = text(series_item, tags::SERIES_INSTANCE_UID) else {
                continue;
            };
            let Some(sops) = find(series_item, tags::REFERENCED_SOP_SEQUENCE) else {
                continue;
            };
            for sop_item in items(sops) {
                if let Some(sop) = text(sop_item, tags::REFERENCED_SOP_INSTANCE_UID) {
                    references.push((study.clone(), series.clone(), sop));
                }
            }
        }
    }
    Some(RejectionNote {
        code,
        meaning,
        references,
    })
}

fn items(e: &Element) -> &[Vec<Element>] {
    match &e.value {
        Value::Sequence { items, .. } => items,
        _ => &[],
    }
}

fn first_item(e: &Element) -> Option<&[Element]> {
    items(e).first().map(Vec::as_slice)
}

/// A UID or code string of an item (ASCII by their VRs: UI, SH, CS).
fn text(item: &[Element], tag: dicom_core::Tag) -> Option<String> {
    let Value::Inline(bytes) = &find(item, tag)?.value else {
        return None;
    };
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    (!s.is_empty()).then(|| s.to_owned())
}
