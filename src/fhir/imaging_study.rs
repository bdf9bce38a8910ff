//! FHIR R4 ImagingStudy, read and search, under `/fhir` (`application/fhir+json`):
//!
//! - `GET /fhir/ImagingStudy/{id}`: the id is the Study Instance UID (it
//!   fits FHIR's id rule);
//! - `GET /fhir/ImagingStudy?patient=…&identifier=…&_id=…&_count=…&_offset=…`:
//!   `patient` is the DICOM Patient ID (or `Patient/<id>`); `identifier` is
//!   an accession number, or `urn:dicom:uid|urn:oid:<uid>` (also
//!   `urn:oid:<uid>` alone) for the Study Instance UID; a comma separates
//!   alternatives (OR). Answers a `searchset` Bundle.
//!
//! Every study refers to a contained Endpoint: Phim's DICOMweb root
//! (`dicom-wado-rs`). Searches run on the index's study, series and
//! instance queries (the ones QIDO-RS uses). Errors are OperationOutcomes.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::{check_format, fhir_json, DCM, DEFAULT_COUNT, MAX_COUNT};
use crate::dicom::{tags, Uid};
use crate::dicomweb::public_root;
use crate::emr::{exact, find_study};
use crate::error::{ApiError, FhirError};
use crate::index::{InstanceRow, SeriesRow, StudyRow};
use crate::query::{attribute_by_keyword, Filter, Level, Match, Query};
use crate::state::AppState;

const DICOM_UID: &str = "urn:dicom:uid";
const ENDPOINT_ID: &str = "dicomweb";
/// Series and instances listed per study at most.
const MAX_SERIES: i64 = 10_000;
const MAX_INSTANCES: i64 = 100_000;

/// `GET /fhir/ImagingStudy/{id}`.
pub(crate) async fn read(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, FhirError> {
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "_format" => check_format(&v)?,
            other => {
                return Err(ApiError::BadRequest(format!("unknown parameter '{other}'")).into())
            }
        }
    }
    let not_found = || ApiError::NotFound(format!("ImagingStudy/{id} is not known"));
    let uid = Uid::parse(&id).map_err(|_| not_found())?;
    let row = find_study(st.index.as_ref(), &uid)
        .await?
        .ok_or_else(not_found)?;
    let root = public_root(&st, &headers);
    let resource = imaging_study(&st, &row, &root).await?;
    Ok(fhir_json(&resource))
}

/// What the values of one `identifier` parameter name.
enum Identifiers {
    Uids(Vec<String>),
    Accessions(Vec<String>),
}

/// `urn:oid:<uid>` → the UID (400 when it is not one).
fn oid_value(v: &str) -> Result<String, ApiError> {
    let uid = v.strip_prefix("urn:oid:").ok_or_else(|| {
        ApiError::BadRequest(format!(
            "identifier '{v}': a {DICOM_UID} value is urn:oid:<uid>"
        ))
    })?;
    Uid::parse(uid)
        .map(|u| u.to_string())
        .map_err(|e| ApiError::BadRequest(format!("identifier '{v}': {e}")))
}

/// One `identifier` parameter (token: `[system|]value`, comma = OR).
fn parse_identifier(v: &str) -> Result<Option<Identifiers>, ApiError> {
    let mut uids = Vec::new();
    let mut accessions = Vec::new();
    for token in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match token.split_once('|') {
            Some((DICOM_UID, value)) => uids.push(oid_value(value)?),
            // `|value`: an identifier without a system (the accession).
            Some(("", value)) => accessions.push(value.to_owned()),
            Some((system, _)) => {
                return Err(ApiError::BadRequest(format!(
                    "identifier system '{system}' is not known here: use \
                     {DICOM_UID}|urn:oid:<uid>, or the accession number alone"
                )))
            }
            None if token.starts_with("urn:oid:") => uids.push(oid_value(token)?),
            None => accessions.push(token.to_owned()),
        }
    }
    Ok(match (uids.is_empty(), accessions.is_empty()) {
        (true, true) => None,
        (false, true) => Some(Identifiers::Uids(uids)),
        (true, false) => Some(Identifiers::Accessions(accessions)),
        (false, false) => {
            return Err(ApiError::BadRequest(
                "identifier mixes study UIDs and accession numbers in one OR list; \
                 give one kind per search"
                    .into(),
            ))
        }
    })
}

/// A filter matching any of `values` exactly.
fn any_of(keyword: &str, values: Vec<String>) -> Option<Filter> {
    match values.as_slice() {
        [] => None,
        [one] => exact(keyword, one),
        _ => Some(Filter {
            attribute: attribute_by_keyword(keyword)?,
            matching: Match::List(values),
        }),
    }
}

/// A parsed search: the study query (with limit and offset), or a search
/// that cannot match (an `_id` that is no UID).
struct Search {
    query: Query,
    matches_nothing: bool,
}

/// Parses the search parameters.
fn parse_search(raw: Option<&str>) -> Result<Search, ApiError> {
    let mut matches_nothing = false;
    let mut q = Query::new(Level::Study);
    q.limit = DEFAULT_COUNT;
    let bad = |k: &str, why: String| ApiError::BadRequest(format!("parameter '{k}': {why}"));
    let mut seen = Vec::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let k = k.as_ref();
        if seen.contains(&k.to_owned()) && k != "_format" {
            return Err(bad(k, "given more than once (use a comma for OR)".into()));
        }
        seen.push(k.to_owned());
        match k {
            "patient" => {
                let ids: Vec<String> = v
                    .split(',')
                    .map(|p| p.trim())
                    .map(|p| p.strip_prefix("Patient/").unwrap_or(p).to_owned())
                    .filter(|p| !p.is_empty())
                    .collect();
                if ids.is_empty() {
                    return Err(bad(k, "empty".into()));
                }
                q.filters.extend(any_of("PatientID", ids));
            }
            "identifier" => match parse_identifier(&v)? {
                Some(Identifiers::Uids(u)) => q.filters.extend(any_of("StudyInstanceUID", u)),
                Some(Identifiers::Accessions(a)) => q.filters.extend(any_of("AccessionNumber", a)),
                None => return Err(bad(k, "empty".into())),
            },
            "_id" => {
                let ids: Vec<&str> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                if ids.is_empty() {
                    return Err(bad(k, "empty".into()));
                }
                // An id that is no UID names no study here.
                let uids: Vec<String> = ids
                    .iter()
                    .filter_map(|id| Uid::parse(id).ok())
                    .map(|u| u.to_string())
                    .collect();
                matches_nothing |= uids.is_empty();
                q.filters.extend(any_of("StudyInstanceUID", uids));
            }
            "_count" => {
                q.limit = v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad(k, format!("must be a positive integer, got '{v}'")))?
                    .min(MAX_COUNT)
            }
            "_offset" => {
                q.offset = v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (0..=crate::dicomweb::qido::MAX_OFFSET).contains(n))
                    .ok_or_else(|| {
                        bad(
                            k,
                            format!(
                                "must be an integer from 0 to {}, got '{v}'",
                                crate::dicomweb::qido::MAX_OFFSET
                            ),
                        )
                    })?
            }
            "_format" => check_format(&v)?,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown search parameter '{other}' (supported: patient, identifier, _id, \
                     _count, _offset)"
                )))
            }
        }
    }
    Ok(Search {
        query: q,
        matches_nothing,
    })
}

/// `GET /fhir/ImagingStudy?…`: a searchset Bundle.
pub(crate) async fn search(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, FhirError> {
    let Search {
        query: q,
        matches_nothing,
    } = parse_search(raw.as_deref())?;
    let mut rows = if matches_nothing {
        Vec::new()
    } else {
        st.index.search_studies(&q).await?
    };
    let more = rows.len() as i64 > q.limit;
    rows.truncate(q.limit as usize);
    let total = if matches_nothing || (!more && q.offset == 0) {
        rows.len() as i64
    } else {
        st.index.count_studies(&q).await?
    };
    let root = public_root(&st, &headers);
    let mut entries = Vec::with_capacity(rows.len());
    for row in &rows {
        entries.push(json!({
            "fullUrl": format!("{root}/fhir/ImagingStudy/{}", row.study_uid),
            "resource": imaging_study(&st, row, &root).await?,
            "search": { "mode": "match" },
        }));
    }
    // Paging links: the same search with another _offset.
    let page = |offset: i64| {
        let mut params: Vec<(String, String)> =
            url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
                .filter(|(k, _)| k != "_offset")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        params.push(("_offset".into(), offset.to_string()));
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        format!("{root}/fhir/ImagingStudy?{query}")
    };
    let mut link = vec![json!({ "relation": "self", "url": page(q.offset) })];
    if more {
        link.push(json!({ "relation": "next", "url": page(q.offset + q.limit) }));
    }
    Ok(fhir_json(&json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": link,
        "entry": entries,
    })))
}

/// The contained Endpoint: Phim's DICOMweb root.
fn endpoint(root: &str) -> Value {
    json!({
        "resourceType": "Endpoint",
        "id": ENDPOINT_ID,
        "status": "active",
        "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "dicom-wado-rs",
        },
        "name": "Phim DICOMweb (WADO-RS, QIDO-RS, STOW-RS)",
        "payloadType": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/endpoint-payload-type",
                "code": "any",
            }],
            "text": "DICOM",
        }],
        "payloadMimeType": ["application/dicom"],
        "address": format!("{root}/dicomweb"),
    })
}

fn coding(system: &str, code: &str) -> Value {
    json!({ "system": system, "code": code })
}

/// A DICOM PN as display text: the alphabetic group, components in order.
fn name_display(pn: &str) -> Option<String> {
    let alphabetic = pn.split('=').next().unwrap_or(pn);
    let words: Vec<&str> = alphabetic
        .split('^')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// StudyDate + StudyTime as a FHIR dateTime. With a time, FHIR requires
/// an offset: without `--timezone` the date stands alone.
pub(crate) fn started(date: Option<&str>, time: Option<&str>, tz: Option<&str>) -> Option<String> {
    let d = date?.trim();
    if d.len() != 8 || !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let day = format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..]);
    let (Some(tz), Some(t)) = (tz, time) else {
        return Some(day);
    };
    let t = t.trim().replace(':', "");
    let (hms, frac) = t.split_once('.').unwrap_or((&t, ""));
    let ok = matches!(hms.len(), 2 | 4 | 6)
        && hms.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    if !ok {
        return Some(day);
    }
    let part = |i: usize| hms.get(i..i + 2).unwrap_or("00");
    let (h, m, s) = (part(0), part(2), part(4));
    if h > "23" || m > "59" || s > "60" {
        return Some(day);
    }
    let frac = if frac.is_empty() {
        String::new()
    } else {
        format!(".{frac}")
    };
    Some(format!("{day}T{h}:{m}:{s}{frac}{tz}"))
}

fn non_empty(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

/// The ImagingStudy of one study, with its series and instances.
async fn imaging_study(st: &AppState, row: &StudyRow, root: &str) -> Result<Value, ApiError> {
    let uid = Uid::parse(&row.study_uid)
        .map_err(|e| ApiError::Internal(format!("indexed study UID {}: {e}", row.study_uid)))?;
    let mut sq = Query::new(Level::Series).with_uid("StudyInstanceUID", &uid);
    sq.limit = MAX_SERIES;
    let series = st.index.search_series(&sq).await?;
    let mut iq = Query::new(Level::Instance).with_uid("StudyInstanceUID", &uid);
    iq.limit = MAX_INSTANCES;
    let instances = st.index.search_instances(&iq).await?;
    Ok(Value::Object(study_resource(
        row,
        &series,
        &instances,
        root,
        st.emr.timezone.as_deref(),
    )))
}

/// One `ImagingStudy.series` element, with its instances.
fn series_element(s: &SeriesRow, instances: &[&InstanceRow], endpoint_ref: &Value) -> Value {
    let mut o = Map::new();
    o.insert("uid".into(), json!(s.series_uid));
    if let Some(n) = s.attributes.int(tags::SERIES_NUMBER).filter(|n| *n >= 0) {
        o.insert("number".into(), json!(n));
    }
    o.insert(
        "modality".into(),
        coding(
            DCM,
            non_empty(s.attributes.text(tags::MODALITY)).unwrap_or("OT"),
        ),
    );
    if let Some(d) = non_empty(s.attributes.text(tags::SERIES_DESCRIPTION)) {
        o.insert("description".into(), json!(d));
    }
    o.insert("numberOfInstances".into(), json!(s.num_instances));
    o.insert("endpoint".into(), endpoint_ref.clone());
    let list: Vec<Value> = instances
        .iter()
        .map(|i| {
            let mut io = Map::new();
            io.insert("uid".into(), json!(i.sop_uid));
            io.insert(
                "sopClass".into(),
                coding("urn:ietf:rfc:3986", &format!("urn:oid:{}", i.sop_class_uid)),
            );
            if let Some(n) = i.attributes.int(tags::INSTANCE_NUMBER).filter(|n| *n >= 0) {
                io.insert("number".into(), json!(n));
            }
            Value::Object(io)
        })
        .collect();
    if !list.is_empty() {
        o.insert("instance".into(), Value::Array(list));
    }
    Value::Object(o)
}

/// The resource from index rows (no I/O).
fn study_resource(
    row: &StudyRow,
    series: &[SeriesRow],
    instances: &[InstanceRow],
    root: &str,
    tz: Option<&str>,
) -> Map<String, Value> {
    let endpoint_ref = json!([{ "reference": format!("#{ENDPOINT_ID}") }]);
    let mut identifiers = vec![json!({
        "use": "official",
        "system": DICOM_UID,
        "value": format!("urn:oid:{}", row.study_uid),
    })];
    if let Some(acc) = non_empty(row.attributes.text(tags::ACCESSION_NUMBER)) {
        identifiers.push(json!({
            "use": "usual",
            "type": { "coding": [coding("http://terminology.hl7.org/CodeSystem/v2-0203", "ACSN")] },
            "value": acc,
        }));
    }
    let mut subject = Map::new();
    subject.insert("type".into(), json!("Patient"));
    if let Some(pid) = non_empty(row.attributes.text(tags::PATIENT_ID)) {
        subject.insert("identifier".into(), json!({ "value": pid }));
    }
    subject.insert(
        "display".into(),
        json!(row
            .attributes
            .text(tags::PATIENT_NAME)
            .and_then(name_display)
            .unwrap_or_else(|| "unknown patient".into())),
    );

    let mut by_series: HashMap<&str, Vec<&InstanceRow>> = HashMap::new();
    for i in instances {
        by_series.entry(i.series_uid.as_str()).or_default().push(i);
    }
    let series_json: Vec<Value> = series
        .iter()
        .map(|s| {
            let of_series = by_series.get(s.series_uid.as_str());
            series_element(
                s,
                of_series.map(Vec::as_slice).unwrap_or_default(),
                &endpoint_ref,
            )
        })
        .collect();

    let mut r = Map::new();
    r.insert("resourceType".into(), json!("ImagingStudy"));
    r.insert("id".into(), json!(row.study_uid));
    r.insert("contained".into(), json!([endpoint(root)]));
    r.insert("identifier".into(), Value::Array(identifiers));
    r.insert("status".into(), json!("available"));
    let modalities: Vec<Value> = row
        .modalities
        .iter()
        .filter(|m| !m.trim().is_empty())
        .map(|m| coding(DCM, m.trim()))
        .collect();
    if !modalities.is_empty() {
        r.insert("modality".into(), Value::Array(modalities));
    }
    r.insert("subject".into(), Value::Object(subject));
    if let Some(s) = started(
        row.attributes.text(tags::STUDY_DATE),
        row.attributes.text(tags::STUDY_TIME),
        tz,
    ) {
        r.insert("started".into(), json!(s));
    }
    r.insert("endpoint".into(), endpoint_ref);
    r.insert("numberOfSeries".into(), json!(row.num_series));
    r.insert("numberOfInstances".into(), json!(row.num_instances));
    if let Some(d) = non_empty(row.attributes.text(tags::STUDY_DESCRIPTION)) {
        r.insert("description".into(), json!(d));
    }
    if !series_json.is_empty() {
        r.insert("series".into(), Value::Array(series_json));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn started_times() {
        assert_eq!(
            started(Some("20240102"), Some("030405"), None).unwrap(),
            "2024-01-02"
        );
        assert_eq!(
            started(Some("20240102"), Some("030405.12"), Some("+07:00")).unwrap(),
            "2024-01-02T03:04:05.12+07:00"
        );
        assert_eq!(
            started(Some("20240102"), Some("0304"), Some("Z")).unwrap(),
            "2024-01-02T03:04:00Z"
        );
        assert_eq!(
            started(Some("20240102"), Some("03:04:05"), Some("Z")).unwrap(),
            "2024-01-02T03:04:05Z"
        );
        assert_eq!(
            started(Some("20240102"), Some("99"), Some("Z")).unwrap(),
            "2024-01-02"
        );
        assert_eq!(started(Some("2024"), None, None), None);
        assert_eq!(started(None, Some("0304"), Some("Z")), None);
    }

    #[test]
    fn names() {
        assert_eq!(name_display("Nguyễn^Văn An").unwrap(), "Nguyễn Văn An");
        assert_eq!(
            name_display("Smith^John=スミス^ジョン").unwrap(),
            "Smith John"
        );
        assert_eq!(name_display("^^"), None);
    }

    #[test]
    fn search_parameters() {
        let q = parse_search(Some(
            "patient=Patient/P1&identifier=urn:dicom:uid|urn:oid:1.2.3",
        ))
        .unwrap()
        .query;
        let f: Vec<(&str, &Match)> = q
            .filters
            .iter()
            .map(|f| (f.attribute.keyword, &f.matching))
            .collect();
        assert_eq!(
            f,
            [
                ("PatientID", &Match::Single("P1".into())),
                ("StudyInstanceUID", &Match::Single("1.2.3".into()))
            ]
        );
        let q = parse_search(Some("identifier=A*1,A2&_count=5"))
            .unwrap()
            .query;
        assert_eq!(
            q.filters[0].matching,
            Match::List(vec!["A*1".into(), "A2".into()])
        );
        assert_eq!(q.limit, 5);
        let q = parse_search(Some("identifier=urn:oid:1.2.3"))
            .unwrap()
            .query;
        assert_eq!(q.filters[0].attribute.keyword, "StudyInstanceUID");
        assert!(parse_search(Some("_id=not-a-uid")).unwrap().matches_nothing);
        for bad in [
            "subject=x",
            "identifier=urn:oid:1.x",
            "identifier=http://other|1",
            "identifier=urn:oid:1.2,A1",
            "_count=0",
            "patient=",
            "patient=a&patient=b",
            "_format=xml",
        ] {
            assert!(parse_search(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn resource_shape() {
        use crate::index::Attributes;
        let row = StudyRow {
            study_uid: "1.2.3".into(),
            attributes: Attributes::default()
                .with_text(tags::PATIENT_ID, "P1")
                .with_text(tags::PATIENT_NAME, "Doe^Jane")
                .with_text(tags::ACCESSION_NUMBER, "A1"),
            modalities: vec!["CT".into()],
            num_series: 1,
            num_instances: 1,
        };
        let series = [SeriesRow {
            study_uid: "1.2.3".into(),
            series_uid: "1.2.3.4".into(),
            attributes: Attributes::default()
                .with_text(tags::MODALITY, "CT")
                .with_int(tags::SERIES_NUMBER, 2),
            num_instances: 1,
        }];
        let inst = [InstanceRow {
            study_uid: "1.2.3".into(),
            series_uid: "1.2.3.4".into(),
            sop_uid: "1.2.3.4.5".into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            attributes: Attributes::default().with_int(tags::INSTANCE_NUMBER, 1),
            ..Default::default()
        }];
        let r = Value::Object(study_resource(&row, &series, &inst, "http://h", None));
        assert_eq!(r["contained"][0]["id"], "dicomweb");
        assert_eq!(r["endpoint"][0]["reference"], "#dicomweb");
        assert_eq!(r["contained"][0]["address"], "http://h/dicomweb");
        assert_eq!(r["identifier"][1]["type"]["coding"][0]["code"], "ACSN");
        assert_eq!(r["subject"]["identifier"]["value"], "P1");
        assert_eq!(r["subject"]["display"], "Doe Jane");
        assert_eq!(
            r["series"][0]["instance"][0]["sopClass"]["code"],
            "urn:oid:1.2.840.10008.5.1.4.1.1.2"
        );
        assert_eq!(r["series"][0]["number"], 2);
    }
}
