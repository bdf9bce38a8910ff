//! Share links: a signed, expiring token that opens one study (or one
//! series of it) and nothing else, for the EMR and for people without an
//! account. `POST /api/studies/{study}/share` ([`super::routes::share`]) makes one; the token is
//! sent as `Authorization: Bearer phims_…` or, on GET requests, as the
//! `share` query parameter (what a viewer URL carries).
//!
//! Tokens are `phims_` + base64url(payload JSON) + `.` + base64url(HMAC-
//! SHA-256). Signing keys live in the index (shared by every server): the
//! newest signs, every key still there verifies, so `phim share-key
//! rotate` breaks no link issued before it until the link expires.

use std::time::{Duration, Instant};

use axum::http::{Method, Uri};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::Auth;
use crate::dicom::Uid;
use crate::error::ApiError;
use crate::index::{now_ms, Index};

pub(crate) const PREFIX: &str = "phims_";
/// Longest a link may live.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Keys are read from the index again at least this often.
const RELOAD: Duration = Duration::from_secs(60);

type HmacSha256 = Hmac<Sha256>;

/// What a link opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Study Instance UID.
    pub s: String,
    /// Series Instance UID, when the link opens one series only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub se: Option<String>,
    /// Expiry, seconds since the epoch.
    pub(crate) exp: i64,
    /// Who made it (for the audit trail).
    pub by: String,
    /// Signing key id.
    pub k: String,
}

#[derive(Debug, Clone)]
struct Key {
    kid: String,
    secret: Vec<u8>,
}

/// The signing keys, cached.
#[derive(Debug, Default)]
pub(crate) struct ShareKeys {
    cache: tokio::sync::RwLock<Option<(Vec<Key>, Instant)>>,
}

/// Why a share token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    #[error("malformed share token")]
    Malformed,
    #[error("share token signed with an unknown key")]
    UnknownKey,
    #[error("share token signature does not match")]
    BadSignature,
    #[error("share link expired")]
    Expired,
    #[error("share keys unavailable: {0}")]
    Unavailable(String),
}

fn mac(secret: &[u8], payload: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| {
        <HmacSha256 as Mac>::new_from_slice(&[0u8; 32]).expect("a 32-byte HMAC key")
    });
    m.update(payload);
    m
}

impl ShareKeys {
    async fn keys(&self, index: &dyn Index, force: bool) -> Result<Vec<Key>, ShareError> {
        if !force {
            if let Some((keys, at)) = &*self.cache.read().await {
                if at.elapsed() < RELOAD {
                    return Ok(keys.clone());
                }
            }
        }
        let rows = index
            .share_keys()
            .await
            .map_err(|e| ShareError::Unavailable(e.to_string()))?;
        let keys: Vec<Key> = rows
            .into_iter()
            .filter_map(|(kid, secret, _)| {
                Some(Key {
                    kid,
                    secret: hex::decode(secret).ok()?,
                })
            })
            .collect();
        *self.cache.write().await = Some((keys.clone(), Instant::now()));
        Ok(keys)
    }

    /// Signs a link with the newest key (making the first key if there is none).
    pub(crate) async fn sign(
        &self,
        index: &dyn Index,
        mut claims: Claims,
    ) -> Result<String, ShareError> {
        let mut keys = self.keys(index, false).await?;
        if keys.is_empty() {
            rotate(index).await.map_err(ShareError::Unavailable)?;
            keys = self.keys(index, true).await?;
        }
        let key = keys.last().ok_or(ShareError::UnknownKey)?;
        claims.k = key.kid.clone();
        let payload = serde_json::to_vec(&claims).map_err(|_| ShareError::Malformed)?;
        let sig = mac(&key.secret, &payload).finalize().into_bytes();
        Ok(format!(
            "{PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(sig)
        ))
    }

    /// Checks a token and reads what it opens.
    pub(crate) async fn verify(
        &self,
        index: &dyn Index,
        token: &str,
    ) -> Result<Claims, ShareError> {
        let body = token.strip_prefix(PREFIX).ok_or(ShareError::Malformed)?;
        let (payload, sig) = body.split_once('.').ok_or(ShareError::Malformed)?;
        if payload.len() > 4096 || sig.len() > 128 {
            return Err(ShareError::Malformed);
        }
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| ShareError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| ShareError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| ShareError::Malformed)?;
        let mut keys = self.keys(index, false).await?;
        if !keys.iter().any(|k| k.kid == claims.k) {
            // A key made by another server since we last looked.
            keys = self.keys(index, true).await?;
        }
        let key = keys
            .iter()
            .find(|k| k.kid == claims.k)
            .ok_or(ShareError::UnknownKey)?;
        mac(&key.secret, &payload)
            .verify_slice(&sig)
            .map_err(|_| ShareError::BadSignature)?;
        if claims.exp * 1000 <= now_ms() {
            return Err(ShareError::Expired);
        }
        Ok(claims)
    }
}

/// `phim share-key rotate`: a new signing key; keys older than the
/// longest link lifetime (plus a day) are removed. Returns the new key id.
pub async fn rotate(index: &dyn Index) -> Result<String, String> {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let mut kid = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut kid);
    let kid = hex::encode(kid);
    let now = now_ms();
    index
        .add_share_key(&kid, &hex::encode(secret), now)
        .await
        .map_err(|e| e.to_string())?;
    let horizon = now - MAX_TTL.as_millis() as i64 - 86_400_000;
    index
        .prune_share_keys(horizon, &kid)
        .await
        .map_err(|e| e.to_string())?;
    Ok(kid)
}

/// What a request made with a share link may reach: its study (and
/// series), through the read routes only. Top-level QIDO searches are
/// narrowed to the study: any study or series key the client sent is
/// replaced by the link's. Returns the URI to serve, or why not.
pub(crate) fn confine(claims: &Claims, method: &Method, uri: &Uri) -> Result<Uri, String> {
    if method != Method::GET && method != Method::HEAD {
        return Err("a share link only reads".into());
    }
    let seg: Vec<&str> = uri
        .path()
        .trim_end_matches('/')
        .split('/')
        .skip(1)
        .collect();
    let study = claims.s.as_str();
    let series = claims.se.as_deref();
    let same_series = |se: &str| series.is_none_or(|s| s == se);
    let other = || Err(format!("this share link opens study {study} only"));
    // Keys a search must not choose itself.
    let mut narrow: Vec<(&str, &str)> = Vec::new();
    match seg.as_slice() {
        ["dicomweb", "studies"] => narrow.push(("StudyInstanceUID", study)),
        ["dicomweb", "series"] | ["dicomweb", "instances"] => {
            narrow.push(("StudyInstanceUID", study));
            if let Some(se) = series {
                narrow.push(("SeriesInstanceUID", se));
            }
        }
        ["dicomweb", "studies", s, "series" | "instances"] if *s == study => {
            if let Some(se) = series {
                narrow.push(("SeriesInstanceUID", se));
            }
        }
        ["dicomweb", "studies", s, "series", se, ..] if *s == study && same_series(se) => {}
        // Study-level resources show every series: not for a series link.
        ["dicomweb", "studies", s, ..] if *s == study && series.is_none() => {}
        ["fhir", "ImagingStudy", s] if *s == study && series.is_none() => {}
        ["api", "studies", s, "references" | "emr-link"] if *s == study => {}
        ["wado"] | ["IHEInvokeImageDisplay"] => {
            let q: Vec<(String, String)> =
                url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                    .into_owned()
                    .collect();
            let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            let ok = get("studyUID") == Some(study)
                && (seg[0] == "IHEInvokeImageDisplay" || get("seriesUID").is_some_and(same_series));
            if !ok {
                return other();
            }
        }
        _ => return other(),
    }
    // Drop the token itself (handlers refuse unknown parameters) except
    // for IID, which hands it on to the viewer.
    let keep_share = seg.first() == Some(&"IHEInvokeImageDisplay");
    let narrowed: &[&str] = &[
        "StudyInstanceUID",
        "0020000D",
        "SeriesInstanceUID",
        "0020000E",
    ];
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        let dropped =
            (k == "share" && !keep_share) || (!narrow.is_empty() && narrowed.contains(&k.as_ref()));
        if !dropped {
            out.append_pair(&k, &v);
        }
    }
    for (k, v) in narrow {
        out.append_pair(k, v);
    }
    let query = out.finish();
    let pq = if query.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{query}", uri.path())
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().map_err(|_| "malformed URI".to_owned())?);
    Uri::from_parts(parts).map_err(|_| "malformed URI".into())
}

/// A share token for `study` (and `series`) that lives `ttl`, made by
/// `by`; returns it and its expiry (seconds since the epoch).
pub(crate) async fn sign_link(
    auth: &Auth,
    index: &dyn Index,
    study: &Uid,
    series: Option<&Uid>,
    ttl: Duration,
    by: String,
) -> Result<(String, i64), ApiError> {
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(ApiError::BadRequest(format!(
            "a share link lives 1 to {} seconds",
            MAX_TTL.as_secs()
        )));
    }
    let exp = now_ms() / 1000 + ttl.as_secs() as i64;
    let claims = Claims {
        s: study.to_string(),
        se: series.map(Uid::to_string),
        exp,
        by,
        k: String::new(),
    };
    let token = auth
        .share_keys()
        .sign(index, claims)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok((token, exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(se: Option<&str>) -> Claims {
        Claims {
            s: "1.2.3".into(),
            se: se.map(str::to_owned),
            exp: 0,
            by: "x".into(),
            k: "k".into(),
        }
    }

    fn ok(c: &Claims, uri: &str) -> Result<String, String> {
        confine(c, &Method::GET, &uri.parse().unwrap()).map(|u| u.to_string())
    }

    #[test]
    fn links_reach_their_study_only() {
        let c = claims(None);
        assert_eq!(
            ok(&c, "/dicomweb/studies/1.2.3/metadata").unwrap(),
            "/dicomweb/studies/1.2.3/metadata"
        );
        assert!(ok(&c, "/dicomweb/studies/1.2.4/metadata").is_err());
        assert!(ok(&c, "/dicomweb/studies/1.2.33").is_err());
        // Searches are narrowed; a study key of the client's is replaced, not ORed.
        assert_eq!(
            ok(
                &c,
                "/dicomweb/studies?StudyInstanceUID=9.9&limit=5&share=phims_x"
            )
            .unwrap(),
            "/dicomweb/studies?limit=5&StudyInstanceUID=1.2.3"
        );
        assert_eq!(
            ok(&c, "/dicomweb/series?0020000D=9.9").unwrap(),
            "/dicomweb/series?StudyInstanceUID=1.2.3"
        );
        assert!(ok(&c, "/api/changes").is_err());
        assert!(ok(&c, "/fhir/ImagingStudy?patient=P").is_err());
        assert!(ok(
            &c,
            "/wado?requestType=WADO&studyUID=9.9&seriesUID=1&objectUID=2"
        )
        .is_err());
        assert!(ok(
            &c,
            "/wado?requestType=WADO&studyUID=1.2.3&seriesUID=1&objectUID=2"
        )
        .is_ok());
        assert_eq!(
            ok(
                &c,
                "/IHEInvokeImageDisplay?requestType=STUDY&studyUID=1.2.3&share=t"
            )
            .unwrap(),
            "/IHEInvokeImageDisplay?requestType=STUDY&studyUID=1.2.3&share=t"
        );
        assert!(confine(&c, &Method::POST, &"/dicomweb/studies".parse().unwrap()).is_err());
        // A series link: that series, and searches narrowed to it.
        let s = claims(Some("1.2.3.4"));
        assert!(ok(
            &s,
            "/dicomweb/studies/1.2.3/series/1.2.3.4/instances/5/frames/1"
        )
        .is_ok());
        assert!(ok(&s, "/dicomweb/studies/1.2.3/series/1.2.3.5/metadata").is_err());
        assert!(ok(&s, "/dicomweb/studies/1.2.3").is_err());
        assert_eq!(
            ok(&s, "/dicomweb/studies/1.2.3/series").unwrap(),
            "/dicomweb/studies/1.2.3/series?SeriesInstanceUID=1.2.3.4"
        );
    }
}
