//! The trash's SQL (the interface and its rules: `index/trash.rs`).

use async_trait::async_trait;
use sqlx::Row;

use super::super::trash::{Rejection, Trash, Trashed, TrashedObject, TrashedStudy};
use super::super::{IndexError, Scope};
use super::builder::{scope_filter, Sql};
use super::{SqlIndex, HIERARCHY};

/// Within an index transaction that indexes the object `key`: takes it out
/// of the trash if it is there. An object being purged is refused
/// ([`IndexError::Conflict`]): the caller rolls back.
pub(super) async fn take_from_trash(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    key: &str,
) -> Result<(), IndexError> {
    let row = sqlx::query("DELETE FROM trash WHERE object_key = $1 RETURNING state")
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?;
    match row {
        Some(r) if r.try_get::<String, _>("state")? == "purging" => Err(IndexError::Conflict(
            "the instance's object is being purged from the trash; send it again later".into(),
        )),
        _ => Ok(()),
    }
}

#[async_trait]
impl Trash for SqlIndex {
    async fn trash(
        &self,
        scope: &Scope,
        deleted_by: &str,
        now_ms: i64,
        purge_after_ms: i64,
    ) -> Result<Option<Trashed>, IndexError> {
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;
        let f = scope_filter(scope);
        let at = (deleted_by, now_ms, purge_after_ms);
        let trashed = trash_in(&mut tx, &f, scope.study.as_str(), at).await?;
        tx.commit().await?;
        Ok(trashed)
    }

    async fn reject(
        &self,
        rejection: &Rejection<'_>,
        now_ms: i64,
        purge_after_ms: i64,
    ) -> Result<i64, IndexError> {
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;
        let mut studies: Vec<&str> = Vec::new();
        for (study, series, sop) in rejection.references {
            sqlx::query(
                "INSERT INTO rejections (sop_uid, study_uid, series_uid, code, meaning, note_uid, \
                 rejected_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (sop_uid) DO NOTHING",
            )
            .bind(sop)
            .bind(study)
            .bind(series)
            .bind(rejection.code)
            .bind(rejection.meaning)
            .bind(rejection.note_uid)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            if !studies.contains(&study.as_str()) {
                studies.push(study);
            }
        }
        let by = format!("IOCM {} {}", rejection.code, rejection.meaning);
        let mut hidden = 0;
        for study in studies {
            let sops: Vec<&str> = rejection
                .references
                .iter()
                .filter(|(s, _, _)| s == study)
                .map(|(_, _, sop)| sop.as_str())
                .collect();
            for chunk in sops.chunks(500) {
                let mut f = Sql::default();
                f.eq("st.study_uid", Some(study));
                let marks: Vec<String> = chunk.iter().map(|s| f.text(s)).collect();
                f.conds.push(format!("i.sop_uid IN ({})", marks.join(", ")));
                let at = (by.as_str(), now_ms, purge_after_ms);
                if let Some(t) = trash_in(&mut tx, &f, study, at).await? {
                    hidden += t.instances;
                }
            }
        }
        tx.commit().await?;
        Ok(hidden)
    }

    async fn rejection(&self, sop_uid: &str) -> Result<Option<String>, IndexError> {
        let row = sqlx::query("SELECT code, meaning, note_uid FROM rejections WHERE sop_uid = $1")
            .bind(sop_uid)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let code: String = r.try_get("code")?;
            let meaning: String = r.try_get("meaning")?;
            let note: String = r.try_get("note_uid")?;
            Ok(format!("{meaning} ({code}) by rejection note {note}"))
        })
        .transpose()
    }

    async fn trash_list(&self) -> Result<Vec<TrashedStudy>, IndexError> {
        let sql = format!(
            "SELECT study_uid, MAX(patient_id) AS patient_id, MAX(patient_name) AS patient_name, \
             MAX(study_date) AS study_date, MAX(accession_number) AS accession_number, \
             MAX(study_description) AS study_description, {} AS modalities, \
             COUNT(*) AS n, CAST(SUM(size) AS BIGINT) AS bytes, MAX(deleted_at) AS deleted_at, \
             MAX(deleted_by) AS deleted_by, MIN(purge_after) AS purge_after \
             FROM trash GROUP BY study_uid ORDER BY MAX(deleted_at) DESC, study_uid",
            self.dialect.distinct_list("modality")
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(TrashedStudy {
                    study_uid: r.try_get("study_uid")?,
                    patient_id: r.try_get("patient_id")?,
                    patient_name: r.try_get("patient_name")?,
                    study_date: r.try_get("study_date")?,
                    accession_number: r.try_get("accession_number")?,
                    study_description: r.try_get("study_description")?,
                    modalities: r.try_get("modalities")?,
                    instances: r.try_get("n")?,
                    bytes: r.try_get::<Option<i64>, _>("bytes")?.unwrap_or(0),
                    deleted_at_ms: r.try_get("deleted_at")?,
                    deleted_by: r.try_get("deleted_by")?,
                    purge_after_ms: r.try_get("purge_after")?,
                })
            })
            .collect()
    }

    async fn trashed_objects(&self, study_uid: &str) -> Result<Vec<TrashedObject>, IndexError> {
        let rows = sqlx::query(
            "SELECT pk, object_key, study_uid, sop_uid FROM trash \
             WHERE study_uid = $1 AND state = 'trashed' ORDER BY pk",
        )
        .bind(study_uid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(object_from_row).collect()
    }

    async fn trashed_keys(&self) -> Result<Vec<String>, IndexError> {
        Ok(sqlx::query_scalar("SELECT object_key FROM trash")
            .fetch_all(&self.pool)
            .await?)
    }

    async fn claim_purge(
        &self,
        now_ms: i64,
        study_uid: Option<&str>,
        limit: i64,
    ) -> Result<Vec<TrashedObject>, IndexError> {
        let _writer = self.writer().await;
        let study = if study_uid.is_some() {
            " AND study_uid = $3"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE trash SET state = 'purging' WHERE pk IN (SELECT pk FROM trash \
             WHERE purge_after <= $1{study} ORDER BY purge_after, pk LIMIT $2) \
             RETURNING pk, object_key, study_uid, sop_uid"
        );
        let mut q = sqlx::query(&sql).bind(now_ms).bind(limit);
        if let Some(s) = study_uid {
            q = q.bind(s);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(object_from_row).collect()
    }

    async fn purged(&self, pks: &[i64]) -> Result<(), IndexError> {
        if pks.is_empty() {
            return Ok(());
        }
        let _writer = self.writer().await;
        let marks: Vec<String> = (1..=pks.len()).map(|i| format!("${i}")).collect();
        let sql = format!("DELETE FROM trash WHERE pk IN ({})", marks.join(", "));
        let mut q = sqlx::query(&sql);
        for pk in pks {
            q = q.bind(*pk);
        }
        q.execute(&self.pool).await?;
        Ok(())
    }

    async fn study_known(&self, study_uid: &str) -> Result<bool, IndexError> {
        let live: Option<i64> = sqlx::query_scalar("SELECT pk FROM studies WHERE study_uid = $1")
            .bind(study_uid)
            .fetch_optional(&self.pool)
            .await?;
        if live.is_some() {
            return Ok(true);
        }
        let trashed: Option<i64> =
            sqlx::query_scalar("SELECT pk FROM trash WHERE study_uid = $1 LIMIT 1")
                .bind(study_uid)
                .fetch_optional(&self.pool)
                .await?;
        Ok(trashed.is_some())
    }
}

fn object_from_row(r: &sqlx::any::AnyRow) -> Result<TrashedObject, IndexError> {
    Ok(TrashedObject {
        pk: r.try_get("pk")?,
        object_key: r.try_get("object_key")?,
        study_uid: r.try_get("study_uid")?,
        sop_uid: r.try_get("sop_uid")?,
    })
}

/// Moves the instances `f` selects (all of one study) to the trash, inside
/// `tx`; removes the series and study rows left empty. `at` is who deleted
/// them, when, and when they may be purged.
async fn trash_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    f: &Sql,
    study: &str,
    (deleted_by, now_ms, purge_after_ms): (&str, i64, i64),
) -> Result<Option<Trashed>, IndexError> {
    let w = f.where_sql();
    let n = f.args.len();

    let head = format!(
        "SELECT st.pk AS study_pk, st.patient_id, COUNT(*) AS n, \
             CAST(SUM(i.size) AS BIGINT) AS bytes FROM {HIERARCHY}{w} \
             GROUP BY st.pk, st.patient_id"
    );
    let Some(row) = f.bind(sqlx::query(&head)).fetch_optional(&mut **tx).await? else {
        return Ok(None);
    };
    let study_pk: i64 = row.try_get("study_pk")?;
    let patient_id: Option<String> = row.try_get("patient_id")?;
    let instances: i64 = row.try_get("n")?;
    let bytes: Option<i64> = row.try_get("bytes")?;

    let insert = format!(
        "INSERT INTO trash (object_key, study_uid, series_uid, sop_uid, size, sha256, \
             patient_id, patient_name, study_date, accession_number, study_description, \
             modality, deleted_at, deleted_by, purge_after, state) \
             SELECT i.object_key, st.study_uid, se.series_uid, i.sop_uid, i.size, i.sha256, \
             st.patient_id, st.patient_name, st.study_date, st.accession_number, \
             st.study_description, se.modality, ${}, ${}, ${}, 'trashed' FROM {HIERARCHY}{w} \
             ON CONFLICT (object_key) DO UPDATE SET deleted_at = excluded.deleted_at, \
             deleted_by = excluded.deleted_by, purge_after = excluded.purge_after, \
             state = 'trashed'",
        n + 1,
        n + 2,
        n + 3
    );
    f.bind(sqlx::query(&insert))
        .bind(now_ms)
        .bind(deleted_by)
        .bind(purge_after_ms)
        .execute(&mut **tx)
        .await?;
    let pks = format!("SELECT i.pk FROM {HIERARCHY}{w}");
    for table in ["sequence_items WHERE instance_pk", "instances WHERE pk"] {
        let text = format!("DELETE FROM {table} IN ({pks})");
        f.bind(sqlx::query(&text)).execute(&mut **tx).await?;
    }
    sqlx::query(
        "DELETE FROM series WHERE study_pk = $1 \
             AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.series_pk = series.pk)",
    )
    .bind(study_pk)
    .execute(&mut **tx)
    .await?;
    // Thumbnail jobs of series that are gone would only fail.
    sqlx::query(
        "DELETE FROM jobs WHERE kind = 'thumbnail' AND payload = $1 \
             AND NOT EXISTS (SELECT 1 FROM series se WHERE se.series_uid = jobs.job_key)",
    )
    .bind(study)
    .execute(&mut **tx)
    .await?;
    let left: Option<i64> = sqlx::query_scalar("SELECT pk FROM series WHERE study_pk = $1")
        .bind(study_pk)
        .fetch_optional(&mut **tx)
        .await?;
    let study_removed = left.is_none();
    if study_removed {
        for table in [
            "study_name_words",
            "emr_links",
            "study_announcements",
            "studies",
        ] {
            let column = if table == "studies" { "pk" } else { "study_pk" };
            let text = format!("DELETE FROM {table} WHERE {column} = $1");
            sqlx::query(&text).bind(study_pk).execute(&mut **tx).await?;
        }
    }
    Ok(Some(Trashed {
        instances,
        bytes: bytes.unwrap_or(0),
        patient_id,
        study_removed,
    }))
}
