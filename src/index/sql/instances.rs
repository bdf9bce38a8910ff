//! The instances themselves: insert, replace, find, list, frames, metadata.

use async_trait::async_trait;
use sqlx::Row;

use super::super::{now_ms, Index, IndexError, Insert, NewInstance, Scope, StoredInstance};
use super::builder::scope_filter;
use super::columns;
use super::trash::take_from_trash;
use super::{
    insert_name_words, insert_sequence_values, patient_key, stored_from_row, SqlIndex, HIERARCHY,
    INSTANCE_ORDER, STORED_COLUMNS,
};
use crate::dicom::tags;
use crate::query::names::pn_match_key;
use crate::query::Level;

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
        let patient_pk = upsert_patient(&mut tx, rec, now).await?;
        let study_pk = upsert_study(&mut tx, rec, patient_pk, now).await?;
        let series_pk = upsert_series(&mut tx, rec, study_pk, now).await?;

        let cols = columns::of(Level::Instance);
        let own = OWN_COLUMNS.len();
        let text = format!(
            "INSERT INTO instances (sop_uid, series_pk, {}, {}) VALUES ($1, $2, {}, {}) \
             ON CONFLICT (sop_uid) DO NOTHING RETURNING pk",
            OWN_COLUMNS.join(", "),
            columns::names(&cols),
            numbered(OWN_COLUMNS, 3, |_, p| p),
            columns::placeholders(&cols, 3 + own),
        );
        let q = sqlx::query(&text).bind(&rec.sop_uid).bind(series_pk);
        let inserted = columns::bind(bind_own(q, rec, now), &cols, &rec.attributes)
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
        let instance_pk: i64 = row.try_get("pk")?;
        insert_sequence_values(&mut tx, rec, instance_pk, series_pk, study_pk).await?;
        if let Err(e) = take_from_trash(&mut tx, &rec.object_key).await {
            tx.rollback().await?;
            return Err(e);
        }
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
        let cols = columns::of(Level::Instance);
        let own = OWN_COLUMNS.len();
        let text = format!(
            "UPDATE instances SET {}, {} WHERE sop_uid = ${} AND object_key = ${}",
            numbered(OWN_COLUMNS, 1, |c, p| format!("{c} = {p}")),
            columns::assignments(&cols, 1 + own),
            1 + own + cols.len(),
            2 + own + cols.len(),
        );
        let q = bind_own(sqlx::query(&text), rec, now_ms());
        let done = columns::bind(q, &cols, &rec.attributes)
            .bind(&rec.sop_uid)
            .bind(previous_key)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if done != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let row = sqlx::query(
            "SELECT i.pk AS instance_pk, i.series_pk, se.study_pk FROM instances i \
             JOIN series se ON se.pk = i.series_pk WHERE i.sop_uid = $1",
        )
        .bind(&rec.sop_uid)
        .fetch_one(&mut *tx)
        .await?;
        let (instance_pk, series_pk, study_pk): (i64, i64, i64) = (
            row.try_get("instance_pk")?,
            row.try_get("series_pk")?,
            row.try_get("study_pk")?,
        );
        sqlx::query("DELETE FROM sequence_items WHERE instance_pk = $1")
            .bind(instance_pk)
            .execute(&mut *tx)
            .await?;
        insert_sequence_values(&mut tx, rec, instance_pk, series_pk, study_pk).await?;
        if let Err(e) = take_from_trash(&mut tx, &rec.object_key).await {
            tx.rollback().await?;
            return Err(e);
        }
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
    async fn instance_page(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, StoredInstance)>, IndexError> {
        let sql = format!(
            "SELECT i.pk AS position, {STORED_COLUMNS} FROM {HIERARCHY} \
             WHERE i.pk > $1 ORDER BY i.pk LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push((r.try_get("position")?, stored_from_row(r)?));
        }
        Ok(out)
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

type Tx<'t> = sqlx::Transaction<'t, sqlx::Any>;
type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// The instance table's own columns (beside its keys and the copied
/// attributes), in the order [`bind_own`] binds them: one list for the
/// insert and the update of an instance.
const OWN_COLUMNS: &[&str] = &[
    "sop_class_uid",
    "num_rows",
    "num_columns",
    "num_frames",
    "bits_allocated",
    "transfer_syntax_uid",
    "object_key",
    "size",
    "sha256",
    "metadata",
    "created_at",
    "frame_index",
];

fn bind_own<'q>(q: AnyQuery<'q>, rec: &'q NewInstance, now: i64) -> AnyQuery<'q> {
    q.bind(&rec.sop_class_uid)
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
}

/// `names` with placeholders from `$first`, each written by `item(name,
/// placeholder)`, comma-separated.
fn numbered(names: &[&str], first: usize, item: impl Fn(&str, String) -> String) -> String {
    names
        .iter()
        .enumerate()
        .map(|(k, n)| item(n, format!("${}", first + k)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The patient row of an instance (made if new); its key.
async fn upsert_patient(tx: &mut Tx<'_>, rec: &NewInstance, now: i64) -> Result<i64, IndexError> {
    let key = patient_key(rec);
    sqlx::query(
        "INSERT INTO patients (patient_key, patient_id, issuer, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (patient_key) DO NOTHING",
    )
    .bind(&key)
    .bind(rec.attributes.text(tags::PATIENT_ID))
    .bind(&rec.issuer_of_patient_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let pk: i64 = sqlx::query("SELECT pk FROM patients WHERE patient_key = $1")
        .bind(&key)
        .fetch_one(&mut **tx)
        .await?
        .try_get("pk")?;
    Ok(pk)
}

/// The study row (made with the study's copied attributes and the name
/// words of fuzzy matching if new); its key.
async fn upsert_study(
    tx: &mut Tx<'_>,
    rec: &NewInstance,
    patient_pk: i64,
    now: i64,
) -> Result<i64, IndexError> {
    let cols = columns::of(Level::Study);
    let text = format!(
        "INSERT INTO studies (study_uid, patient_pk, created_at, patient_name_key, {}) \
         VALUES ($1, $2, $3, $4, {}) ON CONFLICT (study_uid) DO NOTHING",
        columns::names(&cols),
        columns::placeholders(&cols, 5),
    );
    let name = rec.attributes.text(tags::PATIENT_NAME);
    let q = sqlx::query(&text)
        .bind(&rec.study_uid)
        .bind(patient_pk)
        .bind(now)
        .bind(name.map(pn_match_key));
    let new_study = columns::bind(q, &cols, &rec.attributes)
        .execute(&mut **tx)
        .await?
        .rows_affected()
        == 1;
    let study_pk: i64 = sqlx::query("SELECT pk FROM studies WHERE study_uid = $1")
        .bind(&rec.study_uid)
        .fetch_one(&mut **tx)
        .await?
        .try_get("pk")?;
    if let (true, Some(name)) = (new_study, name) {
        insert_name_words(tx, study_pk, name).await?;
    }
    Ok(study_pk)
}

/// The series row (made if new); its key. A series already in another
/// study is a conflict.
async fn upsert_series(
    tx: &mut Tx<'_>,
    rec: &NewInstance,
    study_pk: i64,
    now: i64,
) -> Result<i64, IndexError> {
    let cols = columns::of(Level::Series);
    let text = format!(
        "INSERT INTO series (series_uid, study_pk, created_at, {}) \
         VALUES ($1, $2, $3, {}) ON CONFLICT (series_uid) DO NOTHING",
        columns::names(&cols),
        columns::placeholders(&cols, 4),
    );
    let q = sqlx::query(&text)
        .bind(&rec.series_uid)
        .bind(study_pk)
        .bind(now);
    columns::bind(q, &cols, &rec.attributes)
        .execute(&mut **tx)
        .await?;
    let row = sqlx::query("SELECT pk, study_pk FROM series WHERE series_uid = $1")
        .bind(&rec.series_uid)
        .fetch_one(&mut **tx)
        .await?;
    let series_pk: i64 = row.try_get("pk")?;
    let series_study_pk: i64 = row.try_get("study_pk")?;
    if series_study_pk != study_pk {
        return Err(IndexError::Conflict(format!(
            "series {} already belongs to another study",
            rec.series_uid
        )));
    }
    Ok(series_pk)
}
