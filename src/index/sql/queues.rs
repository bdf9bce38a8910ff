//! The thumbnail queue: series due for a thumbnail, leased to one worker.

use async_trait::async_trait;
use sqlx::Row;

use super::super::{IndexError, ThumbnailJob, ThumbnailQueue};
use super::SqlIndex;

#[async_trait]
impl ThumbnailQueue for SqlIndex {
    async fn queue_thumbnail(
        &self,
        study: &str,
        series: &str,
        due_at: i64,
    ) -> Result<(), IndexError> {
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO thumbnail_queue (series_uid, study_uid, due_at, attempts) \
             VALUES ($1, $2, $3, 0) \
             ON CONFLICT (series_uid) DO UPDATE SET due_at = excluded.due_at, attempts = 0",
        )
        .bind(series)
        .bind(study)
        .bind(due_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
    async fn claim_thumbnails(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<ThumbnailJob>, IndexError> {
        let _writer = self.writer().await;
        // One statement: a row is claimed by exactly one worker, also across
        // servers on one PostgreSQL (the row lock serialises the UPDATEs and
        // the loser's re-check of `due_at <= $1` fails).
        let rows = sqlx::query(
            "UPDATE thumbnail_queue SET due_at = $2, attempts = attempts + 1 \
             WHERE due_at <= $1 AND series_uid IN \
               (SELECT series_uid FROM thumbnail_queue WHERE due_at <= $1 ORDER BY due_at LIMIT $3) \
             RETURNING study_uid, series_uid, due_at, CAST(attempts AS BIGINT) AS attempts",
        )
        .bind(now)
        .bind(now + lease_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(ThumbnailJob {
                study_uid: r.try_get("study_uid")?,
                series_uid: r.try_get("series_uid")?,
                due_at: r.try_get("due_at")?,
                attempts: r.try_get("attempts")?,
            });
        }
        Ok(out)
    }
    async fn finish_thumbnail(&self, series: &str, claimed_due_at: i64) -> Result<(), IndexError> {
        let _writer = self.writer().await;
        sqlx::query("DELETE FROM thumbnail_queue WHERE series_uid = $1 AND due_at = $2")
            .bind(series)
            .bind(claimed_due_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
