//! The job queue: every background job of every server is a row of `jobs`
//! (migration 0007), claimed with a lease; `crate::jobs` runs them.
//!
//! - A worker claims due rows (`queued`, or `running` with a lease that ran
//!   out) in one statement; on PostgreSQL the rows are picked with
//!   `FOR UPDATE SKIP LOCKED`, so servers sharing the index take different
//!   rows without queuing behind each other's locks. On SQLite one writer
//!   at a time does the same.
//! - While it works the worker renews its leases; a server that dies stops
//!   renewing, and its jobs are due again when their leases run out.
//! - Queuing a `(kind, key)` that exists updates it and raises its
//!   generation: an outcome applies only to the generation (and owner) that
//!   claimed it, so work queued again while it ran is not lost.
//! - A job that failed `max_attempts` times (a lease that ran out counts as
//!   an attempt: a job that kills its server must not kill every server in
//!   turn) is kept as `dead` for an admin to see and retry.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::sql::{Dialect, SqlIndex};
use super::IndexError;

/// The kinds of job, each run by one handler (`crate::jobs::Handler`).
pub mod kind {
    /// A series' thumbnail (key: series UID, payload: study UID).
    pub const THUMBNAIL: &str = "thumbnail";
    /// One webhook delivery (key: its `webhook_deliveries` pk).
    pub const WEBHOOK: &str = "webhook";
    /// Periodic: the stable-study detector of the change feed.
    pub const STUDY_STABLE: &str = "study-stable";
    /// Periodic: `phim fsck --repair` in the background.
    pub const FSCK: &str = "fsck";
    /// Periodic: deletes trashed objects past `--trash-retention`.
    pub const PURGE: &str = "purge";
    /// Periodic: moves studies past their `--retention` rule to the trash.
    pub const RETENTION: &str = "retention";
    /// Every kind, for the metrics (labels from a fixed set).
    pub const ALL: &[&str] = &[THUMBNAIL, WEBHOOK, STUDY_STABLE, FSCK, PURGE, RETENTION];
}

/// A job to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob<'a> {
    pub kind: &'a str,
    /// What the job is about; one job per `(kind, key)`.
    pub key: &'a str,
    pub payload: &'a str,
    /// When it is due (ms since the epoch).
    pub run_at: i64,
    pub max_attempts: i64,
}

/// A job claimed by a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub id: i64,
    pub kind: String,
    pub key: String,
    pub payload: String,
    /// Attempts including this one.
    pub attempts: i64,
    pub max_attempts: i64,
    /// The generation claimed (outcomes apply to it only).
    pub generation: i64,
    /// Who claimed it.
    pub owner: String,
}

/// How a claimed job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    /// Done: the row goes.
    Done,
    /// Failed; due again at `at`, unless this was its last attempt (then dead).
    Retry { at: i64, error: String },
    /// Failed for good.
    Dead { error: String },
    /// A periodic job: due again at `at` (attempts start again).
    Reschedule { at: i64, error: Option<String> },
}

impl JobEnd {
    /// A periodic job's end: due again `every` from now.
    pub fn again_in(every: std::time::Duration, error: Option<String>) -> JobEnd {
        let every = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
        JobEnd::Reschedule {
            at: super::now_ms().saturating_add(every),
            error,
        }
    }
}

/// A job as `GET /api/jobs` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub id: i64,
    pub kind: String,
    pub key: String,
    /// `queued`, `running` or `dead`.
    pub state: String,
    pub run_at: i64,
    pub attempts: i64,
    pub max_attempts: i64,
    pub owner: Option<String>,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// How many jobs of a kind are in a state, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCount {
    pub kind: String,
    pub state: String,
    pub count: i64,
    /// The due time of the oldest job that is due and waiting (`queued`).
    pub oldest_due_ms: Option<i64>,
}

#[async_trait]
pub trait JobQueue {
    /// Queues a job, or queues the existing `(kind, key)` again (new
    /// payload, due time and generation; attempts start again).
    async fn enqueue_job(&self, job: &NewJob<'_>, now_ms: i64) -> Result<(), IndexError>;

    /// Queues a job unless one of its `(kind, key)` exists (periodic jobs);
    /// a queued one is brought forward to `run_at` if that is earlier (a
    /// server started with a shorter period than the one that queued it).
    async fn ensure_job(&self, job: &NewJob<'_>, now_ms: i64) -> Result<(), IndexError>;

    /// Removes a job whatever its state; `true` when there was one.
    async fn remove_job(&self, kind: &str, key: &str) -> Result<bool, IndexError>;

    /// Claims up to `limit` due jobs of these kinds for `owner`, leased
    /// until `now_ms + lease_ms`; first turns jobs whose lease ran out on
    /// their last attempt into dead ones.
    async fn claim_jobs(
        &self,
        kinds: &[&str],
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedJob>, IndexError>;

    /// Extends the leases of every job `owner` is running to `until_ms`.
    async fn renew_jobs(&self, owner: &str, now_ms: i64, until_ms: i64) -> Result<(), IndexError>;

    /// Records how a claimed job ended; `false` when the claim no longer
    /// holds (queued again meanwhile, or its lease ran out and another
    /// worker took it).
    async fn end_job(
        &self,
        job: &ClaimedJob,
        end: &JobEnd,
        now_ms: i64,
    ) -> Result<bool, IndexError>;

    /// Makes every job `owner` is running due now (a server shutting down);
    /// the attempt it had begun is not counted. How many.
    async fn release_jobs(&self, owner: &str, now_ms: i64) -> Result<u64, IndexError>;

    /// Jobs by kind and state.
    async fn job_counts(&self, now_ms: i64) -> Result<Vec<JobCount>, IndexError>;

    /// Jobs, newest first, optionally of one state and kind.
    async fn jobs(
        &self,
        state: Option<&str>,
        kind: Option<&str>,
        limit: i64,
    ) -> Result<Vec<JobRecord>, IndexError>;

    /// Queues a dead job again (attempts start again); `false` when there
    /// is no dead job with this id.
    async fn retry_job(&self, id: i64, now_ms: i64) -> Result<bool, IndexError>;
}

/// The insert of a new job, `$1`…`$6` = kind, key, payload, run_at,
/// max_attempts, now; what follows it decides what a conflict does. Also
/// used inside other transactions (webhook deliveries are queued in the
/// transaction that records their event).
pub(super) const INSERT_JOB: &str = "INSERT INTO jobs (kind, job_key, payload, state, run_at, \
     attempts, max_attempts, generation, created_at, updated_at) \
     VALUES ($1, $2, $3, 'queued', $4, 0, $5, 0, $6, $6)";

const RECORD_COLUMNS: &str = "id, kind, job_key, state, run_at, attempts, max_attempts, owner, \
     last_error, created_at, updated_at";

fn record_from_row(r: &AnyRow) -> Result<JobRecord, sqlx::Error> {
    Ok(JobRecord {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        key: r.try_get("job_key")?,
        state: r.try_get("state")?,
        run_at: r.try_get("run_at")?,
        attempts: r.try_get("attempts")?,
        max_attempts: r.try_get("max_attempts")?,
        owner: r.try_get("owner")?,
        last_error: r.try_get("last_error")?,
        created_ms: r.try_get("created_at")?,
        updated_ms: r.try_get("updated_at")?,
    })
}

/// `$first, $first+1, …` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl SqlIndex {
    async fn insert_job(
        &self,
        job: &NewJob<'_>,
        now_ms: i64,
        on_conflict: &str,
    ) -> Result<(), IndexError> {
        let _writer = self.writer().await;
        sqlx::query(&format!("{INSERT_JOB} {on_conflict}"))
            .bind(job.kind)
            .bind(job.key)
            .bind(job.payload)
            .bind(job.run_at)
            .bind(job.max_attempts)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl JobQueue for SqlIndex {
    async fn enqueue_job(&self, job: &NewJob<'_>, now_ms: i64) -> Result<(), IndexError> {
        self.insert_job(
            job,
            now_ms,
            "ON CONFLICT (kind, job_key) DO UPDATE SET payload = excluded.payload, \
             state = 'queued', run_at = excluded.run_at, attempts = 0, \
             max_attempts = excluded.max_attempts, generation = jobs.generation + 1, \
             owner = NULL, last_error = NULL, updated_at = excluded.updated_at",
        )
        .await
    }

    async fn ensure_job(&self, job: &NewJob<'_>, now_ms: i64) -> Result<(), IndexError> {
        let earliest = match self.dialect {
            Dialect::Postgres => "LEAST",
            Dialect::Sqlite => "MIN",
        };
        let conflict = format!(
            "ON CONFLICT (kind, job_key) DO UPDATE SET \
             run_at = {earliest}(jobs.run_at, excluded.run_at) WHERE jobs.state = 'queued'"
        );
        self.insert_job(job, now_ms, &conflict).await
    }

    async fn remove_job(&self, kind: &str, key: &str) -> Result<bool, IndexError> {
        let _writer = self.writer().await;
        let done = sqlx::query("DELETE FROM jobs WHERE kind = $1 AND job_key = $2")
            .bind(kind)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn claim_jobs(
        &self,
        kinds: &[&str],
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedJob>, IndexError> {
        if kinds.is_empty() || limit <= 0 {
            return Ok(Vec::new());
        }
        let _writer = self.writer().await;
        sqlx::query(
            "UPDATE jobs SET state = 'dead', owner = NULL, updated_at = $1, \
             last_error = 'lease ran out on attempt ' || CAST(attempts AS TEXT) || \
             ' of ' || CAST(max_attempts AS TEXT) || ': the server running it stopped' \
             WHERE state = 'running' AND run_at <= $1 AND attempts >= max_attempts",
        )
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        // PostgreSQL: the rows are locked as they are picked and rows other
        // servers hold are skipped, so concurrent claims take different
        // jobs; the outer conditions repeat the inner ones for SQLite, where
        // the writer lock serialises claims instead.
        let lock = match self.dialect {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let kinds_in = placeholders(5, kinds.len());
        let text = format!(
            "UPDATE jobs SET state = 'running', owner = $2, run_at = $3, \
             attempts = attempts + 1, updated_at = $1 \
             WHERE state IN ('queued', 'running') AND run_at <= $1 AND id IN \
             (SELECT id FROM jobs WHERE state IN ('queued', 'running') AND run_at <= $1 \
              AND kind IN ({kinds_in}) ORDER BY run_at, id LIMIT $4{lock}) \
             RETURNING id, kind, job_key, payload, attempts, max_attempts, generation"
        );
        let mut query = sqlx::query(&text)
            .bind(now_ms)
            .bind(owner)
            .bind(now_ms.saturating_add(lease_ms))
            .bind(limit);
        for k in kinds {
            query = query.bind(*k);
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(ClaimedJob {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                key: r.try_get("job_key")?,
                payload: r.try_get("payload")?,
                attempts: r.try_get("attempts")?,
                max_attempts: r.try_get("max_attempts")?,
                generation: r.try_get("generation")?,
                owner: owner.to_owned(),
            });
        }
        out.sort_by_key(|j| j.id);
        Ok(out)
    }

    async fn renew_jobs(&self, owner: &str, now_ms: i64, until_ms: i64) -> Result<(), IndexError> {
        let _writer = self.writer().await;
        sqlx::query(
            "UPDATE jobs SET run_at = $3, updated_at = $2 WHERE owner = $1 AND state = 'running'",
        )
        .bind(owner)
        .bind(now_ms)
        .bind(until_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn end_job(
        &self,
        job: &ClaimedJob,
        end: &JobEnd,
        now_ms: i64,
    ) -> Result<bool, IndexError> {
        // The claim: this generation, this owner, still running ($1…$3).
        const CLAIM: &str = "id = $1 AND generation = $2 AND owner = $3 AND state = 'running'";
        let text = match end {
            JobEnd::Done => format!("DELETE FROM jobs WHERE {CLAIM}"),
            JobEnd::Retry { .. } => format!(
                "UPDATE jobs SET state = CASE WHEN attempts >= max_attempts THEN 'dead' \
                 ELSE 'queued' END, run_at = $4, last_error = $5, owner = NULL, \
                 updated_at = $6 WHERE {CLAIM}"
            ),
            JobEnd::Dead { .. } => format!(
                "UPDATE jobs SET state = 'dead', last_error = $4, owner = NULL, \
                 updated_at = $5 WHERE {CLAIM}"
            ),
            JobEnd::Reschedule { .. } => format!(
                "UPDATE jobs SET state = 'queued', run_at = $4, last_error = $5, attempts = 0, \
                 owner = NULL, updated_at = $6 WHERE {CLAIM}"
            ),
        };
        let mut query = sqlx::query(&text)
            .bind(job.id)
            .bind(job.generation)
            .bind(job.owner.as_str());
        query = match end {
            JobEnd::Done => query,
            JobEnd::Retry { at, error } => query.bind(*at).bind(error.as_str()).bind(now_ms),
            JobEnd::Dead { error } => query.bind(error.as_str()).bind(now_ms),
            JobEnd::Reschedule { at, error } => query.bind(*at).bind(error.as_deref()).bind(now_ms),
        };
        let _writer = self.writer().await;
        let done = query.execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_jobs(&self, owner: &str, now_ms: i64) -> Result<u64, IndexError> {
        let _writer = self.writer().await;
        let done = sqlx::query(
            "UPDATE jobs SET state = 'queued', run_at = $2, owner = NULL, updated_at = $2, \
             attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END \
             WHERE owner = $1 AND state = 'running'",
        )
        .bind(owner)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn job_counts(&self, now_ms: i64) -> Result<Vec<JobCount>, IndexError> {
        let rows = sqlx::query(
            "SELECT kind, state, COUNT(*) AS n, \
             MIN(CASE WHEN state = 'queued' AND run_at <= $1 THEN run_at END) AS oldest \
             FROM jobs GROUP BY kind, state ORDER BY kind, state",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(JobCount {
                kind: r.try_get("kind")?,
                state: r.try_get("state")?,
                count: r.try_get("n")?,
                oldest_due_ms: r.try_get("oldest")?,
            });
        }
        Ok(out)
    }

    async fn jobs(
        &self,
        state: Option<&str>,
        kind: Option<&str>,
        limit: i64,
    ) -> Result<Vec<JobRecord>, IndexError> {
        let mut conditions = Vec::new();
        let mut n = 1;
        for (column, value) in [("state", state), ("kind", kind)] {
            if value.is_some() {
                conditions.push(format!("{column} = ${n}"));
                n += 1;
            }
        }
        let where_ = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let text =
            format!("SELECT {RECORD_COLUMNS} FROM jobs {where_} ORDER BY id DESC LIMIT ${n}");
        let mut query = sqlx::query(&text);
        for v in [state, kind].into_iter().flatten() {
            query = query.bind(v);
        }
        let rows = query.bind(limit).fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(record_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    async fn retry_job(&self, id: i64, now_ms: i64) -> Result<bool, IndexError> {
        let _writer = self.writer().await;
        let done = sqlx::query(
            "UPDATE jobs SET state = 'queued', run_at = $2, attempts = 0, owner = NULL, \
             updated_at = $2 WHERE id = $1 AND state = 'dead'",
        )
        .bind(id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
