//! The change feed: `study.stable` events and their webhook deliveries.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::super::jobs::{kind, INSERT_JOB};
use super::super::{
    ChangeEvent, ChangeFeed, ClaimedDelivery, DeliveryOutcome, DeliveryRecord, IndexError,
};
use super::{Dialect, SqlIndex};

/// Instances whose index transaction started this long before the change
/// detector's horizon and committed after it could be missed; the horizon
/// trails the quiet period by this much.
pub(super) const IN_FLIGHT_MARGIN_MS: i64 = 60_000;

/// The PostgreSQL advisory lock that orders change events: taken by each
/// transaction that records one, so `seq` order is commit order and a
/// reader of `/api/changes?since=` never skips an event committed late.
pub(super) const CHANGE_FEED_LOCK: i64 = 0x7068_696d_0007;

/// The columns [`event_from_row`] reads, by name.
const EVENT_COLUMNS: &str =
    "e.seq, e.event_type, e.created_at, e.study_uid, e.accession_number, e.patient_id, e.num_instances";

fn event_from_row(r: &AnyRow) -> Result<ChangeEvent, sqlx::Error> {
    Ok(ChangeEvent {
        seq: r.try_get("seq")?,
        event_type: r.try_get("event_type")?,
        time_ms: r.try_get("created_at")?,
        study_uid: r.try_get("study_uid")?,
        accession_number: r.try_get("accession_number")?,
        patient_id: r.try_get("patient_id")?,
        num_instances: r.try_get("num_instances")?,
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
        webhook_max_attempts: i64,
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
        .try_get("seq")?;
        for url in webhook_urls {
            let pk: i64 = sqlx::query(
                "INSERT INTO webhook_deliveries (event_seq, url, status, attempts, \
                 next_attempt_at, created_at, updated_at) \
                 VALUES ($1, $2, 'pending', 0, $3, $3, $3) RETURNING pk",
            )
            .bind(seq)
            .bind(url)
            .bind(now_ms)
            .fetch_one(&mut *tx)
            .await?
            .try_get("pk")?;
            // Its job, in the same transaction: no delivery without one.
            sqlx::query(INSERT_JOB)
                .bind(kind::WEBHOOK)
                .bind(pk.to_string())
                .bind("")
                .bind(now_ms)
                .bind(webhook_max_attempts)
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
pub(super) const STUDY_STABLE: &str = "study.stable";

#[async_trait]
impl ChangeFeed for SqlIndex {
    async fn announce_stable_studies(
        &self,
        now_ms: i64,
        stable_after_ms: i64,
        webhook_urls: &[String],
        webhook_max_attempts: i64,
    ) -> Result<Vec<ChangeEvent>, IndexError> {
        let quiet_before = now_ms - stable_after_ms;
        let horizon: i64 = sqlx::query("SELECT horizon FROM change_detector WHERE id = 1")
            .fetch_one(&self.pool)
            .await?
            .try_get("horizon")?;
        // Studies with an instance after the horizon and none since
        // `quiet_before` (every instance newer than the horizon is in the
        // window, so its newest one is the study's newest), with their
        // instance count and the count last announced.
        let rows = sqlx::query(
            "SELECT st.pk, st.study_uid, st.accession_number, st.patient_id, \
             (SELECT COUNT(*) FROM instances i2 JOIN series s2 ON s2.pk = i2.series_pk \
              WHERE s2.study_pk = st.pk) AS num_instances, \
             (SELECT a.num_instances FROM study_announcements a WHERE a.study_pk = st.pk) AS announced \
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
                pk: r.try_get("pk")?,
                uid: r.try_get("study_uid")?,
                accession_number: r.try_get("accession_number")?,
                patient_id: r.try_get("patient_id")?,
                num_instances: r.try_get("num_instances")?,
            };
            let announced: Option<i64> = r.try_get("announced")?;
            if announced.is_some_and(|n| n >= study.num_instances) {
                continue;
            }
            if let Some(e) = self
                .announce(&study, now_ms, webhook_urls, webhook_max_attempts)
                .await?
            {
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
            .map(event_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }
    async fn delivery(&self, id: i64) -> Result<Option<ClaimedDelivery>, IndexError> {
        let text = format!(
            "SELECT d.pk, d.url, {EVENT_COLUMNS} FROM webhook_deliveries d \
             JOIN change_events e ON e.seq = d.event_seq WHERE d.pk = $1 AND d.status <> 'delivered'"
        );
        let Some(r) = sqlx::query(&text)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(ClaimedDelivery {
            id: r.try_get("pk")?,
            url: r.try_get("url")?,
            event: event_from_row(&r)?,
        }))
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
             attempts = attempts + 1, updated_at = $7 WHERE pk = $1 AND status <> 'delivered'",
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
                id: r.try_get("pk")?,
                event_seq: r.try_get("event_seq")?,
                url: r.try_get("url")?,
                status: r.try_get("status")?,
                attempts: r.try_get("attempts")?,
                last_status: r.try_get("last_status")?,
                last_error: r.try_get("last_error")?,
                next_attempt_ms: r.try_get("next_attempt_at")?,
                created_ms: r.try_get("created_at")?,
                updated_ms: r.try_get("updated_at")?,
                delivered_ms: r.try_get("delivered_at")?,
            });
        }
        Ok(out)
    }
}
