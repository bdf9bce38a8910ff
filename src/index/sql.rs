//! The SQL shared by both back ends (sqlx `Any`, `$n` placeholders, which
//! PostgreSQL and SQLite both accept).

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use super::{
    now_ms, Index, IndexError, Insert, InstanceRow, NewInstance, Query, Scope, SeriesRow,
    StoredInstance, StudyRow,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// Distinct values of `expr` joined with ','.
    fn distinct_list(self, expr: &str) -> String {
        match self {
            Dialect::Postgres => format!("string_agg(DISTINCT {expr}, ',')"),
            Dialect::Sqlite => format!("group_concat(DISTINCT {expr})"),
        }
    }
}

#[derive(Debug)]
pub struct SqlIndex {
    pool: AnyPool,
    dialect: Dialect,
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

    async fn writer(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.write_lock {
            Some(l) => Some(l.lock().await),
            None => None,
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

const STORED_COLUMNS: &str = "st.study_uid, se.series_uid, i.sop_uid, i.sop_class_uid, \
     i.instance_number, i.transfer_syntax_uid, i.object_key, i.size, i.sha256";

fn stored_from_row(r: &AnyRow) -> Result<StoredInstance, sqlx::Error> {
    Ok(StoredInstance {
        study_uid: r.try_get(0)?,
        series_uid: r.try_get(1)?,
        sop_uid: r.try_get(2)?,
        sop_class_uid: r.try_get(3)?,
        instance_number: r.try_get(4)?,
        transfer_syntax_uid: r.try_get(5)?,
        object_key: r.try_get(6)?,
        size: r.try_get(7)?,
        sha256: r.try_get(8)?,
    })
}

/// The patient key: Patient ID qualified by its issuer; instances without
/// a Patient ID get one patient per study rather than one shared "empty"
/// patient.
fn patient_key(rec: &NewInstance) -> String {
    match rec.patient_id.as_deref() {
        Some(id) if !id.is_empty() => format!(
            "id:{}\u{1}{}",
            id,
            rec.issuer_of_patient_id.as_deref().unwrap_or("")
        ),
        _ => format!("study:{}", rec.study_uid),
    }
}

/// Builds `WHERE` conditions with numbered placeholders.
struct Filter {
    conds: Vec<String>,
    args: Vec<String>,
}

impl Filter {
    fn new() -> Filter {
        Filter {
            conds: Vec::new(),
            args: Vec::new(),
        }
    }

    fn eq(&mut self, column: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.args.push(v.to_owned());
            self.conds.push(format!("{column} = ${}", self.args.len()));
        }
    }

    fn sql(&self) -> String {
        if self.conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conds.join(" AND "))
        }
    }

    fn next(&self) -> usize {
        self.args.len() + 1
    }
}

fn scope_filter(scope: &Scope) -> Filter {
    let mut f = Filter::new();
    f.eq("st.study_uid", Some(scope.study.as_str()));
    f.eq("se.series_uid", scope.series.as_ref().map(|u| u.as_str()));
    f.eq("i.sop_uid", scope.instance.as_ref().map(|u| u.as_str()));
    f
}

const HIERARCHY: &str =
    "instances i JOIN series se ON se.pk = i.series_pk JOIN studies st ON st.pk = se.study_pk";
const INSTANCE_ORDER: &str = " ORDER BY se.series_number, se.pk, i.instance_number, i.pk";

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

        sqlx::query(
            "INSERT INTO studies (study_uid, patient_pk, patient_name, patient_id, \
             patient_birth_date, patient_sex, study_date, study_time, accession_number, \
             study_id, referring_physician_name, study_description, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
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
        .execute(&mut *tx)
        .await?;
        let study_pk: i64 = sqlx::query("SELECT pk FROM studies WHERE study_uid = $1")
            .bind(&rec.study_uid)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;

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
             object_key, size, sha256, metadata, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (sop_uid) DO NOTHING",
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
        .execute(&mut *tx)
        .await?
        .rows_affected();

        if inserted == 0 {
            tx.rollback().await?;
            return match self.find_instance(&rec.sop_uid).await? {
                Some(existing) => Ok(Insert::Exists(existing)),
                None => Err(IndexError::Conflict(format!(
                    "instance {} vanished during insert",
                    rec.sop_uid
                ))),
            };
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
        let done = sqlx::query(
            "UPDATE instances SET sop_class_uid = $1, instance_number = $2, num_rows = $3, \
             num_columns = $4, num_frames = $5, bits_allocated = $6, transfer_syntax_uid = $7, \
             object_key = $8, size = $9, sha256 = $10, metadata = $11, created_at = $12 \
             WHERE sop_uid = $13 AND object_key = $14",
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
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    async fn instances(&self, scope: &Scope) -> Result<Vec<StoredInstance>, IndexError> {
        let f = scope_filter(scope);
        let sql = format!(
            "SELECT {STORED_COLUMNS} FROM {HIERARCHY}{}{INSTANCE_ORDER}",
            f.sql()
        );
        let mut q = sqlx::query(&sql);
        for a in &f.args {
            q = q.bind(a);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(stored_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    async fn metadata(&self, scope: &Scope) -> Result<Vec<Vec<u8>>, IndexError> {
        let f = scope_filter(scope);
        let sql = format!(
            "SELECT i.metadata FROM {HIERARCHY}{}{INSTANCE_ORDER}",
            f.sql()
        );
        let mut q = sqlx::query(&sql);
        for a in &f.args {
            q = q.bind(a);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get::<Vec<u8>, _>(0))
            .collect::<Result<Vec<_>, _>>()?)
    }

    async fn search_studies(&self, q: &Query) -> Result<Vec<StudyRow>, IndexError> {
        let mut f = Filter::new();
        f.eq("st.study_uid", q.study_uid.as_ref().map(|u| u.as_str()));
        f.eq("st.patient_id", q.patient_id.as_deref());
        f.eq("st.accession_number", q.accession_number.as_deref());
        if let Some(m) = &q.modality {
            f.args.push(m.clone());
            f.conds.push(format!(
                "EXISTS (SELECT 1 FROM series m WHERE m.study_pk = st.pk AND m.modality = ${})",
                f.args.len()
            ));
        }
        let n = f.next();
        let sql = format!(
            "SELECT st.study_uid, st.patient_name, st.patient_id, st.patient_birth_date, \
             st.patient_sex, st.study_date, st.study_time, st.accession_number, st.study_id, \
             st.referring_physician_name, st.study_description, \
             (SELECT {mods} FROM series s2 WHERE s2.study_pk = st.pk), \
             (SELECT COUNT(*) FROM series s3 WHERE s3.study_pk = st.pk), \
             (SELECT COUNT(*) FROM instances i4 JOIN series s4 ON s4.pk = i4.series_pk \
              WHERE s4.study_pk = st.pk) \
             FROM studies st{where_} \
             ORDER BY st.study_date DESC, st.study_time DESC, st.pk DESC \
             LIMIT ${n} OFFSET ${m}",
            mods = self.dialect.distinct_list("s2.modality"),
            where_ = f.sql(),
            m = n + 1
        );
        let mut query = sqlx::query(&sql);
        for a in &f.args {
            query = query.bind(a);
        }
        let rows = query
            .bind(q.limit)
            .bind(q.offset)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mods: Option<String> = r.try_get(11)?;
            out.push(StudyRow {
                study_uid: r.try_get(0)?,
                patient_name: r.try_get(1)?,
                patient_id: r.try_get(2)?,
                patient_birth_date: r.try_get(3)?,
                patient_sex: r.try_get(4)?,
                study_date: r.try_get(5)?,
                study_time: r.try_get(6)?,
                accession_number: r.try_get(7)?,
                study_id: r.try_get(8)?,
                referring_physician_name: r.try_get(9)?,
                study_description: r.try_get(10)?,
                modalities: mods
                    .map(|m| {
                        let mut v: Vec<String> = m.split(',').map(str::to_owned).collect();
                        v.sort();
                        v
                    })
                    .unwrap_or_default(),
                num_series: r.try_get(12)?,
                num_instances: r.try_get(13)?,
            });
        }
        Ok(out)
    }

    async fn search_series(&self, q: &Query) -> Result<Vec<SeriesRow>, IndexError> {
        let mut f = Filter::new();
        f.eq("st.study_uid", q.study_uid.as_ref().map(|u| u.as_str()));
        f.eq("se.series_uid", q.series_uid.as_ref().map(|u| u.as_str()));
        f.eq("st.patient_id", q.patient_id.as_deref());
        f.eq("st.accession_number", q.accession_number.as_deref());
        f.eq("se.modality", q.modality.as_deref());
        let n = f.next();
        let sql = format!(
            "SELECT st.study_uid, se.series_uid, se.modality, se.series_number, \
             se.series_description, se.body_part_examined, se.pps_start_date, se.pps_start_time, \
             (SELECT COUNT(*) FROM instances i2 WHERE i2.series_pk = se.pk) \
             FROM series se JOIN studies st ON st.pk = se.study_pk{} \
             ORDER BY st.pk DESC, se.series_number, se.pk LIMIT ${n} OFFSET ${}",
            f.sql(),
            n + 1
        );
        let mut query = sqlx::query(&sql);
        for a in &f.args {
            query = query.bind(a);
        }
        let rows = query
            .bind(q.limit)
            .bind(q.offset)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(SeriesRow {
                study_uid: r.try_get(0)?,
                series_uid: r.try_get(1)?,
                modality: r.try_get(2)?,
                series_number: r.try_get(3)?,
                series_description: r.try_get(4)?,
                body_part_examined: r.try_get(5)?,
                pps_start_date: r.try_get(6)?,
                pps_start_time: r.try_get(7)?,
                num_instances: r.try_get(8)?,
            });
        }
        Ok(out)
    }

    async fn search_instances(&self, q: &Query) -> Result<Vec<InstanceRow>, IndexError> {
        let mut f = Filter::new();
        f.eq("st.study_uid", q.study_uid.as_ref().map(|u| u.as_str()));
        f.eq("se.series_uid", q.series_uid.as_ref().map(|u| u.as_str()));
        f.eq("i.sop_uid", q.sop_uid.as_ref().map(|u| u.as_str()));
        f.eq("st.patient_id", q.patient_id.as_deref());
        f.eq("st.accession_number", q.accession_number.as_deref());
        f.eq("se.modality", q.modality.as_deref());
        let n = f.next();
        let sql = format!(
            "SELECT st.study_uid, se.series_uid, i.sop_uid, i.sop_class_uid, i.instance_number, \
             i.num_rows, i.num_columns, i.num_frames, i.bits_allocated, i.transfer_syntax_uid \
             FROM {HIERARCHY}{}{INSTANCE_ORDER} LIMIT ${n} OFFSET ${}",
            f.sql(),
            n + 1
        );
        let mut query = sqlx::query(&sql);
        for a in &f.args {
            query = query.bind(a);
        }
        let rows = query
            .bind(q.limit)
            .bind(q.offset)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(InstanceRow {
                study_uid: r.try_get(0)?,
                series_uid: r.try_get(1)?,
                sop_uid: r.try_get(2)?,
                sop_class_uid: r.try_get(3)?,
                instance_number: r.try_get(4)?,
                rows: r.try_get(5)?,
                columns: r.try_get(6)?,
                frames: r.try_get(7)?,
                bits_allocated: r.try_get(8)?,
                transfer_syntax_uid: r.try_get(9)?,
            });
        }
        Ok(out)
    }
}
