//! Retention's SQL (the interface: `index/retention.rs`).

use async_trait::async_trait;
use sqlx::Row;

use super::super::retention::{Retention, RetentionRow};
use super::super::IndexError;
use super::SqlIndex;

#[async_trait]
impl Retention for SqlIndex {
    async fn retention_page(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<RetentionRow>, IndexError> {
        let sql = format!(
            "SELECT st.pk, st.study_uid, st.study_date, st.created_at, st.patient_id, \
             st.accession_number, {} AS modalities, \
             CAST(CASE WHEN h.study_uid IS NULL THEN 0 ELSE 1 END AS BIGINT) AS held \
             FROM studies st LEFT JOIN series se ON se.study_pk = st.pk \
             LEFT JOIN retention_holds h ON h.study_uid = st.study_uid \
             WHERE st.pk > $1 GROUP BY st.pk, st.study_uid, st.study_date, st.created_at, \
             st.patient_id, st.accession_number, h.study_uid ORDER BY st.pk LIMIT $2",
            self.dialect.distinct_list("se.modality")
        );
        let rows = sqlx::query(&sql)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let modalities: Option<String> = r.try_get("modalities")?;
                Ok(RetentionRow {
                    pk: r.try_get("pk")?,
                    study_uid: r.try_get("study_uid")?,
                    study_date: r.try_get("study_date")?,
                    created_at_ms: r.try_get("created_at")?,
                    patient_id: r.try_get("patient_id")?,
                    accession_number: r.try_get("accession_number")?,
                    modalities: modalities
                        .unwrap_or_default()
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    held: r.try_get::<i64, _>("held")? != 0,
                })
            })
            .collect()
    }

    async fn set_hold(
        &self,
        study_uid: &str,
        hold: bool,
        by: &str,
        now_ms: i64,
    ) -> Result<bool, IndexError> {
        let _writer = self.writer().await;
        let done = if hold {
            sqlx::query(
                "INSERT INTO retention_holds (study_uid, set_by, set_at) \
                 SELECT study_uid, $2, $3 FROM studies WHERE study_uid = $1 \
                 ON CONFLICT (study_uid) DO UPDATE SET set_by = excluded.set_by, \
                 set_at = excluded.set_at",
            )
            .bind(study_uid)
            .bind(by)
            .bind(now_ms)
            .execute(&self.pool)
            .await?
        } else {
            sqlx::query("DELETE FROM retention_holds WHERE study_uid = $1")
                .bind(study_uid)
                .execute(&self.pool)
                .await?
        };
        Ok(done.rows_affected() > 0)
    }
}
