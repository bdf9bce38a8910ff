//! API keys for machines (modalities, the EMR, scripts): `phim api-key
//! create|list|revoke`. A key is 256 random bits, shown once; the index
//! keeps only its SHA-256 (a random 256-bit secret needs no slow hash:
//! there is nothing to guess from it).

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::policy::Role;
use crate::index::{ApiKeyRecord, Index};

/// Every key starts with this, so that a key is told from a JWT at a
/// glance (and secret scanners can find leaked ones).
pub(crate) const PREFIX: &str = "phim_";

/// A new random key: `phim_` + 43 base64url characters (32 bytes).
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The SHA-256 of a key, as kept in the index.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A key's role, as stored (`None`: the row names a role this version
/// does not know, and the key grants nothing).
pub(crate) fn role_of(record: &ApiKeyRecord) -> Option<Role> {
    Role::parse(&record.role)
}

/// Checks a key name: 1-64 characters of letters, digits, `-`, `_`, `.`.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// `phim api-key create`: the new key, to print once.
pub async fn create(index: &dyn Index, name: &str, role: Role) -> Result<String, String> {
    if !valid_name(name) {
        return Err(format!(
            "'{name}' is not a valid key name (1-64 letters, digits, '-', '_', '.')"
        ));
    }
    let key = generate();
    let created = index
        .create_api_key(name, role.as_str(), &hex::encode(hash(&key)))
        .await
        .map_err(|e| e.to_string())?;
    if !created {
        return Err(format!(
            "an API key named '{name}' exists already (revoke it first)"
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hashed() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX));
        assert_eq!(a.len(), PREFIX.len() + 43);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
    }

    #[test]
    fn names() {
        assert!(valid_name("CT-ROOM-2"));
        assert!(valid_name("emr.prod_1"));
        for bad in ["", "has space", "ü", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
