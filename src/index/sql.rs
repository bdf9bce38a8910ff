//! The SQL shared by both back ends (sqlx `Any`, `$n` placeholders, which
//! PostgreSQL and SQLite both accept).

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use super::{
    now_ms, ChangeEvent, ClaimedDelivery, DeliveryOutcome, DeliveryRecord, EmrLink, Index,
    IndexError, Insert, InstanceRow, NewInstance, Scope, SeriesRow, StoredInstance, StudyRow,
    ThumbnailJob,
};
use crate::dicom::Uid;
use crate::query::names::{fuzzy_words, pn_match_key, prefix_upper_bound};
use crate::query::{Kind, Level, Match, Query};

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
    pub async fn backfill(&self) -> Result<(), IndexError> {
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
            let pk: i64 = r.try_get(0)?;
            let name: String = r.try_get(1)?;
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

    /// Runs the fuzzy name-word intersection of a query on its own, when it
    /// is small enough to inline (see [`FUZZY_INLINE_MAX`]).
    async fn resolve_fuzzy(&self, q: &Query) -> Result<Option<Vec<i64>>, IndexError> {
        let Some(words) = q
            .filters
            .iter()
            .find_map(|f| match (&f.matching, f.attribute.keyword) {
                (Match::Fuzzy(words), "PatientName") => Some(words),
                _ => None,
            })
        else {
            return Ok(None);
        };
        let (set, args) = fuzzy_study_set(words, 0);
        let text = format!("{set} LIMIT {}", FUZZY_INLINE_MAX + 1);
        let sql = Sql {
            conds: Vec::new(),
            args,
        };
        let rows = sql.bind(sqlx::query(&text)).fetch_all(&self.pool).await?;
        if rows.len() > FUZZY_INLINE_MAX {
            return Ok(None);
        }
        let mut pks = rows
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<Vec<_>, _>>()?;
        pks.sort_unstable();
        Ok(Some(pks))
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

/// The fuzzy-matching words of a study's patient name.
async fn insert_name_words(
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

async fn insert_sequence_values(
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

/// A bound parameter.
#[derive(Debug, Clone)]
enum Arg {
    Text(String),
    Int(i64),
}

/// Builds `WHERE` conditions with numbered placeholders.
#[derive(Default)]
struct Sql {
    conds: Vec<String>,
    args: Vec<Arg>,
}

impl Sql {
    fn arg(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }

    fn text(&mut self, v: &str) -> String {
        self.arg(Arg::Text(v.to_owned()))
    }

    fn eq(&mut self, column: &str, value: Option<&str>) {
        if let Some(v) = value {
            let p = self.text(v);
            self.conds.push(format!("{column} = {p}"));
        }
    }

    fn where_sql(&self) -> String {
        if self.conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conds.join(" AND "))
        }
    }

    fn bind<'q>(
        &'q self,
        mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        for a in &self.args {
            q = match a {
                Arg::Text(t) => q.bind(t.as_str()),
                Arg::Int(i) => q.bind(*i),
            };
        }
        q
    }

    /// The SQL condition for one match on `column` (PS3.4 C.2.2.2).
    fn condition(&mut self, column: &str, kind: Kind, m: &Match) -> String {
        let value = |s: &mut Sql, v: &str| -> String {
            if kind == Kind::Integer {
                s.arg(Arg::Int(v.parse().unwrap_or(i64::MIN)))
            } else {
                s.text(v)
            }
        };
        match m {
            Match::Single(v) => {
                let p = value(self, v);
                format!("{column} = {p}")
            }
            Match::List(vs) => {
                let ps: Vec<String> = vs.iter().map(|v| value(self, v)).collect();
                format!("{column} IN ({})", ps.join(", "))
            }
            Match::Wildcard(w) => {
                // A trailing '*' alone is a prefix: an index range in both
                // databases. Anything else is LIKE with escapes.
                let body = &w[..w.len().saturating_sub(1)];
                if w.ends_with('*') && !body.contains(['*', '?']) {
                    let lo = self.text(body);
                    match prefix_upper_bound(body) {
                        Some(hi) => {
                            let hi = self.text(&hi);
                            format!("({column} >= {lo} AND {column} < {hi})")
                        }
                        None => format!("{column} >= {lo}"),
                    }
                } else {
                    let p = self.text(&like_pattern(w));
                    format!("{column} LIKE {p} ESCAPE '\\'")
                }
            }
            Match::Range(lo, hi) => {
                let mut parts = Vec::new();
                if let Some(lo) = lo {
                    let p = self.text(lo);
                    parts.push(format!("{column} >= {p}"));
                }
                if let Some(hi) = hi {
                    // Inclusive of everything that starts with `hi` (a TM of
                    // lower precision covers the whole hour or minute).
                    match (kind, prefix_upper_bound(hi)) {
                        (Kind::Time, Some(next)) => {
                            let p = self.text(&next);
                            parts.push(format!("{column} < {p}"));
                        }
                        _ => {
                            let p = self.text(hi);
                            parts.push(format!("{column} <= {p}"));
                        }
                    }
                }
                format!("({})", parts.join(" AND "))
            }
            Match::Fuzzy(words) => {
                // Only PatientName has a word table; other names fall back
                // to case-insensitive substring matching per word.
                let conds: Vec<String> = words
                    .iter()
                    .map(|w| {
                        let p = self.text(&format!("%{}%", like_escape(w)));
                        format!("lower({column}) LIKE {p} ESCAPE '\\'")
                    })
                    .collect();
                format!("({})", conds.join(" AND "))
            }
        }
    }
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// DICOM wildcards to a LIKE pattern.
fn like_pattern(w: &str) -> String {
    like_escape(w).replace('*', "%").replace('?', "_")
}

fn scope_filter(scope: &Scope) -> Sql {
    let mut f = Sql::default();
    f.eq("st.study_uid", Some(scope.study.as_str()));
    f.eq("se.series_uid", scope.series.as_ref().map(|u| u.as_str()));
    f.eq("i.sop_uid", scope.instance.as_ref().map(|u| u.as_str()));
    f
}

/// Studies whose name words match every fuzzy query word: one index range
/// on the word table per word, intersected. Returns the SQL (placeholders
/// numbered after `first_arg`) and its arguments.
fn fuzzy_study_set(words: &[String], first_arg: usize) -> (String, Vec<Arg>) {
    let mut args = Vec::new();
    let mut p = |v: String| {
        args.push(Arg::Text(v));
        format!("${}", first_arg + args.len())
    };
    let sets: Vec<String> = words
        .iter()
        .map(|w| {
            let lo = p(w.clone());
            let cond = match prefix_upper_bound(w) {
                Some(hi) => format!("word >= {lo} AND word < {}", p(hi)),
                None => format!("word >= {lo}"),
            };
            format!("SELECT study_pk FROM study_name_words WHERE {cond}")
        })
        .collect();
    (sets.join(" INTERSECT "), args)
}

/// Fuzzy candidate sets up to this size are resolved first and passed as
/// keys: planners misjudge the size of an intersection and would scan
/// every study to join a few hundred.
const FUZZY_INLINE_MAX: usize = 20_000;

/// The WHERE conditions of a search at `q.level` (aliases st, se, i).
fn search_conditions(q: &Query, fuzzy_studies: Option<&[i64]>) -> Sql {
    let mut sql = Sql::default();
    let date = q
        .filters
        .iter()
        .find(|f| f.attribute.keyword == "StudyDate");
    let time = q
        .filters
        .iter()
        .find(|f| f.attribute.keyword == "StudyTime");
    let combined = match (date.map(|f| &f.matching), time.map(|f| &f.matching)) {
        (Some(Match::Range(dlo, dhi)), Some(Match::Range(tlo, thi))) if q.combined_datetime => {
            // PS3.4 C.2.2.2.5.1: one range over date and time together.
            let mut parts = Vec::new();
            if let Some(d) = dlo {
                let (d1, d2) = (sql.text(d), sql.text(d));
                let t = tlo.as_deref().unwrap_or("");
                let t = sql.text(t);
                parts.push(format!(
                    "(st.study_date > {d1} OR (st.study_date = {d2} AND COALESCE(st.study_time, '') >= {t}))"
                ));
            }
            if let Some(d) = dhi {
                let (d1, d2) = (sql.text(d), sql.text(d));
                let t = thi
                    .as_deref()
                    .and_then(prefix_upper_bound)
                    .unwrap_or_else(|| "999999".into());
                let t = sql.text(&t);
                parts.push(format!(
                    "(st.study_date < {d1} OR (st.study_date = {d2} AND COALESCE(st.study_time, '') < {t}))"
                ));
            }
            if !parts.is_empty() {
                sql.conds.push(parts.join(" AND "));
            }
            true
        }
        _ => false,
    };

    for f in &q.filters {
        let a = f.attribute;
        if combined && (a.keyword == "StudyDate" || a.keyword == "StudyTime") {
            continue;
        }
        if a.keyword == "ModalitiesInStudy" {
            let c = sql.condition("m.modality", a.kind, &f.matching);
            sql.conds.push(format!(
                "EXISTS (SELECT 1 FROM series m WHERE m.study_pk = st.pk AND {c})"
            ));
            continue;
        }
        if a.keyword == "PatientName" {
            match &f.matching {
                Match::Fuzzy(words) => match fuzzy_studies {
                    // Resolved beforehand: the matching studies by key.
                    Some([]) => sql.conds.push("1 = 0".into()),
                    Some(pks) => {
                        let list: Vec<String> = pks.iter().map(i64::to_string).collect();
                        sql.conds.push(format!("st.pk IN ({})", list.join(",")));
                    }
                    None => {
                        let (set, args) = fuzzy_study_set(words, sql.args.len());
                        sql.args.extend(args);
                        sql.conds.push(format!("st.pk IN ({set})"));
                    }
                },
                m => {
                    let c = sql.condition("st.patient_name_key", a.kind, m);
                    sql.conds.push(c);
                }
            }
            continue;
        }
        let column = if a.kind == Kind::PersonName {
            format!("lower({})", a.column)
        } else {
            a.column.to_owned()
        };
        let c = sql.condition(&column, a.kind, &f.matching);
        // A key below the query level matches when any child matches
        // (relational matching, as users expect from QIDO).
        let c = match (q.level, a.level) {
            (Level::Study, Level::Series) => {
                format!("EXISTS (SELECT 1 FROM series se WHERE se.study_pk = st.pk AND {c})")
            }
            (Level::Study, Level::Instance) => format!(
                "EXISTS (SELECT 1 FROM series se JOIN instances i ON i.series_pk = se.pk \
                 WHERE se.study_pk = st.pk AND {c})"
            ),
            (Level::Series, Level::Instance) => {
                format!("EXISTS (SELECT 1 FROM instances i WHERE i.series_pk = se.pk AND {c})")
            }
            _ => c,
        };
        sql.conds.push(c);
    }

    for sf in &q.sequence_filters {
        let path = sql.text(&sf.path);
        let c = sql.condition("q.value", Kind::Text, &sf.matching);
        let link = match q.level {
            Level::Study => "q.study_pk = st.pk",
            Level::Series => "q.series_pk = se.pk",
            Level::Instance => "q.instance_pk = i.pk",
        };
        sql.conds.push(format!(
            "EXISTS (SELECT 1 FROM sequence_items q WHERE {link} AND q.path = {path} AND {c})"
        ));
    }
    sql
}

/// Instances whose index transaction started this long before the change
/// detector's horizon and committed after it could be missed; the horizon
/// trails the quiet period by this much.
const IN_FLIGHT_MARGIN_MS: i64 = 60_000;

/// The PostgreSQL advisory lock that orders change events: taken by each
/// transaction that records one, so `seq` order is commit order and a
/// reader of `/api/changes?since=` never skips an event committed late.
const CHANGE_FEED_LOCK: i64 = 0x7068_696d_0007;

const EVENT_COLUMNS: &str =
    "e.seq, e.event_type, e.created_at, e.study_uid, e.accession_number, e.patient_id, e.num_instances";

fn event_from_row(r: &AnyRow, first: usize) -> Result<ChangeEvent, sqlx::Error> {
    Ok(ChangeEvent {
        seq: r.try_get(first)?,
        event_type: r.try_get(first + 1)?,
        time_ms: r.try_get(first + 2)?,
        study_uid: r.try_get(first + 3)?,
        accession_number: r.try_get(first + 4)?,
        patient_id: r.try_get(first + 5)?,
        num_instances: r.try_get(first + 6)?,
    })
}

/// A candidate for a `study.stable` announcement.
struct StableStudy {
    pk: i64,
    uid: String,
    accession_number: Option<String>,
    patient_id: Option<String>,
    num_instances: i64,
}

impl SqlIndex {
    /// Records one announcement if no other detector did: the
    /// compare-and-set on `study_announcements` (insert, or raise the count)
    /// returns the row only to the transaction that changed it.
    async fn announce(
        &self,
        study: &StableStudy,
        now_ms: i64,
        webhook_urls: &[String],
    ) -> Result<Option<ChangeEvent>, IndexError> {
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(CHANGE_FEED_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        let claimed = sqlx::query(
            "INSERT INTO study_announcements (study_pk, num_instances, announced_at) \
             VALUES ($1, $2, $3) ON CONFLICT (study_pk) DO UPDATE \
             SET num_instances = excluded.num_instances, announced_at = excluded.announced_at \
             WHERE study_announcements.num_instances < excluded.num_instances \
             RETURNING study_pk",
        )
        .bind(study.pk)
        .bind(study.num_instances)
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await?;
        if claimed.is_none() {
            tx.rollback().await?;
            return Ok(None);
        }
        let seq: i64 = sqlx::query(
            "INSERT INTO change_events (event_type, study_uid, accession_number, patient_id, \
             num_instances, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
        )
        .bind(STUDY_STABLE)
        .bind(&study.uid)
        .bind(&study.accession_number)
        .bind(&study.patient_id)
        .bind(study.num_instances)
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        for url in webhook_urls {
            sqlx::query(
                "INSERT INTO webhook_deliveries (event_seq, url, status, attempts, \
                 next_attempt_at, created_at, updated_at) VALUES ($1, $2, 'pending', 0, $3, $3, $3)",
            )
            .bind(seq)
            .bind(url)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Some(ChangeEvent {
            seq,
            event_type: STUDY_STABLE.to_owned(),
            time_ms: now_ms,
            study_uid: study.uid.clone(),
            accession_number: study.accession_number.clone(),
            patient_id: study.patient_id.clone(),
            num_instances: study.num_instances,
        }))
    }
}

/// The event type of a study that stopped receiving instances.
pub const STUDY_STABLE: &str = "study.stable";

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
            Some(r) => Ok(Some((stored_from_row(&r)?, r.try_get(9)?))),
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

    async fn search_studies(&self, q: &Query) -> Result<Vec<StudyRow>, IndexError> {
        let fuzzy = self.resolve_fuzzy(q).await?;
        let mut sql = search_conditions(q, fuzzy.as_deref());
        let lim = sql.arg(Arg::Int(q.limit + 1));
        let off = sql.arg(Arg::Int(q.offset));
        let text = format!(
            "SELECT st.study_uid, st.patient_name, st.patient_id, st.patient_birth_date, \
             st.patient_sex, st.study_date, st.study_time, st.accession_number, st.study_id, \
             st.referring_physician_name, st.study_description, \
             (SELECT {mods} FROM series s2 WHERE s2.study_pk = st.pk), \
             (SELECT COUNT(*) FROM series s3 WHERE s3.study_pk = st.pk), \
             (SELECT COUNT(*) FROM instances i4 JOIN series s4 ON s4.pk = i4.series_pk \
              WHERE s4.study_pk = st.pk) \
             FROM (SELECT st.* FROM studies st{where_} ORDER BY {order} LIMIT {lim} OFFSET {off}) st \
             ORDER BY {order}",
            // The page is chosen first; the computed attributes are worked
            // out for its rows only, not for every row skipped by OFFSET.
            order = "st.study_date DESC NULLS LAST, st.study_time DESC NULLS LAST, st.pk DESC",
            mods = self.dialect.distinct_list("s2.modality"),
            where_ = sql.where_sql(),
        );
        let rows = sql.bind(sqlx::query(&text)).fetch_all(&self.pool).await?;
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
        let fuzzy = self.resolve_fuzzy(q).await?;
        let mut sql = search_conditions(q, fuzzy.as_deref());
        let lim = sql.arg(Arg::Int(q.limit + 1));
        let off = sql.arg(Arg::Int(q.offset));
        let text = format!(
            "SELECT st.study_uid, se.series_uid, se.modality, se.series_number, \
             se.series_description, se.body_part_examined, se.pps_start_date, se.pps_start_time, \
             (SELECT COUNT(*) FROM instances i2 WHERE i2.series_pk = se.pk) \
             FROM (SELECT se.* , st.pk AS st_pk FROM series se JOIN studies st ON st.pk = se.study_pk{} \
             ORDER BY st.pk DESC, se.series_number, se.pk LIMIT {lim} OFFSET {off}) se \
             JOIN studies st ON st.pk = se.st_pk \
             ORDER BY st.pk DESC, se.series_number, se.pk",
            sql.where_sql(),
        );
        let rows = sql.bind(sqlx::query(&text)).fetch_all(&self.pool).await?;
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
        let fuzzy = self.resolve_fuzzy(q).await?;
        let mut sql = search_conditions(q, fuzzy.as_deref());
        let lim = sql.arg(Arg::Int(q.limit + 1));
        let off = sql.arg(Arg::Int(q.offset));
        let text = format!(
            "SELECT st.study_uid, se.series_uid, i.sop_uid, i.sop_class_uid, i.instance_number, \
             i.num_rows, i.num_columns, i.num_frames, i.bits_allocated, i.transfer_syntax_uid \
             FROM {HIERARCHY}{} ORDER BY st.pk DESC, se.series_number, se.pk, i.instance_number, i.pk \
             LIMIT {lim} OFFSET {off}",
            sql.where_sql(),
        );
        let rows = sql.bind(sqlx::query(&text)).fetch_all(&self.pool).await?;
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

    async fn representatives(
        &self,
        level: Level,
        uids: &[String],
    ) -> Result<Vec<(String, Vec<u8>)>, IndexError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::default();
        let ps: Vec<String> = uids.iter().map(|u| sql.text(u)).collect();
        let (key, group) = match level {
            Level::Study => ("st.study_uid", "se.study_pk"),
            Level::Series => ("se.series_uid", "i.series_pk"),
            Level::Instance => ("i.sop_uid", "i.pk"),
        };
        let text = format!(
            "SELECT {key}, i.metadata FROM {HIERARCHY} WHERE i.pk IN \
             (SELECT MIN(i.pk) FROM {HIERARCHY} WHERE {key} IN ({}) GROUP BY {group})",
            ps.join(", ")
        );
        let rows = sql.bind(sqlx::query(&text)).fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push((r.try_get(0)?, r.try_get(1)?));
        }
        Ok(out)
    }

    async fn count_studies(&self, q: &Query) -> Result<i64, IndexError> {
        let fuzzy = self.resolve_fuzzy(q).await?;
        let sql = search_conditions(q, fuzzy.as_deref());
        let text = format!("SELECT COUNT(*) FROM studies st{}", sql.where_sql());
        let row = sql.bind(sqlx::query(&text)).fetch_one(&self.pool).await?;
        Ok(row.try_get(0)?)
    }

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
                r.try_get(0)?,
                EmrLink {
                    record_id: r.try_get(1)?,
                    url: r.try_get(2)?,
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

    async fn announce_stable_studies(
        &self,
        now_ms: i64,
        stable_after_ms: i64,
        webhook_urls: &[String],
    ) -> Result<Vec<ChangeEvent>, IndexError> {
        let quiet_before = now_ms - stable_after_ms;
        let horizon: i64 = sqlx::query("SELECT horizon FROM change_detector WHERE id = 1")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        // Studies with an instance after the horizon and none since
        // `quiet_before` (every instance newer than the horizon is in the
        // window, so its newest one is the study's newest), with their
        // instance count and the count last announced.
        let rows = sqlx::query(
            "SELECT st.pk, st.study_uid, st.accession_number, st.patient_id, \
             (SELECT COUNT(*) FROM instances i2 JOIN series s2 ON s2.pk = i2.series_pk \
              WHERE s2.study_pk = st.pk), \
             (SELECT a.num_instances FROM study_announcements a WHERE a.study_pk = st.pk) \
             FROM studies st WHERE st.pk IN (SELECT se.study_pk FROM instances i \
             JOIN series se ON se.pk = i.series_pk WHERE i.created_at >= $1 \
             GROUP BY se.study_pk HAVING MAX(i.created_at) <= $2) ORDER BY st.pk",
        )
        .bind(horizon)
        .bind(quiet_before)
        .fetch_all(&self.pool)
        .await?;
        let mut events = Vec::new();
        for r in rows {
            let study = StableStudy {
                pk: r.try_get(0)?,
                uid: r.try_get(1)?,
                accession_number: r.try_get(2)?,
                patient_id: r.try_get(3)?,
                num_instances: r.try_get(4)?,
            };
            let announced: Option<i64> = r.try_get(5)?;
            if announced.is_some_and(|n| n >= study.num_instances) {
                continue;
            }
            if let Some(e) = self.announce(&study, now_ms, webhook_urls).await? {
                events.push(e);
            }
        }
        // Everything up to here that was stable is announced; what was not
        // stable yet stays after the new horizon.
        let _writer = self.writer().await;
        sqlx::query("UPDATE change_detector SET horizon = $1 WHERE id = 1 AND horizon < $1")
            .bind(quiet_before - IN_FLIGHT_MARGIN_MS)
            .execute(&self.pool)
            .await?;
        Ok(events)
    }

    async fn changes(&self, since: i64, limit: i64) -> Result<Vec<ChangeEvent>, IndexError> {
        let text = format!(
            "SELECT {EVENT_COLUMNS} FROM change_events e WHERE e.seq > $1 ORDER BY e.seq LIMIT $2"
        );
        let rows = sqlx::query(&text)
            .bind(since)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| event_from_row(r, 0))
            .collect::<Result<Vec<_>, _>>()?)
    }

    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>, IndexError> {
        // One statement: the conditions are checked again on each row as
        // it is updated, so of two servers racing for a delivery only the
        // first takes it (PostgreSQL re-evaluates them after the row lock).
        let claimed = {
            let _writer = self.writer().await;
            sqlx::query(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, claimed_until = $2, \
                 updated_at = $1 WHERE pk IN (SELECT pk FROM webhook_deliveries \
                 WHERE status = 'pending' AND next_attempt_at <= $1 \
                 AND (claimed_until IS NULL OR claimed_until <= $1) \
                 ORDER BY next_attempt_at, pk LIMIT $3) \
                 AND status = 'pending' AND (claimed_until IS NULL OR claimed_until <= $1) \
                 RETURNING pk, url, attempts, event_seq",
            )
            .bind(now_ms)
            .bind(now_ms + lease_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
        };
        let mut out = Vec::with_capacity(claimed.len());
        for r in claimed {
            let seq: i64 = r.try_get(3)?;
            let text = format!("SELECT {EVENT_COLUMNS} FROM change_events e WHERE e.seq = $1");
            let event = sqlx::query(&text).bind(seq).fetch_one(&self.pool).await?;
            out.push(ClaimedDelivery {
                id: r.try_get(0)?,
                url: r.try_get(1)?,
                attempts: r.try_get(2)?,
                event: event_from_row(&event, 0)?,
            });
        }
        out.sort_by_key(|d| d.id);
        Ok(out)
    }

    async fn record_delivery(
        &self,
        id: i64,
        outcome: &DeliveryOutcome,
        now_ms: i64,
    ) -> Result<(), IndexError> {
        let (status, code, error, next, delivered) = match outcome {
            DeliveryOutcome::Delivered { status } => {
                ("delivered", Some(*status), None, None, Some(now_ms))
            }
            DeliveryOutcome::Retry {
                status,
                error,
                next_attempt_ms,
            } => (
                "pending",
                *status,
                Some(error.as_str()),
                Some(*next_attempt_ms),
                None,
            ),
            DeliveryOutcome::GaveUp { status, error } => {
                ("failed", *status, Some(error.as_str()), None, None)
            }
        };
        let _writer = self.writer().await;
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $2, last_status = $3, \
             last_error = COALESCE($4, last_error), \
             next_attempt_at = COALESCE($5, next_attempt_at), delivered_at = $6, \
             claimed_until = NULL, updated_at = $7 WHERE pk = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(status)
        .bind(code.map(i64::from))
        .bind(error)
        .bind(next)
        .bind(delivered)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn deliveries(&self, limit: i64) -> Result<Vec<DeliveryRecord>, IndexError> {
        let rows = sqlx::query(
            "SELECT pk, event_seq, url, status, attempts, last_status, last_error, \
             next_attempt_at, created_at, updated_at, delivered_at FROM webhook_deliveries \
             ORDER BY pk DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(DeliveryRecord {
                id: r.try_get(0)?,
                event_seq: r.try_get(1)?,
                url: r.try_get(2)?,
                status: r.try_get(3)?,
                attempts: r.try_get(4)?,
                last_status: r.try_get(5)?,
                last_error: r.try_get(6)?,
                next_attempt_ms: r.try_get(7)?,
                created_ms: r.try_get(8)?,
                updated_ms: r.try_get(9)?,
                delivered_ms: r.try_get(10)?,
            });
        }
        Ok(out)
    }

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
             RETURNING study_uid, series_uid, due_at, CAST(attempts AS BIGINT)",
        )
        .bind(now)
        .bind(now + lease_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(ThumbnailJob {
                study_uid: r.try_get(0)?,
                series_uid: r.try_get(1)?,
                due_at: r.try_get(2)?,
                attempts: r.try_get(3)?,
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
