//! EMR record links: one per study, set by the EMR (`PUT
//! /api/studies/{study}/emr-link`, stored in the index) or, for studies
//! without one, built from `--emr-url-template`.

use std::collections::{BTreeMap, HashSet};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};

use super::{find_studies, require_study, study_uid};
use crate::dicom::Uid;
use crate::error::{ApiError, JsonError};
use crate::index::{EmrLink, StudyRow};
use crate::state::AppState;

/// Longest record id accepted.
pub const MAX_RECORD_ID: usize = 256;
/// Longest link URL accepted.
pub const MAX_URL: usize = 2048;
/// Most studies one batch read may name.
pub const MAX_BATCH: usize = 200;

/// Everything but RFC 3986 unreserved characters is percent-encoded in
/// template values (so a `/`, `?` or `#` in an ID stays inside its segment).
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Reads one attribute of a study.
type Getter = fn(&StudyRow) -> Option<&str>;

/// The study-level attributes a template may name, and where their values are.
const FIELDS: &[(&str, Getter)] = &[
    ("PatientID", |s| s.patient_id.as_deref()),
    ("PatientName", |s| s.patient_name.as_deref()),
    ("PatientBirthDate", |s| s.patient_birth_date.as_deref()),
    ("PatientSex", |s| s.patient_sex.as_deref()),
    ("StudyInstanceUID", |s| Some(s.study_uid.as_str())),
    ("StudyID", |s| s.study_id.as_deref()),
    ("AccessionNumber", |s| s.accession_number.as_deref()),
    ("StudyDate", |s| s.study_date.as_deref()),
    ("StudyTime", |s| s.study_time.as_deref()),
    ("StudyDescription", |s| s.study_description.as_deref()),
    ("ReferringPhysicianName", |s| {
        s.referring_physician_name.as_deref()
    }),
];

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Field(usize),
}

/// `--emr-url-template`: literal text with `{Keyword}` placeholders.
#[derive(Debug, Clone)]
pub struct UrlTemplate {
    pieces: Vec<Piece>,
}

impl UrlTemplate {
    pub fn parse(template: &str) -> Result<UrlTemplate, String> {
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
            let field = FIELDS.iter().position(|(k, _)| *k == name).ok_or_else(|| {
                bad(format!(
                    "unknown placeholder {{{name}}} (known: {})",
                    FIELDS
                        .iter()
                        .map(|(k, _)| *k)
                        .collect::<Vec<_>>()
                        .join(", ")
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
    pub fn render(&self, study: &StudyRow) -> Option<String> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(s) => out.push_str(s),
                Piece::Field(i) => {
                    let value = FIELDS.get(*i).and_then(|(_, get)| get(study))?.trim();
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
fn check_url(s: &str) -> Result<(), String> {
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
pub enum Source {
    Explicit,
    Template,
}

/// A study's EMR link as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkView {
    pub record_id: String,
    pub url: String,
    pub source: Source,
}

impl LinkView {
    fn explicit(l: EmrLink) -> LinkView {
        LinkView {
            record_id: l.record_id,
            url: l.url,
            source: Source::Explicit,
        }
    }
}

/// The template's link for a study: its record id is the accession number,
/// or the Study Instance UID when there is none.
pub fn template_link(st: &AppState, study: &StudyRow) -> Option<LinkView> {
    st.emr.template.as_ref()?.link(study)
}

impl UrlTemplate {
    /// The link of a study (see [`template_link`]).
    pub fn link(&self, study: &StudyRow) -> Option<LinkView> {
        let url = self.render(study)?;
        let record_id = study
            .accession_number
            .as_deref()
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

/// The link of one study: explicit, else the template's.
pub async fn resolve(st: &AppState, study: &StudyRow) -> Result<Option<LinkView>, ApiError> {
    let uid = study_uid(&study.study_uid)?;
    let explicit = st.index.emr_links(&[uid]).await?.into_iter().next();
    Ok(match explicit {
        Some((_, l)) => Some(LinkView::explicit(l)),
        None => template_link(st, study),
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LinkBody {
    record_id: Option<serde_json::Value>,
    url: Option<serde_json::Value>,
}

/// Validates a PUT body.
fn parse_body(body: &[u8]) -> Result<EmrLink, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let b: LinkBody = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "body is not a JSON object {{\"recordId\", \"url\"}}: {e}"
        ))
    })?;
    let text = |v: Option<serde_json::Value>, name: &str| match v {
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(_) => Err(bad(format!("{name} must be a string"))),
        None => Err(bad(format!("{name} is missing"))),
    };
    let record_id = text(b.record_id, "recordId")?;
    let url = text(b.url, "url")?;
    if record_id.trim().is_empty() {
        return Err(bad("recordId is empty".into()));
    }
    if record_id.chars().count() > MAX_RECORD_ID {
        return Err(bad(format!(
            "recordId is longer than {MAX_RECORD_ID} characters"
        )));
    }
    if record_id.chars().any(char::is_control) {
        return Err(bad("recordId has control characters".into()));
    }
    check_url(&url).map_err(bad)?;
    Ok(EmrLink { record_id, url })
}

/// `PUT /api/studies/{study}/emr-link`.
pub async fn put_link(
    State(st): State<AppState>,
    Path(study): Path<String>,
    body: Bytes,
) -> Result<Json<LinkView>, JsonError> {
    let uid = study_uid(&study)?;
    let link = parse_body(&body)?;
    if !st.index.put_emr_link(&uid, &link).await? {
        return Err(ApiError::NotFound(format!("study {uid} is not in this archive")).into());
    }
    tracing::info!(study = %uid, "EMR link set");
    Ok(Json(LinkView::explicit(link)))
}

/// `GET /api/studies/{study}/emr-link`.
pub async fn get_link(
    State(st): State<AppState>,
    Path(study): Path<String>,
) -> Result<Json<LinkView>, JsonError> {
    let uid = study_uid(&study)?;
    let row = require_study(st.index.as_ref(), &uid).await?;
    match resolve(&st, &row).await? {
        Some(l) => Ok(Json(l)),
        None => Err(ApiError::NotFound(format!(
            "study {uid} has no EMR link{}",
            if st.emr.template.is_some() {
                " (and the template needs an attribute it lacks)"
            } else {
                ""
            }
        ))
        .into()),
    }
}

/// `DELETE /api/studies/{study}/emr-link`: 204 whether or not it had one.
pub async fn delete_link(
    State(st): State<AppState>,
    Path(study): Path<String>,
) -> Result<StatusCode, JsonError> {
    let uid = study_uid(&study)?;
    require_study(st.index.as_ref(), &uid).await?;
    if st.index.delete_emr_link(&uid).await? {
        tracing::info!(study = %uid, "EMR link removed");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/emr-links?studies=uid1,uid2,…`: the links of those studies
/// that have one (explicit or from the template), keyed by UID.
pub async fn batch(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<BTreeMap<String, LinkView>>, JsonError> {
    let mut list = None;
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "studies" if list.is_none() => list = Some(v.into_owned()),
            "studies" => {
                return Err(ApiError::BadRequest(
                    "studies is given more than once (use one comma-separated list)".into(),
                )
                .into())
            }
            other => {
                return Err(
                    ApiError::BadRequest(format!("unknown query parameter '{other}'")).into(),
                )
            }
        }
    }
    let list =
        list.ok_or_else(|| ApiError::BadRequest("studies=uid1,uid2,… is required".into()))?;
    let mut seen = HashSet::new();
    let mut uids = Vec::new();
    for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let uid = study_uid(s)?;
        if seen.insert(uid.clone()) {
            uids.push(uid);
        }
    }
    if uids.is_empty() {
        return Err(ApiError::BadRequest("studies names no study UID".into()).into());
    }
    if uids.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "studies names {} studies; at most {MAX_BATCH} at once",
            uids.len()
        ))
        .into());
    }
    let mut out: BTreeMap<String, LinkView> = st
        .index
        .emr_links(&uids)
        .await?
        .into_iter()
        .map(|(uid, l)| (uid, LinkView::explicit(l)))
        .collect();
    if st.emr.template.is_some() {
        let rest: Vec<Uid> = uids
            .into_iter()
            .filter(|u| !out.contains_key(u.as_str()))
            .collect();
        for row in find_studies(st.index.as_ref(), &rest).await? {
            if let Some(l) = template_link(&st, &row) {
                out.insert(row.study_uid.clone(), l);
            }
        }
    }
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn study() -> StudyRow {
        StudyRow {
            study_uid: "1.2.3".into(),
            patient_id: Some("P/1 ?#".into()),
            accession_number: Some("ACC 1".into()),
            ..Default::default()
        }
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
        no_acc.accession_number = Some("  ".into());
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

    #[test]
    fn bodies() {
        let ok = parse_body(br#"{"recordId":"R1","url":"https://emr.example/r/1"}"#).unwrap();
        assert_eq!(ok.record_id, "R1");
        for bad in [
            &br#"{"recordId":"","url":"https://emr.example/"}"#[..],
            br#"{"recordId":"R","url":"emr.example/x"}"#,
            br#"{"recordId":"R","url":"javascript:alert(1)"}"#,
            br#"{"recordId":"R"}"#,
            br#"{"recordId":5,"url":"https://e/"}"#,
            br#"not json"#,
        ] {
            assert!(
                matches!(parse_body(bad), Err(ApiError::BadRequest(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!(r#"{{"recordId":"{}","url":"https://e/"}}"#, "é".repeat(257));
        assert!(parse_body(long.as_bytes()).is_err());
        let max = format!(r#"{{"recordId":"{}","url":"https://e/"}}"#, "é".repeat(256));
        assert!(parse_body(max.as_bytes()).is_ok());
    }
}
