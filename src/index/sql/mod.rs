//! The SQL shared by both back ends (sqlx `Any`, `$n` placeholders, which
//! PostgreSQL and SQLite both accept): [`SqlIndex`] and the helpers its
//! concerns share; each trait of [`super::Index`] is implemented in its own
//! module: [`instances`] (`Index`), [`search`] (`Search`, with the query
//! builder in [`builder`]), [`emr_links`]
//! (`EmrLinks`), [`feed`] (`ChangeFeed`).

mod builder;
mod columns;
mod emr_links;
mod feed;
mod instances;
mod retention;
mod search;
pub(super) mod trash;

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use super::{IndexError, NewInstance, StoredInstance};
use crate::dicom::tags;
use crate::query::names::{fuzzy_words, pn_match_key};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// Distinct values of `expr` joined with ','.
    pub(super) fn distinct_list(self, expr: &str) -> String {
        match self {
            Dialect::Postgres => format!("string_agg(DISTINCT {expr}, ',')"),
            Dialect::Sqlite => format!("group_concat(DISTINCT {expr})"),
        }
    }
}

#[derive(Debug)]
pub struct SqlIndex {
    pub(super) pool: AnyPool,
    pub(super) dialect: Dialect,
    /// SQLite allows one writer at a time and makes the others poll with
    /// sleeps of up to 100 ms (busy_timeout); queueing writers here instead
    /// keeps concurrent ingest from stalling. PostgreSQL needs no such lock.
    write_lock: Option<tokio::sync::Mutex<()>>,
}

impl SqlIndex {
    pub fn new(pool: AnyPool, dialect: Dialect) -> SqlIndex {
        let write_lock = (dialect == Dialect::Sqlite).then(|| tokio::sync::Mutex::new(()));
        SqlIndex {
            pool,
            dialect,
            write_lock,
        }
    }

    pub(super) async fn writer(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.write_lock {
            Some(l) => Some(l.lock().await),
            None => None,
        }
    }

    /// Fills the derived name columns of studies indexed before they
    /// existed (migration 0002); a no-op once done.
    pub(crate) async fn backfill(&self) -> Result<(), IndexError> {
        let rows = sqlx::query(
            "SELECT pk, patient_name FROM studies \
             WHERE patient_name IS NOT NULL AND patient_name_key IS NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(());
        }
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;
        for r in &rows {
            let pk: i64 = r.try_get("pk")?;
            let name: String = r.try_get("patient_name")?;
            sqlx::query("UPDATE studies SET patient_name_key = $1 WHERE pk = $2")
                .bind(pn_match_key(&name))
                .bind(pk)
                .execute(&mut *tx)
                .await?;
            insert_name_words(&mut tx, pk, &name).await?;
        }
        tx.commit().await?;
        tracing::info!(studies = rows.len(), "name search keys backfilled");
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// The columns [`stored_from_row`] reads, by name.
pub(super) const STORED_COLUMNS: &str = "st.study_uid, se.series_uid, i.sop_uid, i.sop_class_uid, \
     i.instance_number, i.transfer_syntax_uid, i.object_key, i.size, i.sha256";

pub(super) fn stored_from_row(r: &AnyRow) -> Result<StoredInstance, sqlx::Error> {
    Ok(StoredInstance {
        study_uid: r.try_get("study_uid")?,
        series_uid: r.try_get("series_uid")?,
        sop_uid: r.try_get("sop_uid")?,
        sop_class_uid: r.try_get("sop_class_uid")?,
        instance_number: r.try_get("instance_number")?,
        transfer_syntax_uid: r.try_get("transfer_syntax_uid")?,
        object_key: r.try_get("object_key")?,
        size: r.try_get("size")?,
        sha256: r.try_get("sha256")?,
    })
}

/// The patient key: Patient ID qualified by its issuer; instances without
/// a Patient ID get one patient per study rather than one shared "empty"
/// patient.
pub(super) fn patient_key(rec: &NewInstance) -> String {
    match rec.attributes.text(tags::PATIENT_ID) {
        Some(id) if !id.is_empty() => format!(
            "id:{}\u{1}{}",
            id,
            rec.issuer_of_patient_id.as_deref().unwrap_or("")
        ),
        _ => format!("study:{}", rec.study_uid),
    }
}

/// The fuzzy-matching words of a study's patient name.
pub(super) async fn insert_name_words(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    study_pk: i64,
    name: &str,
) -> Result<(), sqlx::Error> {
    for word in fuzzy_words(name) {
        sqlx::query(
            "INSERT INTO study_name_words (study_pk, word) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(study_pk)
        .bind(word)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

pub(super) async fn insert_sequence_values(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    rec: &NewInstance,
    instance_pk: i64,
    series_pk: i64,
    study_pk: i64,
) -> Result<(), sqlx::Error> {
    for (path, value) in &rec.sequence_values {
        sqlx::query(
            "INSERT INTO sequence_items (instance_pk, series_pk, study_pk, path, value) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(instance_pk)
        .bind(series_pk)
        .bind(study_pk)
        .bind(path)
        .bind(value)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

pub(super) const HIERARCHY: &str =
    "instances i JOIN series se ON se.pk = i.series_pk JOIN studies st ON st.pk = se.study_pk";
pub(super) const INSTANCE_ORDER: &str =
    " ORDER BY se.series_number, se.pk, i.instance_number, i.pk";

/// The WHERE clause a query becomes (the search statements add the
/// paging): what the fuzz targets check never panics.
pub(crate) fn where_clause(q: &crate::query::Query) -> String {
    builder::search_conditions(q, None).where_sql()
}
