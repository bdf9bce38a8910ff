//! QIDO-RS and C-FIND: studies, series and instances matching a query.

use async_trait::async_trait;
use sqlx::Row;

use super::super::{IndexError, InstanceRow, Search, SeriesRow, StudyRow};
use super::builder::{fuzzy_study_set, search_conditions, Arg, Sql, FUZZY_INLINE_MAX};
use super::{columns, SqlIndex, HIERARCHY};
use crate::query::{Level, Match, Query};

impl SqlIndex {
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
            .map(|r| r.try_get::<i64, _>("study_pk"))
            .collect::<Result<Vec<_>, _>>()?;
        pks.sort_unstable();
        Ok(Some(pks))
    }
}

#[async_trait]
impl Search for SqlIndex {
    async fn search_studies(&self, q: &Query) -> Result<Vec<StudyRow>, IndexError> {
        let fuzzy = self.resolve_fuzzy(q).await?;
        let mut sql = search_conditions(q, fuzzy.as_deref());
        let lim = sql.arg(Arg::Int(q.limit + 1));
        let off = sql.arg(Arg::Int(q.offset));
        let cols = columns::of(Level::Study);
        let text = format!(
            "SELECT st.study_uid, {copied}, \
             (SELECT {mods} FROM series s2 WHERE s2.study_pk = st.pk) AS modalities, \
             (SELECT COUNT(*) FROM series s3 WHERE s3.study_pk = st.pk) AS num_series, \
             (SELECT COUNT(*) FROM instances i4 JOIN series s4 ON s4.pk = i4.series_pk \
              WHERE s4.study_pk = st.pk) AS num_instances \
             FROM (SELECT st.* FROM studies st{where_} ORDER BY {order} LIMIT {lim} OFFSET {off}) st \
             ORDER BY {order}",
            // The page is chosen first; the computed attributes are worked
            // out for its rows only, not for every row skipped by OFFSET.
            order = "st.study_date DESC NULLS LAST, st.study_time DESC NULLS LAST, st.pk DESC",
            mods = self.dialect.distinct_list("s2.modality"),
            where_ = sql.where_sql(),
            copied = columns::qualified(&cols),
        );
        let rows = sql.bind(sqlx::query(&text)).fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mods: Option<String> = r.try_get("modalities")?;
            out.push(StudyRow {
                study_uid: r.try_get("study_uid")?,
                attributes: columns::read(&r, &cols)?,
                modalities: mods
                    .map(|m| {
                        let mut v: Vec<String> = m.split(',').map(str::to_owned).collect();
                        v.sort();
                        v
                    })
                    .unwrap_or_default(),
                num_series: r.try_get("num_series")?,
                num_instances: r.try_get("num_instances")?,
            });
        }
        Ok(out)
    }
    async fn search_series(&self, q: &Query) -> Result<Vec<SeriesRow>, IndexError> {
        let fuzzy = self.resolve_fuzzy(q).await?;
        let mut sql = search_conditions(q, fuzzy.as_deref());
        let lim = sql.arg(Arg::Int(q.limit + 1));
        let off = sql.arg(Arg::Int(q.offset));
        let cols = columns::of(Level::Series);
        let text = format!(
            "SELECT st.study_uid, se.series_uid, {}, \
             (SELECT COUNT(*) FROM instances i2 WHERE i2.series_pk = se.pk) AS num_instances \
             FROM (SELECT se.* , st.pk AS st_pk FROM series se JOIN studies st ON st.pk = se.study_pk{} \
             ORDER BY st.pk DESC, se.series_number, se.pk LIMIT {lim} OFFSET {off}) se \
             JOIN studies st ON st.pk = se.st_pk \
             ORDER BY st.pk DESC, se.series_number, se.pk",
            columns::qualified(&cols),
            sql.where_sql(),
        );
        let rows = sql.bind(sqlx::query(&text)).fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(SeriesRow {
                study_uid: r.try_get("study_uid")?,
                series_uid: r.try_get("series_uid")?,
                attributes: columns::read(&r, &cols)?,
                num_instances: r.try_get("num_instances")?,
            });
        }
        Ok(out)
    }
    async fn search_instances(&self, q: &Query) -> Result<Vec<InstanceRow>, IndexError> {
        let fuzzy = self.resolve_fuzzy(q).await?;
        let mut sql = search_conditions(q, fuzzy.as_deref());
        let lim = sql.arg(Arg::Int(q.limit + 1));
        let off = sql.arg(Arg::Int(q.offset));
        let cols = columns::of(Level::Instance);
        let text = format!(
            "SELECT st.study_uid, se.series_uid, i.sop_uid, i.sop_class_uid, {}, \
             i.num_rows, i.num_columns, i.num_frames, i.bits_allocated, i.transfer_syntax_uid \
             FROM {HIERARCHY}{} ORDER BY st.pk DESC, se.series_number, se.pk, i.instance_number, i.pk \
             LIMIT {lim} OFFSET {off}",
            columns::qualified(&cols),
            sql.where_sql(),
        );
        let rows = sql.bind(sqlx::query(&text)).fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(InstanceRow {
                study_uid: r.try_get("study_uid")?,
                series_uid: r.try_get("series_uid")?,
                sop_uid: r.try_get("sop_uid")?,
                sop_class_uid: r.try_get("sop_class_uid")?,
                attributes: columns::read(&r, &cols)?,
                rows: r.try_get("num_rows")?,
                columns: r.try_get("num_columns")?,
                frames: r.try_get("num_frames")?,
                bits_allocated: r.try_get("bits_allocated")?,
                transfer_syntax_uid: r.try_get("transfer_syntax_uid")?,
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
            "SELECT {key} AS uid, i.metadata FROM {HIERARCHY} WHERE i.pk IN \
             (SELECT MIN(i.pk) FROM {HIERARCHY} WHERE {key} IN ({}) GROUP BY {group})",
            ps.join(", ")
        );
        let rows = sql.bind(sqlx::query(&text)).fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push((r.try_get("uid")?, r.try_get("metadata")?));
        }
        Ok(out)
    }
    async fn count_studies(&self, q: &Query) -> Result<i64, IndexError> {
        let fuzzy = self.resolve_fuzzy(q).await?;
        let sql = search_conditions(q, fuzzy.as_deref());
        let text = format!("SELECT COUNT(*) AS n FROM studies st{}", sql.where_sql());
        let row = sql.bind(sqlx::query(&text)).fetch_one(&self.pool).await?;
        Ok(row.try_get("n")?)
    }
}
