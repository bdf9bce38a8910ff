//! Each study's link to its EMR record.

use async_trait::async_trait;
use sqlx::Row;

use super::super::{now_ms, EmrLink, EmrLinks, IndexError};
use super::builder::Sql;
use super::SqlIndex;
use crate::dicom::Uid;

#[async_trait]
impl EmrLinks for SqlIndex {
    async fn put_emr_link(&self, study: &Uid, link: &EmrLink) -> Result<bool, IndexError> {
        let _writer = self.writer().await;
        let done = sqlx::query(
            "INSERT INTO emr_links (study_pk, record_id, url, updated_at) \
             SELECT pk, $2, $3, $4 FROM studies WHERE study_uid = $1 \
             ON CONFLICT (study_pk) DO UPDATE SET record_id = excluded.record_id, \
             url = excluded.url, updated_at = excluded.updated_at",
        )
        .bind(study.as_str())
        .bind(&link.record_id)
        .bind(&link.url)
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done > 0)
    }
    async fn emr_links(&self, studies: &[Uid]) -> Result<Vec<(String, EmrLink)>, IndexError> {
        if studies.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::default();
        let ps: Vec<String> = studies.iter().map(|u| sql.text(u.as_str())).collect();
        let text = format!(
            "SELECT st.study_uid, l.record_id, l.url FROM emr_links l \
             JOIN studies st ON st.pk = l.study_pk WHERE st.study_uid IN ({})",
            ps.join(", ")
        );
        let rows = sql.bind(sqlx::query(&text)).fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push((
                r.try_get("study_uid")?,
                EmrLink {
                    record_id: r.try_get("record_id")?,
                    url: r.try_get("url")?,
                },
            ));
        }
        Ok(out)
    }
    async fn delete_emr_link(&self, study: &Uid) -> Result<bool, IndexError> {
        let _writer = self.writer().await;
        let done = sqlx::query(
            "DELETE FROM emr_links WHERE study_pk = (SELECT pk FROM studies WHERE study_uid = $1)",
        )
        .bind(study.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done > 0)
    }
}
