//! DICOMweb (PS3.18), one module per service: [`stow`] (§10.5), [`wado`]
//! (§10.4), [`qido`] (§10.6). Routes are mounted under `/dicomweb`.

pub(crate) mod delete;
pub(crate) mod limits;
pub(crate) mod media;
pub(crate) mod multipart;
pub(crate) mod qido;
pub(crate) mod rendered;
pub(crate) mod stow;
pub(crate) mod wado;
pub(crate) mod wado_uri;

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;

use crate::dicom::Uid;
use crate::error::ApiError;
use crate::index::Scope;
use crate::state::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/studies", get(qido::studies).post(stow::store))
        .route("/series", get(qido::series))
        .route("/instances", get(qido::instances))
        .route(
            "/studies/{study}",
            get(wado::retrieve_study)
                .post(stow::store_in_study)
                .delete(delete::study),
        )
        .route("/studies/{study}/metadata", get(wado::study_metadata))
        .route("/studies/{study}/series", get(qido::study_series))
        .route("/studies/{study}/instances", get(qido::study_instances))
        .route(
            "/studies/{study}/series/{series}",
            get(wado::retrieve_series).delete(delete::series),
        )
        .route(
            "/studies/{study}/series/{series}/metadata",
            get(wado::series_metadata),
        )
        .route(
            "/studies/{study}/series/{series}/instances",
            get(qido::series_instances),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}",
            get(wado::retrieve_instance).delete(delete::instance),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/metadata",
            get(wado::instance_metadata),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{offset}/{length}",
            get(wado::bulkdata),
        )
        // Resources of PS3.18 that this version does not serve yet answer
        // 501 Not Implemented rather than a misleading 404.
        .route("/studies/{study}/rendered", get(rendered::study))
        .route("/studies/{study}/thumbnail", get(rendered::study_thumbnail))
        .route(
            "/studies/{study}/series/{series}/rendered",
            get(rendered::series),
        )
        .route(
            "/studies/{study}/series/{series}/thumbnail",
            get(rendered::series_thumbnail),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/rendered",
            get(rendered::instance),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/thumbnail",
            get(rendered::instance_thumbnail),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
            get(wado::frames),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
            get(rendered::frames),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/thumbnail",
            get(rendered::frame_thumbnail),
        )
        // STOW bodies are streamed and bounded per instance by the ingest
        // configuration, not by axum's 2 MB default.
        .layer(DefaultBodyLimit::disable())
}

/// The study, series or instance named by URL path segments (400 when a
/// UID is malformed).
pub(crate) fn scope(
    study: &str,
    series: Option<&str>,
    instance: Option<&str>,
) -> Result<Scope, ApiError> {
    Ok(Scope {
        study: path_uid("study", study)?,
        series: series.map(|s| path_uid("series", s)).transpose()?,
        instance: instance.map(|i| path_uid("instance", i)).transpose()?,
    })
}

/// Parses a UID from a URL path segment (400 when malformed).
pub(crate) fn path_uid(kind: &str, s: &str) -> Result<Uid, ApiError> {
    Uid::parse(s).map_err(|e| ApiError::BadRequest(format!("malformed {kind} UID '{s}': {e}")))
}

/// The absolute URL of the DICOMweb root as the client sees it.
pub(crate) fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    format!("{}/dicomweb", public_root(state, headers))
}

/// The absolute URL of Phim's root (viewer, DICOMweb, EMR APIs) as the
/// client sees it: `--public-url`, else from `X-Forwarded-*` and `Host`,
/// else the address we listen on (no headers: background tasks).
pub(crate) fn public_root(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(public) = &state.public_url {
        return public.trim_end_matches('/').to_owned();
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(',').next().unwrap_or(s).trim().to_owned())
    };
    let valid = |h: &String| {
        h.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
    };
    let host = match header("x-forwarded-host").filter(valid) {
        Some(forwarded) => forwarded,
        None => match header("host").filter(valid) {
            // A Host without a port while we listen elsewhere than 80 (some
            // clients omit it): name the port we actually listen on.
            Some(h) if !h.ends_with(']') && !h.contains(':') && state.listen_addr.port() != 80 => {
                format!("{h}:{}", state.listen_addr.port())
            }
            Some(h) => h,
            None => state.listen_addr.to_string(),
        },
    };
    let proto = header("x-forwarded-proto")
        .filter(|p| p == "https" || p == "http")
        .unwrap_or_else(|| "http".into());
    format!("{proto}://{host}")
}
