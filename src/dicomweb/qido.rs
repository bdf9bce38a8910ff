//! QIDO-RS (PS3.18 §10.6), basic: exact matching on UIDs, Patient ID,
//! Accession Number and Modality, with `limit`/`offset`. Other matching keys
//! are answered with the `Warning: 299` that PS3.18 §8.3.4 requires for
//! unsupported parameters, never silently ignored.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::wado::require_json;
use super::{base_url, path_uid};
use crate::dicom::json::json_string;
use crate::error::ApiError;
use crate::index::{InstanceRow, Query, SeriesRow, StudyRow};
use crate::server::AppState;

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Level {
    Study,
    Series,
    Instance,
}

/// Parsed query parameters.
struct Params {
    query: Query,
    unsupported: Vec<String>,
}

fn keyword(key: &str) -> &str {
    // Tags in hex map to the keywords handled here.
    match key.to_ascii_uppercase().as_str() {
        "0020000D" => "StudyInstanceUID",
        "0020000E" => "SeriesInstanceUID",
        "00080018" => "SOPInstanceUID",
        "00100020" => "PatientID",
        "00080050" => "AccessionNumber",
        "00080060" => "Modality",
        "00080061" => "ModalitiesInStudy",
        _ => key,
    }
}

fn parse(raw: Option<&str>, level: Level) -> Result<Params, ApiError> {
    let mut query = Query {
        limit: DEFAULT_LIMIT,
        ..Default::default()
    };
    let mut unsupported = Vec::new();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (k, v) in &pairs {
        *seen.entry(k.clone()).or_default() += 1;
        let uid = |name: &str| {
            path_uid(name, v).map_err(|e| ApiError::BadRequest(format!("parameter {k}: {e}")))
        };
        let value = (!v.is_empty()).then(|| v.clone());
        match keyword(k) {
            "limit" => {
                query.limit = v
                    .parse::<i64>()
                    .ok()
                    .filter(|l| *l > 0)
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!("limit must be a positive integer, got '{v}'"))
                    })?
                    .min(MAX_LIMIT)
            }
            "offset" => {
                query.offset = v.parse::<i64>().ok().filter(|o| *o >= 0).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "offset must be a non-negative integer, got '{v}'"
                    ))
                })?
            }
            "StudyInstanceUID" if value.is_some() => {
                query.study_uid = Some(uid("StudyInstanceUID")?)
            }
            "SeriesInstanceUID" if value.is_some() => {
                query.series_uid = Some(uid("SeriesInstanceUID")?)
            }
            "SOPInstanceUID" if value.is_some() => query.sop_uid = Some(uid("SOPInstanceUID")?),
            "PatientID" => query.patient_id = value,
            "AccessionNumber" => query.accession_number = value,
            "Modality" | "ModalitiesInStudy" => query.modality = value,
            "StudyInstanceUID" | "SeriesInstanceUID" | "SOPInstanceUID" => {}
            "includefield" | "fuzzymatching" => unsupported.push(k.clone()),
            other => {
                let valid = other.chars().all(|c| c.is_ascii_alphanumeric() || c == '.');
                if !valid || other.is_empty() {
                    return Err(ApiError::BadRequest(format!(
                        "unknown query parameter '{k}'"
                    )));
                }
                unsupported.push(k.clone());
            }
        }
    }
    if let Some((k, _)) = seen
        .iter()
        .find(|(k, n)| **n > 1 && (k.as_str() == "limit" || k.as_str() == "offset"))
    {
        return Err(ApiError::BadRequest(format!(
            "parameter {k} given more than once"
        )));
    }
    let _ = level;
    Ok(Params { query, unsupported })
}

fn respond(items: Vec<String>, limit: i64, unsupported: &[String]) -> Response {
    let full = items.len() as i64 >= limit;
    let body = format!("[{}]", items.join(","));
    let mut resp = ([(header::CONTENT_TYPE, "application/dicom+json")], body).into_response();
    if !unsupported.is_empty() {
        let text = format!(
            "299 phim \"The following query parameters are not supported: {}\"",
            unsupported.join(", ").replace(['"', '\\'], " ")
        );
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    if full {
        resp.headers_mut().append(
            header::WARNING,
            HeaderValue::from_static(
                "299 phim \"There are additional results that can be requested\"",
            ),
        );
    }
    resp
}

struct Json(String);

impl Json {
    fn new() -> Json {
        Json(String::from("{"))
    }
    fn field(&mut self, tag: &str, vr: &str, values: &[String]) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        if values.is_empty() {
            self.0.push_str(&format!("\"{tag}\":{{\"vr\":\"{vr}\"}}"));
        } else {
            self.0.push_str(&format!(
                "\"{tag}\":{{\"vr\":\"{vr}\",\"Value\":[{}]}}",
                values.join(",")
            ));
        }
    }
    fn str(&mut self, tag: &str, vr: &str, v: &Option<String>) {
        let vals: Vec<String> = v.iter().map(|s| json_string(s)).collect();
        self.field(tag, vr, &vals)
    }
    fn pn(&mut self, tag: &str, v: &Option<String>) {
        let vals: Vec<String> = v
            .iter()
            .map(|s| {
                format!(
                    "{{\"Alphabetic\":{}}}",
                    json_string(s.split('=').next().unwrap_or(""))
                )
            })
            .collect();
        self.field(tag, "PN", &vals)
    }
    fn int(&mut self, tag: &str, vr: &str, v: Option<i64>) {
        let vals: Vec<String> = v.iter().map(|n| n.to_string()).collect();
        self.field(tag, vr, &vals)
    }
    fn done(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// PS3.18 Table 6.7.1-2 attributes (ordered by tag).
fn study_json(base: &str, r: &StudyRow) -> String {
    let mut j = Json::new();
    j.field("00080005", "CS", &[json_string("ISO_IR 192")]);
    j.str("00080020", "DA", &r.study_date);
    j.str("00080030", "TM", &r.study_time);
    j.str("00080050", "SH", &r.accession_number);
    j.field("00080056", "CS", &[json_string("ONLINE")]);
    j.field(
        "00080061",
        "CS",
        &r.modalities
            .iter()
            .map(|m| json_string(m))
            .collect::<Vec<_>>(),
    );
    j.pn("00080090", &r.referring_physician_name);
    j.str("00081030", "LO", &r.study_description);
    j.field(
        "00081190",
        "UR",
        &[json_string(&format!("{base}/studies/{}", r.study_uid))],
    );
    j.pn("00100010", &r.patient_name);
    j.str("00100020", "LO", &r.patient_id);
    j.str("00100030", "DA", &r.patient_birth_date);
    j.str("00100040", "CS", &r.patient_sex);
    j.field("0020000D", "UI", &[json_string(&r.study_uid)]);
    j.str("00200010", "SH", &r.study_id);
    j.int("00201206", "IS", Some(r.num_series));
    j.int("00201208", "IS", Some(r.num_instances));
    j.done()
}

/// PS3.18 Table 6.7.1-2a attributes.
fn series_json(base: &str, r: &SeriesRow) -> String {
    let mut j = Json::new();
    j.field("00080005", "CS", &[json_string("ISO_IR 192")]);
    j.str("00080060", "CS", &r.modality);
    j.str("0008103E", "LO", &r.series_description);
    j.field(
        "00081190",
        "UR",
        &[json_string(&format!(
            "{base}/studies/{}/series/{}",
            r.study_uid, r.series_uid
        ))],
    );
    j.str("00180015", "CS", &r.body_part_examined);
    j.field("0020000D", "UI", &[json_string(&r.study_uid)]);
    j.field("0020000E", "UI", &[json_string(&r.series_uid)]);
    j.int("00200011", "IS", r.series_number);
    j.int("00201209", "IS", Some(r.num_instances));
    j.str("00400244", "DA", &r.pps_start_date);
    j.str("00400245", "TM", &r.pps_start_time);
    j.done()
}

/// PS3.18 Table 6.7.1-2b attributes.
fn instance_json(base: &str, r: &InstanceRow) -> String {
    let mut j = Json::new();
    j.field("00080005", "CS", &[json_string("ISO_IR 192")]);
    j.field("00080016", "UI", &[json_string(&r.sop_class_uid)]);
    j.field("00080018", "UI", &[json_string(&r.sop_uid)]);
    j.field("00080056", "CS", &[json_string("ONLINE")]);
    j.field(
        "00081190",
        "UR",
        &[json_string(&format!(
            "{base}/studies/{}/series/{}/instances/{}",
            r.study_uid, r.series_uid, r.sop_uid
        ))],
    );
    j.field("00083002", "UI", &[json_string(&r.transfer_syntax_uid)]);
    j.field("0020000D", "UI", &[json_string(&r.study_uid)]);
    j.field("0020000E", "UI", &[json_string(&r.series_uid)]);
    j.int("00200013", "IS", r.instance_number);
    j.int("00280008", "IS", r.frames);
    j.int("00280010", "US", r.rows);
    j.int("00280011", "US", r.columns);
    j.int("00280100", "US", r.bits_allocated);
    j.done()
}

async fn search(
    st: AppState,
    headers: HeaderMap,
    raw: Option<String>,
    level: Level,
    study: Option<String>,
    series: Option<String>,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let mut p = parse(raw.as_deref(), level)?;
    if let Some(s) = study {
        p.query.study_uid = Some(path_uid("study", &s)?);
    }
    if let Some(s) = series {
        p.query.series_uid = Some(path_uid("series", &s)?);
    }
    let base = base_url(&st, &headers);
    let items: Vec<String> = match level {
        Level::Study => st
            .index
            .search_studies(&p.query)
            .await?
            .iter()
            .map(|r| study_json(&base, r))
            .collect(),
        Level::Series => st
            .index
            .search_series(&p.query)
            .await?
            .iter()
            .map(|r| series_json(&base, r))
            .collect(),
        Level::Instance => st
            .index
            .search_instances(&p.query)
            .await?
            .iter()
            .map(|r| instance_json(&base, r))
            .collect(),
    };
    Ok(respond(items, p.query.limit, &p.unsupported))
}

pub async fn studies(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    search(st, headers, q, Level::Study, None, None).await
}

pub async fn series(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    search(st, headers, q, Level::Series, None, None).await
}

pub async fn instances(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    search(st, headers, q, Level::Instance, None, None).await
}

pub async fn study_series(
    State(st): State<AppState>,
    Path(study): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    search(st, headers, q, Level::Series, Some(study), None).await
}

pub async fn study_instances(
    State(st): State<AppState>,
    Path(study): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    search(st, headers, q, Level::Instance, Some(study), None).await
}

pub async fn series_instances(
    State(st): State<AppState>,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    search(st, headers, q, Level::Instance, Some(study), Some(series)).await
}
