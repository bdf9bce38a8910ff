//! FHIR R4 under `/fhir` (`application/fhir+json`): the capability
//! statement, [`imaging_study`] (the EMR's view of the studies, read and
//! search) and [`audit_event`] (the audit trail, BALP). Errors are
//! OperationOutcomes ([`crate::error::FhirError`]).

pub(crate) mod audit_event;
pub(crate) mod imaging_study;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::error::{ApiError, FhirError};
use crate::state::AppState;

pub(crate) const CONTENT_TYPE: &str = "application/fhir+json";
/// The DICOM Controlled Terminology (PS3.16), FHIR's `DCM` code system.
const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
/// `_count` when a search gives none, and the most it may ask for.
const DEFAULT_COUNT: i64 = 100;
const MAX_COUNT: i64 = 1000;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/metadata", get(capabilities))
        .route("/ImagingStudy", get(imaging_study::search))
        .route("/ImagingStudy/{id}", get(imaging_study::read))
        .route("/AuditEvent", get(audit_event::search))
        .fallback(|| async {
            FhirError(ApiError::NotFound(
                "no such FHIR resource: this server has ImagingStudy and AuditEvent only".into(),
            ))
        })
}

pub(crate) fn fhir_json(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], v.to_string()).into_response()
}

/// `_format`: JSON only.
pub(crate) fn check_format(v: &str) -> Result<(), ApiError> {
    match v {
        "json" | "application/json" | "application/fhir+json" => Ok(()),
        other => Err(ApiError::NotAcceptable(format!(
            "_format '{other}' is not supported: this server answers application/fhir+json"
        ))),
    }
}

/// `GET /fhir/metadata`: what this server supports.
async fn capabilities() -> Response {
    fhir_json(&json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-26",
        "kind": "instance",
        "software": { "name": "Phim", "version": env!("CARGO_PKG_VERSION") },
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "resource": [{
                "type": "ImagingStudy",
                "interaction": [{ "code": "read" }, { "code": "search-type" }],
                "searchParam": [
                    { "name": "patient", "type": "reference" },
                    { "name": "identifier", "type": "token" },
                    { "name": "_id", "type": "token" },
                ],
            }, {
                "type": "AuditEvent",
                "interaction": [{ "code": "search-type" }],
                "searchParam": [
                    { "name": "patient", "type": "reference" },
                    { "name": "date", "type": "date" },
                    { "name": "entity-id", "type": "token" },
                ],
            }],
        }],
    }))
}
