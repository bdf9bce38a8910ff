//! `GET /api/studies/{study}/references`: every URL by which the EMR can
//! point at a study (viewer, IID, WADO-RS, metadata, thumbnail, FHIR) and
//! its EMR link.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use super::{links, require_study, study_uid, StudyUrls};
use crate::dicomweb::public_root;
use crate::error::JsonError;
use crate::server::AppState;

pub async fn references(
    State(st): State<AppState>,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, JsonError> {
    let uid = study_uid(&study)?;
    let row = require_study(st.index.as_ref(), &uid).await?;
    let emr = links::resolve(&st, &row).await?;
    let u = StudyUrls::new(&public_root(&st, &headers), uid.as_str());
    Ok(Json(json!({
        "studyInstanceUID": uid.as_str(),
        "viewer": u.viewer,
        "iid": u.iid,
        "wado": u.wado,
        "metadata": u.metadata,
        "thumbnail": u.thumbnail,
        "fhir": u.fhir,
        "emr": emr,
    })))
}
