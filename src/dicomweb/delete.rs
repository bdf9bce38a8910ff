//! `DELETE /dicomweb/studies/{study}[/series/{series}[/instances/{instance}]]`:
//! moves the resource to the trash (`crate::trash`) and answers
//! 204 No Content; 404 when nothing of it is indexed. PS3.18 defines no
//! DELETE; these are the routes other archives serve and `dicomweb-client`
//! calls (`delete_study`, `delete_series`, `delete_instance`). Admins only
//! (`auth::policy`), audited as "DICOM Study Deleted" (PS3.15 A.5.3.5).

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;

use super::scope;
use crate::audit::{Action, Actor, Event, EventId, Outcome};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::index::Scope;
use crate::state::AppState;

pub(crate) async fn study(
    State(st): State<AppState>,
    caller: Option<Extension<Principal>>,
    Path(study): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete(st, caller.map(|c| c.0), scope(&study, None, None)?).await
}

pub(crate) async fn series(
    State(st): State<AppState>,
    caller: Option<Extension<Principal>>,
    Path((study, series)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    delete(st, caller.map(|c| c.0), scope(&study, Some(&series), None)?).await
}

pub(crate) async fn instance(
    State(st): State<AppState>,
    caller: Option<Extension<Principal>>,
    Path((study, series, instance)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let scope = scope(&study, Some(&series), Some(&instance))?;
    delete(st, caller.map(|c| c.0), scope).await
}

async fn delete(
    st: AppState,
    caller: Option<Principal>,
    scope: Scope,
) -> Result<StatusCode, ApiError> {
    let actor = caller.as_ref().map(Actor::of).unwrap_or_else(Actor::phim);
    let deleted_by = match &caller {
        Some(p) => p.name.clone(),
        None => "anonymous".to_owned(),
    };
    let what = match (&scope.series, &scope.instance) {
        (_, Some(i)) => format!("instance {i}"),
        (Some(s), None) => format!("series {s}"),
        (None, None) => format!("study {}", scope.study),
    };
    let retention = st.ingest.config().trash_retention;
    let trashed = crate::trash::delete(st.index.as_ref(), &scope, &deleted_by, retention).await?;
    let Some(trashed) = trashed else {
        return Err(ApiError::NotFound(format!("{what} is not stored")));
    };
    st.audit.record(
        Event::new(EventId::StudyDeleted, Action::D, Outcome::Success, actor)
            .studies(vec![scope.study.to_string()])
            .patient(trashed.patient_id.clone())
            .instances(trashed.instances)
            .detail(format!(
                "DELETE {what}: {} instances to the trash for {}",
                trashed.instances,
                humantime::format_duration(retention)
            )),
    );
    if retention.is_zero() {
        crate::trash::purge_soon(st.index.as_ref(), &st.jobs_wake).await;
    }
    Ok(StatusCode::NO_CONTENT)
}
