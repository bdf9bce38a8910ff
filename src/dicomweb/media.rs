//! Media types: parsing `Content-Type` and `Accept` (RFC 9110 §12.5.1) the
//! way PS3.18 §8.7 uses them, with `type` and `transfer-syntax` parameters.

use axum::http::HeaderMap;

use crate::error::ApiError;

/// One media range of an Accept header, or a Content-Type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MediaRange {
    /// `type/subtype`, lower-cased.
    pub(crate) essence: String,
    /// Parameters, names lower-cased, values unquoted.
    pub params: Vec<(String, String)>,
    pub q: f32,
}

impl MediaRange {
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this range accepts `type/subtype`.
    pub(crate) fn matches(&self, essence: &str) -> bool {
        if self.essence == "*/*" || self.essence == essence {
            return true;
        }
        match self.essence.strip_suffix("/*") {
            Some(main) => essence.split('/').next() == Some(main),
            None => false,
        }
    }
}

/// Parses one media type with parameters (quoted values may contain ';'
/// and ',').
pub(crate) fn parse_one(s: &str) -> Option<MediaRange> {
    let mut parts = split_outside_quotes(s, ';').into_iter();
    let essence = parts.next()?.trim().to_ascii_lowercase();
    if essence.is_empty() || !essence.contains('/') {
        return None;
    }
    let mut params = Vec::new();
    let mut q = 1.0;
    for p in parts {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim().trim_matches('"').to_owned();
        if k == "q" {
            q = v.parse().unwrap_or(1.0);
        } else {
            params.push((k, v));
        }
    }
    Some(MediaRange { essence, params, q })
}

/// Parses an Accept header into ranges, best first (stable for equal q).
pub(crate) fn parse_accept(header: &str) -> Vec<MediaRange> {
    let mut ranges: Vec<MediaRange> = split_outside_quotes(header, ',')
        .into_iter()
        .filter_map(|s| parse_one(&s))
        .filter(|r| r.q > 0.0)
        .collect();
    ranges.sort_by(|a, b| b.q.partial_cmp(&a.q).unwrap_or(std::cmp::Ordering::Equal));
    ranges
}

/// The request's Accept ranges, best first; a missing header is `*/*`.
pub(crate) fn accept_ranges(headers: &axum::http::HeaderMap) -> Vec<MediaRange> {
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    parse_accept(accept)
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if c == sep && !quoted {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

/// Checks that the client accepts DICOM JSON (PS3.18 §8.7.3.2); XML
/// metadata is not produced.
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ranges = accept_ranges(headers);
    if ranges.is_empty()
        || ranges
            .iter()
            .any(|r| r.matches("application/dicom+json") || r.matches("application/json"))
    {
        Ok(())
    } else {
        Err(ApiError::NotAcceptable(
            "this resource is available as application/dicom+json".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dicomweb_accept() {
        let r = parse_accept(
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*, application/json;q=0.5",
        );
        assert_eq!(r[0].essence, "multipart/related");
        assert_eq!(r[0].param("type"), Some("application/dicom"));
        assert_eq!(r[0].param("transfer-syntax"), Some("*"));
        assert_eq!(r[1].q, 0.5);
        let ct =
            parse_one("multipart/related; type=\"application/dicom\"; boundary=\"a;b\"").unwrap();
        assert_eq!(ct.param("boundary"), Some("a;b"));
        assert!(parse_one("text/*").unwrap().matches("text/plain"));
    }
}
