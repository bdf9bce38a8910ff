//! QIDO-RS (PS3.18 §10.6): search for studies, series and instances.
//!
//! Matching follows PS3.4 C.2.2.2 through the shared query model
//! ([`crate::query`]): single value, universal, wildcard, DA/TM ranges (and
//! combined StudyDate+StudyTime ranges), UID lists, sequence matching on the
//! indexed sequences, ModalitiesInStudy against any series of the study,
//! case-insensitive person names and, with `fuzzymatching=true`, accent- and
//! order-insensitive names. A valid attribute Phim cannot match on is
//! answered with `Warning: 299` (PS3.18 §8.3.4.2), never silently ignored;
//! an unknown or malformed parameter is a 400 that names it.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_dictionary_std::StandardDataDictionary;
use serde_json::Value;

use super::{base_url, path_uid};
use crate::error::ApiError;
use crate::query::{
    attribute_by_tag, parse_match, Filter, Include, Level, Match, Query, SequenceFilter,
    INDEXED_SEQUENCES,
};
use crate::state::AppState;

pub(crate) const DEFAULT_LIMIT: i64 = 100;
/// Largest page (PS3.18 lets the origin server cap `limit`).
pub(crate) const MAX_LIMIT: i64 = 1000;
/// Deepest `offset`: paging further is a scan; narrow the query instead.
pub(crate) const MAX_OFFSET: i64 = 100_000;

/// A parsed request.
struct Params {
    query: Query,
    unsupported: Vec<String>,
}

/// Resolves a query key (keyword or 8-digit hex tag) to a tag.
fn resolve_tag(key: &str) -> Option<u32> {
    if key.len() == 8 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return u32::from_str_radix(key, 16).ok();
    }
    StandardDataDictionary
        .by_name(key)
        .map(|e| ((e.tag().group() as u32) << 16) | e.tag().element() as u32)
}

/// What a sequence matching key asks for.
enum SequenceKey {
    Filter(SequenceFilter),
    /// The sequence is not indexed for matching (nor are nested keys).
    Unsupported,
    /// An empty value: nothing to match.
    Empty,
}

/// A sequence matching key, `SEQUENCE.ATTRIBUTE` (PS3.18 §8.3.4.1).
fn sequence_filter(key: &str, v: &str) -> Result<SequenceKey, ApiError> {
    let bad = |why: String| ApiError::BadRequest(format!("query parameter '{key}': {why}"));
    let (seq, inner) = key.split_once('.').unwrap_or((key, ""));
    let seq_tag = resolve_tag(seq).ok_or_else(|| bad(format!("unknown attribute '{seq}'")))?;
    let inner_tag =
        resolve_tag(inner).ok_or_else(|| bad(format!("unknown attribute '{inner}'")))?;
    if !INDEXED_SEQUENCES.contains(&seq_tag) || inner.contains('.') {
        return Ok(SequenceKey::Unsupported);
    }
    if v.is_empty() {
        return Ok(SequenceKey::Empty);
    }
    let has_wildcard = v.contains(['*', '?']);
    Ok(SequenceKey::Filter(SequenceFilter {
        path: format!("{seq_tag:08X}.{inner_tag:08X}"),
        matching: if has_wildcard {
            Match::Wildcard(v.to_owned())
        } else {
            Match::Single(v.to_owned())
        },
    }))
}

/// The filters of the matching keys, a key given more than once being
/// one list of values (not with wildcards or ranges).
fn merged_filters(
    values: BTreeMap<u32, (String, Vec<String>)>,
    fuzzy: bool,
) -> Result<Vec<Filter>, ApiError> {
    let bad = |k: &str, why: String| ApiError::BadRequest(format!("query parameter '{k}': {why}"));
    let mut out = Vec::new();
    for (tag, (key, vals)) in values {
        let Some(attribute) = attribute_by_tag(tag) else {
            continue;
        };
        let joined = if vals.len() > 1 {
            if vals.iter().any(|v| v.contains(['*', '?', '-'])) {
                return Err(bad(&key, "repeated with a wildcard or range".into()));
            }
            vals.join("\\")
        } else {
            vals.into_iter().next().unwrap_or_default()
        };
        let matching =
            parse_match(attribute, &joined, fuzzy).map_err(|e| bad(&key, e.to_string()))?;
        if let Some(matching) = matching {
            out.push(Filter {
                attribute,
                matching,
            });
        }
    }
    Ok(out)
}

/// The query a QIDO-RS query string asks for (what [`parse`] reads,
/// without the note of unsupported keys).
pub(crate) fn parse_query(raw: Option<&str>, level: Level) -> Result<Query, ApiError> {
    parse(raw, level).map(|p| p.query)
}

fn parse(raw: Option<&str>, level: Level) -> Result<Params, ApiError> {
    let mut query = Query::new(level);
    query.limit = DEFAULT_LIMIT;
    let mut unsupported = Vec::new();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let bad = |k: &str, why: String| ApiError::BadRequest(format!("query parameter '{k}': {why}"));
    let once = |k: &str| pairs.iter().filter(|(p, _)| p == k).count() <= 1;

    let fuzzy = match pairs.iter().find(|(k, _)| k == "fuzzymatching") {
        None => false,
        Some((_, v)) if v == "true" => true,
        Some((_, v)) if v == "false" => false,
        Some((k, v)) => return Err(bad(k, format!("must be true or false, got '{v}'"))),
    };
    let mut include_tags = Vec::new();
    let mut include_all = false;
    // Values per attribute, to merge repeated parameters.
    let mut values: BTreeMap<u32, (String, Vec<String>)> = BTreeMap::new();

    for (k, v) in &pairs {
        match k.as_str() {
            "limit" | "offset" if !once(k) => return Err(bad(k, "given more than once".into())),
            "limit" => {
                query.limit = v
                    .parse::<i64>()
                    .ok()
                    .filter(|l| *l > 0)
                    .ok_or_else(|| bad(k, format!("must be a positive integer, got '{v}'")))?
                    .min(MAX_LIMIT)
            }
            "offset" => {
                let o =
                    v.parse::<i64>().ok().filter(|o| *o >= 0).ok_or_else(|| {
                        bad(k, format!("must be a non-negative integer, got '{v}'"))
                    })?;
                if o > MAX_OFFSET {
                    return Err(bad(
                        k,
                        format!("deeper than {MAX_OFFSET}: narrow the query (for example by date)"),
                    ));
                }
                query.offset = o;
            }
            "fuzzymatching" => {}
            "includefield" => {
                for f in v.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    if f == "all" {
                        include_all = true;
                    } else {
                        let tag = resolve_tag(f)
                            .ok_or_else(|| bad(k, format!("unknown attribute '{f}'")))?;
                        include_tags.push(tag);
                    }
                }
            }
            key if key.contains('.') => match sequence_filter(key, v)? {
                SequenceKey::Filter(f) => query.sequence_filters.push(f),
                SequenceKey::Unsupported => unsupported.push(k.clone()),
                SequenceKey::Empty => {}
            },
            key => {
                let tag = resolve_tag(key)
                    .ok_or_else(|| bad(k, "unknown attribute or parameter".into()))?;
                include_tags.push(tag);
                if attribute_by_tag(tag).is_none() {
                    // A real attribute that is not indexed for matching.
                    if !v.is_empty() {
                        unsupported.push(k.clone());
                    }
                    continue;
                }
                values
                    .entry(tag)
                    .or_insert_with(|| (k.clone(), Vec::new()))
                    .1
                    .push(v.clone());
            }
        }
    }

    query.filters.extend(merged_filters(values, fuzzy)?);
    // StudyDate and StudyTime ranges together mean one date-time range.
    query.combined_datetime = true;
    query.include = if include_all {
        Include::All
    } else if include_tags.is_empty() {
        Include::Default
    } else {
        Include::Tags(include_tags)
    };
    Ok(Params { query, unsupported })
}

fn respond(items: Vec<Value>, more: bool, unsupported: &[String]) -> Response {
    let body = Value::Array(items).to_string();
    let mut resp = ([(header::CONTENT_TYPE, "application/dicom+json")], body).into_response();
    if !unsupported.is_empty() {
        let text = format!(
            "299 phim \"The following query parameters are not supported for matching: {}\"",
            unsupported.join(", ").replace(['"', '\\'], " ")
        );
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    if more {
        resp.headers_mut().append(
            header::WARNING,
            HeaderValue::from_static(
                "299 phim \"There are additional results that can be requested\"",
            ),
        );
    }
    resp
}

async fn search(
    st: AppState,
    headers: HeaderMap,
    raw: Option<String>,
    level: Level,
    study: Option<String>,
    series: Option<String>,
) -> Result<Response, ApiError> {
    super::media::require_json(&headers)?;
    let mut p = parse(raw.as_deref(), level)?;
    if let Some(s) = study {
        p.query = p
            .query
            .with_uid("StudyInstanceUID", &path_uid("study", &s)?);
    }
    if let Some(s) = series {
        p.query = p
            .query
            .with_uid("SeriesInstanceUID", &path_uid("series", &s)?);
    }
    let base = base_url(&st, &headers);
    let (items, more) = crate::search::run(st.index.as_ref(), &p.query, Some(&base)).await?;
    let items = items.into_iter().map(Value::Object).collect();
    Ok(respond(items, more, &p.unsupported))
}

pub(crate) async fn studies(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    search(st, headers, q, Level::Study, None, None).await
}

pub(crate) async fn series(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    search(st, headers, q, Level::Series, None, None).await
}

pub(crate) async fn instances(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    search(st, headers, q, Level::Instance, None, None).await
}

pub(crate) async fn study_series(
    State(st): State<AppState>,
    Path(study): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    search(st, headers, q, Level::Series, Some(study), None).await
}

pub(crate) async fn study_instances(
    State(st): State<AppState>,
    Path(study): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    search(st, headers, q, Level::Instance, Some(study), None).await
}

pub(crate) async fn series_instances(
    State(st): State<AppState>,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    search(st, headers, q, Level::Instance, Some(study), Some(series)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parameters() {
        let p = parse(
            Some("PatientName=Nguy%E1%BB%85n*&00080060=CT&limit=5&includefield=00081030,all"),
            Level::Study,
        )
        .unwrap();
        assert_eq!(p.query.limit, 5);
        assert_eq!(p.query.filters.len(), 2);
        assert_eq!(p.query.include, Include::All);
        let pn = p
            .query
            .filters
            .iter()
            .find(|f| f.attribute.keyword == "PatientName")
            .unwrap();
        assert_eq!(pn.matching, Match::Wildcard("nguyễn*".into()));
        assert!(
            matches!(parse(Some("Bogus=1"), Level::Study), Err(ApiError::BadRequest(m)) if m.contains("Bogus"))
        );
        assert!(parse(Some("limit=0"), Level::Study).is_err());
        assert!(parse(Some("offset=100000000"), Level::Study).is_err());
        assert!(parse(Some("StudyDate=2024"), Level::Study).is_err());
        let p = parse(Some("SeriesNumber=3&fuzzymatching=true"), Level::Study).unwrap();
        assert!(p.unsupported.is_empty());
        let p = parse(Some("ScanningSequence=SE"), Level::Study).unwrap();
        assert_eq!(p.unsupported, ["ScanningSequence"]);
        let p = parse(
            Some("StudyInstanceUID=1.2&StudyInstanceUID=1.3"),
            Level::Study,
        )
        .unwrap();
        assert_eq!(
            p.query.filters[0].matching,
            Match::List(vec!["1.2".into(), "1.3".into()])
        );
        let p = parse(
            Some("RequestAttributesSequence.RequestedProcedureID=RP1"),
            Level::Study,
        )
        .unwrap();
        assert_eq!(p.query.sequence_filters[0].path, "00400275.00401001");
    }
}
