//! The trash for admins over HTTP (`GET /api/trash`,
//! `POST /api/trash/{study}/restore`): what `phim trash list` and
//! `phim trash restore` do, for a browser or a script.

use axum::extract::{Extension, Path, State};
use axum::Json;
use serde_json::{json, Value};

use crate::audit::{Action, Actor, Event, EventId, Outcome};
use crate::auth::Principal;
use crate::emr::changes::rfc3339_utc;
use crate::error::{ApiError, JsonError};
use crate::index::TrashedStudy;
use crate::state::AppState;

/// `GET /api/trash`: the studies in the trash, the last deleted first.
pub(crate) async fn list(State(st): State<AppState>) -> Result<Json<Value>, JsonError> {
    let studies = st.index.trash_list().await?;
    Ok(Json(json!({
        "studies": studies.iter().map(study_json).collect::<Vec<_>>(),
    })))
}

/// `POST /api/trash/{study}/restore`: the study's trashed instances
/// indexed again; 404 when none is in the trash.
pub(crate) async fn restore(
    State(st): State<AppState>,
    caller: Option<Extension<Principal>>,
    Path(study): Path<String>,
) -> Result<Json<Value>, JsonError> {
    let study = crate::dicomweb::path_uid("study", &study)?;
    let done = super::restore(st.index.as_ref(), &st.ingest, study.as_str()).await?;
    if done.restored == 0 && done.kept.is_empty() {
        return Err(ApiError::NotFound(format!("nothing of study {study} is in the trash")).into());
    }
    let actor = caller
        .as_ref()
        .map(|c| Actor::of(&c.0))
        .unwrap_or_else(Actor::phim);
    let outcome = if done.kept.is_empty() {
        Outcome::Success
    } else {
        Outcome::MinorFailure
    };
    st.audit.record(
        Event::new(EventId::InstancesTransferred, Action::C, outcome, actor)
            .studies(vec![study.to_string()])
            .instances(i64::try_from(done.restored).unwrap_or(i64::MAX))
            .detail(format!(
                "restored from the trash: {} instances, {} kept",
                done.restored,
                done.kept.len()
            )),
    );
    Ok(Json(json!({
        "studyInstanceUid": study.as_str(),
        "restored": done.restored,
        "kept": done.kept.iter().map(|(sop, why)| json!({"sopInstanceUid": sop, "reason": why})).collect::<Vec<_>>(),
    })))
}

fn study_json(s: &TrashedStudy) -> Value {
    json!({
        "studyInstanceUid": s.study_uid,
        "patientId": s.patient_id,
        "patientName": s.patient_name,
        "studyDate": s.study_date,
        "accessionNumber": s.accession_number,
        "studyDescription": s.study_description,
        "modalities": s.modalities.as_deref().map(|m| m.split(',').collect::<Vec<_>>()).unwrap_or_default(),
        "instances": s.instances,
        "bytes": s.bytes,
        "deletedAt": rfc3339_utc(s.deleted_at_ms),
        "deletedBy": s.deleted_by,
        "purgeAfter": rfc3339_utc(s.purge_after_ms),
    })
}
