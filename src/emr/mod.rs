//! The hospital EMR side of Phim (issue #7): record links per study
//! ([`links`]), the URLs that reference a study ([`references`]), IHE
//! Invoke Image Display ([`iid`]), the
//! change feed of stable studies ([`changes`]) and its webhooks
//! ([`webhooks`]).

pub(crate) mod changes;
pub(crate) mod config;
pub(crate) mod iid;
pub(crate) mod links;
pub(crate) mod references;
pub(crate) mod template;
pub(crate) mod webhooks;

use crate::dicom::Uid;
use crate::error::ApiError;
use crate::index::{Index, IndexError, StudyRow};
use crate::query::{attribute_by_keyword, Filter, Level, Match, Query};

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
pub(crate) async fn find_studies(
    index: &dyn Index,
    uids: &[Uid],
) -> Result<Vec<StudyRow>, IndexError> {
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
pub(crate) async fn find_study(
    index: &dyn Index,
    uid: &Uid,
) -> Result<Option<StudyRow>, IndexError> {
    Ok(find_studies(index, std::slice::from_ref(uid))
        .await?
        .into_iter()
        .next())
}

/// One study, or 404.
pub(crate) async fn require_study(index: &dyn Index, uid: &Uid) -> Result<StudyRow, ApiError> {
    find_study(index, uid)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("study {uid} is not in this archive")))
}

/// A study UID from a URL path segment (400 when malformed).
pub(crate) fn study_uid(s: &str) -> Result<Uid, ApiError> {
    crate::dicomweb::path_uid("study", s)
}

/// Exact (not wildcard) matching on a text attribute: values from the EMR
/// are identifiers, a `*` in them is not a pattern.
pub(crate) fn exact(keyword: &str, value: &str) -> Option<Filter> {
    Some(Filter {
        attribute: attribute_by_keyword(keyword)?,
        matching: Match::Single(value.to_owned()),
    })
}

/// The URLs that reference one study, from Phim's public root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StudyUrls {
    pub viewer: String,
    pub(crate) iid: String,
    pub wado: String,
    pub metadata: String,
    pub thumbnail: String,
    pub(crate) fhir: String,
}

impl StudyUrls {
    pub(crate) fn new(root: &str, study: &str) -> StudyUrls {
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
