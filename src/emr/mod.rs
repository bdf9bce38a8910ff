//! The hospital EMR side of Phim (issue #7): record links per study
//! ([`links`]), the URLs that reference a study ([`references`]), IHE
//! Invoke Image Display ([`iid`]), FHIR R4 ImagingStudy ([`fhir`]), the
//! change feed of stable studies ([`changes`]) and its webhooks
//! ([`webhooks`]).

pub mod changes;
pub mod fhir;
pub mod iid;
pub mod links;
pub mod references;
pub mod webhooks;

use std::time::Duration;

use axum::routing::get;
use axum::Router;

use crate::dicom::Uid;
use crate::error::{ApiError, JsonError};
use crate::index::{Index, IndexError, StudyRow};
use crate::query::{attribute_by_keyword, Filter, Level, Match, Query};
use crate::state::AppState;

/// The EMR configuration, validated at start-up.
#[derive(Debug, Clone, Default)]
pub struct EmrConfig {
    /// Links for studies without an explicit one.
    pub template: Option<links::UrlTemplate>,
    /// Quiet time after which a study is announced as stable.
    pub stable_after: Duration,
    /// Receivers of every change event.
    pub webhook_urls: Vec<String>,
    /// Attempts per delivery before it is logged as failed.
    pub webhook_max_attempts: u32,
    /// UTC offset of DICOM dates and times (`+07:00`), for FHIR.
    pub timezone: Option<String>,
    /// When set, setting or removing an EMR link needs this bearer token.
    pub write_token: Option<ApiToken>,
}

/// A bearer token (RFC 6750) for the EMR's writes: compared in constant
/// time, never printed (`Debug` shows `****`).
#[derive(Clone)]
pub struct ApiToken(String);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(****)")
    }
}

/// Shorter tokens are refused at start-up: they can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

impl ApiToken {
    pub fn new(token: &str) -> Result<ApiToken, String> {
        let token = token.trim();
        if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "--emr-api-token: use at least {MIN_TOKEN_LEN} printable ASCII characters without spaces"
            ));
        }
        Ok(ApiToken(token.to_owned()))
    }

    /// Whether `Authorization: Bearer <token>` carries this token (the
    /// auth layer parses the header itself and asks [`ApiToken::matches`]).
    #[cfg(test)]
    pub fn accepts(&self, headers: &axum::http::HeaderMap) -> bool {
        headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .is_some_and(|(_, t)| self.matches(t.trim()))
    }

    /// Whether `given` is this token, compared in constant time over the
    /// expected token's length.
    pub fn matches(&self, given: &str) -> bool {
        let (given, want) = (given.as_bytes(), self.0.as_bytes());
        let mut diff = u8::from(given.len() != want.len());
        for (i, w) in want.iter().enumerate() {
            diff |= w ^ given.get(i).copied().unwrap_or(0);
        }
        diff == 0
    }
}

/// Checks a UTC offset: `Z` or `±HH:MM`.
pub fn parse_timezone(tz: &str) -> Result<String, String> {
    let tz = tz.trim();
    if tz == "Z" {
        return Ok("Z".into());
    }
    let b = tz.as_bytes();
    let ok = b.len() == 6
        && (b[0] == b'+' || b[0] == b'-')
        && b[3] == b':'
        && [1, 2, 4, 5].iter().all(|&i| b[i].is_ascii_digit())
        && tz[1..3].parse::<u8>().is_ok_and(|h| h <= 14)
        && tz[4..6].parse::<u8>().is_ok_and(|m| m < 60);
    if ok {
        Ok(tz.to_owned())
    } else {
        Err(format!(
            "--timezone '{tz}': expected a UTC offset such as +07:00, -05:00 or Z"
        ))
    }
}

/// The JSON API under `/api`.
pub fn api_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/studies/{study}/emr-link",
            get(links::get_link)
                .put(links::put_link)
                .delete(links::delete_link),
        )
        .route("/emr-links", get(links::batch))
        .route("/auth/config", get(crate::auth::client_config))
        .route(
            "/studies/{study}/share",
            axum::routing::post(crate::auth::share::create),
        )
        .route("/studies/{study}/references", get(references::references))
        .route("/changes", get(changes::changes))
        .route("/webhooks/deliveries", get(webhooks::deliveries))
        .fallback(|| async { JsonError(ApiError::NotFound("no such API resource".into())) })
}

/// A query for studies by UID (one or a list), at most `uids.len()` rows.
fn studies_query(uids: &[Uid]) -> Option<Query> {
    let attribute = attribute_by_keyword("StudyInstanceUID")?;
    let matching = match uids {
        [one] => Match::Single(one.to_string()),
        many => Match::List(many.iter().map(Uid::to_string).collect()),
    };
    let mut q = Query::new(Level::Study);
    q.filters.push(Filter {
        attribute,
        matching,
    });
    q.limit = uids.len().max(1) as i64;
    Some(q)
}

/// The indexed studies among `uids` (any order).
pub async fn find_studies(index: &dyn Index, uids: &[Uid]) -> Result<Vec<StudyRow>, IndexError> {
    if uids.is_empty() {
        return Ok(Vec::new());
    }
    match studies_query(uids) {
        Some(q) => {
            let mut rows = index.search_studies(&q).await?;
            rows.truncate(uids.len());
            Ok(rows)
        }
        None => Ok(Vec::new()),
    }
}

/// One study, or `None` when it is not indexed.
pub async fn find_study(index: &dyn Index, uid: &Uid) -> Result<Option<StudyRow>, IndexError> {
    Ok(find_studies(index, std::slice::from_ref(uid))
        .await?
        .into_iter()
        .next())
}

/// One study, or 404.
pub async fn require_study(index: &dyn Index, uid: &Uid) -> Result<StudyRow, ApiError> {
    find_study(index, uid)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("study {uid} is not in this archive")))
}

/// A study UID from a URL path segment (400 when malformed).
pub fn study_uid(s: &str) -> Result<Uid, ApiError> {
    crate::dicomweb::path_uid("study", s)
}

/// Exact (not wildcard) matching on a text attribute: values from the EMR
/// are identifiers, a `*` in them is not a pattern.
pub fn exact(keyword: &str, value: &str) -> Option<Filter> {
    Some(Filter {
        attribute: attribute_by_keyword(keyword)?,
        matching: Match::Single(value.to_owned()),
    })
}

/// The URLs that reference one study, from Phim's public root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudyUrls {
    pub viewer: String,
    pub iid: String,
    pub wado: String,
    pub metadata: String,
    pub thumbnail: String,
    pub fhir: String,
}

impl StudyUrls {
    pub fn new(root: &str, study: &str) -> StudyUrls {
        let wado = format!("{root}/dicomweb/studies/{study}");
        StudyUrls {
            viewer: format!("{root}/study/{study}"),
            iid: format!("{root}/IHEInvokeImageDisplay?requestType=STUDY&studyUID={study}"),
            metadata: format!("{wado}/metadata"),
            thumbnail: format!("{wado}/thumbnail"),
            fhir: format!("{root}/fhir/ImagingStudy/{study}"),
            wado,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, HeaderMap, HeaderValue};

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn tokens_are_checked_whole_and_never_printed() {
        let t = ApiToken::new("0123456789abcdefXYZ").unwrap();
        assert!(t.accepts(&bearer("Bearer 0123456789abcdefXYZ")));
        assert!(t.accepts(&bearer("bearer 0123456789abcdefXYZ")));
        for wrong in [
            "Bearer 0123456789abcdefXY",
            "Bearer 0123456789abcdefXYZZ",
            "Bearer 0123456789abcdefXYz",
            "Basic 0123456789abcdefXYZ",
            "0123456789abcdefXYZ",
            "Bearer ",
        ] {
            assert!(!t.accepts(&bearer(wrong)), "{wrong}");
        }
        assert!(!t.accepts(&HeaderMap::new()));
        assert_eq!(format!("{t:?}"), "ApiToken(****)");
        let config = EmrConfig {
            write_token: Some(t),
            ..Default::default()
        };
        assert!(!format!("{config:?}").contains("0123"));
        assert!(ApiToken::new("short").is_err());
        assert!(ApiToken::new("has a space in it, long enough").is_err());
    }

    #[test]
    fn timezones() {
        assert_eq!(parse_timezone("+07:00").unwrap(), "+07:00");
        assert_eq!(parse_timezone("-05:30").unwrap(), "-05:30");
        assert_eq!(parse_timezone("Z").unwrap(), "Z");
        for bad in ["+7:00", "0700", "+15:00", "+07:60", "UTC", ""] {
            assert!(parse_timezone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn study_urls() {
        let u = StudyUrls::new("https://pacs.example", "1.2.3");
        assert_eq!(u.viewer, "https://pacs.example/study/1.2.3");
        assert_eq!(
            u.iid,
            "https://pacs.example/IHEInvokeImageDisplay?requestType=STUDY&studyUID=1.2.3"
        );
        assert_eq!(
            u.metadata,
            "https://pacs.example/dicomweb/studies/1.2.3/metadata"
        );
        assert_eq!(u.fhir, "https://pacs.example/fhir/ImagingStudy/1.2.3");
    }
}
