//! The audit trail of every access to patient data (IHE ATNA; DICOM PS3.15
//! Annex A.5). Handlers, the auth layer and DIMSE services [`Audit::record`]
//! [`Event`]s; one writer task coalesces them, names the patient of each
//! study, and appends them to the index's hash-chained audit table
//! (`phim audit verify` checks the chain).
//!
//! Recording never waits and never fails the clinical request: the queue
//! is bounded, and events that do not fit are counted and reported as an
//! event of their own. Audit records hold patient identifiers; the
//! ordinary log never does.

pub(crate) mod atna;
pub mod verify;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::Principal;
use crate::index::{now_ms, AuditRecord, Index};

/// Audit event IDs (PS3.16 CID 400, "Audit Event ID"; DCM coding scheme).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub enum EventId {
    ApplicationActivity,
    AuditLogUsed,
    BeginTransferring,
    InstancesAccessed,
    InstancesTransferred,
    StudyDeleted,
    Query,
    SecurityAlert,
    UserAuthentication,
}

impl EventId {
    pub fn code(self) -> u32 {
        match self {
            EventId::ApplicationActivity => 110100,
            EventId::AuditLogUsed => 110101,
            EventId::BeginTransferring => 110102,
            EventId::InstancesAccessed => 110103,
            EventId::InstancesTransferred => 110104,
            EventId::StudyDeleted => 110105,
            EventId::Query => 110112,
            EventId::SecurityAlert => 110113,
            EventId::UserAuthentication => 110114,
        }
    }

    /// The code meaning of PS3.16 CID 400.
    pub(crate) fn meaning(self) -> &'static str {
        match self {
            EventId::ApplicationActivity => "Application Activity",
            EventId::AuditLogUsed => "Audit Log Used",
            EventId::BeginTransferring => "Begin Transferring DICOM Instances",
            EventId::InstancesAccessed => "DICOM Instances Accessed",
            EventId::InstancesTransferred => "DICOM Instances Transferred",
            EventId::StudyDeleted => "DICOM Study Deleted",
            EventId::Query => "Query",
            EventId::SecurityAlert => "Security Alert",
            EventId::UserAuthentication => "User Authentication",
        }
    }
}

/// Event Action Code (PS3.15 A.5.3, RFC 3881): Create, Read, Update,
/// Delete, Execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Action {
    C,
    R,
    U,
    D,
    E,
}

/// Event Outcome Indicator (PS3.15 A.5.3): 0 success, 4 minor failure,
/// 8 serious failure, 12 major failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub enum Outcome {
    Success = 0,
    MinorFailure = 4,
    SeriousFailure = 8,
    MajorFailure = 12,
}

/// Who acted (the Active Participant that is the requestor).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Actor {
    /// `oidc`, `api-key`, `emr-token`, `ae-title`, `anonymous`, `none`, `phim`.
    pub(crate) method: String,
    /// User, key name or AE title.
    pub name: String,
    pub(crate) roles: Vec<String>,
    /// Network address it came from.
    pub(crate) address: Option<String>,
}

impl Actor {
    pub fn of(p: &Principal) -> Actor {
        Actor {
            method: p.method.as_str().to_owned(),
            name: p.name.clone(),
            roles: p.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            address: p.address.map(|a| a.to_string()),
        }
    }

    /// Phim itself (application start and stop, lost events).
    pub fn phim() -> Actor {
        Actor {
            method: "phim".into(),
            name: "phim".into(),
            roles: Vec::new(),
            address: None,
        }
    }
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub(crate) time_ms: i64,
    pub event: EventId,
    /// Event Type Code where CID 400's event needs one (e.g. "Login",
    /// "Application Start").
    pub event_type: Option<String>,
    pub(crate) action: Action,
    pub outcome: Outcome,
    pub(crate) actor: Actor,
    /// The patient of the studies (filled in by the writer when known).
    pub patient_id: Option<String>,
    pub studies: Vec<String>,
    /// Instances stored, sent or accessed (0: not counted).
    pub instances: i64,
    /// The request: `GET /dicomweb/studies?…`, `C-FIND STUDY`, why a
    /// credential was refused.
    pub(crate) detail: String,
    /// Requests merged into this event by the writer.
    pub count: i64,
}

impl Event {
    pub fn new(event: EventId, action: Action, outcome: Outcome, actor: Actor) -> Event {
        Event {
            time_ms: now_ms(),
            event,
            event_type: None,
            action,
            outcome,
            actor,
            patient_id: None,
            studies: Vec::new(),
            instances: 0,
            detail: String::new(),
            count: 1,
        }
    }

    /// A Security Alert for refused access (event type Unauthorized
    /// Access): a 403 on HTTP, a 0124 on DIMSE, a share link off its study.
    pub fn refused(actor: Actor, studies: Vec<String>, detail: String) -> Event {
        Event::new(
            EventId::SecurityAlert,
            Action::E,
            Outcome::MinorFailure,
            actor,
        )
        .event_type("Unauthorized Access")
        .studies(studies)
        .detail(detail)
    }

    /// Application Activity of Phim itself (`Application Start`, `Application Stop`).
    pub fn application(event_type: &str) -> Event {
        Event::new(
            EventId::ApplicationActivity,
            Action::E,
            Outcome::Success,
            Actor::phim(),
        )
        .event_type(event_type)
    }

    pub fn studies(mut self, studies: Vec<String>) -> Event {
        self.studies = studies;
        self
    }

    pub(crate) fn detail(mut self, detail: impl Into<String>) -> Event {
        self.detail = detail.into();
        self
    }

    pub fn event_type(mut self, t: &str) -> Event {
        self.event_type = Some(t.to_owned());
        self
    }

    pub fn instances(mut self, n: i64) -> Event {
        self.instances = n;
        self
    }

    pub fn patient(mut self, id: Option<String>) -> Event {
        self.patient_id = id;
        self
    }

    /// Events the writer may merge: same who, what, outcome and studies.
    fn merge_key(&self) -> impl PartialEq + '_ {
        (
            self.event,
            self.action,
            self.outcome,
            &self.event_type,
            &self.actor,
            &self.studies,
            &self.patient_id,
        )
    }
}

/// Events held at most before new ones are counted as lost.
pub(crate) const QUEUE: usize = 10_000;

/// The handle that services record events through; cheap to clone.
#[derive(Debug, Clone)]
pub struct Audit {
    tx: Option<mpsc::Sender<Event>>,
    lost: Arc<AtomicU64>,
}

impl Audit {
    /// Records nothing (tools that do not serve).
    pub fn disabled() -> Audit {
        Audit {
            tx: None,
            lost: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues an event; never waits. A full queue counts the event as lost.
    pub fn record(&self, event: Event) {
        if let Some(tx) = &self.tx {
            if tx.try_send(event).is_err() {
                self.lost.fetch_add(1, Ordering::Relaxed);
                ::metrics::counter!(crate::telemetry::AUDIT_LOST).increment(1);
            }
        }
    }
}

/// Starts the writer; it drains the queue and stops when `shutdown` is
/// cancelled and every queued event is written.
pub fn start(
    index: Arc<dyn Index>,
    syslog: Option<atna::SyslogTarget>,
    shutdown: CancellationToken,
) -> (Audit, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let audit = Audit {
        tx: Some(tx),
        lost: Arc::new(AtomicU64::new(0)),
    };
    let lost = audit.lost.clone();
    let task = tokio::spawn(async move {
        // The ATNA sender stops after the writer, which feeds it.
        let atna_stop = CancellationToken::new();
        let atna = syslog.map(|t| atna::start(t, atna_stop.clone()));
        write(
            index,
            rx,
            lost,
            shutdown,
            atna.as_ref().map(|(a, _)| a.clone()),
        )
        .await;
        atna_stop.cancel();
        if let Some((_, task)) = atna {
            let _ = task.await;
        }
    });
    (audit, task)
}

/// Most events written in one transaction.
const BATCH: usize = 500;

async fn write(
    index: Arc<dyn Index>,
    mut rx: mpsc::Receiver<Event>,
    lost: Arc<AtomicU64>,
    shutdown: CancellationToken,
    atna: Option<atna::Atna>,
) {
    let mut stopping = false;
    loop {
        let first = if stopping {
            rx.try_recv().ok()
        } else {
            tokio::select! {
                e = rx.recv() => e,
                _ = shutdown.cancelled() => { stopping = true; continue; }
            }
        };
        let mut batch: Vec<Event> = Vec::new();
        if let Some(e) = first {
            batch.push(e);
            // A short pause lets a burst (a viewer loading a stack) arrive
            // and merge into one event per study.
            if !stopping {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(e) => push_merged(&mut batch, e),
                    Err(_) => break,
                }
            }
        }
        let n = lost.swap(0, Ordering::Relaxed);
        if n > 0 {
            tracing::warn!(lost = n, "audit queue full: events lost");
            batch.push(
                Event::new(
                    EventId::SecurityAlert,
                    Action::E,
                    Outcome::SeriousFailure,
                    Actor::phim(),
                )
                .event_type("Audit Recording Stopped")
                .detail(format!("{n} audit events lost: the audit queue was full")),
            );
        }
        if batch.is_empty() {
            if stopping {
                break;
            }
            continue;
        }
        name_patients(index.as_ref(), &mut batch).await;
        append(index.as_ref(), &batch, &lost).await;
        if let Some(a) = &atna {
            for e in &batch {
                a.send(e);
            }
        }
    }
}

fn push_merged(batch: &mut Vec<Event>, e: Event) {
    if let Some(last) = batch
        .iter_mut()
        .rev()
        .take(8)
        .find(|b| b.merge_key() == e.merge_key())
    {
        last.count += e.count;
        last.instances += e.instances;
        return;
    }
    batch.push(e);
}

async fn name_patients(index: &dyn Index, batch: &mut [Event]) {
    let mut uids: Vec<String> = batch
        .iter()
        .filter(|e| e.patient_id.is_none())
        .flat_map(|e| e.studies.iter().cloned())
        .collect();
    uids.sort();
    uids.dedup();
    if uids.is_empty() {
        return;
    }
    // In chunks: each UID is a bound parameter, and the back ends limit them.
    let mut patients = std::collections::HashMap::new();
    for chunk in uids.chunks(500) {
        match index.study_patients(chunk).await {
            Ok(found) => patients.extend(found),
            Err(e) => {
                tracing::warn!(error = %e, "audit: patients of studies not found");
                return;
            }
        }
    }
    for e in batch.iter_mut().filter(|e| e.patient_id.is_none()) {
        let mut ids: Vec<&str> = e
            .studies
            .iter()
            .filter_map(|s| patients.get(s).map(String::as_str))
            .collect();
        ids.sort();
        ids.dedup();
        if !ids.is_empty() {
            e.patient_id = Some(ids.join("\\"));
        }
    }
}

async fn append(index: &dyn Index, batch: &[Event], lost: &AtomicU64) {
    let records: Vec<AuditRecord> = batch.iter().map(record_of).collect();
    for attempt in 0..5u32 {
        match index.append_audit(&records).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, attempt, "audit events not written yet");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
    lost.fetch_add(batch.len() as u64, Ordering::Relaxed);
}

fn record_of(e: &Event) -> AuditRecord {
    AuditRecord {
        time_ms: e.time_ms,
        event_id: e.event.code() as i64,
        outcome: e.outcome as i64,
        actor: e.actor.name.clone(),
        patient_id: e.patient_id.clone(),
        study_uids: e.studies.join(","),
        body: serde_json::to_string(e).unwrap_or_default(),
    }
}
