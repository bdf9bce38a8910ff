//! `…/metadata` (PS3.18 §10.4.1.1.2, Annex F): the documents written at
//! ingest, one index query per request.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

use super::super::media;
use super::super::{base_url, scope};
use super::not_found;
use crate::error::ApiError;
use crate::index::metadata::inflate as inflate_metadata;
use crate::index::Scope;
use crate::state::AppState;

pub(crate) async fn study_metadata(
    State(st): State<AppState>,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    metadata(st, scope(&study, None, None)?, &headers).await
}

pub(crate) async fn series_metadata(
    State(st): State<AppState>,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    metadata(st, scope(&study, Some(&series), None)?, &headers).await
}

pub(crate) async fn instance_metadata(
    State(st): State<AppState>,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    metadata(st, scope(&study, Some(&series), Some(&instance))?, &headers).await
}

async fn metadata(st: AppState, scope: Scope, headers: &HeaderMap) -> Result<Response, ApiError> {
    media::require_json(headers)?;
    let docs = st.index.metadata(&scope).await?;
    if docs.is_empty() {
        return Err(not_found(&scope));
    }
    let base = base_url(&st, headers);
    // Inflating a few hundred documents is CPU work: off the async workers.
    let body = tokio::task::spawn_blocking(move || -> Result<String, std::io::Error> {
        let needle = "\"BulkDataURI\":\"/";
        let with_base = format!("\"BulkDataURI\":\"{base}/");
        let mut out = String::with_capacity(docs.iter().map(|d| d.len() * 4).sum::<usize>() + 2);
        out.push('[');
        for (i, d) in docs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let json = inflate_metadata(d)?;
            out.push_str(&json.replace(needle, &with_base));
        }
        out.push(']');
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(format!("stored metadata unreadable: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/dicom+json")], body).into_response())
}
