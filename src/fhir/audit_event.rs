//! The audit trail as FHIR R4 `AuditEvent` resources, in the IHE Basic
//! Audit Log Patterns (BALP) shape, searched as in IHE ITI-81:
//! `GET /fhir/AuditEvent?patient=…&date=ge…&date=le…&entity-id=…&_count=…`
//! (auditor and admin only: the policy table says so).

use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::{json, Value};

use super::{check_format, fhir_json, DCM, DEFAULT_COUNT, MAX_COUNT};
use crate::error::{ApiError, FhirError};
use crate::index::audit_log::{AuditFilter, StoredAuditRecord};
use crate::state::AppState;

/// `GET /fhir/AuditEvent`.
pub(crate) async fn search(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, FhirError> {
    let filter = parse(raw.as_deref().unwrap_or(""))?;
    let rows = st.index.search_audit(&filter).await?;
    let entries: Vec<Value> = rows
        .iter()
        .filter_map(|r| {
            resource(r).map(|res| json!({ "resource": res, "search": { "mode": "match" } }))
        })
        .collect();
    Ok(fhir_json(&json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": entries.len(),
        "entry": entries,
    })))
}

fn parse(query: &str) -> Result<AuditFilter, ApiError> {
    let mut f = AuditFilter {
        limit: DEFAULT_COUNT,
        ..AuditFilter::default()
    };
    let bad = |m: String| ApiError::BadRequest(m);
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "patient" | "patient.identifier" => {
                let id = v.strip_prefix("Patient/").unwrap_or(&v);
                let id = id.rsplit_once('|').map_or(id, |(_, value)| value);
                f.patient_id = Some(id.to_owned());
            }
            "entity-id" | "entity" => {
                let uid = v.rsplit_once('|').map_or(v.as_ref(), |(_, value)| value);
                let uid = uid.strip_prefix("urn:oid:").unwrap_or(uid);
                crate::dicom::Uid::parse(uid)
                    .map_err(|_| bad(format!("entity-id '{v}': expected a Study Instance UID")))?;
                f.study_uid = Some(uid.to_owned());
            }
            "date" => {
                let (prefix, value) = match v.get(..2) {
                    Some(p @ ("ge" | "gt" | "le" | "lt" | "eq")) => (p, &v[2..]),
                    _ => ("eq", v.as_ref()),
                };
                let (start, end) = instant_range(value).ok_or_else(|| {
                    bad(format!(
                        "date '{v}': expected [ge|gt|le|lt|eq]YYYY-MM-DD or an instant"
                    ))
                })?;
                match prefix {
                    "ge" => f.since_ms = Some(start),
                    "gt" => f.since_ms = Some(end),
                    "le" => f.until_ms = Some(end),
                    "lt" => f.until_ms = Some(start),
                    _ => {
                        f.since_ms = Some(start);
                        f.until_ms = Some(end);
                    }
                }
            }
            "_count" => {
                f.limit = v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (0..=MAX_COUNT).contains(n))
                    .ok_or_else(|| bad(format!("_count '{v}': expected 0 to {MAX_COUNT}")))?;
            }
            "_format" => check_format(&v)?,
            other => {
                return Err(bad(format!(
                    "unknown parameter '{other}' (patient, date, entity-id, _count)"
                )))
            }
        }
    }
    Ok(f)
}

/// The milliseconds a FHIR date or instant covers: [start, end).
fn instant_range(v: &str) -> Option<(i64, i64)> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        let start = d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis();
        return Some((start, start + 86_400_000));
    }
    let t = chrono::DateTime::parse_from_rfc3339(v)
        .ok()?
        .timestamp_millis();
    Some((t, t + 1))
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// One audit row as an AuditEvent (`None`: a body this version cannot
/// read, which `phim audit verify` would also name).
fn resource(row: &StoredAuditRecord) -> Option<Value> {
    let e: Value = serde_json::from_str(&row.record.body).ok()?;
    let event: crate::audit::EventId = serde_json::from_value(e["event"].clone()).ok()?;
    let mut entity = Vec::new();
    if let Some(p) = e["patient_id"].as_str() {
        entity.push(json!({
            "what": { "identifier": { "value": p } },
            "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person" },
            "role": { "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient" },
        }));
    }
    for s in e["studies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str())
    {
        entity.push(json!({
            "what": { "identifier": { "system": "urn:dicom:uid", "value": format!("urn:oid:{s}") } },
            "type": { "system": DCM, "code": "110180", "display": "Study Instance UID" },
            "role": { "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "3", "display": "Report" },
            "description": format!("{} instance(s)", e["instances"].as_i64().unwrap_or(0)),
        }));
    }
    if let Some(q) = e["detail"].as_str().filter(|d| !d.is_empty()) {
        entity.push(json!({
            "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object" },
            "description": q,
        }));
    }
    let actor = &e["actor"];
    let mut agent = json!({
        "type": { "coding": [{ "system": DCM, "code": "110153", "display": "Source Role ID" }] },
        "who": { "display": actor["name"] },
        "requestor": true,
        "role": actor["roles"].as_array().into_iter().flatten()
            .map(|r| json!({ "text": r })).collect::<Vec<_>>(),
        "extension": [{ "url": "https://phim.example/fhir/authentication-method", "valueCode": actor["method"] }],
    });
    if let Some(a) = actor["address"].as_str() {
        agent["network"] = json!({ "address": a, "type": "2" });
    }
    let mut res = json!({
        "resourceType": "AuditEvent",
        "id": row.seq.to_string(),
        "type": { "system": DCM, "code": event.code().to_string(), "display": event.meaning() },
        "action": e["action"],
        "recorded": rfc3339(row.record.time_ms),
        "outcome": row.record.outcome.to_string(),
        "agent": [agent],
        "source": {
            "observer": { "display": "phim" },
            "type": [{ "system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server" }],
        },
        "entity": entity,
    });
    if let Some(t) = e["event_type"].as_str() {
        res["subtype"] = json!([{ "system": DCM, "display": t }]);
    }
    if e["count"].as_i64().unwrap_or(1) > 1 {
        res["outcomeDesc"] = json!(format!("{} requests", e["count"]));
    }
    Some(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_parameters() {
        let f = parse("patient=Patient/P1&date=ge2026-12-01&date=lt2026-12-03&entity-id=urn:oid:1.2.3&_count=5").unwrap();
        assert_eq!(f.patient_id.as_deref(), Some("P1"));
        assert_eq!(f.study_uid.as_deref(), Some("1.2.3"));
        assert_eq!(f.limit, 5);
        assert_eq!(f.since_ms, Some(1_796_083_200_000));
        assert_eq!(f.until_ms, Some(1_796_256_000_000));
        for bad in ["date=2026-13-01", "_count=5000", "entity-id=x y", "foo=1"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
