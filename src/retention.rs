//! Retention rules (`--retention`): studies older than their rule are moved
//! to the trash (`crate::trash`) by the periodic `retention` job, once
//! across all servers; `phim retention report` lists what is due; an admin
//! keeps a study out of it with `PUT /api/studies/{s}/keep`.
//!
//! A study's age counts from its Study Date (0008,0020), or from when it was
//! received when it has none. Its rule is the longest of its modalities'
//! rules (a modality without one takes the global rule): a study is kept as
//! long as any of its parts must be, and for ever when one of them has no
//! rule at all.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use chrono::{NaiveDate, Utc};

use crate::audit::{Action, Actor, Audit, Event, EventId, Outcome};
use crate::auth::Principal;
use crate::config::{RetentionArgs, RetentionCommand};
use crate::error::ApiError;
use crate::index::{now_ms, ClaimedJob, Index, IndexError, JobEnd, RetentionRow, Scope};
use crate::state::AppState;

/// Studies read per index round trip.
const PAGE: i64 = 500;

/// The retention rules, in days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rules {
    global: Option<u32>,
    by_modality: Vec<(String, u32)>,
}

impl Rules {
    /// From `--retention` values: `DAYS` or `MODALITY=DAYS`.
    pub(crate) fn parse(values: &[String]) -> Result<Rules, String> {
        let mut rules = Rules::default();
        for v in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
            let days = |d: &str| {
                d.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|d| *d > 0)
                    .ok_or_else(|| {
                        format!("--retention '{v}': days must be a whole number above 0")
                    })
            };
            match v.split_once('=') {
                None => rules.global = Some(days(v)?),
                Some((m, d)) => {
                    let m = m.trim().to_ascii_uppercase();
                    if m.is_empty() || m.len() > 16 || !m.chars().all(|c| c.is_ascii_alphanumeric())
                    {
                        return Err(format!("--retention '{v}': '{m}' is not a modality"));
                    }
                    rules.by_modality.retain(|(x, _)| *x != m);
                    rules.by_modality.push((m, days(d)?));
                }
            }
        }
        Ok(rules)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.global.is_none() && self.by_modality.is_empty()
    }

    /// The days a study with these modalities is kept (`None`: for ever).
    fn days_for(&self, modalities: &[String]) -> Option<u32> {
        if modalities.is_empty() {
            return self.global;
        }
        let mut longest = 0;
        for m in modalities {
            let rule = self
                .by_modality
                .iter()
                .find(|(x, _)| x.eq_ignore_ascii_case(m))
                .map(|(_, d)| *d)
                .or(self.global)?;
            longest = longest.max(rule);
        }
        Some(longest)
    }

    /// The date from which `row` may go, if a rule applies.
    fn due_on(&self, row: &RetentionRow) -> Option<NaiveDate> {
        let days = self.days_for(&row.modalities)?;
        let from = row
            .study_date
            .as_deref()
            .and_then(|d| NaiveDate::parse_from_str(d.get(..8)?, "%Y%m%d").ok())
            .or_else(|| {
                chrono::DateTime::from_timestamp_millis(row.created_at_ms).map(|t| t.date_naive())
            })?;
        from.checked_add_days(chrono::Days::new(u64::from(days)))
    }
}

/// A study the rules send to the trash on or before `on`.
#[derive(Debug)]
struct Due {
    row: RetentionRow,
    on: NaiveDate,
}

/// The studies due by `by` (held ones included, marked), in index order.
async fn due(index: &dyn Index, rules: &Rules, by: NaiveDate) -> Result<Vec<Due>, IndexError> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = index.retention_page(after, PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(out);
        };
        after = last.pk;
        for row in page {
            if let Some(on) = rules.due_on(&row).filter(|on| *on <= by) {
                out.push(Due { row, on });
            }
        }
    }
}

/// The periodic `retention` job (`--retention-interval`).
pub(crate) struct Sweep {
    pub(crate) index: Arc<dyn Index>,
    pub(crate) rules: Rules,
    pub(crate) trash_retention: Duration,
    pub(crate) audit: Audit,
    pub(crate) wake: Arc<tokio::sync::Notify>,
    pub(crate) every: Duration,
}

impl Sweep {
    async fn sweep(&self) -> Result<usize, String> {
        let today = Utc::now().date_naive();
        let mut moved = 0;
        for d in due(self.index.as_ref(), &self.rules, today)
            .await
            .map_err(|e| e.to_string())?
        {
            if d.row.held {
                continue;
            }
            let Ok(study) = crate::dicom::Uid::parse(&d.row.study_uid) else {
                continue;
            };
            let scope = Scope {
                study,
                series: None,
                instance: None,
            };
            let trashed = crate::trash::delete(
                self.index.as_ref(),
                &scope,
                "retention",
                self.trash_retention,
            )
            .await
            .map_err(|e| e.to_string())?;
            if let Some(t) = trashed {
                moved += 1;
                self.audit.record(
                    Event::new(
                        EventId::StudyDeleted,
                        Action::D,
                        Outcome::Success,
                        Actor::phim(),
                    )
                    .studies(vec![d.row.study_uid.clone()])
                    .patient(t.patient_id)
                    .instances(t.instances)
                    .detail(format!(
                        "retention: due on {} (study date {})",
                        d.on,
                        d.row.study_date.as_deref().unwrap_or("none")
                    )),
                );
            }
        }
        if moved > 0 && self.trash_retention.is_zero() {
            crate::trash::purge_soon(self.index.as_ref(), &self.wake).await;
        }
        Ok(moved)
    }
}

#[async_trait::async_trait]
impl crate::jobs::Handler for Sweep {
    async fn run(&self, _job: &ClaimedJob) -> JobEnd {
        let error = match self.sweep().await {
            Ok(n) => {
                tracing::info!(
                    studies = n,
                    "retention: studies past their rule moved to the trash"
                );
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention: not finished");
                Some(e)
            }
        };
        JobEnd::again_in(self.every, error)
    }
}

/// `phim retention report`; `Ok(true)` always (a report, not a check).
pub async fn run(cmd: RetentionCommand) -> Result<bool, String> {
    let RetentionCommand::Report {
        storage,
        rules,
        within,
        json,
    } = cmd;
    let parsed = Rules::parse(&rules.retention)?;
    std::fs::create_dir_all(&storage.data_dir).map_err(|e| e.to_string())?;
    let url = storage.database_url();
    let index = crate::index::open(&url, true)
        .await
        .map_err(|e| format!("index {}: {e}", crate::redact::redact_url(&url)))?;
    if parsed.is_empty() {
        println!("no retention rule (--retention): every study is kept");
        return Ok(true);
    }
    let by = Utc::now()
        .date_naive()
        .checked_add_days(chrono::Days::new(within))
        .ok_or("--within is too far")?;
    let due = due(index.as_ref(), &parsed, by)
        .await
        .map_err(|e| e.to_string())?;
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    for d in &due {
        if json {
            let line = serde_json::json!({
                "study_uid": d.row.study_uid, "patient_id": d.row.patient_id,
                "accession_number": d.row.accession_number, "study_date": d.row.study_date,
                "modalities": d.row.modalities, "due_on": d.on.to_string(), "held": d.row.held,
            });
            println!("{line}");
        } else {
            println!(
                "{}{:<64} {:<16} {:<16} {:<8} {:<10} due {}",
                if d.row.held { "KEPT " } else { "DUE  " },
                d.row.study_uid,
                or_dash(&d.row.patient_id),
                or_dash(&d.row.accession_number),
                or_dash(&d.row.study_date),
                d.row.modalities.join(","),
                d.on
            );
        }
    }
    if !json {
        let held = due.iter().filter(|d| d.row.held).count();
        println!(
            "{} studies due by {by} ({} to the trash at the next retention run, {held} kept by an admin)",
            due.len(),
            due.len() - held
        );
    }
    Ok(true)
}

/// The rules of `serve`, checked at start-up.
pub(crate) fn rules_of(args: &RetentionArgs) -> Result<Rules, String> {
    Rules::parse(&args.retention)
}

/// `PUT /api/studies/{study}/keep`: retention leaves the study alone (204;
/// 404 when the study is not indexed).
pub(crate) async fn keep(
    State(st): State<AppState>,
    caller: Option<Extension<Principal>>,
    Path(study): Path<String>,
) -> Result<StatusCode, ApiError> {
    hold(st, caller.map(|c| c.0), &study, true).await
}

/// `DELETE /api/studies/{study}/keep`: retention applies again.
pub(crate) async fn release(
    State(st): State<AppState>,
    caller: Option<Extension<Principal>>,
    Path(study): Path<String>,
) -> Result<StatusCode, ApiError> {
    hold(st, caller.map(|c| c.0), &study, false).await
}

async fn hold(
    st: AppState,
    caller: Option<Principal>,
    study: &str,
    on: bool,
) -> Result<StatusCode, ApiError> {
    let study = crate::dicomweb::path_uid("study", study)?;
    let by = caller
        .as_ref()
        .map_or_else(|| "anonymous".to_owned(), |p| p.name.clone());
    if !st.index.set_hold(study.as_str(), on, &by, now_ms()).await? {
        return Err(ApiError::NotFound(if on {
            format!("study {study} is not stored")
        } else {
            format!("study {study} has no hold")
        }));
    }
    let actor = caller.as_ref().map(Actor::of).unwrap_or_else(Actor::phim);
    st.audit.record(
        Event::new(
            EventId::ApplicationActivity,
            Action::U,
            Outcome::Success,
            actor,
        )
        .studies(vec![study.to_string()])
        .detail(if on {
            "retention hold set"
        } else {
            "retention hold cleared"
        }),
    );
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(date: Option<&str>, modalities: &[&str]) -> RetentionRow {
        RetentionRow {
            pk: 1,
            study_uid: "1.2".into(),
            study_date: date.map(str::to_owned),
            created_at_ms: 1_700_000_000_000,
            patient_id: None,
            accession_number: None,
            modalities: modalities.iter().map(|m| (*m).to_owned()).collect(),
            held: false,
        }
    }

    #[test]
    fn rules_take_the_longest_and_keep_what_has_none() {
        let r = Rules::parse(&["3650".into(), "us=30".into(), "MG=7300".into()]).unwrap();
        let d = |date, m: &[&str]| r.due_on(&row(date, m)).map(|d| d.to_string());
        assert_eq!(d(Some("20200101"), &["US"]).as_deref(), Some("2020-01-31"));
        assert_eq!(
            d(Some("20200101"), &["US", "CT"]).as_deref(),
            Some("2029-12-29")
        );
        assert_eq!(
            d(Some("20200101"), &["MG", "US"]).as_deref(),
            Some("2039-12-27")
        );
        // No study date: from when it was received (2023-11-14).
        assert_eq!(d(None, &["US"]).as_deref(), Some("2023-12-14"));
        let only_us = Rules::parse(&["US=30".into()]).unwrap();
        assert!(only_us
            .due_on(&row(Some("20200101"), &["US", "CT"]))
            .is_none());
        assert!(only_us.due_on(&row(Some("20200101"), &[])).is_none());
        assert!(Rules::parse(&["0".into()]).is_err());
        assert!(Rules::parse(&["C T=3".into()]).is_err());
        assert!(Rules::parse(&[]).unwrap().is_empty());
    }
}
