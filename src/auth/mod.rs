//! Authentication and authorisation, for HTTP and DICOM alike.
//!
//! One door: [`layer::require`] runs before every HTTP handler, decides
//! what the request needs from its method and path ([`policy`]), finds
//! who is calling ([`Auth::authenticate`]: API keys, OpenID Connect
//! access tokens, the EMR's link token) and answers 401 or 403 itself;
//! handlers never check credentials. DIMSE asks the same [`policy`] table
//! through [`Principal::may`] for each service a remote AE invokes.

pub mod api_keys;
pub mod layer;
pub mod limits;
pub mod oidc;
pub(crate) mod policy;
pub(crate) mod routes;
pub mod share;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};

pub use policy::{Permission, Role};

use crate::emr::config::ApiToken;
use crate::index::Index;

/// A set of [`Permission`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Permissions(u16);

impl Permissions {
    pub(crate) const NONE: Permissions = Permissions(0);

    fn bit(p: Permission) -> u16 {
        1 << (p as u16)
    }

    pub(crate) fn all() -> Permissions {
        let mut s = Permissions::NONE;
        for (p, _) in policy::TABLE {
            s.insert(*p);
        }
        s
    }

    /// The permissions of these roles, by [`policy::TABLE`].
    pub(crate) fn of_roles(roles: &[Role]) -> Permissions {
        let mut s = Permissions::NONE;
        for (p, rs) in policy::TABLE {
            if roles.iter().any(|r| rs.contains(r)) {
                s.insert(*p);
            }
        }
        s
    }

    pub(crate) fn insert(&mut self, p: Permission) {
        self.0 |= Self::bit(p);
    }

    pub(crate) fn remove(&mut self, p: Permission) {
        self.0 &= !Self::bit(p);
    }

    pub(crate) fn contains(self, p: Permission) -> bool {
        self.0 & Self::bit(p) != 0
    }
}

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// Nothing: the server runs without authentication.
    Anonymous,
    /// Nothing, on a server that requires authentication.
    None,
    /// An OpenID Connect access token of a person.
    Token,
    /// A Phim API key (machines).
    ApiKey,
    /// The `--emr-api-token`.
    EmrToken,
    /// A DICOM application entity (calling AE title).
    AeTitle,
    /// A share link (one study).
    Share,
}

impl Method {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Method::Anonymous => "anonymous",
            Method::None => "none",
            Method::Token => "oidc",
            Method::ApiKey => "api-key",
            Method::EmrToken => "emr-token",
            Method::AeTitle => "ae-title",
            Method::Share => "share-link",
        }
    }
}

/// Who is calling, as far as authorisation and the audit trail care.
#[derive(Debug, Clone)]
pub struct Principal {
    pub(crate) method: Method,
    /// User (token subject or preferred name), API key name or AE title.
    pub name: String,
    pub(crate) roles: Vec<Role>,
    pub(crate) permissions: Permissions,
    /// Where the request came from.
    pub(crate) address: Option<IpAddr>,
    /// A share link's study (and series): nothing else is reachable.
    pub share: Option<share::Claims>,
}

impl Principal {
    /// Whether the caller proved an identity (a refusal is then 403, not 401).
    pub fn authenticated(&self) -> bool {
        !matches!(self.method, Method::Anonymous | Method::None)
    }

    pub fn may(&self, p: Permission) -> bool {
        self.permissions.contains(p)
    }

    /// Everyone, on a server without authentication (today's default on
    /// loopback).
    pub(crate) fn anonymous(address: Option<IpAddr>, permissions: Permissions) -> Principal {
        Principal {
            method: Method::Anonymous,
            name: "anonymous".into(),
            roles: Vec::new(),
            permissions,
            address,
            share: None,
        }
    }

    /// A caller without credentials on a server that requires them.
    pub fn nobody(address: Option<IpAddr>) -> Principal {
        Principal {
            method: Method::None,
            name: "anonymous".into(),
            roles: Vec::new(),
            permissions: Permissions::NONE,
            address,
            share: None,
        }
    }

    fn with_roles(
        method: Method,
        name: String,
        roles: Vec<Role>,
        address: Option<IpAddr>,
    ) -> Principal {
        Principal {
            method,
            permissions: Permissions::of_roles(&roles),
            name,
            roles,
            address,
            share: None,
        }
    }

    /// "user alice (radiologist)", for refusal messages and logs.
    pub(crate) fn describe(&self) -> String {
        let roles: Vec<&str> = self.roles.iter().map(|r| r.as_str()).collect();
        let who = match self.method {
            Method::Anonymous | Method::None => "anonymous caller".to_owned(),
            Method::Token => format!("user {}", self.name),
            Method::ApiKey => format!("API key {}", self.name),
            Method::EmrToken => "the EMR token".to_owned(),
            Method::AeTitle => format!("AE {}", self.name),
            Method::Share => "a share link".to_owned(),
        };
        if roles.is_empty() {
            format!("{who} (no role)")
        } else {
            format!("{who} ({})", roles.join(", "))
        }
    }
}

/// Why credentials were refused (401; also a Security Alert or User
/// Authentication failure in the audit trail).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("unsupported authorization scheme: send Authorization: Bearer <token or API key>")]
    Scheme,
    #[error("unknown or revoked API key")]
    UnknownKey,
    #[error("access token refused: {0}")]
    Token(String),
    #[error("this server accepts no access tokens (no --oidc-issuer)")]
    NoIssuer,
    #[error("credentials could not be checked now, retry later")]
    Unavailable,
    #[error("{0}")]
    Share(#[from] share::ShareError),
}

/// Authentication settings, validated at start-up.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Every protected route needs credentials.
    pub required: bool,
    pub oidc: Option<oidc::OidcConfig>,
    /// `/readyz` answers without credentials.
    pub readyz_public: bool,
    /// `/metrics` answers without credentials.
    pub metrics_public: bool,
    pub limits: limits::LimitsConfig,
    /// Origins allowed cross-origin requests (CORS); empty: none.
    pub cors_origins: Vec<String>,
}

/// An API key's lookup result, cached briefly.
type CachedKey = (Option<crate::index::ApiKeyRecord>, Instant);

/// How long an API key lookup is reused: a revoked key stops working on
/// every server within this time.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);

/// The authenticator, built once.
#[derive(Debug)]
pub struct Auth {
    pub config: AuthConfig,
    index: Arc<dyn Index>,
    verifier: Option<oidc::Verifier>,
    emr_token: Option<ApiToken>,
    keys: Mutex<HashMap<[u8; 32], CachedKey>>,
    share: share::ShareKeys,
    pub limits: limits::Limits,
    /// Hashes of the credentials seen (a User Authentication event the
    /// first time each is used on this server).
    seen: Mutex<std::collections::HashSet<[u8; 32]>>,
}

impl Auth {
    pub fn new(config: AuthConfig, index: Arc<dyn Index>, emr_token: Option<ApiToken>) -> Auth {
        let verifier = config.oidc.clone().map(oidc::Verifier::new);
        let limits = limits::Limits::new(config.limits.clone());
        Auth {
            limits,
            config,
            index,
            verifier,
            emr_token,
            keys: Mutex::new(HashMap::new()),
            share: share::ShareKeys::default(),
            seen: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Whether these headers carry a credential this server has not seen
    /// used before (bounded memory: forgets all after 100,000).
    pub(crate) fn first_use(&self, headers: &HeaderMap) -> bool {
        let Some(v) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let h = api_keys::hash(v.to_str().unwrap_or(""));
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        if seen.len() >= 100_000 {
            seen.clear();
        }
        seen.insert(h)
    }

    pub(crate) fn share_keys(&self) -> &share::ShareKeys {
        &self.share
    }

    /// A share token (from the `share` query parameter of a GET).
    pub(crate) async fn share_link(
        &self,
        token: &str,
        address: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        let claims = self
            .share
            .verify(self.index.as_ref(), token)
            .await
            .map_err(|e| match e {
                share::ShareError::Unavailable(_) => AuthError::Unavailable,
                other => AuthError::Share(other),
            })?;
        let mut permissions = Permissions::NONE;
        permissions.insert(Permission::Query);
        permissions.insert(Permission::Retrieve);
        Ok(Principal {
            method: Method::Share,
            name: format!("share:{}", claims.by),
            roles: Vec::new(),
            permissions,
            address,
            share: Some(claims),
        })
    }

    pub(crate) fn verifier(&self) -> Option<&oidc::Verifier> {
        self.verifier.as_ref()
    }

    /// What a caller without credentials may do: nothing when
    /// authentication is required; else everything, except changing EMR
    /// links when an EMR token guards them.
    fn without_credentials(&self, address: Option<IpAddr>) -> Principal {
        if self.config.required {
            return Principal::nobody(address);
        }
        let mut p = Permissions::all();
        if self.emr_token.is_some() {
            p.remove(Permission::EmrLinkWrite);
        }
        Principal::anonymous(address, p)
    }

    /// Who sent these headers. Credentials that are present are always
    /// checked (a wrong key is refused even where none is needed).
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        address: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(self.without_credentials(address));
        };
        let value = value.to_str().map_err(|_| AuthError::Scheme)?;
        let (scheme, credential) = value.trim().split_once(' ').ok_or(AuthError::Scheme)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Scheme);
        }
        let credential = credential.trim();
        if let Some(token) = &self.emr_token {
            if token.matches(credential) {
                let mut p = Principal::with_roles(
                    Method::EmrToken,
                    "emr".into(),
                    vec![Role::Clinician],
                    address,
                );
                if !self.config.required {
                    // Without authentication the token only adds what it guards.
                    p.permissions = Permissions::all();
                }
                return Ok(p);
            }
        }
        if credential.starts_with(share::PREFIX) {
            return self.share_link(credential, address).await;
        }
        if credential.starts_with(api_keys::PREFIX) {
            let key = self.api_key(credential).await?;
            let roles = api_keys::role_of(&key).into_iter().collect();
            return Ok(Principal::with_roles(
                Method::ApiKey,
                key.name,
                roles,
                address,
            ));
        }
        let verifier = self.verifier.as_ref().ok_or(AuthError::NoIssuer)?;
        let user = verifier.verify(credential).await?;
        Ok(Principal::with_roles(
            Method::Token,
            user.name,
            user.roles,
            address,
        ))
    }

    async fn api_key(&self, key: &str) -> Result<crate::index::ApiKeyRecord, AuthError> {
        let hash = api_keys::hash(key);
        let cached = self.keys.lock().ok().and_then(|c| {
            c.get(&hash)
                .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
                .cloned()
        });
        let found = match cached {
            Some((found, _)) => found,
            None => {
                let found = self
                    .index
                    .api_key_by_hash(&hex::encode(hash))
                    .await
                    .map_err(|e| {
                        tracing::warn!(error = %e, "API key lookup failed");
                        AuthError::Unavailable
                    })?;
                if let Ok(mut c) = self.keys.lock() {
                    if c.len() > 10_000 {
                        c.clear();
                    }
                    c.insert(hash, (found.clone(), Instant::now()));
                }
                found
            }
        };
        found.ok_or(AuthError::UnknownKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[tokio::test]
    async fn credentials_decide_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("index.db").display());
        let index = crate::index::open(&url, true).await.unwrap();
        let key = api_keys::create(index.as_ref(), "CT-ROOM-2", Role::Modality)
            .await
            .unwrap();
        assert!(api_keys::create(index.as_ref(), "CT-ROOM-2", Role::Admin)
            .await
            .is_err());
        let emr = ApiToken::new("0123456789abcdefXYZ").unwrap();

        // Without authentication: everyone may do everything but what the
        // EMR token guards.
        let open = Auth::new(AuthConfig::default(), index.clone(), Some(emr.clone()));
        let anon = open.authenticate(&HeaderMap::new(), None).await.unwrap();
        assert!(anon.may(Permission::Store) && !anon.may(Permission::EmrLinkWrite));
        let with_token = open
            .authenticate(&bearer("Bearer 0123456789abcdefXYZ"), None)
            .await
            .unwrap();
        assert!(with_token.may(Permission::EmrLinkWrite));
        // A wrong credential is refused even where none is needed.
        assert_eq!(
            open.authenticate(&bearer("Bearer phim_nope"), None)
                .await
                .unwrap_err(),
            AuthError::UnknownKey
        );

        let closed = Auth::new(
            AuthConfig {
                required: true,
                ..AuthConfig::default()
            },
            index.clone(),
            Some(emr),
        );
        let nobody = closed.authenticate(&HeaderMap::new(), None).await.unwrap();
        assert!(!nobody.authenticated() && nobody.permissions == Permissions::NONE);
        let modality = closed
            .authenticate(&bearer(&format!("Bearer {key}")), None)
            .await
            .unwrap();
        assert_eq!(
            (modality.method, modality.name.as_str()),
            (Method::ApiKey, "CT-ROOM-2")
        );
        assert!(modality.may(Permission::Store) && !modality.may(Permission::Query));
        let emr = closed
            .authenticate(&bearer("Bearer 0123456789abcdefXYZ"), None)
            .await
            .unwrap();
        assert!(emr.may(Permission::EmrLinkWrite) && !emr.may(Permission::Store));
        assert_eq!(
            closed
                .authenticate(&bearer("Basic dXNlcjpwdw=="), None)
                .await
                .unwrap_err(),
            AuthError::Scheme
        );
        assert_eq!(
            closed
                .authenticate(&bearer("Bearer a.b.c"), None)
                .await
                .unwrap_err(),
            AuthError::NoIssuer
        );
        // Revoked: refused once the cache entry has expired (here: a new
        // authenticator, as on another server).
        assert!(index.revoke_api_key("CT-ROOM-2").await.unwrap());
        let other = Auth::new(
            AuthConfig {
                required: true,
                ..AuthConfig::default()
            },
            index.clone(),
            None,
        );
        assert_eq!(
            other
                .authenticate(&bearer(&format!("Bearer {key}")), None)
                .await
                .unwrap_err(),
            AuthError::UnknownKey
        );
        // The name is free again.
        assert!(
            api_keys::create(index.as_ref(), "CT-ROOM-2", Role::Modality)
                .await
                .is_ok()
        );
    }
}
