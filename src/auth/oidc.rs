//! OpenID Connect access tokens (RFC 9068 JWTs) from the hospital's
//! identity provider: discovery (`ISSUER/.well-known/openid-configuration`,
//! OpenID Connect Discovery 1.0 §4), the provider's JWKS cached and
//! fetched again when a token names a key we do not have (key rotation),
//! RS256 and ES256 only, and `iss`, `aud`, `exp`, `nbf` checked with a
//! small clock skew.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::policy::Role;
use super::AuthError;

/// The identity provider, as configured.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// `iss` of every accepted token, and where discovery starts.
    pub issuer: String,
    /// `aud` every accepted token must name.
    pub(crate) audience: String,
    /// Claim holding the roles (a dotted path: `roles`,
    /// `realm_access.roles`); Keycloak's `realm_access.roles` is read too.
    pub(crate) roles_claim: String,
    /// The viewer's public client (authorization code + PKCE).
    pub(crate) client_id: Option<String>,
    /// Allowed clock difference for `exp` and `nbf`.
    pub(crate) leeway: Duration,
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub name: String,
    pub(crate) roles: Vec<Role>,
}

#[derive(Default)]
struct Keys {
    jwks_uri: Option<String>,
    by_kid: HashMap<String, (Algorithm, DecodingKey)>,
    /// Keys without a `kid` (a provider with one key).
    anonymous: Vec<(Algorithm, DecodingKey)>,
    fetched: Option<Instant>,
}

/// Key sets are fetched again at most this often on unknown `kid`s (a
/// flood of forged tokens must not become a flood of requests).
const MIN_REFRESH: Duration = Duration::from_secs(5);
/// And at least this often, so removed keys stop being trusted.
const MAX_AGE: Duration = Duration::from_secs(3600);

pub(crate) struct Verifier {
    config: OidcConfig,
    http: reqwest::Client,
    keys: tokio::sync::RwLock<Keys>,
    refresh: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub(crate) fn new(config: OidcConfig) -> Verifier {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Verifier {
            config,
            http,
            keys: tokio::sync::RwLock::new(Keys::default()),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// Fetches the discovery document and the keys (start-up calls it so
    /// that a wrong issuer shows in the log at once).
    pub(crate) async fn refresh_keys(&self) -> Result<usize, String> {
        let _one = self.refresh.lock().await;
        self.fetch().await
    }

    async fn fetch(&self) -> Result<usize, String> {
        let jwks_uri = match self.keys.read().await.jwks_uri.clone() {
            Some(u) => u,
            None => self.discover().await?,
        };
        let set: JwkSet = self.get_json("JWKS", &jwks_uri).await?;
        let mut keys = Keys {
            jwks_uri: Some(jwks_uri),
            fetched: Some(Instant::now()),
            ..Keys::default()
        };
        for jwk in &set.keys {
            if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
                continue;
            }
            let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                    if ec.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => continue,
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.by_kid.insert(kid.clone(), (alg, key));
                }
                None => keys.anonymous.push((alg, key)),
            }
        }
        let n = keys.by_kid.len() + keys.anonymous.len();
        *self.keys.write().await = keys;
        Ok(n)
    }

    /// A JSON document of the identity provider (at most 1 MiB).
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        url: &str,
    ) -> Result<T, String> {
        let fail = |e: &dyn std::fmt::Display| format!("{what} {url}: {e}");
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| fail(&e))?;
        if resp.content_length().is_some_and(|n| n > 1 << 20) {
            return Err(fail(&"larger than 1 MiB"));
        }
        let body = resp.bytes().await.map_err(|e| fail(&e))?;
        if body.len() > 1 << 20 {
            return Err(fail(&"larger than 1 MiB"));
        }
        serde_json::from_slice(&body).map_err(|e| fail(&e))
    }

    async fn discover(&self) -> Result<String, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let doc: serde_json::Value = self.get_json("discovery", &url).await?;
        // OpenID Connect Discovery §4.3: the document's issuer must be the
        // one we asked.
        if doc.get("issuer").and_then(|v| v.as_str()) != Some(self.config.issuer.as_str()) {
            return Err(format!(
                "discovery {url}: the document names another issuer ({})",
                doc.get("issuer").and_then(|v| v.as_str()).unwrap_or("none")
            ));
        }
        doc.get("jwks_uri")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("discovery {url}: no jwks_uri"))
    }

    /// The key for a token header, fetching the key set again when the
    /// `kid` is unknown (rotation) or the set is old.
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, AuthError> {
        let pick = |keys: &Keys| -> Option<DecodingKey> {
            let found = match kid {
                Some(k) => keys.by_kid.get(k).cloned(),
                None => keys.anonymous.iter().find(|(a, _)| *a == alg).cloned(),
            };
            found.filter(|(a, _)| *a == alg).map(|(_, k)| k)
        };
        {
            let keys = self.keys.read().await;
            let fresh = keys.fetched.is_some_and(|t| t.elapsed() < MAX_AGE);
            if fresh {
                if let Some(k) = pick(&keys) {
                    return Ok(k);
                }
            }
        }
        let _one = self.refresh.lock().await;
        {
            let keys = self.keys.read().await;
            let recent = keys.fetched.is_some_and(|t| t.elapsed() < MIN_REFRESH);
            if let Some(k) =
                pick(&keys).filter(|_| keys.fetched.is_some_and(|t| t.elapsed() < MAX_AGE))
            {
                return Ok(k);
            }
            if recent {
                return Err(AuthError::Token(
                    "signed with a key the issuer does not publish".into(),
                ));
            }
        }
        if let Err(e) = self.fetch().await {
            tracing::warn!(error = %e, "identity provider keys could not be fetched");
            return Err(AuthError::Unavailable);
        }
        pick(&*self.keys.read().await)
            .ok_or_else(|| AuthError::Token("signed with a key the issuer does not publish".into()))
    }

    /// Checks an access token and reads who it names.
    pub(crate) async fn verify(&self, token: &str) -> Result<User, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Token("not a signed JWT".into()))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthError::Token(format!(
                "algorithm {:?} is not accepted (RS256, ES256)",
                header.alg
            )));
        }
        let key = self.key(header.kid.as_deref(), header.alg).await?;
        let claims = self.validate(token, header.alg, &key)?;
        Ok(self.user(&claims))
    }

    fn validate(
        &self,
        token: &str,
        alg: Algorithm,
        key: &DecodingKey,
    ) -> Result<serde_json::Value, AuthError> {
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.set_issuer(&[&self.config.issuer]);
        v.set_audience(&[&self.config.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.validate_nbf = true;
        v.leeway = self.config.leeway.as_secs();
        jsonwebtoken::decode::<serde_json::Value>(token, key, &v)
            .map(|d| d.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                AuthError::Token(
                    match e.kind() {
                        K::ExpiredSignature => "expired",
                        K::ImmatureSignature => "not valid yet (nbf)",
                        K::InvalidAudience => "issued for another audience",
                        K::InvalidIssuer => "issued by another issuer",
                        K::InvalidSignature => "bad signature",
                        K::MissingRequiredClaim(_) => "a required claim (exp, iss, aud) is missing",
                        _ => "malformed",
                    }
                    .into(),
                )
            })
    }

    fn user(&self, claims: &serde_json::Value) -> User {
        let mut roles = Vec::new();
        let mut take = |v: Option<&serde_json::Value>| {
            let names: Vec<&str> = match v {
                Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_str()).collect(),
                Some(serde_json::Value::String(s)) => s.split([' ', ',']).collect(),
                _ => Vec::new(),
            };
            for r in names.into_iter().filter_map(Role::parse) {
                if !roles.contains(&r) {
                    roles.push(r);
                }
            }
        };
        take(claim_path(claims, &self.config.roles_claim));
        take(claim_path(claims, "realm_access.roles"));
        roles.sort();
        let name = ["preferred_username", "sub", "client_id", "azp"]
            .iter()
            .find_map(|k| claims.get(*k).and_then(|v| v.as_str()))
            .unwrap_or("unknown")
            .chars()
            .filter(|c| !c.is_control())
            .take(128)
            .collect();
        User { name, roles }
    }
}

/// The value at a dotted claim path (`realm_access.roles`).
fn claim_path<'a>(claims: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.')
        .filter(|s| !s.is_empty())
        .try_fold(claims, |v, k| v.get(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};

    /// An in-process ES256 key pair (unit tests only; the Python suite
    /// uses a real OpenID provider).
    fn keypair() -> (EncodingKey, DecodingKey) {
        use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let public = pair.public_key().as_ref().to_vec(); // 04 || X || Y
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let dec =
            DecodingKey::from_ec_components(&b64(&public[1..33]), &b64(&public[33..65])).unwrap();
        (EncodingKey::from_ec_der(pkcs8.as_ref()), dec)
    }

    fn verifier() -> Verifier {
        Verifier::new(OidcConfig {
            issuer: "http://idp.test".into(),
            audience: "urn:phim:api".into(),
            roles_claim: "roles".into(),
            client_id: None,
            leeway: Duration::from_secs(30),
        })
    }

    fn token(enc: &EncodingKey, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, enc).unwrap()
    }

    #[test]
    fn claims_are_checked() {
        let (enc, dec) = keypair();
        let v = verifier();
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let good = serde_json::json!({"iss": "http://idp.test", "aud": "urn:phim:api",
            "exp": now + 300, "sub": "u1", "preferred_username": "alice", "roles": ["radiologist", "nonsense"]});
        let claims = v
            .validate(&token(&enc, good.clone()), Algorithm::ES256, &dec)
            .unwrap();
        assert_eq!(
            v.user(&claims),
            User {
                name: "alice".into(),
                roles: vec![Role::Radiologist]
            }
        );
        let with = |k: &str, val: serde_json::Value| {
            let mut c = good.clone();
            c[k] = val;
            v.validate(&token(&enc, c), Algorithm::ES256, &dec)
                .unwrap_err()
        };
        let msg = |e: AuthError| e.to_string();
        assert!(msg(with("exp", (now - 60).into())).contains("expired"));
        // Within the leeway: accepted.
        let mut c = good.clone();
        c["exp"] = (now - 10).into();
        assert!(v.validate(&token(&enc, c), Algorithm::ES256, &dec).is_ok());
        assert!(msg(with("nbf", (now + 120).into())).contains("nbf"));
        assert!(msg(with("aud", "urn:other".into())).contains("audience"));
        assert!(msg(with("iss", "http://evil.test".into())).contains("issuer"));
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove("exp");
        assert!(msg(v
            .validate(&token(&enc, c), Algorithm::ES256, &dec)
            .unwrap_err())
        .contains("missing"));
        // Another key's signature.
        let (other, _) = keypair();
        assert!(msg(v
            .validate(&token(&other, good.clone()), Algorithm::ES256, &dec)
            .unwrap_err())
        .contains("signature"));
    }

    #[test]
    fn roles_from_keycloak_and_dotted_claims() {
        let mut v = verifier();
        let kc = serde_json::json!({"sub": "s", "realm_access": {"roles": ["clinician", "offline_access"]}});
        assert_eq!(v.user(&kc).roles, vec![Role::Clinician]);
        v.config.roles_claim = "groups".into();
        let g = serde_json::json!({"sub": "s", "groups": "admin auditor"});
        assert_eq!(v.user(&g).roles, vec![Role::Admin, Role::Auditor]);
        assert_eq!(v.user(&g).name, "s");
    }

    #[tokio::test]
    async fn unsigned_and_foreign_algorithms_are_refused() {
        let v = verifier();
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(r#"{"sub":"x"}"#)
        );
        assert!(matches!(v.verify(&none).await, Err(AuthError::Token(_))));
        let hs = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"HS256"}"#),
            b64(r#"{"sub":"x"}"#)
        );
        assert!(v
            .verify(&hs)
            .await
            .unwrap_err()
            .to_string()
            .contains("HS256"));
        assert!(matches!(
            v.verify("garbage").await,
            Err(AuthError::Token(_))
        ));
    }
}
