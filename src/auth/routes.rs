//! The auth routes of the JSON API: the viewer's log-in configuration and
//! share links (the signing itself is [`super::share`]).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde::Deserialize;

use super::share::{sign_link, DEFAULT_TTL};
use super::Principal;
use crate::dicom::Uid;
use crate::error::{ApiError, JsonError};
use crate::index::Scope;
use crate::state::AppState;
use crate::{dicomweb, emr};

/// `GET /api/auth/config` (public): what the viewer needs to log in.
pub(crate) async fn client_config(State(st): State<AppState>) -> Json<serde_json::Value> {
    let oidc = st.auth.config.oidc.as_ref().map(|o| {
        serde_json::json!({
            "issuer": o.issuer,
            "client_id": o.client_id,
            "audience": o.audience,
            "scope": "openid profile offline_access",
        })
    });
    Json(serde_json::json!({
        "required": st.auth.config.required,
        "oidc": oidc,
    }))
}

/// The body of `POST /api/studies/{study}/share` (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShareRequest {
    pub series: Option<String>,
    /// Seconds the link lives (default a day, at most 30 days).
    pub(crate) expires_in: Option<u64>,
}

/// `POST /api/studies/{study}/share`: a link that opens this study only.
pub(crate) async fn share(
    State(st): State<AppState>,
    caller: Option<Extension<Principal>>,
    Path(study): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, JsonError> {
    let uid = emr::study_uid(&study)?;
    let req: ShareRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ShareRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("share request: {e}")))?
    };
    emr::require_study(st.index.as_ref(), &uid).await?;
    let series = match &req.series {
        Some(se) => {
            let se = dicomweb::path_uid("series", se)?;
            let scope = Scope {
                study: uid.clone(),
                series: Some(se.clone()),
                instance: None,
            };
            if st
                .index
                .instances(&scope)
                .await
                .map_err(ApiError::from)?
                .is_empty()
            {
                return Err(
                    ApiError::NotFound(format!("series {se} is not in study {uid}")).into(),
                );
            }
            Some(se)
        }
        None => None,
    };
    let ttl = Duration::from_secs(req.expires_in.unwrap_or(DEFAULT_TTL.as_secs()));
    let by = caller
        .map(|c| c.0.name.clone())
        .unwrap_or_else(|| "anonymous".into());
    let (token, exp) =
        sign_link(&st.auth, st.index.as_ref(), &uid, series.as_ref(), ttl, by).await?;
    let root = dicomweb::public_root(&st, &headers);
    let mut viewer = format!("{root}/study/{uid}?share={token}");
    if let Some(se) = &series {
        viewer.push_str(&format!("&series={se}"));
    }
    tracing::info!(study = %uid, series = ?series.as_ref().map(Uid::as_str), expires_in_s = ttl.as_secs(), "share link made");
    Ok(Json(serde_json::json!({
        "token": token,
        "viewer": viewer,
        "iid": format!("{root}/IHEInvokeImageDisplay?requestType=STUDY&studyUID={uid}&share={token}"),
        "expires": chrono::DateTime::from_timestamp(exp, 0).map(|t| t.to_rfc3339()),
        "study": uid.to_string(),
        "series": series.as_ref().map(Uid::to_string),
    })))
}
