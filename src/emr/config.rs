//! The EMR configuration, validated at start-up: the link template, the
//! change feed's quiet time and webhooks, the time zone of FHIR times and
//! the token of the EMR's writes.

use std::time::Duration;

use super::template;

/// The EMR configuration, validated at start-up.
#[derive(Debug, Clone, Default)]
pub struct EmrConfig {
    /// Links for studies without an explicit one.
    pub(crate) template: Option<template::UrlTemplate>,
    /// Quiet time after which a study is announced as stable.
    pub(crate) stable_after: Duration,
    /// Receivers of every change event.
    pub(crate) webhook_urls: Vec<String>,
    /// Attempts per delivery before it is logged as failed.
    pub(crate) webhook_max_attempts: u32,
    /// UTC offset of DICOM dates and times (`+07:00`), for FHIR.
    pub(crate) timezone: Option<String>,
    /// When set, setting or removing an EMR link needs this bearer token.
    pub(crate) write_token: Option<ApiToken>,
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
pub(crate) const MIN_TOKEN_LEN: usize = 16;

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
    pub(crate) fn accepts(&self, headers: &axum::http::HeaderMap) -> bool {
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
pub(crate) fn parse_timezone(tz: &str) -> Result<String, String> {
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
}
