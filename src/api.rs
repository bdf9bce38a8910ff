//! The JSON API under `/api`: EMR links and references, the change feed
//! and its webhook deliveries (the EMR side, [`crate::emr`]), the job queue
//! for admins ([`crate::jobs::routes`]), share links
//! and the viewer's log-in configuration ([`crate::auth::routes`]). Unknown
//! paths answer a JSON 404, never the viewer's page.

use axum::routing::{get, post, put};
use axum::Router;

use crate::error::{ApiError, JsonError};
use crate::state::AppState;
use crate::{auth, emr, jobs};

/// The JSON API under `/api`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/studies/{study}/emr-link",
            get(emr::links::get_link)
                .put(emr::links::put_link)
                .delete(emr::links::delete_link),
        )
        .route("/emr-links", get(emr::links::batch))
        .route("/trash", get(crate::trash::routes::list))
        .route(
            "/trash/{study}/restore",
            post(crate::trash::routes::restore),
        )
        .route(
            "/studies/{study}/keep",
            put(crate::retention::keep).delete(crate::retention::release),
        )
        .route("/auth/config", get(auth::routes::client_config))
        .route("/studies/{study}/share", post(auth::routes::share))
        .route(
            "/studies/{study}/references",
            get(emr::references::references),
        )
        .route("/changes", get(emr::changes::changes))
        .route("/webhooks/deliveries", get(emr::webhooks::deliveries))
        .route("/jobs", get(jobs::routes::list))
        .route("/jobs/{id}/retry", post(jobs::routes::retry))
        .fallback(|| async { JsonError(ApiError::NotFound("no such API resource".into())) })
}
