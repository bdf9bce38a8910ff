//! `GET /api/studies/{study}/references`: every URL by which the EMR can
//! point at a study (viewer, IID, WADO-RS, metadata, thumbnail, FHIR) and
//! its EMR link. With `share_expires_in=SECONDS` (a caller that may make
//! share links: the auth layer checks), the viewer and IID URLs carry a
//! share link that opens this study only, for that long.

use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use super::{links, require_study, study_uid, StudyUrls};
use crate::auth::Principal;
use crate::dicomweb::public_root;
use crate::error::{ApiError, JsonError};
use crate::state::AppState;

/// The `share_expires_in` parameter, if given.
pub(crate) fn share_ttl(query: Option<&str>) -> Result<Option<std::time::Duration>, ApiError> {
    let Some(v) = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "share_expires_in")
        .map(|(_, v)| v.into_owned())
    else {
        return Ok(None);
    };
    v.parse::<u64>()
        .map(|s| Some(std::time::Duration::from_secs(s)))
        .map_err(|_| ApiError::BadRequest(format!("share_expires_in '{v}': expected seconds")))
}

pub(crate) async fn references(
    State(st): State<AppState>,
    caller: Option<Extension<Principal>>,
    Path(study): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<Value>, JsonError> {
    let uid = study_uid(&study)?;
    let ttl = share_ttl(query.as_deref())?;
    let row = require_study(st.index.as_ref(), &uid).await?;
    let emr = links::resolve(&st, &row).await?;
    let mut u = StudyUrls::new(&public_root(&st, &headers), uid.as_str());
    let mut share = None;
    if let Some(ttl) = ttl {
        let by = caller.map_or_else(|| "anonymous".into(), |c| c.0.name.clone());
        let (token, exp) =
            crate::auth::share::sign_link(&st.auth, st.index.as_ref(), &uid, None, ttl, by).await?;
        u.viewer = format!("{}?share={token}", u.viewer);
        u.iid = format!("{}&share={token}", u.iid);
        share = Some(json!({
            "token": token,
            "expires": chrono::DateTime::from_timestamp(exp, 0).map(|t| t.to_rfc3339()),
        }));
    }
    let mut body = json!({
        "studyInstanceUID": uid.as_str(),
        "viewer": u.viewer,
        "iid": u.iid,
        "wado": u.wado,
        "metadata": u.metadata,
        "thumbnail": u.thumbnail,
        "fhir": u.fhir,
        "emr": emr,
    });
    // Only when asked for: the answer is otherwise as it always was.
    if let Some(share) = share {
        body["share"] = share;
    }
    Ok(Json(body))
}
