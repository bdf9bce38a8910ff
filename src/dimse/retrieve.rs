//! C-MOVE and C-GET SCP (PS3.4 C.4.2, C.4.3; PS3.7 §9.1.3, §9.1.4):
//! Patient Root and Study Root, PATIENT/STUDY/SERIES/IMAGE levels with
//! unique keys only. The instances are sent as stored (no transcoding):
//! their data set bytes, read from the store after the Part 10 prefix,
//! in a presentation context with the stored transfer syntax.
//!
//! C-MOVE opens a sub-association to the Move Destination (looked up in
//! the remote AE table); C-GET sends the C-STORE-RQs back on the requesting
//! association, for the storage classes the requestor took the SCP role
//! for. Both run as a [`Job`] so that a C-CANCEL-RQ is read while they run;
//! it stops them before their next sub-operation.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dicom_core::Tag;
use dicom_ul::association::client::{AsyncClientAssociation, ClientAssociationOptions};
use dicom_ul::pdu::{
    PDataValue, PDataValueType, Pdu, PresentationContextNegotiated, PresentationContextResultReason,
};
use futures::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::command::{command_pdu, DataSetBuffer};
use super::command::{
    field, response, status, tag, Command, CommandError, CommandWriter, DATA_SET, MAX_COMMAND_LEN,
};
use super::job::{busy_response, Job, JOB_QUEUE};
use super::peer::Peer;
use super::{DimseConfig, RemoteAe, Services};
use crate::dicom::scan::Scanned;
use crate::dicom::transfer_syntax::{self, EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use crate::dicom::write::ElementWriter;
use crate::dicom::Uid;
use crate::imaging::source::Source;
use crate::imaging::transcode::{self, can_transcode};
use crate::index::{Index, Scope, StoredInstance};
use crate::query::{attribute_by_tag, Filter, Level, Match, Query};
use crate::store::{ObjectKey, Store};

pub(crate) const PATIENT_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.1.2";
pub(crate) const STUDY_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
pub(crate) const PATIENT_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.1.3";
pub(crate) const STUDY_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";
const MAX_IDENTIFIER: usize = 1 << 20;
/// Largest PDV we send, whatever the peer accepts (bounds queued memory).
const MAX_PDV: u32 = 1 << 20;
/// Presentation contexts one association can carry (odd IDs 1..=255).
const MAX_CONTEXTS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Move,
    Get,
}

/// A C-MOVE or C-GET whose identifier is arriving.
pub(crate) struct Request {
    kind: Kind,
    pc_id: u8,
    message_id: u16,
    sop_class: String,
    transfer_syntax: String,
    destination: Option<String>,
    identifier: DataSetBuffer,
}

impl Request {
    pub(crate) fn start(
        rq: &Command,
        pc: &PresentationContextNegotiated,
    ) -> Result<Request, CommandError> {
        let kind = if rq.field()? == field::C_MOVE_RQ {
            Kind::Move
        } else {
            Kind::Get
        };
        if !rq.has_data_set() {
            return Err(CommandError::Missing("identifier"));
        }
        Ok(Request {
            kind,
            pc_id: pc.id,
            message_id: rq.message_id()?,
            sop_class: pc.abstract_syntax.trim_end_matches('\0').to_owned(),
            transfer_syntax: pc.transfer_syntax.trim_end_matches('\0').to_owned(),
            destination: rq.ui(tag::MOVE_DESTINATION).map(|d| d.trim().to_owned()),
            identifier: DataSetBuffer::new("C-MOVE/C-GET identifier", MAX_IDENTIFIER),
        })
    }

    pub(crate) fn pc_id(&self) -> u8 {
        self.pc_id
    }

    pub(crate) fn write(&mut self, fragment: &[u8]) -> Result<(), String> {
        self.identifier.push(fragment)
    }

    fn rsp_field(&self) -> u16 {
        match self.kind {
            Kind::Move => field::C_MOVE_RSP,
            Kind::Get => field::C_GET_RSP,
        }
    }

    /// The refusal when another operation runs on the association.
    pub(crate) fn busy(&self) -> Pdu {
        busy_response(
            self.rsp_field(),
            &self.sop_class,
            self.message_id,
            self.pc_id,
        )
    }

    fn refuse(&self, status: u16, comment: &str) -> Vec<Pdu> {
        vec![command_pdu(
            self.pc_id,
            response(self.rsp_field(), &self.sop_class, self.message_id, status)
                .error_comment(comment)
                .into_bytes(),
        )]
    }

    /// The request checked against what this SCP serves: whether to send
    /// Implicit VR, whether it is Patient Root, and the C-MOVE destination;
    /// or the refusal to send.
    fn check(
        &self,
        peer: &Peer,
        config: &DimseConfig,
    ) -> Result<(bool, bool, Option<RemoteAe>), Vec<Pdu>> {
        let implicit = match transfer_syntax::lookup(&self.transfer_syntax) {
            Some(ts) if !ts.encoding.big_endian && !ts.encoding.deflated => {
                !ts.encoding.explicit_vr
            }
            _ => {
                return Err(self.refuse(status::UNABLE_TO_PROCESS, "transfer syntax not supported"))
            }
        };
        let patient_root = match (self.kind, self.sop_class.as_str()) {
            (Kind::Move, PATIENT_ROOT_MOVE) | (Kind::Get, PATIENT_ROOT_GET) => true,
            (Kind::Move, STUDY_ROOT_MOVE) | (Kind::Get, STUDY_ROOT_GET) => false,
            _ => {
                return Err(self.refuse(
                    status::UNABLE_TO_PROCESS,
                    "SOP class does not fit the command",
                ))
            }
        };
        let destination = match self.kind {
            Kind::Get => None,
            Kind::Move => {
                let title = self.destination.clone().unwrap_or_default();
                match config.remote_ae(&title) {
                    Some(d) => Some(d.clone()),
                    None => {
                        tracing::warn!(calling_ae = %peer.calling_ae, destination = %title, "C-MOVE: unknown Move Destination");
                        return Err(self
                            .refuse(status::MOVE_DESTINATION_UNKNOWN, "Move Destination unknown"));
                    }
                }
            }
        };
        Ok((implicit, patient_root, destination))
    }

    /// Selects the instances and starts the sub-operations; returns what
    /// to send now and the job, if one was started.
    pub(super) async fn run(
        self,
        peer: &Peer,
        services: &Services,
        config: &DimseConfig,
    ) -> (Vec<Pdu>, Option<Job>) {
        let (implicit, patient_root, destination) = match self.check(peer, config) {
            Ok(c) => c,
            Err(refusal) => return (refusal, None),
        };
        let scanned = match self.identifier.scan(&self.transfer_syntax) {
            Ok(s) => s,
            Err(e) => {
                return (
                    self.refuse(status::IDENTIFIER_MISMATCH, &format!("identifier: {e}")),
                    None,
                )
            }
        };
        let instances = match select(
            services.index.as_ref(),
            &scanned,
            patient_root,
            config.max_retrieve,
        )
        .await
        {
            Ok(i) => i,
            Err((status, comment)) => return (self.refuse(status, &comment), None),
        };
        tracing::info!(
            calling_ae = %peer.calling_ae,
            destination = destination.as_ref().map(|d| d.title.as_str()).unwrap_or("(C-GET)"),
            instances = instances.len(),
            kind = ?self.kind,
            "retrieve started"
        );
        audit_start(services, peer, &instances, destination.as_ref());

        let (out_tx, out_rx) = mpsc::channel(JOB_QUEUE);
        let (rsp_tx, rsp_rx) = mpsc::channel(JOB_QUEUE);
        let cancel = CancellationToken::new();
        let ctx = Ctx {
            kind: self.kind,
            pc_id: self.pc_id,
            message_id: self.message_id,
            sop_class: self.sop_class.clone(),
            implicit,
            our_ae: config.ae_title.clone(),
            calling_ae: peer.calling_ae.clone(),
            timeout: config.timeout,
            max_pdu: config.max_pdu_length,
            store: services.store.clone(),
            index: services.index.clone(),
            imaging: services.imaging.clone(),
            out: out_tx,
            cancel: cancel.clone(),
        };
        let task = match destination {
            Some(dest) => tokio::spawn(run_move(ctx, instances, dest)),
            None => {
                let targets = get_contexts(peer, &instances);
                let max_pdu = peer.requestor_max_pdu_length();
                tokio::spawn(run_get(ctx, instances, targets, rsp_rx, max_pdu))
            }
        };
        (
            Vec::new(),
            Some(Job {
                out: out_rx,
                cancel,
                responses: rsp_tx,
                message_id: self.message_id,
                task,
                detached: false,
            }),
        )
    }
}

/// What a running retrieve needs.
struct Ctx {
    kind: Kind,
    pc_id: u8,
    message_id: u16,
    sop_class: String,
    /// Encoding of the requesting presentation context (failed UID list).
    implicit: bool,
    our_ae: String,
    calling_ae: String,
    timeout: Duration,
    max_pdu: u32,
    store: Store,
    /// What transcoding needs: the frame index, and the imaging pool.
    index: std::sync::Arc<dyn Index>,
    imaging: crate::imaging::Imaging,
    out: mpsc::Sender<Pdu>,
    cancel: CancellationToken,
}

#[derive(Debug, Default)]
struct Progress {
    remaining: usize,
    completed: usize,
    warning: usize,
    failed: Vec<String>,
}

fn count(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

impl Ctx {
    fn rsp_field(&self) -> u16 {
        match self.kind {
            Kind::Move => field::C_MOVE_RSP,
            Kind::Get => field::C_GET_RSP,
        }
    }

    fn counts(&self, status: u16, p: &Progress, with_remaining: bool) -> CommandWriter {
        let mut w = response(self.rsp_field(), &self.sop_class, self.message_id, status)
            .us(tag::COMPLETED_SUB_OPERATIONS, count(p.completed))
            .us(tag::FAILED_SUB_OPERATIONS, count(p.failed.len()))
            .us(tag::WARNING_SUB_OPERATIONS, count(p.warning));
        if with_remaining {
            w = w.us(tag::REMAINING_SUB_OPERATIONS, count(p.remaining));
        }
        w
    }

    async fn pending(&self, p: &Progress) -> Result<(), ()> {
        let rsp = self.counts(status::PENDING, p, true).into_bytes();
        self.out
            .send(command_pdu(self.pc_id, rsp))
            .await
            .map_err(|_| ())
    }

    /// Sends the final response: Cancel, Success, or Warning (B000) when
    /// any sub-operation failed or warned, or `refused` when given.
    async fn finish(&self, p: &Progress, cancelled: bool, refused: Option<u16>) {
        let status = if cancelled {
            status::CANCEL
        } else if let Some(s) = refused {
            s
        } else if !p.failed.is_empty() || p.warning > 0 {
            status::SUB_OPERATIONS_WARNING
        } else {
            status::SUCCESS
        };
        tracing::info!(
            calling_ae = %self.calling_ae,
            status = format_args!("{status:#06x}"),
            completed = p.completed,
            failed = p.failed.len(),
            warning = p.warning,
            remaining = p.remaining,
            "retrieve finished"
        );
        let mut rsp = self.counts(status, p, cancelled);
        let data = (!p.failed.is_empty()).then(|| failed_list(&p.failed, self.implicit));
        if data.is_some() {
            rsp = rsp.us(tag::COMMAND_DATA_SET_TYPE, DATA_SET);
        }
        if self
            .out
            .send(command_pdu(self.pc_id, rsp.into_bytes()))
            .await
            .is_err()
        {
            return;
        }
        if let Some(data) = data {
            let _ = self
                .out
                .send(Pdu::PData {
                    data: vec![PDataValue {
                        presentation_context_id: self.pc_id,
                        value_type: PDataValueType::Data,
                        is_last: true,
                        data,
                    }],
                })
                .await;
        }
    }

    fn store_rq(&self, id: u16, inst: &StoredInstance) -> Vec<u8> {
        let mut w = CommandWriter::default()
            .ui(tag::AFFECTED_SOP_CLASS_UID, &inst.sop_class_uid)
            .us(tag::COMMAND_FIELD, field::C_STORE_RQ)
            .us(tag::MESSAGE_ID, id)
            .us(tag::PRIORITY, 0)
            .us(tag::COMMAND_DATA_SET_TYPE, DATA_SET)
            .ui(tag::AFFECTED_SOP_INSTANCE_UID, &inst.sop_uid);
        if self.kind == Kind::Move {
            w = w
                .text(tag::MOVE_ORIGINATOR_AE_TITLE, &self.calling_ae)
                .us(tag::MOVE_ORIGINATOR_MESSAGE_ID, self.message_id);
        }
        w.into_bytes()
    }
}

/// Failed SOP Instance UID List (0008,0058), within what one UI value
/// can hold (explicit VR: a 16-bit length).
fn failed_list(uids: &[String], implicit: bool) -> Vec<u8> {
    let limit = if implicit { 1 << 20 } else { 0xFFFE };
    let mut value = String::new();
    for uid in uids {
        if value.len() + uid.len() + 2 > limit {
            break;
        }
        if !value.is_empty() {
            value.push('\\');
        }
        value.push_str(uid);
    }
    let mut w = if implicit {
        ElementWriter::implicit()
    } else {
        ElementWriter::default()
    };
    w.str(0x0008, 0x0058, b"UI", &value);
    w.into_bytes()
}

fn mismatch(m: &str) -> (u16, String) {
    (status::IDENTIFIER_MISMATCH, m.to_owned())
}

fn index_failed(e: crate::index::IndexError) -> (u16, String) {
    tracing::error!(error = %e, "retrieve: index failed");
    (status::UNABLE_TO_PROCESS, "index unavailable".to_owned())
}

/// The studies of the patient a Patient Root identifier names.
async fn patient_studies(
    index: &dyn Index,
    scanned: &Scanned,
    max: usize,
) -> Result<Vec<Scope>, (u16, String)> {
    let (bad, internal) = (mismatch, index_failed);
    let pid = scanned
        .text(Tag(0x0010, 0x0020))
        .ok_or_else(|| bad("Patient ID (0010,0020) missing"))?;
    if pid.contains(['*', '?', '\\']) {
        return Err(bad("Patient ID must be a single value"));
    }
    let attribute = attribute_by_tag(0x0010_0020).ok_or_else(|| bad("Patient ID not indexed"))?;
    let mut q = Query::new(Level::Study);
    q.filters.push(Filter {
        attribute,
        matching: Match::Single(pid),
    });
    q.limit = i64::try_from(max).unwrap_or(i64::MAX);
    let studies = index.search_studies(&q).await.map_err(internal)?;
    let mut scopes = Vec::new();
    for s in studies {
        if let Ok(study) = Uid::parse(&s.study_uid) {
            scopes.push(Scope {
                study,
                series: None,
                instance: None,
            });
        }
    }
    Ok(scopes)
}

/// The instances in `scopes` (those in `wanted` only, when given), each
/// once, at most `max`.
async fn instances_of(
    index: &dyn Index,
    scopes: &[Scope],
    wanted: Option<&BTreeSet<String>>,
    max: usize,
) -> Result<Vec<StoredInstance>, (u16, String)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for scope in scopes {
        for inst in index.instances(scope).await.map_err(index_failed)? {
            if wanted.is_some_and(|w| !w.contains(&inst.sop_uid)) {
                continue;
            }
            if seen.insert(inst.sop_uid.clone()) {
                out.push(inst);
            }
            if out.len() > max {
                return Err((
                    status::OUT_OF_RESOURCES_MATCHES,
                    format!("more than {max} instances"),
                ));
            }
        }
    }
    Ok(out)
}

/// The instances an identifier designates (unique keys only).
async fn select(
    index: &dyn Index,
    scanned: &Scanned,
    patient_root: bool,
    max: usize,
) -> Result<Vec<StoredInstance>, (u16, String)> {
    let bad = mismatch;
    let level = scanned
        .text(Tag(0x0008, 0x0052))
        .map(|l| l.to_ascii_uppercase())
        .ok_or_else(|| bad("Query/Retrieve Level (0008,0052) missing"))?;
    let uids = |tag: Tag, name: &str| -> Result<Vec<Uid>, (u16, String)> {
        let list: Vec<Uid> = scanned
            .text(tag)
            .unwrap_or_default()
            .split('\\')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Uid::parse(s).map_err(|e| bad(&format!("{name}: {e}"))))
            .collect::<Result<_, _>>()?;
        if list.is_empty() {
            return Err(bad(&format!("{name} missing")));
        }
        Ok(list)
    };
    let one = |tag: Tag, name: &str| -> Result<Uid, (u16, String)> {
        let mut list = uids(tag, name)?;
        if list.len() != 1 {
            return Err(bad(&format!("{name}: one value expected")));
        }
        list.pop().ok_or_else(|| bad(name))
    };
    let study_tag = Tag(0x0020, 0x000D);
    let series_tag = Tag(0x0020, 0x000E);
    let (scopes, wanted): (Vec<Scope>, Option<BTreeSet<String>>) = match level.as_str() {
        "PATIENT" if patient_root => (patient_studies(index, scanned, max).await?, None),
        "STUDY" => (
            uids(study_tag, "Study Instance UID")?
                .into_iter()
                .map(|study| Scope {
                    study,
                    series: None,
                    instance: None,
                })
                .collect(),
            None,
        ),
        "SERIES" => {
            let study = one(study_tag, "Study Instance UID")?;
            (
                uids(series_tag, "Series Instance UID")?
                    .into_iter()
                    .map(|series| Scope {
                        study: study.clone(),
                        series: Some(series),
                        instance: None,
                    })
                    .collect(),
                None,
            )
        }
        "IMAGE" => {
            let study = one(study_tag, "Study Instance UID")?;
            let series = one(series_tag, "Series Instance UID")?;
            let sops = uids(Tag(0x0008, 0x0018), "SOP Instance UID")?;
            (
                vec![Scope {
                    study,
                    series: Some(series),
                    instance: None,
                }],
                Some(sops.iter().map(|u| u.as_str().to_owned()).collect()),
            )
        }
        other => return Err(bad(&format!("Query/Retrieve Level {other} not supported"))),
    };
    instances_of(index, &scopes, wanted.as_ref(), max).await
}

/// Where data go: the sub-association of a C-MOVE, or the requesting
/// association (through the job's queue) for a C-GET.
enum Sink<'a> {
    Sub(&'a mut AsyncClientAssociation<TcpStream>),
    Main(&'a mpsc::Sender<Pdu>),
}

impl Sink<'_> {
    async fn send(&mut self, pdu: Pdu) -> Result<(), String> {
        match self {
            Sink::Sub(a) => a.send(&pdu).await.map_err(|e| e.to_string()),
            Sink::Main(tx) => tx
                .send(pdu)
                .await
                .map_err(|_| "association closed".to_owned()),
        }
    }
}

/// Why an instance was not sent.
enum SendError {
    /// Nothing was sent: only this instance fails.
    Instance(String),
    /// The association is in an unknown state: stop.
    Link(String),
}

/// A Part 10 instance as a stream of bytes.
type Body = futures::stream::BoxStream<'static, Result<bytes::Bytes, String>>;

/// The instance for its presentation context: as stored, or transcoded to
/// `target` on the imaging pool (the transcoder of WADO-RS).
async fn instance_body(
    ctx: &Ctx,
    inst: &StoredInstance,
    target: Option<&'static str>,
) -> Result<Body, String> {
    let Some(target) = target else {
        let key =
            ObjectKey::from_stored(&inst.object_key).map_err(|e| format!("object key: {e}"))?;
        let body = ctx
            .store
            .get_stream(&key)
            .await
            .map_err(|e| format!("store: {e}"))?;
        return Ok(body.map(|r| r.map_err(|e| e.to_string())).boxed());
    };
    let scope = Scope::of_instance(inst).map_err(|e| e.to_string())?;
    let src = Source::open(ctx.index.as_ref(), &ctx.store, &scope)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the instance is no longer stored".to_owned())?;
    let body = transcode::instance(&ctx.store, &ctx.imaging, src, target)
        .await
        .map_err(|e| format!("cannot transcode to {target}: {e}"))?;
    Ok(body.map(|r| r.map_err(|e| e.to_string())).boxed())
}

/// Sends a C-STORE-RQ and the data set of `body` (after its Part 10
/// prefix), in PDVs of at most `max_pdu` (the peer's limit) less the headers.
async fn send_instance(
    sink: &mut Sink<'_>,
    body: Result<Body, String>,
    pc_id: u8,
    max_pdu: u32,
    command: Vec<u8>,
) -> Result<(), SendError> {
    let mut stream = body.map_err(SendError::Instance)?;
    // The prefix: preamble, DICM, meta group (its length at 140..144).
    let mut pending: Vec<u8> = Vec::new();
    let mut skip: Option<usize> = None;
    let mut ended = false;
    loop {
        if skip.is_none() && pending.len() >= 144 {
            if &pending[128..132] != b"DICM" || pending[132..136] != [2, 0, 0, 0] {
                return Err(SendError::Instance("stored object is not Part 10".into()));
            }
            let gl = u32::from_le_bytes([pending[140], pending[141], pending[142], pending[143]]);
            skip = Some(144 + gl as usize);
        }
        if let Some(s) = skip {
            if pending.len() >= s {
                pending.drain(..s);
                break;
            }
        }
        match stream.next().await {
            Some(Ok(chunk)) => pending.extend_from_slice(&chunk),
            Some(Err(e)) => return Err(SendError::Instance(e)),
            None => {
                ended = true;
                if skip.is_some_and(|s| pending.len() >= s) {
                    continue;
                }
                return Err(SendError::Instance("stored object truncated".into()));
            }
        }
        if pending.len() > (1 << 20) && skip.is_none_or(|s| s > (1 << 24)) {
            return Err(SendError::Instance(
                "stored object has no sane meta group".into(),
            ));
        }
    }
    sink.send(command_pdu(pc_id, command))
        .await
        .map_err(SendError::Link)?;
    let chunk = (max_pdu.min(MAX_PDV) as usize).saturating_sub(12).max(64);
    let data_pdu = |data: Vec<u8>, is_last: bool| Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc_id,
            value_type: PDataValueType::Data,
            is_last,
            data,
        }],
    };
    loop {
        while pending.len() > chunk {
            let rest = pending.split_off(chunk);
            let piece = std::mem::replace(&mut pending, rest);
            sink.send(data_pdu(piece, false))
                .await
                .map_err(SendError::Link)?;
        }
        if ended {
            break;
        }
        match stream.next().await {
            Some(Ok(c)) => pending.extend_from_slice(&c),
            Some(Err(e)) => return Err(SendError::Link(format!("failed mid-object: {e}"))),
            None => ended = true,
        }
    }
    sink.send(data_pdu(pending, true))
        .await
        .map_err(SendError::Link)
}

/// Reads one command (a C-STORE-RSP) from the sub-association.
async fn read_command(
    sub: &mut AsyncClientAssociation<TcpStream>,
    timeout: Duration,
) -> Result<Command, String> {
    let mut buf = Vec::new();
    loop {
        let pdu = tokio::time::timeout(timeout, sub.receive())
            .await
            .map_err(|_| "timed out waiting for C-STORE-RSP".to_owned())?
            .map_err(|e| e.to_string())?;
        match pdu {
            Pdu::PData { data } => {
                for pdv in data {
                    if pdv.value_type != PDataValueType::Command {
                        return Err("unexpected data set".into());
                    }
                    if buf.len() + pdv.data.len() > MAX_COMMAND_LEN {
                        return Err("command set too large".into());
                    }
                    buf.extend_from_slice(&pdv.data);
                    if pdv.is_last {
                        return Command::parse(&buf).map_err(|e| e.to_string());
                    }
                }
            }
            Pdu::AbortRQ { .. } => return Err("sub-association aborted by the peer".into()),
            other => return Err(format!("unexpected {}", other.short_description())),
        }
    }
}

/// Records a C-STORE-RSP's status.
fn record(p: &mut Progress, inst: &StoredInstance, rsp: &Command, id: u16) {
    let status = rsp.us(tag::STATUS);
    let answered = rsp.us(tag::MESSAGE_ID_BEING_RESPONDED_TO) == Some(id)
        && rsp.field().ok() == Some(field::C_STORE_RSP);
    match status {
        Some(status::SUCCESS) if answered => p.completed += 1,
        Some(s) if answered && status::is_warning(s) => p.warning += 1,
        other => {
            tracing::warn!(sop = %inst.sop_uid, status = ?other, "C-STORE sub-operation failed");
            p.failed.push(inst.sop_uid.clone());
        }
    }
}

/// The audit trail's "Begin Transferring DICOM Instances" of a retrieve.
fn audit_start(
    services: &Services,
    peer: &Peer,
    instances: &[StoredInstance],
    destination: Option<&RemoteAe>,
) {
    let mut studies: Vec<String> = instances.iter().map(|i| i.study_uid.clone()).collect();
    studies.sort();
    studies.dedup();
    services.audit.record(
        crate::audit::Event::new(
            crate::audit::EventId::BeginTransferring,
            crate::audit::Action::R,
            crate::audit::Outcome::Success,
            peer.actor(),
        )
        .studies(studies)
        .instances(instances.len() as i64)
        .detail(match destination {
            Some(d) => format!("C-MOVE to {}", d.title),
            None => "C-GET".to_owned(),
        }),
    );
}

/// The accepted presentation contexts of a sub-association, by (SOP
/// class, transfer syntax).
type Contexts = BTreeMap<(String, String), u8>;

/// What an instance is sent in when its destination refuses the stored
/// syntax, in order: the uncompressed syntaxes every DICOM peer takes
/// (PS3.5 §10.1: Implicit VR LE is the default one).
const FALLBACKS: [&str; 2] = [EXPLICIT_VR_LE, IMPLICIT_VR_LE];

/// The syntax and presentation context an instance goes in: the stored one
/// if `accepted` gives a context for it, else the first fallback it can be
/// transcoded to.
fn choose(
    inst: &StoredInstance,
    accepted: impl Fn(&str) -> Option<u8>,
) -> Option<(u8, Option<&'static str>)> {
    if let Some(pc) = accepted(&inst.transfer_syntax_uid) {
        return Some((pc, None));
    }
    FALLBACKS
        .into_iter()
        .filter(|ts| can_transcode(&inst.transfer_syntax_uid, ts))
        .find_map(|ts| accepted(ts).map(|pc| (pc, Some(ts))))
}

/// The C-MOVE sub-association to `dest`, proposing one presentation
/// context per (SOP class, stored transfer syntax) of `instances`, then one
/// per SOP class in each fallback syntax for those that can be transcoded
/// to it (a destination that refuses the stored syntax gets that instead).
/// One transfer syntax per context: the destination's choice among several
/// would not tell us which it prefers.
async fn associate(
    ctx: &Ctx,
    dest: &RemoteAe,
    instances: &[StoredInstance],
) -> Option<(AsyncClientAssociation<TcpStream>, Contexts)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for inst in instances {
        let pair = (inst.sop_class_uid.clone(), inst.transfer_syntax_uid.clone());
        if !pairs.contains(&pair) && pairs.len() < MAX_CONTEXTS {
            pairs.push(pair);
        }
    }
    for ts in FALLBACKS {
        for inst in instances {
            let fallback = (inst.sop_class_uid.clone(), ts.to_owned());
            if can_transcode(&inst.transfer_syntax_uid, ts)
                && !pairs.contains(&fallback)
                && pairs.len() < MAX_CONTEXTS
            {
                pairs.push(fallback);
            }
        }
    }
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(ctx.our_ae.clone())
        .called_ae_title(dest.title.clone())
        .max_pdu_length(ctx.max_pdu)
        .read_timeout(ctx.timeout)
        .write_timeout(ctx.timeout)
        .connection_timeout(ctx.timeout);
    for (class, ts) in &pairs {
        options = options.with_presentation_context(class.clone(), vec![ts.clone()]);
    }
    let established =
        tokio::time::timeout(ctx.timeout, options.establish_async(dest.address.as_str())).await;
    let sub = match established {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            tracing::warn!(destination = %dest.title, error = %e, "C-MOVE: cannot associate with the destination");
            return None;
        }
        Err(_) => {
            tracing::warn!(destination = %dest.title, "C-MOVE: association with the destination timed out");
            return None;
        }
    };
    let contexts: Contexts = sub
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| {
            (
                (
                    pc.abstract_syntax.trim_end_matches('\0').to_owned(),
                    pc.transfer_syntax.trim_end_matches('\0').to_owned(),
                ),
                pc.id,
            )
        })
        .collect();
    Some((sub, contexts))
}

async fn run_move(ctx: Ctx, instances: Vec<StoredInstance>, dest: RemoteAe) {
    let mut p = Progress {
        remaining: instances.len(),
        ..Progress::default()
    };
    if instances.is_empty() {
        ctx.finish(&p, false, None).await;
        return;
    }
    let Some((mut sub, contexts)) = associate(&ctx, &dest, &instances).await else {
        return fail_all(&ctx, p, instances).await;
    };
    let max_pdu = sub.acceptor_max_pdu_length();
    let mut cancelled = false;
    let mut broken = false;
    let mut iter = instances.into_iter();
    let mut id: u16 = 0;
    for inst in iter.by_ref() {
        if ctx.cancel.is_cancelled() {
            // Not sent: it stays among the remaining.
            cancelled = true;
            break;
        }
        p.remaining -= 1;
        let target = choose(&inst, |ts| {
            contexts
                .get(&(inst.sop_class_uid.clone(), ts.to_owned()))
                .copied()
        });
        match target {
            None => {
                tracing::warn!(sop = %inst.sop_uid, ts = %inst.transfer_syntax_uid, "C-MOVE: destination accepted neither the stored transfer syntax nor an uncompressed one it can be transcoded to");
                p.failed.push(inst.sop_uid.clone());
            }
            Some((pc_id, transcode_to)) => {
                id = id.wrapping_add(1);
                let rq = ctx.store_rq(id, &inst);
                let body = instance_body(&ctx, &inst, transcode_to).await;
                let sent = send_instance(&mut Sink::Sub(&mut sub), body, pc_id, max_pdu, rq).await;
                match sent {
                    Ok(()) => match read_command(&mut sub, ctx.timeout).await {
                        Ok(rsp) => record(&mut p, &inst, &rsp, id),
                        Err(e) => {
                            tracing::warn!(destination = %dest.title, error = %e, "C-MOVE: sub-association failed");
                            p.failed.push(inst.sop_uid.clone());
                            broken = true;
                        }
                    },
                    Err(SendError::Instance(e)) => {
                        tracing::error!(sop = %inst.sop_uid, error = %e, "C-MOVE: cannot read the stored instance");
                        p.failed.push(inst.sop_uid.clone());
                    }
                    Err(SendError::Link(e)) => {
                        tracing::warn!(destination = %dest.title, error = %e, "C-MOVE: sub-association failed");
                        p.failed.push(inst.sop_uid.clone());
                        broken = true;
                    }
                }
            }
        }
        if broken {
            break;
        }
        if p.remaining > 0 && ctx.pending(&p).await.is_err() {
            // The requesting association is gone.
            let _ = sub.abort().await;
            return;
        }
    }
    if broken {
        let _ = sub.abort().await;
        for inst in iter {
            p.failed.push(inst.sop_uid);
        }
        p.remaining = 0;
    } else {
        let _ = tokio::time::timeout(ctx.timeout, sub.release()).await;
    }
    ctx.finish(&p, cancelled, None).await;
}

/// No sub-operation could be performed (A702), all counted failed.
async fn fail_all(ctx: &Ctx, mut p: Progress, instances: Vec<StoredInstance>) {
    p.remaining = 0;
    p.failed = instances.into_iter().map(|i| i.sop_uid).collect();
    ctx.finish(&p, false, Some(status::OUT_OF_RESOURCES_SUB_OPERATIONS))
        .await;
}

/// Where an instance goes on the requesting association: a presentation
/// context, and the syntax to transcode to when it is not the stored one.
type GetTarget = Option<(u8, Option<&'static str>)>;

/// For each instance, the presentation context of the requesting
/// association it can go on (SCP role; the stored transfer syntax, else a
/// fallback by transcoding), if any.
fn get_contexts(peer: &Peer, instances: &[StoredInstance]) -> Vec<GetTarget> {
    instances
        .iter()
        .map(|inst| {
            if !peer.is_scp_for(&inst.sop_class_uid) {
                return None;
            }
            choose(inst, |ts| {
                peer.presentation_contexts()
                    .iter()
                    .find(|pc| {
                        pc.reason == PresentationContextResultReason::Acceptance
                            && pc.abstract_syntax.trim_end_matches('\0') == inst.sop_class_uid
                            && pc.transfer_syntax.trim_end_matches('\0') == ts
                    })
                    .map(|pc| pc.id)
            })
        })
        .collect()
}

async fn run_get(
    ctx: Ctx,
    instances: Vec<StoredInstance>,
    targets: Vec<GetTarget>,
    mut responses: mpsc::Receiver<Command>,
    max_pdu: u32,
) {
    let mut p = Progress {
        remaining: instances.len(),
        ..Progress::default()
    };
    let mut cancelled = false;
    let mut id: u16 = 0;
    let total = instances.len();
    for (n, (inst, target)) in instances.iter().zip(targets).enumerate() {
        if ctx.cancel.is_cancelled() {
            cancelled = true;
            p.remaining = total - n;
            break;
        }
        p.remaining -= 1;
        match target {
            None => {
                tracing::warn!(sop = %inst.sop_uid, ts = %inst.transfer_syntax_uid, "C-GET: no presentation context with SCP role for the SOP class in the stored transfer syntax or an uncompressed one");
                p.failed.push(inst.sop_uid.clone());
            }
            Some((pc_id, transcode_to)) => {
                id = id.wrapping_add(1);
                let rq = ctx.store_rq(id, inst);
                let body = instance_body(&ctx, inst, transcode_to).await;
                let sent = send_instance(&mut Sink::Main(&ctx.out), body, pc_id, max_pdu, rq).await;
                match sent {
                    Ok(()) => match tokio::time::timeout(ctx.timeout, responses.recv()).await {
                        Ok(Some(rsp)) => record(&mut p, inst, &rsp, id),
                        // The association ended.
                        Ok(None) => return,
                        // The SCU does not answer: the rest fails.
                        Err(_) => {
                            tracing::warn!(calling_ae = %ctx.calling_ae, "C-GET: no C-STORE-RSP in time");
                            p.failed
                                .extend(instances[n..].iter().map(|i| i.sop_uid.clone()));
                            p.remaining = 0;
                            break;
                        }
                    },
                    Err(SendError::Instance(e)) => {
                        tracing::error!(sop = %inst.sop_uid, error = %e, "C-GET: cannot read the stored instance");
                        p.failed.push(inst.sop_uid.clone());
                    }
                    Err(SendError::Link(e)) => {
                        tracing::warn!(calling_ae = %ctx.calling_ae, error = %e, "C-GET: association failed");
                        return;
                    }
                }
            }
        }
        if p.remaining > 0 && ctx.pending(&p).await.is_err() {
            return;
        }
    }
    ctx.finish(&p, cancelled, None).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_list_fits_one_value() {
        let uids: Vec<String> = (0..5000).map(|i| format!("1.2.826.0.1.{i}")).collect();
        let explicit = failed_list(&uids, false);
        // tag, "UI", 16-bit length
        assert_eq!(&explicit[..6], &[0x08, 0x00, 0x58, 0x00, b'U', b'I']);
        let len = u16::from_le_bytes([explicit[6], explicit[7]]) as usize;
        assert_eq!(len, explicit.len() - 8);
        assert!(len <= 0xFFFE && len % 2 == 0);
        let implicit = failed_list(&uids[..2], true);
        let len = u32::from_le_bytes([implicit[4], implicit[5], implicit[6], implicit[7]]);
        assert_eq!(&implicit[8..], b"1.2.826.0.1.0\\1.2.826.0.1.1\0");
        assert_eq!(len as usize, implicit.len() - 8);
    }

    #[test]
    fn counts_saturate() {
        assert_eq!(count(7), 7);
        assert_eq!(count(100_000), u16::MAX);
    }
}
