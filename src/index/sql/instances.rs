//! The instances themselves: insert, replace, find, list, frames, metadata.

use async_trait::async_trait;
use sqlx::Row;

use super::super::{now_ms, Index, IndexError, Insert, NewInstance, Scope, StoredInstance};
use super::builder::scope_filter;
use super::{
    insert_name_words, insert_sequence_values, patient_key, stored_from_row, SqlIndex, HIERARCHY,
    INSTANCE_ORDER, STORED_COLUMNS,
};
use crate::query::names::pn_match_key;

#[async_trait]
impl Index for SqlIndex {
    async fn ping(&self) -> Result<(), IndexError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
    async fn find_instance(&self, sop_uid: &str) -> Result<Option<StoredInstance>, IndexError> {
        let sql = format!("SELECT {STORED_COLUMNS} FROM {HIERARCHY} WHERE i.sop_uid = $1");
        let row = sqlx::query(&sql)
            .bind(sop_uid)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| stored_from_row(&r)).transpose()?)
    }
    async fn insert_instance(&self, rec: &NewInstance) -> Result<Insert, IndexError> {
        let now = now_ms();
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;

        // INSERT … ON CONFLICT DO NOTHING, then SELECT: no row locks are
        // taken on parents that already exist, so concurrent ingest of one
        // study does not serialize on its patient and study rows.
        let key = patient_key(rec);
        sqlx::query(
            "INSERT INTO patients (patient_key, patient_id, issuer, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (patient_key) DO NOTHING",
        )
        .bind(&key)
        .bind(&rec.patient_id)
        .bind(&rec.issuer_of_patient_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let patient_pk: i64 = sqlx::query("SELECT pk FROM patients WHERE patient_key = $1")
            .bind(&key)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;

        let new_study = sqlx::query(
            "INSERT INTO studies (study_uid, patient_pk, patient_name, patient_id, \
             patient_birth_date, patient_sex, study_date, study_time, accession_number, \
             study_id, referring_physician_name, study_description, created_at, patient_name_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (study_uid) DO NOTHING",
        )
        .bind(&rec.study_uid)
        .bind(patient_pk)
        .bind(&rec.patient_name)
        .bind(&rec.patient_id)
        .bind(&rec.patient_birth_date)
        .bind(&rec.patient_sex)
        .bind(&rec.study_date)
        .bind(&rec.study_time)
        .bind(&rec.accession_number)
        .bind(&rec.study_id)
        .bind(&rec.referring_physician_name)
        .bind(&rec.study_description)
        .bind(now)
        .bind(rec.patient_name.as_deref().map(pn_match_key))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let study_pk: i64 = sqlx::query("SELECT pk FROM studies WHERE study_uid = $1")
            .bind(&rec.study_uid)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if let (true, Some(name)) = (new_study, rec.patient_name.as_deref()) {
            insert_name_words(&mut tx, study_pk, name).await?;
        }

        sqlx::query(
            "INSERT INTO series (series_uid, study_pk, modality, series_number, \
             series_description, body_part_examined, pps_start_date, pps_start_time, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (series_uid) DO NOTHING",
        )
        .bind(&rec.series_uid)
        .bind(study_pk)
        .bind(&rec.modality)
        .bind(rec.series_number)
        .bind(&rec.series_description)
        .bind(&rec.body_part_examined)
        .bind(&rec.pps_start_date)
        .bind(&rec.pps_start_time)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT pk, study_pk FROM series WHERE series_uid = $1")
            .bind(&rec.series_uid)
            .fetch_one(&mut *tx)
            .await?;
        let series_pk: i64 = row.try_get(0)?;
        let series_study_pk: i64 = row.try_get(1)?;
        if series_study_pk != study_pk {
            return Err(IndexError::Conflict(format!(
                "series {} already belongs to another study",
                rec.series_uid
            )));
        }

        let inserted = sqlx::query(
            "INSERT INTO instances (sop_uid, series_pk, sop_class_uid, instance_number, \
             num_rows, num_columns, num_frames, bits_allocated, transfer_syntax_uid, \
             object_key, size, sha256, metadata, created_at, frame_index) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (sop_uid) DO NOTHING RETURNING pk",
        )
        .bind(&rec.sop_uid)
        .bind(series_pk)
        .bind(&rec.sop_class_uid)
        .bind(rec.instance_number)
        .bind(rec.rows)
        .bind(rec.columns)
        .bind(rec.frames)
        .bind(rec.bits_allocated)
        .bind(&rec.transfer_syntax_uid)
        .bind(&rec.object_key)
        .bind(rec.size)
        .bind(&rec.sha256)
        .bind(&rec.metadata)
        .bind(now)
        .bind(&rec.frame_index)
        .fetch_optional(&mut *tx)
        .await?;

        let Some(row) = inserted else {
            tx.rollback().await?;
            return match self.find_instance(&rec.sop_uid).await? {
                Some(existing) => Ok(Insert::Exists(existing)),
                None => Err(IndexError::Conflict(format!(
                    "instance {} vanished during insert",
                    rec.sop_uid
                ))),
            };
        };
        let instance_pk: i64 = row.try_get(0)?;
        insert_sequence_values(&mut tx, rec, instance_pk, series_pk, study_pk).await?;
        tx.commit().await?;
        Ok(Insert::Inserted)
    }
    async fn replace_instance(
        &self,
        rec: &NewInstance,
        previous_key: &str,
    ) -> Result<bool, IndexError> {
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE instances SET sop_class_uid = $1, instance_number = $2, num_rows = $3, \
             num_columns = $4, num_frames = $5, bits_allocated = $6, transfer_syntax_uid = $7, \
             object_key = $8, size = $9, sha256 = $10, metadata = $11, created_at = $12, \
             frame_index = $15 WHERE sop_uid = $13 AND object_key = $14",
        )
        .bind(&rec.sop_class_uid)
        .bind(rec.instance_number)
        .bind(rec.rows)
        .bind(rec.columns)
        .bind(rec.frames)
        .bind(rec.bits_allocated)
        .bind(&rec.transfer_syntax_uid)
        .bind(&rec.object_key)
        .bind(rec.size)
        .bind(&rec.sha256)
        .bind(&rec.metadata)
        .bind(now_ms())
        .bind(&rec.sop_uid)
        .bind(previous_key)
        .bind(&rec.frame_index)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let row = sqlx::query(
            "SELECT i.pk, i.series_pk, se.study_pk FROM instances i \
             JOIN series se ON se.pk = i.series_pk WHERE i.sop_uid = $1",
        )
        .bind(&rec.sop_uid)
        .fetch_one(&mut *tx)
        .await?;
        let (instance_pk, series_pk, study_pk): (i64, i64, i64) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        sqlx::query("DELETE FROM sequence_items WHERE instance_pk = $1")
            .bind(instance_pk)
            .execute(&mut *tx)
            .await?;
        insert_sequence_values(&mut tx, rec, instance_pk, series_pk, study_pk).await?;
        tx.commit().await?;
        Ok(true)
    }
    async fn instances(&self, scope: &Scope) -> Result<Vec<StoredInstance>, IndexError> {
        let f = scope_filter(scope);
        let sql = format!(
            "SELECT {STORED_COLUMNS} FROM {HIERARCHY}{}{INSTANCE_ORDER}",
            f.where_sql()
        );
        let rows = f.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(stored_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }
    async fn instance_frames(
        &self,
        scope: &Scope,
    ) -> Result<Option<(StoredInstance, Option<Vec<u8>>)>, IndexError> {
        let f = scope_filter(scope);
        let sql = format!(
            "SELECT {STORED_COLUMNS}, i.frame_index FROM {HIERARCHY}{}",
            f.where_sql()
        );
        let row = f.bind(sqlx::query(&sql)).fetch_optional(&self.pool).await?;
        match row {
            Some(r) => Ok(Some((stored_from_row(&r)?, r.try_get("frame_index")?))),
            None => Ok(None),
        }
    }
    async fn metadata(&self, scope: &Scope) -> Result<Vec<Vec<u8>>, IndexError> {
        let f = scope_filter(scope);
        let sql = format!(
            "SELECT i.metadata FROM {HIERARCHY}{}{INSTANCE_ORDER}",
            f.where_sql()
        );
        let rows = f.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get::<Vec<u8>, _>(0))
            .collect::<Result<Vec<_>, _>>()?)
    }
}
