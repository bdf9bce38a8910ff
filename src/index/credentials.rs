//! API keys (`phim api-key`): names, roles and the SHA-256 of each key.

use async_trait::async_trait;
use sqlx::Row;

use super::sql::SqlIndex;
use super::{now_ms, IndexError};

/// An API key as the index keeps it (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub name: String,
    /// A role name (see `auth::policy::Role`).
    pub role: String,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

#[async_trait]
pub trait Credentials {
    /// Adds a key; `false` when a live key has this name.
    async fn create_api_key(
        &self,
        name: &str,
        role: &str,
        sha256_hex: &str,
    ) -> Result<bool, IndexError>;

    /// Every key, live and revoked, oldest first.
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, IndexError>;

    /// Revokes the live key of that name; `false` when there is none.
    async fn revoke_api_key(&self, name: &str) -> Result<bool, IndexError>;

    /// The live key with this hash.
    async fn api_key_by_hash(&self, sha256_hex: &str) -> Result<Option<ApiKeyRecord>, IndexError>;

    /// Share-link signing keys, (kid, secret hex, created ms), oldest first.
    async fn share_keys(&self) -> Result<Vec<(String, String, i64)>, IndexError>;

    async fn add_share_key(
        &self,
        kid: &str,
        secret_hex: &str,
        created_ms: i64,
    ) -> Result<(), IndexError>;

    /// Removes signing keys made before `before_ms`, except `keep`.
    async fn prune_share_keys(&self, before_ms: i64, keep: &str) -> Result<u64, IndexError>;
}

fn record(r: &sqlx::any::AnyRow) -> Result<ApiKeyRecord, IndexError> {
    Ok(ApiKeyRecord {
        name: r.try_get("name")?,
        role: r.try_get("role")?,
        created_ms: r.try_get("created_at")?,
        revoked_ms: r.try_get("revoked_at")?,
    })
}

#[async_trait]
impl Credentials for SqlIndex {
    async fn create_api_key(
        &self,
        name: &str,
        role: &str,
        sha256_hex: &str,
    ) -> Result<bool, IndexError> {
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;
        let live: Option<i64> =
            sqlx::query("SELECT pk FROM api_keys WHERE name = $1 AND revoked_at IS NULL")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("pk"))
                .transpose()?;
        if live.is_some() {
            return Ok(false);
        }
        let done = sqlx::query(
            "INSERT INTO api_keys (name, role, key_sha256, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(name)
        .bind(role)
        .bind(sha256_hex)
        .bind(now_ms())
        .execute(&mut *tx)
        .await;
        match done {
            Ok(_) => {
                tx.commit().await?;
                Ok(true)
            }
            // A concurrent create of the same name lost the race.
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, IndexError> {
        sqlx::query("SELECT name, role, created_at, revoked_at FROM api_keys ORDER BY pk")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(record)
            .collect()
    }

    async fn revoke_api_key(&self, name: &str) -> Result<bool, IndexError> {
        let _writer = self.writer().await;
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
        )
        .bind(name)
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done > 0)
    }

    async fn api_key_by_hash(&self, sha256_hex: &str) -> Result<Option<ApiKeyRecord>, IndexError> {
        sqlx::query(
            "SELECT name, role, created_at, revoked_at FROM api_keys \
             WHERE key_sha256 = $1 AND revoked_at IS NULL",
        )
        .bind(sha256_hex)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(record)
        .transpose()
    }

    async fn share_keys(&self) -> Result<Vec<(String, String, i64)>, IndexError> {
        let rows =
            sqlx::query("SELECT kid, secret, created_at FROM share_keys ORDER BY created_at, kid")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("kid")?,
                    r.try_get("secret")?,
                    r.try_get("created_at")?,
                ))
            })
            .collect()
    }

    async fn add_share_key(
        &self,
        kid: &str,
        secret_hex: &str,
        created_ms: i64,
    ) -> Result<(), IndexError> {
        let _writer = self.writer().await;
        sqlx::query("INSERT INTO share_keys (kid, secret, created_at) VALUES ($1, $2, $3)")
            .bind(kid)
            .bind(secret_hex)
            .bind(created_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn prune_share_keys(&self, before_ms: i64, keep: &str) -> Result<u64, IndexError> {
        let _writer = self.writer().await;
        Ok(
            sqlx::query("DELETE FROM share_keys WHERE created_at < $1 AND kid <> $2")
                .bind(before_ms)
                .bind(keep)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}
