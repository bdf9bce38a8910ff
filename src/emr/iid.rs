//! IHE Invoke Image Display (IID, RAD-106): the EMR opens Phim's viewer
//! with a URL naming a study (by UID or accession number) or a patient;
//! Phim answers with a redirect to the viewer.
//!
//! - `requestType=STUDY&studyUID=a[,b…]` → `/study/a`, or `/?studyUID=a,b`
//! - `requestType=STUDY&accessionNumber=X` → `/study/<uid>` when exactly one
//!   study has it, else `/?accessionNumber=X`
//! - `requestType=PATIENT&patientID=X[^^^&issuer&ISO]` → `/?patientID=X`
//!
//! Other parameters (IID's display options `viewerType`,
//! `diagnosticQuality`, `keyImagesOnly`, vendor additions) are accepted and
//! have no effect.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{exact, find_studies, study_uid};
use crate::dicom::Uid;
use crate::dicomweb::public_root;
use crate::error::ApiError;
use crate::query::{Level, Query};
use crate::state::AppState;

/// Most studies one request may name.
const MAX_STUDIES: usize = 200;

/// Where the viewer should go, relative to Phim's root.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Study(String),
    List(&'static str, String),
}

/// A query value: RFC 3986 unreserved characters and ',' (the separator of
/// UID lists) as they are, the rest percent-encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b',');

fn query_value(v: &str) -> String {
    utf8_percent_encode(v, QUERY_VALUE).to_string()
}

pub(crate) async fn invoke(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut request_type = None;
    let mut study_uids = None;
    let mut accession = None;
    let mut patient = None;
    let mut share = None;
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let slot = match k.as_ref() {
            // A share link (checked by the auth layer) goes on to the viewer.
            "share" => &mut share,
            "requestType" => &mut request_type,
            "studyUID" => &mut study_uids,
            "accessionNumber" => &mut accession,
            "patientID" => &mut patient,
            _ => continue,
        };
        if slot.is_some() {
            return Err(ApiError::BadRequest(format!(
                "'{k}' is given more than once"
            )));
        }
        *slot = Some(v.trim().to_owned());
    }
    let target = match request_type.as_deref() {
        Some("STUDY") => match (study_uids, accession) {
            (Some(uids), None) => by_uids(&st, &uids).await?,
            (None, Some(acc)) if !acc.is_empty() => by_accession(&st, &acc).await?,
            (Some(_), Some(_)) => {
                return Err(ApiError::BadRequest(
                    "requestType=STUDY takes studyUID or accessionNumber, not both".into(),
                ))
            }
            _ => {
                return Err(ApiError::BadRequest(
                    "requestType=STUDY needs studyUID or accessionNumber".into(),
                ))
            }
        },
        Some("PATIENT") => {
            // IID sends the ID as CX: ID^^^&issuer&ISO; the ID is the part before '^'.
            let id = patient
                .as_deref()
                .map(|p| p.split('^').next().unwrap_or(p).trim())
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    ApiError::BadRequest("requestType=PATIENT needs patientID".into())
                })?;
            Target::List("patientID", id.to_owned())
        }
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "requestType '{other}' is not supported (STUDY or PATIENT)"
            )))
        }
        None => return Err(ApiError::BadRequest("requestType is required".into())),
    };
    let root = public_root(&st, &headers);
    let mut location = match &target {
        Target::Study(uid) => format!("{root}/study/{uid}"),
        Target::List(key, value) => format!("{root}/?{key}={}", query_value(value)),
    };
    if let Some(token) = share {
        location.push(if location.contains('?') { '&' } else { '?' });
        location.push_str(&format!("share={}", query_value(&token)));
    }
    Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
}

async fn by_uids(st: &AppState, list: &str) -> Result<Target, ApiError> {
    let mut uids: Vec<Uid> = Vec::new();
    for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let uid = study_uid(s)?;
        if !uids.contains(&uid) {
            uids.push(uid);
        }
    }
    if uids.is_empty() {
        return Err(ApiError::BadRequest("studyUID is empty".into()));
    }
    if uids.len() > MAX_STUDIES {
        return Err(ApiError::BadRequest(format!(
            "studyUID names more than {MAX_STUDIES} studies"
        )));
    }
    let found = find_studies(st.index.as_ref(), &uids).await?;
    let missing: Vec<&str> = uids
        .iter()
        .map(Uid::as_str)
        .filter(|u| !found.iter().any(|r| r.study_uid == *u))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::NotFound(format!(
            "not in this archive: {}",
            missing.join(", ")
        )));
    }
    Ok(match uids.as_slice() {
        [one] => Target::Study(one.to_string()),
        many => Target::List(
            "studyUID",
            many.iter().map(Uid::as_str).collect::<Vec<_>>().join(","),
        ),
    })
}

async fn by_accession(st: &AppState, accession: &str) -> Result<Target, ApiError> {
    let mut q = Query::new(Level::Study);
    q.filters.extend(exact("AccessionNumber", accession));
    q.limit = 2;
    let rows = st.index.search_studies(&q).await?;
    Ok(match rows.as_slice() {
        [one] => Target::Study(one.study_uid.clone()),
        _ => Target::List("accessionNumber", accession.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values() {
        assert_eq!(query_value("1.2.3,1.2.4"), "1.2.3,1.2.4");
        assert_eq!(query_value("P 1/2&x=ỹ"), "P%201%2F2%26x%3D%E1%BB%B9");
    }
}
