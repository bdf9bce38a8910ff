//! The rows the index takes and gives: a new instance as ingest extracts
//! it, an indexed instance and where its object is, and the study, series
//! and instance rows of a search. The attributes the index copies from
//! instances travel as [`Attributes`], keyed by tag, so that their list is
//! [`crate::query::ATTRIBUTES`] alone.

use dicom_core::Tag;

use crate::dicom::Uid;

/// One copied attribute's value: text (decoded, padding trimmed) or the
/// first value of an IS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Int(i64),
}

/// The copied attributes of a row, by tag; an attribute without a value
/// is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes(Vec<(u32, Value)>);

fn tag_u32(tag: Tag) -> u32 {
    (u32::from(tag.0) << 16) | u32::from(tag.1)
}

impl Attributes {
    /// Sets (or, with `None`, removes) the value of `tag`.
    pub fn set(&mut self, tag: Tag, value: Option<Value>) {
        let t = tag_u32(tag);
        self.0.retain(|(k, _)| *k != t);
        if let Some(v) = value {
            self.0.push((t, v));
        }
    }
    pub fn set_text(&mut self, tag: Tag, value: Option<String>) {
        self.set(tag, value.map(Value::Text));
    }
    /// With `tag` set to a text value (for building rows by hand).
    pub fn with_text(mut self, tag: Tag, value: &str) -> Attributes {
        self.set_text(tag, Some(value.to_owned()));
        self
    }
    pub fn with_int(mut self, tag: Tag, value: i64) -> Attributes {
        self.set(tag, Some(Value::Int(value)));
        self
    }
    pub fn get(&self, tag: Tag) -> Option<&Value> {
        let t = tag_u32(tag);
        self.0.iter().find(|(k, _)| *k == t).map(|(_, v)| v)
    }
    /// A text value (`None` for an integer).
    pub fn text(&self, tag: Tag) -> Option<&str> {
        match self.get(tag)? {
            Value::Text(s) => Some(s),
            Value::Int(_) => None,
        }
    }
    pub(crate) fn int(&self, tag: Tag) -> Option<i64> {
        match self.get(tag)? {
            Value::Int(n) => Some(*n),
            Value::Text(_) => None,
        }
    }
}

/// Attributes of a new instance, as extracted at ingest.
#[derive(Debug, Clone, Default)]
pub struct NewInstance {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_uid: String,
    pub sop_class_uid: String,
    /// The [copied](crate::query::Stored::Copied) attributes of every level.
    pub attributes: Attributes,
    /// With the Patient ID, what identifies the patient (not searchable).
    pub issuer_of_patient_id: Option<String>,
    pub rows: Option<i64>,
    pub columns: Option<i64>,
    pub frames: Option<i64>,
    pub bits_allocated: Option<i64>,
    pub transfer_syntax_uid: String,
    pub object_key: String,
    pub size: i64,
    pub sha256: String,
    /// Deflate-compressed DICOM JSON.
    pub metadata: Vec<u8>,
    /// (path, value) of items of the indexed sequences
    /// ([`crate::query::INDEXED_SEQUENCES`]), for sequence matching.
    pub sequence_values: Vec<(String, String)>,
    /// [`crate::dicom::frames::FrameIndex`], encoded.
    pub frame_index: Option<Vec<u8>>,
}

/// An indexed instance and where its object is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInstance {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_uid: String,
    pub sop_class_uid: String,
    pub instance_number: Option<i64>,
    pub transfer_syntax_uid: String,
    pub object_key: String,
    pub size: i64,
    pub sha256: String,
}

/// The outcome of inserting an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Insert {
    Inserted,
    /// The SOP Instance UID is already indexed (with these attributes).
    Exists(StoredInstance),
}

/// A resource in the study / series / instance hierarchy.
#[derive(Debug, Clone)]
pub struct Scope {
    pub study: Uid,
    pub series: Option<Uid>,
    pub instance: Option<Uid>,
}

impl Scope {
    /// The scope naming one stored instance.
    pub(crate) fn of_instance(inst: &StoredInstance) -> Result<Scope, crate::dicom::uid::UidError> {
        Ok(Scope {
            study: Uid::parse(&inst.study_uid)?,
            series: Some(Uid::parse(&inst.series_uid)?),
            instance: Some(Uid::parse(&inst.sop_uid)?),
        })
    }
}

/// A study as searched: its copied attributes and what the index works out.
#[derive(Debug, Clone, Default)]
pub struct StudyRow {
    pub study_uid: String,
    /// The study-level [copied](crate::query::Stored::Copied) attributes.
    pub attributes: Attributes,
    pub modalities: Vec<String>,
    pub num_series: i64,
    pub num_instances: i64,
}

#[derive(Debug, Clone, Default)]
pub struct SeriesRow {
    pub study_uid: String,
    pub series_uid: String,
    /// The series-level [copied](crate::query::Stored::Copied) attributes.
    pub attributes: Attributes,
    pub num_instances: i64,
}

#[derive(Debug, Clone, Default)]
pub struct InstanceRow {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_uid: String,
    pub sop_class_uid: String,
    /// The instance-level [copied](crate::query::Stored::Copied) attributes.
    pub attributes: Attributes,
    pub rows: Option<i64>,
    pub columns: Option<i64>,
    pub frames: Option<i64>,
    pub bits_allocated: Option<i64>,
    pub transfer_syntax_uid: String,
}
