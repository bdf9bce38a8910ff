//! The query model shared by QIDO-RS and C-FIND (PS3.4 C.2.2.2, PS3.18
//! §8.3.4): which attributes can be matched at which level, how, and what
//! a search returns. The index turns a [`Query`] into one SQL statement.

pub mod names;

use crate::dicom::Uid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Study,
    Series,
    Instance,
}

/// How an attribute's values are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text (CS, LO, SH, AE…): single value, wildcard, list.
    Text,
    /// Person name: case-insensitive; fuzzy with `fuzzymatching`.
    PersonName,
    /// UIDs: single value or list; no wildcards (PS3.4 C.2.2.2.2).
    Uid,
    /// DA: single value or range.
    Date,
    /// TM: single value or range.
    Time,
    /// IS/US stored as integers.
    Integer,
}

/// Where the index gets an attribute's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Copied from the instance at ingest into `column` of its level's
    /// table (the first instance of a study or series sets the study's or
    /// series' value), read back into the rows' [`crate::index::Attributes`]
    /// and returned by QIDO-RS and C-FIND at its level. Text kinds are
    /// stored as decoded text, [`Kind::Integer`] as the first value of an
    /// IS. Making one more attribute searchable and returned is one such
    /// entry plus the migration that adds its column.
    Copied,
    /// Worked out by the index with code of its own: the UIDs of the
    /// hierarchy, Modalities in Study (from the series), and the pixel
    /// module of the instance table.
    Derived,
}

/// An attribute Phim indexes: where it lives and how it matches.
#[derive(Debug)]
pub struct Attribute {
    pub(crate) tag: u32,
    pub keyword: &'static str,
    pub(crate) vr: &'static str,
    pub level: Level,
    pub kind: Kind,
    /// SQL column (table aliases st, se, i).
    pub column: &'static str,
    pub stored: Stored,
}

impl Attribute {
    /// The column without its table alias (`study_date`).
    pub(crate) fn column_name(&self) -> &'static str {
        self.column.split_once('.').map_or(self.column, |(_, c)| c)
    }
    pub(crate) fn dicom_tag(&self) -> dicom_core::Tag {
        dicom_core::Tag((self.tag >> 16) as u16, self.tag as u16)
    }
}

/// The attributes at `level` that ingest copies into the index
/// ([`Stored::Copied`]), in table order.
pub(crate) fn copied(level: Level) -> impl Iterator<Item = &'static Attribute> {
    ATTRIBUTES
        .iter()
        .filter(move |a| a.level == level && a.stored == Stored::Copied)
}

macro_rules! attr {
    ($tag:expr, $kw:expr, $vr:expr, $level:ident, $kind:ident, $col:expr, $stored:ident) => {
        Attribute {
            tag: $tag,
            keyword: $kw,
            vr: $vr,
            level: Level::$level,
            kind: Kind::$kind,
            column: $col,
            stored: Stored::$stored,
        }
    };
}

/// The attributes of PS3.18 Table 6.7.1-1 that Phim matches on (and the
/// one place that says so: ingest, the SQL index and the QIDO/C-FIND
/// answers all read this table).
#[rustfmt::skip]
pub(crate) static ATTRIBUTES: &[Attribute] = &[
    attr!(0x0008_0020, "StudyDate", "DA", Study, Date, "st.study_date", Copied),
    attr!(0x0008_0030, "StudyTime", "TM", Study, Time, "st.study_time", Copied),
    attr!(0x0008_0050, "AccessionNumber", "SH", Study, Text, "st.accession_number", Copied),
    attr!(0x0008_0061, "ModalitiesInStudy", "CS", Study, Text, "se.modality", Derived),
    attr!(0x0008_0090, "ReferringPhysicianName", "PN", Study, PersonName, "st.referring_physician_name", Copied),
    attr!(0x0008_1030, "StudyDescription", "LO", Study, Text, "st.study_description", Copied),
    attr!(0x0010_0010, "PatientName", "PN", Study, PersonName, "st.patient_name", Copied),
    attr!(0x0010_0020, "PatientID", "LO", Study, Text, "st.patient_id", Copied),
    attr!(0x0010_0030, "PatientBirthDate", "DA", Study, Date, "st.patient_birth_date", Copied),
    attr!(0x0010_0040, "PatientSex", "CS", Study, Text, "st.patient_sex", Copied),
    attr!(0x0020_000D, "StudyInstanceUID", "UI", Study, Uid, "st.study_uid", Derived),
    attr!(0x0020_0010, "StudyID", "SH", Study, Text, "st.study_id", Copied),
    attr!(0x0008_0060, "Modality", "CS", Series, Text, "se.modality", Copied),
    attr!(0x0008_103E, "SeriesDescription", "LO", Series, Text, "se.series_description", Copied),
    attr!(0x0018_0015, "BodyPartExamined", "CS", Series, Text, "se.body_part_examined", Copied),
    attr!(0x0020_000E, "SeriesInstanceUID", "UI", Series, Uid, "se.series_uid", Derived),
    attr!(0x0020_0011, "SeriesNumber", "IS", Series, Integer, "se.series_number", Copied),
    attr!(0x0040_0244, "PerformedProcedureStepStartDate", "DA", Series, Date, "se.pps_start_date", Copied),
    attr!(0x0040_0245, "PerformedProcedureStepStartTime", "TM", Series, Time, "se.pps_start_time", Copied),
    attr!(0x0008_0016, "SOPClassUID", "UI", Instance, Uid, "i.sop_class_uid", Derived),
    attr!(0x0008_0018, "SOPInstanceUID", "UI", Instance, Uid, "i.sop_uid", Derived),
    attr!(0x0020_0013, "InstanceNumber", "IS", Instance, Integer, "i.instance_number", Copied),
    attr!(0x0028_0008, "NumberOfFrames", "IS", Instance, Integer, "i.num_frames", Derived),
    attr!(0x0028_0010, "Rows", "US", Instance, Integer, "i.num_rows", Derived),
    attr!(0x0028_0011, "Columns", "US", Instance, Integer, "i.num_columns", Derived),
];

/// Sequences whose items are indexed for sequence matching (PS3.4
/// C.2.2.2.6): Referenced Study, Request Attributes, Procedure Code,
/// Referenced Performed Procedure Step, Issuer of Accession Number.
pub(crate) static INDEXED_SEQUENCES: &[u32] = &[
    0x0008_1110,
    0x0040_0275,
    0x0008_1032,
    0x0008_1111,
    0x0008_0051,
];

pub(crate) fn attribute_by_tag(tag: u32) -> Option<&'static Attribute> {
    ATTRIBUTES.iter().find(|a| a.tag == tag)
}

pub fn attribute_by_keyword(kw: &str) -> Option<&'static Attribute> {
    ATTRIBUTES.iter().find(|a| a.keyword == kw)
}

/// How one attribute is to be matched.
#[derive(Debug, Clone, PartialEq)]
pub enum Match {
    /// Exact (case-folded for PN).
    Single(String),
    /// `*` and `?` (PS3.4 C.2.2.2.4).
    Wildcard(String),
    /// Inclusive range, either end open (PS3.4 C.2.2.2.5).
    Range(Option<String>, Option<String>),
    /// List of UIDs (PS3.4 C.2.2.2.2).
    List(Vec<String>),
    /// Accent- and order-insensitive words (`fuzzymatching=true`).
    Fuzzy(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Filter {
    pub attribute: &'static Attribute,
    pub matching: Match,
}

/// A key inside an indexed sequence, e.g. `00400275.00401001`.
#[derive(Debug, Clone)]
pub struct SequenceFilter {
    /// `SSSSSSSS.EEEEEEEE` (upper-case hex).
    pub path: String,
    pub matching: Match,
}

/// What to return beyond the default attributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum Include {
    #[default]
    Default,
    All,
    Tags(Vec<u32>),
}

#[derive(Debug, Clone)]
pub struct Query {
    pub level: Level,
    pub filters: Vec<Filter>,
    pub sequence_filters: Vec<SequenceFilter>,
    /// StudyDate+StudyTime ranges combined into one date-time range
    /// (PS3.4 C.2.2.2.5.1).
    pub combined_datetime: bool,
    pub(crate) include: Include,
    pub limit: i64,
    pub offset: i64,
}

impl Query {
    pub fn new(level: Level) -> Query {
        Query {
            level,
            filters: Vec::new(),
            sequence_filters: Vec::new(),
            combined_datetime: false,
            include: Include::Default,
            limit: 100,
            offset: 0,
        }
    }

    /// Adds an exact UID constraint (from a URL path).
    pub(crate) fn with_uid(mut self, keyword: &str, uid: &Uid) -> Query {
        if let Some(a) = attribute_by_keyword(keyword) {
            self.filters.retain(|f| f.attribute.tag != a.tag);
            self.filters.push(Filter {
                attribute: a,
                matching: Match::Single(uid.to_string()),
            });
        }
        self
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QueryError {
    #[error("invalid value '{value}' for {keyword}: {reason}")]
    InvalidValue {
        keyword: String,
        value: String,
        reason: String,
    },
}

/// A DA or TM value: single, list, or range with either end open
/// (PS3.4 C.2.2.2.5); `None` for a range open at both ends.
fn date_or_time(a: &Attribute, v: &str) -> Result<Option<Match>, &'static str> {
    let check = |s: &str| -> Result<String, &'static str> {
        let s = s.trim();
        let ok = if a.kind == Kind::Date {
            s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit())
        } else {
            !s.is_empty()
                && s.len() <= 13
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || b == b'.' || b == b':')
        };
        if ok {
            Ok(s.replace(':', ""))
        } else {
            Err(if a.kind == Kind::Date {
                "expected YYYYMMDD"
            } else {
                "expected HHMMSS"
            })
        }
    };
    Ok(Some(match v.split_once('-') {
        Some((lo, hi)) => {
            let lo = (!lo.trim().is_empty()).then(|| check(lo)).transpose()?;
            let hi = (!hi.trim().is_empty()).then(|| check(hi)).transpose()?;
            if lo.is_none() && hi.is_none() {
                return Ok(None);
            }
            Match::Range(lo, hi)
        }
        None if v.contains(['\\', ',']) => Match::List(
            v.split([',', '\\'])
                .map(check)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => Match::Single(check(v)?),
    }))
}

/// Parses one matching value for an attribute (PS3.4 C.2.2.2).
pub fn parse_match(
    a: &'static Attribute,
    value: &str,
    fuzzy: bool,
) -> Result<Option<Match>, QueryError> {
    let bad = |reason: &str| QueryError::InvalidValue {
        keyword: a.keyword.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let v = value.trim();
    // Universal matching: an empty value or a lone '*' (PS3.4 C.2.2.2.3).
    if v.is_empty() || v == "*" {
        return Ok(None);
    }
    let has_wildcard = v.contains(['*', '?']);
    Ok(Some(match a.kind {
        Kind::Uid => {
            let list: Vec<&str> = v
                .split([',', '\\'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            for u in &list {
                Uid::parse(u).map_err(|e| bad(&e.to_string()))?;
            }
            if list.len() == 1 {
                Match::Single(list[0].to_owned())
            } else {
                Match::List(list.into_iter().map(str::to_owned).collect())
            }
        }
        Kind::Date | Kind::Time => match date_or_time(a, v).map_err(bad)? {
            Some(m) => m,
            None => return Ok(None),
        },
        Kind::Integer => {
            let list: Vec<&str> = v.split([',', '\\']).map(str::trim).collect();
            for n in &list {
                n.parse::<i64>().map_err(|_| bad("expected an integer"))?;
            }
            if list.len() == 1 {
                Match::Single(list[0].to_owned())
            } else {
                Match::List(list.into_iter().map(str::to_owned).collect())
            }
        }
        Kind::PersonName if fuzzy => {
            let words = names::fuzzy_words(&v.replace(['*', '?'], " "));
            if words.is_empty() {
                return Ok(None);
            }
            Match::Fuzzy(words)
        }
        Kind::PersonName => {
            let q = names::pn_query(v);
            if has_wildcard {
                Match::Wildcard(q)
            } else {
                Match::Single(q)
            }
        }
        Kind::Text => {
            if has_wildcard {
                Match::Wildcard(v.to_owned())
            } else if v.contains('\\') {
                Match::List(v.split('\\').map(|s| s.trim().to_owned()).collect())
            } else {
                Match::Single(v.to_owned())
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(kw: &str) -> &'static Attribute {
        attribute_by_keyword(kw).unwrap()
    }

    #[test]
    fn matching_types() {
        assert_eq!(parse_match(a("PatientID"), "", false).unwrap(), None);
        assert_eq!(parse_match(a("PatientID"), "*", false).unwrap(), None);
        assert_eq!(
            parse_match(a("StudyDate"), "20240101-", false).unwrap(),
            Some(Match::Range(Some("20240101".into()), None))
        );
        assert_eq!(
            parse_match(a("StudyDate"), "-20240101", false).unwrap(),
            Some(Match::Range(None, Some("20240101".into())))
        );
        assert!(parse_match(a("StudyDate"), "2024-01-01x", false).is_err());
        assert_eq!(
            parse_match(a("StudyInstanceUID"), "1.2,1.3", false).unwrap(),
            Some(Match::List(vec!["1.2".into(), "1.3".into()]))
        );
        assert!(parse_match(a("StudyInstanceUID"), "1.2.x", false).is_err());
        assert_eq!(
            parse_match(a("PatientName"), "NGUY*", false).unwrap(),
            Some(Match::Wildcard("nguy*".into()))
        );
        assert_eq!(
            parse_match(a("PatientName"), "Văn An", true).unwrap(),
            Some(Match::Fuzzy(vec!["an".into(), "van".into()]))
        );
        assert_eq!(
            parse_match(a("StudyTime"), "10:15-12", false).unwrap(),
            Some(Match::Range(Some("1015".into()), Some("12".into())))
        );
    }
}
