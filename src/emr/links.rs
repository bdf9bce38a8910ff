//! EMR record links: one per study, set by the EMR (`PUT
//! /api/studies/{study}/emr-link`, stored in the index) or, for studies
//! without one, built from `--emr-url-template`.

use std::collections::{BTreeMap, HashSet};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::template::{check_url, LinkView};
use super::{find_studies, require_study, study_uid};
use crate::dicom::Uid;
use crate::error::{ApiError, JsonError};
use crate::index::{EmrLink, StudyRow};
use crate::state::AppState;

/// Longest record id accepted.
pub(crate) const MAX_RECORD_ID: usize = 256;
/// Most studies one batch read may name.
pub(crate) const MAX_BATCH: usize = 200;

/// The template's link for a study: its record id is the accession number,
/// or the Study Instance UID when there is none.
pub(crate) fn template_link(st: &AppState, study: &StudyRow) -> Option<LinkView> {
    st.emr.template.as_ref()?.link(study)
}

/// The link of one study: explicit, else the template's.
pub(crate) async fn resolve(st: &AppState, study: &StudyRow) -> Result<Option<LinkView>, ApiError> {
    let uid = study_uid(&study.study_uid)?;
    let explicit = st.index.emr_links(&[uid]).await?.into_iter().next();
    Ok(match explicit {
        Some((_, l)) => Some(LinkView::explicit(l)),
        None => template_link(st, study),
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LinkBody {
    record_id: Option<serde_json::Value>,
    url: Option<serde_json::Value>,
}

/// Validates a PUT body.
fn parse_body(body: &[u8]) -> Result<EmrLink, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let b: LinkBody = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "body is not a JSON object {{\"recordId\", \"url\"}}: {e}"
        ))
    })?;
    let text = |v: Option<serde_json::Value>, name: &str| match v {
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(_) => Err(bad(format!("{name} must be a string"))),
        None => Err(bad(format!("{name} is missing"))),
    };
    let record_id = text(b.record_id, "recordId")?;
    let url = text(b.url, "url")?;
    if record_id.trim().is_empty() {
        return Err(bad("recordId is empty".into()));
    }
    if record_id.chars().count() > MAX_RECORD_ID {
        return Err(bad(format!(
            "recordId is longer than {MAX_RECORD_ID} characters"
        )));
    }
    if record_id.chars().any(char::is_control) {
        return Err(bad("recordId has control characters".into()));
    }
    check_url(&url).map_err(bad)?;
    Ok(EmrLink { record_id, url })
}

/// `PUT /api/studies/{study}/emr-link`.
pub(crate) async fn put_link(
    State(st): State<AppState>,
    Path(study): Path<String>,
    body: Bytes,
) -> Result<Json<LinkView>, JsonError> {
    let uid = study_uid(&study)?;
    let link = parse_body(&body)?;
    if !st.index.put_emr_link(&uid, &link).await? {
        return Err(ApiError::NotFound(format!("study {uid} is not in this archive")).into());
    }
    tracing::info!(study = %uid, "EMR link set");
    Ok(Json(LinkView::explicit(link)))
}

/// `GET /api/studies/{study}/emr-link`.
pub(crate) async fn get_link(
    State(st): State<AppState>,
    Path(study): Path<String>,
) -> Result<Json<LinkView>, JsonError> {
    let uid = study_uid(&study)?;
    let row = require_study(st.index.as_ref(), &uid).await?;
    match resolve(&st, &row).await? {
        Some(l) => Ok(Json(l)),
        None => Err(ApiError::NotFound(format!(
            "study {uid} has no EMR link{}",
            if st.emr.template.is_some() {
                " (and the template needs an attribute it lacks)"
            } else {
                ""
            }
        ))
        .into()),
    }
}

/// `DELETE /api/studies/{study}/emr-link`: 204 whether or not it had one.
pub(crate) async fn delete_link(
    State(st): State<AppState>,
    Path(study): Path<String>,
) -> Result<StatusCode, JsonError> {
    let uid = study_uid(&study)?;
    require_study(st.index.as_ref(), &uid).await?;
    if st.index.delete_emr_link(&uid).await? {
        tracing::info!(study = %uid, "EMR link removed");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/emr-links?studies=uid1,uid2,…`: the links of those studies
/// that have one (explicit or from the template), keyed by UID.
pub(crate) async fn batch(
    State(st): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<BTreeMap<String, LinkView>>, JsonError> {
    let mut list = None;
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "studies" if list.is_none() => list = Some(v.into_owned()),
            "studies" => {
                return Err(ApiError::BadRequest(
                    "studies is given more than once (use one comma-separated list)".into(),
                )
                .into())
            }
            other => {
                return Err(
                    ApiError::BadRequest(format!("unknown query parameter '{other}'")).into(),
                )
            }
        }
    }
    let list =
        list.ok_or_else(|| ApiError::BadRequest("studies=uid1,uid2,… is required".into()))?;
    let mut seen = HashSet::new();
    let mut uids = Vec::new();
    for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let uid = study_uid(s)?;
        if seen.insert(uid.clone()) {
            uids.push(uid);
        }
    }
    if uids.is_empty() {
        return Err(ApiError::BadRequest("studies names no study UID".into()).into());
    }
    if uids.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "studies names {} studies; at most {MAX_BATCH} at once",
            uids.len()
        ))
        .into());
    }
    let mut out: BTreeMap<String, LinkView> = st
        .index
        .emr_links(&uids)
        .await?
        .into_iter()
        .map(|(uid, l)| (uid, LinkView::explicit(l)))
        .collect();
    if st.emr.template.is_some() {
        let rest: Vec<Uid> = uids
            .into_iter()
            .filter(|u| !out.contains_key(u.as_str()))
            .collect();
        for row in find_studies(st.index.as_ref(), &rest).await? {
            if let Some(l) = template_link(&st, &row) {
                out.insert(row.study_uid.clone(), l);
            }
        }
    }
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let ok = parse_body(br#"{"recordId":"R1","url":"https://emr.example/r/1"}"#).unwrap();
        assert_eq!(ok.record_id, "R1");
        for bad in [
            &br#"{"recordId":"","url":"https://emr.example/"}"#[..],
            br#"{"recordId":"R","url":"emr.example/x"}"#,
            br#"{"recordId":"R","url":"javascript:alert(1)"}"#,
            br#"{"recordId":"R"}"#,
            br#"{"recordId":5,"url":"https://e/"}"#,
            br#"not json"#,
        ] {
            assert!(
                matches!(parse_body(bad), Err(ApiError::BadRequest(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!(r#"{{"recordId":"{}","url":"https://e/"}}"#, "é".repeat(257));
        assert!(parse_body(long.as_bytes()).is_err());
        let max = format!(r#"{{"recordId":"{}","url":"https://e/"}}"#, "é".repeat(256));
        assert!(parse_body(max.as_bytes()).is_ok());
    }
}
