//! `--emr-url-template`: the EMR link of a study without an explicit one,
//! made from its attributes, and the link as answered ([`LinkView`]).

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;

use crate::dicom::tags;
use crate::index::{EmrLink, StudyRow};
use crate::query::{Attribute, Level, Stored, ATTRIBUTES};

/// Longest link URL accepted.
pub(crate) const MAX_URL: usize = 2048;
/// Everything but RFC 3986 unreserved characters is percent-encoded in
/// template values (so a `/`, `?` or `#` in an ID stays inside its segment).
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The study-level attributes a template may name: the Study Instance UID
/// and every study attribute the index copies.
fn fields() -> impl Iterator<Item = &'static Attribute> {
    ATTRIBUTES.iter().filter(|a| {
        a.level == Level::Study && (a.stored == Stored::Copied || a.keyword == "StudyInstanceUID")
    })
}

fn field_value<'r>(a: &Attribute, study: &'r StudyRow) -> Option<&'r str> {
    if a.keyword == "StudyInstanceUID" {
        Some(&study.study_uid)
    } else {
        study.attributes.text(a.dicom_tag())
    }
}

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Field(&'static Attribute),
}

/// `--emr-url-template`: literal text with `{Keyword}` placeholders.
#[derive(Debug, Clone)]
pub(crate) struct UrlTemplate {
    pieces: Vec<Piece>,
}

impl UrlTemplate {
    pub(crate) fn parse(template: &str) -> Result<UrlTemplate, String> {
        let bad = |why: String| format!("--emr-url-template '{template}': {why}");
        let mut pieces = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| bad("a '{' without its '}'".into()))?;
            let name = &after[..close];
            let field = fields().find(|a| a.keyword == name).ok_or_else(|| {
                bad(format!(
                    "unknown placeholder {{{name}}} (known: {})",
                    fields().map(|a| a.keyword).collect::<Vec<_>>().join(", ")
                ))
            })?;
            pieces.push(Piece::Field(field));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(bad("a '}' without its '{'".into()));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        let t = UrlTemplate { pieces };
        // With sample values in place, it must be an absolute http(s) URL.
        let sample: String = t
            .pieces
            .iter()
            .map(|p| match p {
                Piece::Text(s) => s.as_str(),
                Piece::Field(_) => "x",
            })
            .collect();
        check_url(&sample).map_err(bad)?;
        Ok(t)
    }

    /// The URL for a study, or `None` when an attribute it names is empty.
    pub(crate) fn render(&self, study: &StudyRow) -> Option<String> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(s) => out.push_str(s),
                Piece::Field(a) => {
                    let value = field_value(a, study)?.trim();
                    if value.is_empty() {
                        return None;
                    }
                    out.extend(utf8_percent_encode(value, ENCODE));
                }
            }
        }
        Some(out)
    }
}

/// An absolute http or https URL.
pub(crate) fn check_url(s: &str) -> Result<(), String> {
    if s.len() > MAX_URL {
        return Err(format!("url is longer than {MAX_URL} characters"));
    }
    let u = url::Url::parse(s).map_err(|e| format!("url '{s}' is not an absolute URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) {
        return Err(format!("url '{s}' is not an http or https URL"));
    }
    Ok(())
}

/// Where a study's link came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Source {
    Explicit,
    Template,
}

/// A study's EMR link as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LinkView {
    pub record_id: String,
    pub url: String,
    pub source: Source,
}

impl LinkView {
    pub(crate) fn explicit(l: EmrLink) -> LinkView {
        LinkView {
            record_id: l.record_id,
            url: l.url,
            source: Source::Explicit,
        }
    }
}

impl UrlTemplate {
    /// The link of a study (see [`template_link`]).
    pub(crate) fn link(&self, study: &StudyRow) -> Option<LinkView> {
        let url = self.render(study)?;
        let record_id = study
            .attributes
            .text(tags::ACCESSION_NUMBER)
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .unwrap_or(&study.study_uid)
            .to_owned();
        Some(LinkView {
            record_id,
            url,
            source: Source::Template,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn study() -> StudyRow {
        let mut s = StudyRow {
            study_uid: "1.2.3".into(),
            ..Default::default()
        };
        s.attributes
            .set_text(tags::PATIENT_ID, Some("P/1 ?#".into()));
        s.attributes
            .set_text(tags::ACCESSION_NUMBER, Some("ACC 1".into()));
        s
    }

    #[test]
    fn templates() {
        let t = UrlTemplate::parse(
            "https://emr.example/patients/{PatientID}/orders/{AccessionNumber}?s={StudyInstanceUID}",
        )
        .unwrap();
        assert_eq!(
            t.render(&study()).unwrap(),
            "https://emr.example/patients/P%2F1%20%3F%23/orders/ACC%201?s=1.2.3"
        );
        let mut no_acc = study();
        no_acc
            .attributes
            .set_text(tags::ACCESSION_NUMBER, Some("  ".into()));
        assert_eq!(t.render(&no_acc), None);
        let by_id = UrlTemplate::parse("http://emr/{StudyID}").unwrap();
        assert_eq!(by_id.render(&study()), None);

        // The record id: the accession number, else the study UID.
        let by_uid = UrlTemplate::parse("https://emr.example/studies/{StudyInstanceUID}").unwrap();
        let l = by_uid.link(&study()).unwrap();
        assert_eq!(
            (l.record_id.as_str(), l.source),
            ("ACC 1", Source::Template)
        );
        assert_eq!(l.url, "https://emr.example/studies/1.2.3");
        assert_eq!(by_uid.link(&no_acc).unwrap().record_id, "1.2.3");
        for bad in [
            "https://emr/{Bogus}",
            "https://emr/{PatientID",
            "https://emr/PatientID}",
            "emr/{PatientID}",
            "ftp://emr/{PatientID}",
            "{PatientID}",
        ] {
            assert!(UrlTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
