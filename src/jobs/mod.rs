//! The background job runner: one per server, over the index's job queue
//! (`index::jobs`), which every server shares.
//!
//! Each kind of job has a [`Handler`]. The runner claims due jobs of the
//! kinds it has handlers for (at most `--job-concurrency` at once, leased
//! for `--job-lease`), runs them, renews the leases of those still running
//! every third of the lease, and records how each ended: done (the row
//! goes), retried later with backoff, dead after its last attempt (kept for
//! an admin: `GET /api/jobs?state=dead`, `POST /api/jobs/{id}/retry`), or,
//! for a periodic job, due again after its period. Periodic jobs (the
//! stable-study detector, the background fsck) are one row each, so one
//! server runs each period whatever the number of servers.
//!
//! On shutdown the runner stops claiming, cancels what it runs and
//! releases its leases (the jobs are due again at once, for another server
//! or the next start); a server killed outright leaves its leases to run
//! out. A handler that panics is a failed attempt, not a dead runner.

pub(crate) mod routes;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::FutureExt;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::index::jobs::kind;
use crate::index::{now_ms, ClaimedJob, Index, JobEnd, NewJob};
use crate::telemetry;

/// What runs one kind of job.
#[async_trait]
pub(crate) trait Handler: Send + Sync {
    /// One attempt at a claimed job, and how it ended.
    async fn run(&self, job: &ClaimedJob) -> JobEnd;
}

/// How often the runner looks for due jobs when nothing woke it.
const POLL: Duration = Duration::from_millis(500);
/// How often the queue's counts are published as metrics (and periodic
/// jobs made sure of).
const STATS_EVERY: Duration = Duration::from_secs(10);
/// Attempts of a periodic job whose runs keep being cut short (its server
/// dies) before it is dead.
pub(crate) const PERIODIC_MAX_ATTEMPTS: i64 = 5;

/// The first retry delay; doubled per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// The delay before attempt `attempts + 1`: 1 s, 2 s, 4 s, … at most 10 min.
pub(crate) fn backoff(attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// When a job that failed attempt `attempts` at `now` is tried again.
pub(crate) fn retry_at(attempts: i64, now: i64) -> i64 {
    now.saturating_add(i64::try_from(backoff(attempts).as_millis()).unwrap_or(i64::MAX))
}

/// This server's name in the queue's `owner` column: host, process and
/// start time, so a restarted server does not renew its predecessor's
/// leases.
fn owner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "phim".to_owned());
    format!("{host}/{}/{:x}", std::process::id(), now_ms())
}

/// A periodic job: its kind and period.
struct Periodic {
    kind: &'static str,
    every: Duration,
}

/// The runner of one server (see the module documentation).
pub(crate) struct Runner {
    index: Arc<dyn Index>,
    owner: String,
    lease: Duration,
    concurrency: usize,
    handlers: HashMap<&'static str, Arc<dyn Handler>>,
    periodic: Vec<Periodic>,
    /// Periodic kinds this server has switched off (their row is removed).
    off: Vec<&'static str>,
    wake: Arc<Notify>,
}

impl Runner {
    /// A runner with no handlers yet; `wake` makes it look for due jobs at
    /// once (new jobs queued due now).
    pub(crate) fn new(
        index: Arc<dyn Index>,
        lease: Duration,
        concurrency: usize,
        wake: Arc<Notify>,
    ) -> Runner {
        Runner {
            index,
            owner: owner_id(),
            lease: lease.max(Duration::from_secs(1)),
            concurrency: concurrency.max(1),
            handlers: HashMap::new(),
            periodic: Vec::new(),
            off: Vec::new(),
            wake,
        }
    }

    /// Runs jobs of `kind` with `handler`.
    pub(crate) fn handle(&mut self, kind: &'static str, handler: Arc<dyn Handler>) {
        self.handlers.insert(kind, handler);
    }

    /// Runs the periodic job `kind` every `every` (`None`: never, and its
    /// row is removed so no server runs it).
    pub(crate) fn every(
        &mut self,
        kind: &'static str,
        every: Option<Duration>,
        handler: Arc<dyn Handler>,
    ) {
        match every {
            Some(every) => {
                self.handlers.insert(kind, handler);
                self.periodic.push(Periodic { kind, every });
            }
            None => self.off.push(kind),
        }
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// Makes sure each periodic job has its row (the first run one period
    /// from now), and that switched-off ones have none.
    async fn ensure_periodic(&self) {
        let now = now_ms();
        for p in &self.periodic {
            let first = now.saturating_add(i64::try_from(p.every.as_millis()).unwrap_or(i64::MAX));
            let job = NewJob {
                kind: p.kind,
                key: "",
                payload: "",
                run_at: first,
                max_attempts: PERIODIC_MAX_ATTEMPTS,
            };
            if let Err(e) = self.index.ensure_job(&job, now).await {
                tracing::warn!(kind = p.kind, error = %e, "jobs: periodic job not queued yet");
            }
        }
        for k in &self.off {
            if let Ok(true) = self.index.remove_job(k, "").await {
                tracing::info!(kind = k, "jobs: periodic job switched off, removed");
            }
        }
    }

    /// Claims and runs jobs until `shutdown`, then releases its leases.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let runner = Arc::new(self);
        let kinds: Vec<&'static str> = runner.handlers.keys().copied().collect();
        tracing::info!(owner = %runner.owner, kinds = ?kinds, lease_s = runner.lease.as_secs(),
            concurrency = runner.concurrency, "job runner started");
        runner.ensure_periodic().await;
        for k in kind::ALL {
            // Zero from the start: a missing series is not a zero to an alert.
            metrics::counter!(telemetry::JOBS_FINISHED, "kind" => *k, "outcome" => "dead")
                .absolute(0);
        }
        let mut running = JoinSet::new();
        let mut renew = tokio::time::interval(runner.lease / 3);
        let mut stats = tokio::time::interval(STATS_EVERY);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let free = runner.concurrency.saturating_sub(running.len());
            if free > 0 && !shutdown.is_cancelled() {
                for job in runner.claim(&kinds, free).await {
                    let r = runner.clone();
                    running.spawn(async move { r.run_one(job).await });
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = runner.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = renew.tick() => {
                    let now = now_ms();
                    if !running.is_empty() {
                        if let Err(e) = runner.index
                            .renew_jobs(&runner.owner, now, now.saturating_add(runner.lease_ms()))
                            .await
                        {
                            tracing::warn!(error = %e, "jobs: leases not renewed");
                        }
                    }
                }
                _ = stats.tick() => {
                    runner.publish_counts().await;
                    runner.ensure_periodic().await;
                }
            }
        }
        running.abort_all();
        while running.join_next().await.is_some() {}
        match runner.index.release_jobs(&runner.owner, now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "jobs: leases released for another server"),
            Err(e) => tracing::warn!(error = %e, "jobs: leases not released; they run out instead"),
        }
    }

    async fn claim(&self, kinds: &[&'static str], free: usize) -> Vec<ClaimedJob> {
        let limit = i64::try_from(free).unwrap_or(1);
        match self
            .index
            .claim_jobs(kinds, &self.owner, now_ms(), self.lease_ms(), limit)
            .await
        {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "jobs: queue unavailable");
                Vec::new()
            }
        }
    }

    async fn run_one(&self, job: ClaimedJob) {
        let label = kind_label(&job.kind);
        let Some(handler) = self.handlers.get(job.kind.as_str()).cloned() else {
            return; // claimed only for kinds with a handler
        };
        let started = Instant::now();
        let end = AssertUnwindSafe(handler.run(&job))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| JobEnd::Retry {
                at: retry_at(job.attempts, now_ms()),
                error: "the job's handler panicked".to_owned(),
            });
        metrics::histogram!(telemetry::JOB_DURATION, "kind" => label)
            .record(started.elapsed().as_secs_f64());
        let outcome = match &end {
            JobEnd::Done => "done",
            JobEnd::Reschedule { .. } => "rescheduled",
            JobEnd::Retry { .. } if job.attempts < job.max_attempts => "retry",
            JobEnd::Retry { .. } | JobEnd::Dead { .. } => "dead",
        };
        metrics::counter!(telemetry::JOBS_FINISHED, "kind" => label, "outcome" => outcome)
            .increment(1);
        match &end {
            JobEnd::Retry { error, .. } | JobEnd::Dead { error } => tracing::warn!(
                job = job.id, kind = %job.kind, key = %job.key, attempt = job.attempts,
                max_attempts = job.max_attempts, outcome, error = %error, "job failed"
            ),
            _ => {
                tracing::debug!(job = job.id, kind = %job.kind, key = %job.key, outcome, "job ended")
            }
        }
        match self.index.end_job(&job, &end, now_ms()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(job = job.id, "job queued again while it ran; left queued")
            }
            Err(e) => tracing::warn!(job = job.id, error = %e,
                "jobs: outcome not recorded; the job runs again when its lease runs out"),
        }
    }

    async fn publish_counts(&self) {
        let now = now_ms();
        let counts = match self.index.job_counts(now).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "jobs: counts unavailable");
                return;
            }
        };
        for k in kind::ALL {
            for state in ["queued", "running", "dead"] {
                let n = counts
                    .iter()
                    .find(|c| c.kind == *k && c.state == state)
                    .map_or(0, |c| c.count);
                metrics::gauge!(telemetry::JOBS, "kind" => *k, "state" => state).set(n as f64);
            }
            let oldest = counts
                .iter()
                .filter(|c| c.kind == *k)
                .filter_map(|c| c.oldest_due_ms)
                .min()
                .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
            metrics::gauge!(telemetry::JOB_OLDEST_DUE, "kind" => *k).set(oldest);
        }
    }
}

/// The metrics label of a kind: one of [`kind::ALL`], else "other".
fn kind_label(k: &str) -> &'static str {
    kind::ALL
        .iter()
        .copied()
        .find(|x| *x == k)
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_and_bounded() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(11), MAX_BACKOFF);
        assert_eq!(backoff(i64::MAX), MAX_BACKOFF);
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(retry_at(2, 1000), 3000);
    }

    #[test]
    fn labels_are_a_fixed_set() {
        assert_eq!(kind_label("thumbnail"), "thumbnail");
        assert_eq!(kind_label("1.2.3.4"), "other");
    }
}
