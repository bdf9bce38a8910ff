//! The audit trail's table: append-only, each row chained to the one
//! before by a SHA-256 (see [`chain_hash`]), written in batches under one
//! lock so that several servers on one PostgreSQL keep one chain.

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::sql::{Dialect, SqlIndex};
use super::IndexError;

/// An audit event to append (the audit module builds `body`, the event
/// as JSON; the other columns are for searching).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub(crate) time_ms: i64,
    pub(crate) event_id: i64,
    pub outcome: i64,
    pub(crate) actor: String,
    pub patient_id: Option<String>,
    /// Study Instance UIDs, comma-separated.
    pub(crate) study_uids: String,
    pub body: String,
}

/// An appended audit event with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAuditRecord {
    pub seq: i64,
    pub record: AuditRecord,
    pub(crate) prev_hash: String,
    pub hash: String,
}

/// What an audit search asks for (FHIR `AuditEvent` search).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub patient_id: Option<String>,
    pub study_uid: Option<String>,
    pub(crate) since_ms: Option<i64>,
    pub(crate) until_ms: Option<i64>,
    pub limit: i64,
}

/// The hash before the first row.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A row's hash: SHA-256 over the previous row's hash, its sequence
/// number, its time and its body (which holds every other column).
pub(crate) fn chain_hash(prev_hash: &str, seq: i64, time_ms: i64, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(time_ms.to_string().as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    hex::encode(h.finalize())
}

/// Rows one INSERT writes at most (10 parameters each: well under
/// SQLite's and PostgreSQL's limits).
const APPEND_CHUNK: usize = 100;

/// PostgreSQL advisory lock key of the audit chain ("PHIMAUDT").
const CHAIN_LOCK: i64 = 0x5048_494d_4155_4454;

#[async_trait]
pub trait AuditLog {
    /// Appends the records, in order, to the chain.
    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), IndexError>;

    /// Up to `limit` rows after `after_seq`, in chain order.
    async fn audit_rows(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<StoredAuditRecord>, IndexError>;

    /// Newest first.
    async fn search_audit(&self, f: &AuditFilter) -> Result<Vec<StoredAuditRecord>, IndexError>;

    /// (study UID, patient ID) of those of `studies` that are indexed
    /// with a patient ID.
    async fn study_patients(&self, studies: &[String])
        -> Result<Vec<(String, String)>, IndexError>;
}

fn stored(r: &sqlx::any::AnyRow) -> Result<StoredAuditRecord, IndexError> {
    Ok(StoredAuditRecord {
        seq: r.try_get("seq")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
        record: AuditRecord {
            time_ms: r.try_get("time_ms")?,
            event_id: r.try_get("event_id")?,
            outcome: r.try_get("outcome")?,
            actor: r.try_get("actor")?,
            patient_id: r.try_get("patient_id")?,
            study_uids: r.try_get("study_uids")?,
            body: r.try_get("body")?,
        },
    })
}

const COLUMNS: &str =
    "seq, time_ms, event_id, outcome, actor, patient_id, study_uids, body, prev_hash, hash";

#[async_trait]
impl AuditLog for SqlIndex {
    async fn append_audit(&self, records: &[AuditRecord]) -> Result<(), IndexError> {
        if records.is_empty() {
            return Ok(());
        }
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;
        if self.dialect == Dialect::Postgres {
            // One chain across servers: appends take turns.
            sqlx::query("SELECT pg_advisory_xact_lock($1)::text AS locked")
                .bind(CHAIN_LOCK)
                .fetch_one(&mut *tx)
                .await?;
        }
        let last = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (mut seq, mut prev) = match last {
            Some(r) => (r.try_get::<i64, _>("seq")?, r.try_get::<String, _>("hash")?),
            None => (0, GENESIS.to_owned()),
        };
        // Many rows a statement: one round trip per chunk, not per event.
        for chunk in records.chunks(APPEND_CHUNK) {
            let mut rows = Vec::with_capacity(chunk.len());
            for rec in chunk {
                seq += 1;
                let hash = chain_hash(&prev, seq, rec.time_ms, &rec.body);
                rows.push((seq, rec, std::mem::replace(&mut prev, hash.clone()), hash));
            }
            let values: Vec<String> = (0..rows.len())
                .map(|i| {
                    let p: Vec<String> = (1..=10).map(|j| format!("${}", i * 10 + j)).collect();
                    format!("({})", p.join(", "))
                })
                .collect();
            let text = format!(
                "INSERT INTO audit_log (seq, time_ms, event_id, outcome, actor, patient_id, \
                 study_uids, body, prev_hash, hash) VALUES {}",
                values.join(", ")
            );
            let mut q = sqlx::query(&text);
            for (seq, rec, prev_hash, hash) in rows {
                q = q
                    .bind(seq)
                    .bind(rec.time_ms)
                    .bind(rec.event_id)
                    .bind(rec.outcome)
                    .bind(rec.actor.clone())
                    .bind(rec.patient_id.clone())
                    .bind(rec.study_uids.clone())
                    .bind(rec.body.clone())
                    .bind(prev_hash)
                    .bind(hash);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn audit_rows(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<StoredAuditRecord>, IndexError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(stored)
        .collect()
    }

    async fn search_audit(&self, f: &AuditFilter) -> Result<Vec<StoredAuditRecord>, IndexError> {
        let mut wheres = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if f.patient_id.is_some() {
            wheres.push(format!("patient_id = {}", next()));
        }
        if f.study_uid.is_some() {
            // Comma-separated UIDs: match one whole element.
            wheres.push(format!("(',' || study_uids || ',') LIKE {}", next()));
        }
        if f.since_ms.is_some() {
            wheres.push(format!("time_ms >= {}", next()));
        }
        if f.until_ms.is_some() {
            wheres.push(format!("time_ms < {}", next()));
        }
        let limit = next();
        let text = format!(
            "SELECT {COLUMNS} FROM audit_log {} ORDER BY seq DESC LIMIT {limit}",
            if wheres.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", wheres.join(" AND "))
            }
        );
        let mut q = sqlx::query(&text);
        if let Some(p) = &f.patient_id {
            q = q.bind(p);
        }
        if let Some(s) = &f.study_uid {
            // UIDs hold only digits and dots: no LIKE metacharacters.
            q = q.bind(format!("%,{s},%"));
        }
        if let Some(t) = f.since_ms {
            q = q.bind(t);
        }
        if let Some(t) = f.until_ms {
            q = q.bind(t);
        }
        q.bind(f.limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(stored)
            .collect()
    }

    async fn study_patients(
        &self,
        studies: &[String],
    ) -> Result<Vec<(String, String)>, IndexError> {
        if studies.is_empty() {
            return Ok(Vec::new());
        }
        let ps: Vec<String> = (1..=studies.len()).map(|i| format!("${i}")).collect();
        let text = format!(
            "SELECT study_uid, patient_id FROM studies \
             WHERE patient_id IS NOT NULL AND study_uid IN ({})",
            ps.join(", ")
        );
        let mut q = sqlx::query(&text);
        for s in studies {
            q = q.bind(s);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok((r.try_get("study_uid")?, r.try_get("patient_id")?)))
            .collect()
    }
}
