//! Storage Commitment Push Model SCP (PS3.4 Annex J): N-ACTION-RQ (action
//! type 1, Request Storage Commitment) is answered at once, then the result
//! goes in an N-EVENT-REPORT-RQ: event type 1 when every instance is held
//! (in the index *and* its object in the store), 2 otherwise, with the
//! missing ones in the Failed SOP Sequence (reason 0112, no such object
//! instance; 0119 when the SOP class differs from the stored one).
//!
//! The report goes on the requesting association while it is open. When
//! the requester released it before acknowledging the report, or answered
//! it with a failure, the report goes on a new association to the
//! requester (from the remote AE table), where we take the SCP role of the
//! commitment class (PS3.4 J.3.3).

use std::time::Duration;

use dicom_core::Tag;
use dicom_ul::association::client::ClientAssociationOptions;
use dicom_ul::pdu::{
    PDataValue, PDataValueType, Pdu, PresentationContextNegotiated, PresentationContextResultReason,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::command::{command_pdu, DataSetBuffer};
use super::command::{
    field, response, status, tag, Command, CommandError, CommandWriter, DATA_SET, MAX_COMMAND_LEN,
};
use super::job::{busy_response, Job, JOB_QUEUE};
use super::{DimseConfig, RemoteAe, Services};
use crate::dicom::scan::Value;
use crate::dicom::transfer_syntax;
use crate::dicom::write::ElementWriter;
use crate::store::ObjectKey;

pub(crate) const STORAGE_COMMITMENT: &str = "1.2.840.10008.1.20.1";
/// The well-known SOP Instance of the Push Model.
pub(crate) const STORAGE_COMMITMENT_INSTANCE: &str = "1.2.840.10008.1.20.1.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const MAX_ACTION_INFO: usize = 8 << 20;

const TRANSACTION_UID: Tag = Tag(0x0008, 0x1195);
const REFERENCED_SOP_SEQUENCE: Tag = Tag(0x0008, 0x1199);
const FAILED_SOP_SEQUENCE: Tag = Tag(0x0008, 0x1198);
const REFERENCED_SOP_CLASS_UID: Tag = Tag(0x0008, 0x1150);
const REFERENCED_SOP_INSTANCE_UID: Tag = Tag(0x0008, 0x1155);

/// An N-ACTION-RQ whose action information is arriving.
pub(crate) struct Request {
    pc_id: u8,
    message_id: u16,
    sop_class: String,
    sop_instance: String,
    action_type: Option<u16>,
    transfer_syntax: String,
    data: DataSetBuffer,
}

impl Request {
    pub(crate) fn start(
        rq: &Command,
        pc: &PresentationContextNegotiated,
    ) -> Result<Request, CommandError> {
        if !rq.has_data_set() {
            return Err(CommandError::Missing("action information"));
        }
        Ok(Request {
            pc_id: pc.id,
            message_id: rq.message_id()?,
            sop_class: rq
                .ui(tag::REQUESTED_SOP_CLASS_UID)
                .unwrap_or_else(|| pc.abstract_syntax.trim_end_matches('\0').to_owned()),
            sop_instance: rq.ui(tag::REQUESTED_SOP_INSTANCE_UID).unwrap_or_default(),
            action_type: rq.us(tag::ACTION_TYPE_ID),
            transfer_syntax: pc.transfer_syntax.trim_end_matches('\0').to_owned(),
            data: DataSetBuffer::new("N-ACTION information", MAX_ACTION_INFO),
        })
    }

    pub(crate) fn pc_id(&self) -> u8 {
        self.pc_id
    }

    pub(crate) fn write(&mut self, fragment: &[u8]) -> Result<(), String> {
        self.data.push(fragment)
    }

    pub(crate) fn busy(&self) -> Pdu {
        busy_response(
            field::N_ACTION_RSP,
            &self.sop_class,
            self.message_id,
            self.pc_id,
        )
    }

    fn action_rsp(&self, status: u16) -> Pdu {
        let mut w = response(
            field::N_ACTION_RSP,
            &self.sop_class,
            self.message_id,
            status,
        );
        if !self.sop_instance.is_empty() {
            w = w.ui(tag::AFFECTED_SOP_INSTANCE_UID, &self.sop_instance);
        }
        if let Some(t) = self.action_type {
            w = w.us(tag::ACTION_TYPE_ID, t);
        }
        command_pdu(self.pc_id, w.into_bytes())
    }

    /// Answers the N-ACTION; on success, starts the job that checks the
    /// instances and sends the report.
    pub(super) fn run(
        self,
        calling_ae: &str,
        services: &Services,
        config: &DimseConfig,
    ) -> (Vec<Pdu>, Option<Job>) {
        if self.sop_class != STORAGE_COMMITMENT {
            return (vec![self.action_rsp(status::NO_SUCH_SOP_CLASS)], None);
        }
        if self.action_type != Some(1) {
            return (vec![self.action_rsp(status::NO_SUCH_ACTION)], None);
        }
        let implicit = match transfer_syntax::lookup(&self.transfer_syntax) {
            Some(ts) if !ts.encoding.big_endian && !ts.encoding.deflated => {
                !ts.encoding.explicit_vr
            }
            _ => return (vec![self.action_rsp(status::PROCESSING_FAILURE)], None),
        };
        let scanned = match self.data.scan(&self.transfer_syntax) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(calling_ae, error = %e, "N-ACTION: unreadable action information");
                return (vec![self.action_rsp(status::INVALID_ARGUMENT)], None);
            }
        };
        let Some(transaction) = scanned.text(TRANSACTION_UID) else {
            return (vec![self.action_rsp(status::MISSING_ATTRIBUTE)], None);
        };
        let Some(items) = scanned
            .get(REFERENCED_SOP_SEQUENCE)
            .and_then(|e| match &e.value {
                Value::Sequence { items, .. } => Some(items),
                _ => None,
            })
        else {
            return (vec![self.action_rsp(status::MISSING_ATTRIBUTE)], None);
        };
        if items.len() > config.max_retrieve {
            tracing::warn!(
                calling_ae,
                instances = items.len(),
                "storage commitment: too many instances"
            );
            return (vec![self.action_rsp(status::RESOURCE_LIMITATION)], None);
        }
        let charset = scanned.charset();
        let text = |item: &[crate::dicom::scan::Element], t: Tag| -> String {
            crate::dicom::scan::find(item, t)
                .and_then(|e| match &e.value {
                    Value::Inline(b) => Some(charset.decode_vr(b, e.vr)),
                    _ => None,
                })
                .map(|s| s.trim_matches([' ', '\0']).to_owned())
                .unwrap_or_default()
        };
        let references: Vec<(String, String)> = items
            .iter()
            .map(|item| {
                (
                    text(item, REFERENCED_SOP_CLASS_UID),
                    text(item, REFERENCED_SOP_INSTANCE_UID),
                )
            })
            .collect();
        tracing::info!(
            calling_ae,
            transaction_uid = %transaction,
            instances = references.len(),
            "storage commitment requested"
        );
        let (out_tx, out_rx) = mpsc::channel(JOB_QUEUE);
        let (rsp_tx, rsp_rx) = mpsc::channel(JOB_QUEUE);
        let report = Report {
            transaction,
            references,
            pc_id: self.pc_id,
            implicit,
            our_ae: config.ae_title.clone(),
            requester: config.remote_ae(calling_ae).cloned(),
            calling_ae: calling_ae.to_owned(),
            timeout: config.timeout,
            max_pdu: config.max_pdu_length,
        };
        let task = tokio::spawn(report.run(services.clone(), out_tx, rsp_rx));
        (
            vec![self.action_rsp(status::SUCCESS)],
            Some(Job {
                out: out_rx,
                cancel: CancellationToken::new(),
                responses: rsp_tx,
                message_id: self.message_id,
                task,
                detached: true,
            }),
        )
    }
}

struct Report {
    transaction: String,
    /// (SOP class, SOP instance) as requested.
    references: Vec<(String, String)>,
    pc_id: u8,
    implicit: bool,
    our_ae: String,
    calling_ae: String,
    requester: Option<RemoteAe>,
    timeout: Duration,
    max_pdu: u32,
}

/// The outcome for the report: held, and failed with their reasons.
struct Outcome {
    held: Vec<(String, String)>,
    failed: Vec<(String, String, u16)>,
}

impl Report {
    async fn check(&self, services: &Services) -> Outcome {
        let mut out = Outcome {
            held: Vec::new(),
            failed: Vec::new(),
        };
        for (class, sop) in &self.references {
            let reason = match services.index.find_instance(sop).await {
                Ok(Some(inst)) => {
                    let in_store = match ObjectKey::from_stored(&inst.object_key) {
                        Ok(key) => services.store.size(&key).await.is_ok(),
                        Err(_) => false,
                    };
                    if !in_store {
                        Some(status::NO_SUCH_OBJECT_INSTANCE)
                    } else if !class.is_empty() && *class != inst.sop_class_uid {
                        Some(status::CLASS_INSTANCE_CONFLICT)
                    } else {
                        None
                    }
                }
                Ok(None) => Some(status::NO_SUCH_OBJECT_INSTANCE),
                Err(e) => {
                    tracing::error!(error = %e, "storage commitment: index failed");
                    Some(status::PROCESSING_FAILURE)
                }
            };
            match reason {
                None => out.held.push((class.clone(), sop.clone())),
                Some(r) => out.failed.push((class.clone(), sop.clone(), r)),
            }
        }
        out
    }

    /// The N-EVENT-REPORT-RQ command and data set.
    fn event(&self, outcome: &Outcome, message_id: u16, implicit: bool) -> (Vec<u8>, Vec<u8>) {
        let event_type = if outcome.failed.is_empty() { 1 } else { 2 };
        let command = CommandWriter::default()
            .ui(tag::AFFECTED_SOP_CLASS_UID, STORAGE_COMMITMENT)
            .us(tag::COMMAND_FIELD, field::N_EVENT_REPORT_RQ)
            .us(tag::MESSAGE_ID, message_id)
            .us(tag::COMMAND_DATA_SET_TYPE, DATA_SET)
            .ui(tag::AFFECTED_SOP_INSTANCE_UID, STORAGE_COMMITMENT_INSTANCE)
            .us(tag::EVENT_TYPE_ID, event_type)
            .into_bytes();
        let writer = || {
            if implicit {
                ElementWriter::implicit()
            } else {
                ElementWriter::default()
            }
        };
        let item = |class: &str, sop: &str, reason: Option<u16>| {
            let mut w = writer();
            w.str(0x0008, 0x1150, b"UI", class);
            w.str(0x0008, 0x1155, b"UI", sop);
            if let Some(r) = reason {
                w.us(0x0008, 0x1197, r);
            }
            w.into_bytes()
        };
        let mut w = writer();
        // (0008,0054) Retrieve AE Title, then the sequences in tag order.
        w.str(0x0008, 0x0054, b"AE", &self.our_ae);
        w.str(0x0008, 0x1195, b"UI", &self.transaction);
        if !outcome.failed.is_empty() {
            let items: Vec<Vec<u8>> = outcome
                .failed
                .iter()
                .map(|(c, s, r)| item(c, s, Some(*r)))
                .collect();
            w.sequence(FAILED_SOP_SEQUENCE.0, FAILED_SOP_SEQUENCE.1, &items);
        }
        if !outcome.held.is_empty() {
            let items: Vec<Vec<u8>> = outcome.held.iter().map(|(c, s)| item(c, s, None)).collect();
            w.sequence(REFERENCED_SOP_SEQUENCE.0, REFERENCED_SOP_SEQUENCE.1, &items);
        }
        (command, w.into_bytes())
    }

    async fn run(
        self,
        services: Services,
        out: mpsc::Sender<Pdu>,
        mut responses: mpsc::Receiver<Command>,
    ) {
        let outcome = self.check(&services).await;
        tracing::info!(
            transaction_uid = %self.transaction,
            held = outcome.held.len(),
            failed = outcome.failed.len(),
            "storage commitment checked"
        );
        // On the requesting association first.
        let (command, data) = self.event(&outcome, 1, self.implicit);
        let mut sent = out.send(command_pdu(self.pc_id, command)).await.is_ok();
        for pdu in data_pdus(self.pc_id, data, self.max_pdu) {
            sent = sent && out.send(pdu).await.is_ok();
        }
        // `out` stays open until the report is acknowledged: the job (and
        // the channel of responses) lives as long.
        if sent {
            match tokio::time::timeout(self.timeout, responses.recv()).await {
                Ok(Some(rsp)) if rsp.us(tag::STATUS) == Some(status::SUCCESS) => {
                    tracing::info!(
                        transaction_uid = %self.transaction,
                        "storage commitment report acknowledged"
                    );
                    return;
                }
                // The requester could not take the report here (e.g. no
                // handler on its requesting side): try a new association.
                Ok(Some(rsp)) => tracing::warn!(
                    transaction_uid = %self.transaction,
                    status = ?rsp.us(tag::STATUS),
                    "storage commitment report refused on the requesting association"
                ),
                Ok(None) => {} // released before acknowledging
                Err(_) => {
                    tracing::warn!(transaction_uid = %self.transaction, "storage commitment report not acknowledged");
                    return;
                }
            }
        }
        drop(out);
        self.send_on_new_association(&outcome).await;
    }

    /// PS3.4 J.3.3: the report on an association we open, taking the SCP
    /// role of the commitment class.
    async fn send_on_new_association(&self, outcome: &Outcome) {
        let Some(requester) = &self.requester else {
            tracing::warn!(calling_ae = %self.calling_ae, transaction_uid = %self.transaction,
                "storage commitment report undelivered: requester not in the remote AE table");
            return;
        };
        let options = ClientAssociationOptions::new()
            .calling_ae_title(self.our_ae.clone())
            .called_ae_title(requester.title.clone())
            .max_pdu_length(self.max_pdu)
            .read_timeout(self.timeout)
            .write_timeout(self.timeout)
            .connection_timeout(self.timeout)
            .with_presentation_context(
                STORAGE_COMMITMENT.to_owned(),
                vec![EXPLICIT_LE.to_owned(), IMPLICIT_LE.to_owned()],
            )
            .with_role_selection(STORAGE_COMMITMENT, false, true);
        let result: Result<(), String> = async {
            let mut assoc = tokio::time::timeout(
                self.timeout,
                options.establish_async(requester.address.as_str()),
            )
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
            let pc = assoc
                .presentation_contexts()
                .iter()
                .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
                .cloned()
                .ok_or("commitment class not accepted")?;
            let implicit = pc.transfer_syntax.trim_end_matches('\0') == IMPLICIT_LE;
            let (command, data) = self.event(outcome, 1, implicit);
            assoc
                .send(&command_pdu(pc.id, command))
                .await
                .map_err(|e| e.to_string())?;
            for pdu in data_pdus(pc.id, data, assoc.acceptor_max_pdu_length()) {
                assoc.send(&pdu).await.map_err(|e| e.to_string())?;
            }
            // The N-EVENT-REPORT-RSP.
            let mut buf = Vec::new();
            loop {
                let pdu = tokio::time::timeout(self.timeout, assoc.receive())
                    .await
                    .map_err(|_| "timed out".to_owned())?
                    .map_err(|e| e.to_string())?;
                let Pdu::PData { data } = pdu else {
                    return Err(format!("unexpected {}", pdu.short_description()));
                };
                let mut done = false;
                for pdv in data {
                    if pdv.value_type == PDataValueType::Command
                        && buf.len() + pdv.data.len() <= MAX_COMMAND_LEN
                    {
                        buf.extend_from_slice(&pdv.data);
                        done |= pdv.is_last;
                    }
                }
                if done {
                    break;
                }
            }
            let _ = tokio::time::timeout(self.timeout, assoc.release()).await;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!(destination = %requester.title, transaction_uid = %self.transaction,
                "storage commitment report sent on a new association")
            }
            Err(e) => {
                tracing::warn!(destination = %requester.title, transaction_uid = %self.transaction,
                error = %e, "storage commitment report undelivered")
            }
        }
    }
}

/// A data set in PDVs that fit the peer's PDUs.
fn data_pdus(pc_id: u8, data: Vec<u8>, max_pdu: u32) -> Vec<Pdu> {
    let chunk = (max_pdu.min(1 << 20) as usize).saturating_sub(12).max(64);
    let pieces: Vec<&[u8]> = data.chunks(chunk).collect();
    let n = pieces.len();
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc_id,
                value_type: PDataValueType::Data,
                is_last: i + 1 == n,
                data: piece.to_vec(),
            }],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_set_split_to_the_peer_pdu() {
        let pdus = data_pdus(3, vec![7u8; 10_000], 4096);
        let sizes: Vec<(usize, bool)> = pdus
            .iter()
            .map(|p| match p {
                Pdu::PData { data } => (data[0].data.len(), data[0].is_last),
                _ => (0, false),
            })
            .collect();
        assert_eq!(sizes, [(4084, false), (4084, false), (1832, true)]);
    }

    #[test]
    fn event_report_encodes_both_sequences() {
        let report = Report {
            transaction: "1.2.3.4".into(),
            references: Vec::new(),
            pc_id: 1,
            implicit: false,
            our_ae: "PHIM".into(),
            calling_ae: "SCU".into(),
            requester: None,
            timeout: Duration::from_secs(1),
            max_pdu: 16384,
        };
        let outcome = Outcome {
            held: vec![("1.2.840.10008.5.1.4.1.1.7".into(), "1.2.3.5".into())],
            failed: vec![("1.2.840.10008.5.1.4.1.1.7".into(), "1.2.3.6".into(), 0x0112)],
        };
        for implicit in [false, true] {
            let (command, data) = report.event(&outcome, 9, implicit);
            let c = Command::parse(&command).unwrap();
            assert_eq!(c.us(tag::EVENT_TYPE_ID), Some(2));
            assert!(c.has_data_set());
            let ts = if implicit { IMPLICIT_LE } else { EXPLICIT_LE };
            let scanned = crate::dicom::scan::scan_dataset(&data, ts, &Default::default()).unwrap();
            assert_eq!(scanned.text(TRANSACTION_UID).as_deref(), Some("1.2.3.4"));
            for (tag, n) in [(REFERENCED_SOP_SEQUENCE, 1), (FAILED_SOP_SEQUENCE, 1)] {
                let Some(Value::Sequence { items, .. }) = scanned.get(tag).map(|e| &e.value) else {
                    panic!("no sequence {tag}");
                };
                assert_eq!(items.len(), n);
            }
        }
        let (command, _) = report.event(
            &Outcome {
                held: outcome.held.clone(),
                failed: Vec::new(),
            },
            9,
            false,
        );
        assert_eq!(
            Command::parse(&command).unwrap().us(tag::EVENT_TYPE_ID),
            Some(1)
        );
    }
}
