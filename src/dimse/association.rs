//! One association: negotiation, then P-DATA messages until release or
//! abort. DIMSE messages are assembled here from PDVs (PS3.8 §9.3.5,
//! Annex E): command fragments are gathered until the last one; data
//! fragments of a C-STORE are streamed to a spool file as they arrive, so
//! an instance never sits whole in memory. A command and the first data
//! fragment may share one PDU.
//!
//! C-MOVE, C-GET and storage commitment run as a [`Job`]: a task that
//! hands the PDUs it wants sent on this association to the loop through a
//! channel, while the loop keeps reading, so that a C-CANCEL-RQ (or the
//! C-STORE-RSPs of a C-GET) reach it. One job at a time.

use std::net::SocketAddr;

use dicom_ul::association::server::ServerAssociationOptions;
use dicom_ul::association::Association;
use dicom_ul::pdu::{
    PDataValue, PDataValueType, Pdu, PresentationContextResultReason, UserVariableItem,
};

use super::command::{command_pdu, field, response, Command, MAX_COMMAND_LEN};
use super::job::Job;
use super::peer::Peer;
use super::sop_classes::STORAGE_SOP_CLASSES;
use super::{
    commitment, echo, find, retrieve, store, DimseConfig, Policy, Roles, Services, VERIFICATION,
};
use crate::dicom::transfer_syntax;

async fn next_out(job: &mut Option<Job>) -> Option<Pdu> {
    match job {
        Some(j) => j.out.recv().await,
        None => std::future::pending().await,
    }
}

/// What the association is in the middle of.
enum State {
    Idle,
    /// A C-STORE whose data set is being received.
    Storing(Box<store::Receiving>),
    /// A C-FIND whose identifier is being received.
    Finding(Box<find::Finding>),
    /// A C-MOVE or C-GET whose identifier is being received.
    Retrieving(Box<retrieve::Request>),
    /// An N-ACTION whose action information is being received.
    Committing(Box<commitment::Request>),
    /// A request this AE may not make: its data set is read and
    /// dropped, then refused.
    Refusing(Pdu),
}

pub(super) async fn run(
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    config: &DimseConfig,
    policy: Policy,
    services: &Services,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
) {
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(policy)
        .ae_title(config.ae_title.clone())
        .max_pdu_length(config.max_pdu_length)
        .strict(true)
        .read_timeout(config.timeout)
        .write_timeout(config.timeout)
        .with_abstract_syntax(VERIFICATION)
        .with_abstract_syntax(find::PATIENT_ROOT_FIND)
        .with_abstract_syntax(find::STUDY_ROOT_FIND)
        .with_abstract_syntax(retrieve::PATIENT_ROOT_MOVE)
        .with_abstract_syntax(retrieve::STUDY_ROOT_MOVE)
        .with_abstract_syntax(retrieve::PATIENT_ROOT_GET)
        .with_abstract_syntax(retrieve::STUDY_ROOT_GET)
        .with_abstract_syntax(commitment::STORAGE_COMMITMENT)
        .with_negotiation(Roles);
    for (uid, _) in STORAGE_SOP_CLASSES {
        options = options.with_abstract_syntax(*uid);
    }
    for ts in transfer_syntax::KNOWN {
        options = options.with_transfer_syntax(ts.uid);
    }
    match tls {
        None => match options.establish_async(socket).await {
            Ok(a) => {
                let _open = count_association(false);
                serve(a, peer, config, services).await
            }
            Err(e) => tracing::info!(%peer, error = %e, "association not established"),
        },
        Some(tls) => {
            let options = options.tls_config(tls);
            let established =
                tokio::time::timeout(config.timeout, options.establish_tls_async(socket)).await;
            match established {
                Ok(Ok(a)) => {
                    let _open = count_association(true);
                    serve(a, peer, config, services).await
                }
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "DICOM TLS association not established")
                }
                Err(_) => tracing::info!(%peer, "DICOM TLS association not established: timed out"),
            }
        }
    }
}

/// Counts an established association, and holds it among the open ones
/// while the returned value lives.
fn count_association(tls: bool) -> crate::telemetry::Held {
    use crate::telemetry as t;
    ::metrics::counter!(t::DIMSE_ASSOCIATIONS, "tls" => if tls { "true" } else { "false" })
        .increment(1);
    t::Held::new(::metrics::gauge!(t::DIMSE_ACTIVE))
}

/// What the association knows of its peer, from the negotiation.
fn peer_of<S>(
    assoc: &dicom_ul::association::server::AsyncServerAssociation<S>,
    peer: SocketAddr,
    config: &DimseConfig,
) -> Peer
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let calling = assoc.peer_ae_title().trim();
    Peer {
        permissions: config.permissions_of(calling),
        address: peer.ip(),
        calling_ae: calling.to_owned(),
        contexts: assoc.presentation_contexts().to_vec(),
        scp_roles: assoc
            .user_variables()
            .iter()
            .filter_map(|v| match v {
                UserVariableItem::ScuScpRoleSelectionSubItem(uid, roles) if roles.scp => {
                    Some(uid.trim_end_matches(['\0', ' ']).to_owned())
                }
                _ => None,
            })
            .collect(),
        max_pdu: assoc.requestor_max_pdu_length(),
    }
}

/// Serves one established association until release or abort.
async fn serve<S>(
    mut assoc: dicom_ul::association::server::AsyncServerAssociation<S>,
    peer: SocketAddr,
    config: &DimseConfig,
    services: &Services,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let calling = assoc.peer_ae_title().to_owned();
    let accepted = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .count();
    tracing::info!(%peer, calling_ae = %calling, contexts = accepted, "association established");
    let info = peer_of(&assoc, peer, config);
    let mut session = Session {
        peer: &info,
        services,
        config,
        state: State::Idle,
        command_buf: Vec::new(),
        stored: 0,
        job: None,
    };
    loop {
        // `receive` keeps partial PDUs in the association's buffer, so it
        // may be interrupted by an outgoing PDU and called again.
        let event = tokio::select! {
            r = assoc.receive() => Ok(r),
            out = next_out(&mut session.job) => Err(out),
        };
        let received = match event {
            Err(Some(out)) => {
                if let Err(e) = assoc.send(&out).await {
                    tracing::warn!(%peer, calling_ae = %calling, error = %e, "cannot send response");
                    return;
                }
                continue;
            }
            Err(None) => {
                // The job sent all it had to.
                session.job = None;
                continue;
            }
            Ok(r) => r,
        };
        let pdu = match received {
            Ok(p) => p,
            // The peer waits quietly while a job runs; the job has its own
            // time limits.
            Err(dicom_ul::association::Error::Timeout { .. }) if session.job.is_some() => continue,
            Err(e) => {
                tracing::warn!(%peer, calling_ae = %calling, error = %e, "association ended by error");
                return; // a partial spool is removed on drop
            }
        };
        let stored = session.stored;
        match pdu {
            Pdu::PData { data } => {
                for pdv in data {
                    match session.handle_pdv(pdv).await {
                        Ok(replies) => {
                            for reply in replies {
                                if let Err(e) = assoc.send(&reply).await {
                                    tracing::warn!(%peer, error = %e, "cannot send response");
                                    return;
                                }
                            }
                        }
                        Err(reason) => {
                            tracing::warn!(%peer, calling_ae = %calling, %reason, "protocol error: aborting association");
                            let _ = assoc.abort().await;
                            return;
                        }
                    }
                }
            }
            Pdu::ReleaseRQ => {
                let _ = assoc.send(&Pdu::ReleaseRP).await;
                tracing::info!(%peer, calling_ae = %calling, stored, "association released");
                return;
            }
            Pdu::AbortRQ { .. } => {
                tracing::info!(%peer, calling_ae = %calling, stored, "association aborted by peer");
                return;
            }
            other => {
                tracing::warn!(%peer, pdu = %other.short_description(), "unexpected PDU: aborting");
                let _ = assoc.abort().await;
                return;
            }
        }
    }
}

/// One association's DIMSE side: the message being assembled, the job
/// running, what it has stored.
struct Session<'a> {
    peer: &'a Peer,
    services: &'a Services,
    config: &'a DimseConfig,
    state: State,
    command_buf: Vec<u8>,
    stored: usize,
    job: Option<Job>,
}

impl Session<'_> {
    /// Handles one PDV; returns the PDUs to send back, or why the
    /// association must be aborted.
    async fn handle_pdv(&mut self, pdv: PDataValue) -> Result<Vec<Pdu>, String> {
        match pdv.value_type {
            PDataValueType::Command => self.command(pdv).await,
            PDataValueType::Data => self.data(pdv).await,
        }
    }

    /// A command fragment; the whole command starts its operation.
    async fn command(&mut self, pdv: PDataValue) -> Result<Vec<Pdu>, String> {
        let pc_id = pdv.presentation_context_id;
        if !matches!(self.state, State::Idle) {
            return Err("command received in the middle of a data set".into());
        }
        if self.command_buf.len() + pdv.data.len() > MAX_COMMAND_LEN {
            return Err("command set too large".into());
        }
        self.command_buf.extend_from_slice(&pdv.data);
        if !pdv.is_last {
            return Ok(Vec::new());
        }
        let cmd = Command::parse(&self.command_buf).map_err(|e| e.to_string());
        self.command_buf.clear();
        let cmd = cmd?;
        if let Some(refusal) = refuse(&cmd, self.peer, pc_id, self.services) {
            // PS3.7 C.5: a request whose data set follows is refused
            // once the data set has arrived.
            if cmd.has_data_set() {
                self.state = State::Refusing(refusal);
                return Ok(Vec::new());
            }
            return Ok(vec![refusal]);
        }
        let peer = self.peer;
        let pc = peer
            .presentation_contexts()
            .iter()
            .find(|pc| pc.id == pc_id && pc.reason == PresentationContextResultReason::Acceptance)
            .ok_or_else(|| format!("presentation context {pc_id} was not accepted"))?;
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let f = cmd.field().map_err(|x| e(&x))?;
        if let Some(service) = service_name(f) {
            ::metrics::counter!(crate::telemetry::DIMSE_REQUESTS, "service" => service)
                .increment(1);
        }
        match f {
            field::C_ECHO_RQ => {
                let rsp = echo::respond(&cmd).map_err(|x| e(&x))?;
                return Ok(vec![command_pdu(pc_id, rsp)]);
            }
            field::C_STORE_RQ => {
                let receiving = store::Receiving::start(&cmd, pc, &self.services.ingest)
                    .await
                    .map_err(|x| e(&x))?;
                self.state = State::Storing(Box::new(receiving));
            }
            field::C_FIND_RQ => {
                let finding = find::Finding::start(&cmd, pc).map_err(|x| e(&x))?;
                self.state = State::Finding(Box::new(finding));
            }
            field::C_MOVE_RQ | field::C_GET_RQ => {
                let request = retrieve::Request::start(&cmd, pc).map_err(|x| e(&x))?;
                self.state = State::Retrieving(Box::new(request));
            }
            field::N_ACTION_RQ => {
                let request = commitment::Request::start(&cmd, pc).map_err(|x| e(&x))?;
                self.state = State::Committing(Box::new(request));
            }
            // C-FIND answers are sent as soon as they are known, so a
            // cancel finds nothing running there; a C-MOVE or C-GET
            // stops at its next sub-operation.
            field::C_CANCEL_RQ => {
                let id = cmd.us(super::command::tag::MESSAGE_ID_BEING_RESPONDED_TO);
                if let Some(j) = self.job.as_ref().filter(|j| Some(j.message_id) == id) {
                    tracing::info!(message_id = j.message_id, "C-CANCEL-RQ");
                    j.cancel.cancel();
                }
            }
            field::C_STORE_RSP | field::N_EVENT_REPORT_RSP => match self.job.as_ref() {
                // A full queue means a response nobody asked for.
                Some(j) => {
                    let _ = j.responses.try_send(cmd);
                }
                None => tracing::warn!(
                    field = cmd.field().unwrap_or(0),
                    "response to no request of ours: ignored"
                ),
            },
            other => return Err(format!("unsupported command field {other:#06x}")),
        }
        Ok(Vec::new())
    }

    /// A data fragment of the operation in progress; the last one runs it.
    async fn data(&mut self, pdv: PDataValue) -> Result<Vec<Pdu>, String> {
        let pc_id = pdv.presentation_context_id;
        let on_other_context = |ctx: u8, what: &str| {
            (ctx != pc_id)
                .then(|| format!("{what} on another presentation context"))
                .map_or(Ok(()), Err)
        };
        match &mut self.state {
            State::Idle => return Err("data set without a command".into()),
            State::Refusing(_) => {}
            State::Storing(receiving) => {
                on_other_context(receiving.pc_id(), "data set")?;
                receiving.write(&pdv.data).await;
            }
            State::Finding(finding) => {
                on_other_context(finding.pc_id(), "identifier")?;
                finding.write(&pdv.data)?;
            }
            State::Retrieving(request) => {
                on_other_context(request.pc_id(), "identifier")?;
                request.write(&pdv.data)?;
            }
            State::Committing(request) => {
                on_other_context(request.pc_id(), "action information")?;
                request.write(&pdv.data)?;
            }
        }
        if !pdv.is_last {
            return Ok(Vec::new());
        }
        Ok(match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => Vec::new(),
            State::Refusing(pdu) => vec![pdu],
            State::Storing(receiving) => vec![self.stored(*receiving, pc_id).await],
            State::Finding(finding) => self.find(*finding).await,
            State::Retrieving(request) => {
                if self.job.is_some() {
                    return Ok(vec![request.busy()]);
                }
                let (replies, started) = request.run(self.peer, self.services, self.config).await;
                if started.is_some() {
                    self.job = started;
                }
                replies
            }
            State::Committing(request) => {
                if self.job.is_some() {
                    return Ok(vec![request.busy()]);
                }
                let (replies, started) =
                    request.run(&calling_ae(self.peer), self.services, self.config);
                if started.is_some() {
                    self.job = started;
                }
                replies
            }
        })
    }

    /// A C-STORE whose data set has arrived: ingest it, audit it, answer.
    async fn stored(&mut self, receiving: store::Receiving, pc_id: u8) -> Pdu {
        let derived_only = !self
            .peer
            .permissions
            .contains(crate::auth::Permission::Store);
        let (rsp, study) = receiving.finish(&self.services.ingest, derived_only).await;
        let outcome = match study {
            Some(_) => {
                self.stored += 1;
                crate::audit::Outcome::Success
            }
            None => crate::audit::Outcome::MinorFailure,
        };
        // One event per instance here; the audit writer merges an
        // association's run into one per study.
        self.services.audit.record(
            crate::audit::Event::new(
                crate::audit::EventId::InstancesTransferred,
                crate::audit::Action::C,
                outcome,
                self.peer.actor(),
            )
            .studies(study.into_iter().collect())
            .instances(i64::from(outcome == crate::audit::Outcome::Success))
            .detail("C-STORE"),
        );
        command_pdu(pc_id, rsp)
    }

    /// A C-FIND whose identifier has arrived: audit it, answer.
    async fn find(&self, finding: find::Finding) -> Vec<Pdu> {
        self.services.audit.record(
            crate::audit::Event::new(
                crate::audit::EventId::Query,
                crate::audit::Action::E,
                crate::audit::Outcome::Success,
                self.peer.actor(),
            )
            .detail("C-FIND"),
        );
        finding
            .finish(
                self.services.index.as_ref(),
                &self.config.ae_title,
                self.peer.requestor_max_pdu_length(),
            )
            .await
    }
}

/// The DIMSE service a request command asks for, as a metrics label.
fn service_name(f: u16) -> Option<&'static str> {
    Some(match f {
        field::C_ECHO_RQ => "C-ECHO",
        field::C_STORE_RQ => "C-STORE",
        field::C_FIND_RQ => "C-FIND",
        field::C_MOVE_RQ => "C-MOVE",
        field::C_GET_RQ => "C-GET",
        field::N_ACTION_RQ => "N-ACTION",
        field::C_CANCEL_RQ => "C-CANCEL",
        _ => return None,
    })
}

fn calling_ae(peer: &Peer) -> String {
    peer.calling_ae.clone()
}

/// The response refusing a request the calling AE has no permission for
/// (status 0124H, Refused: Not Authorized), or `None` when it may.
fn refuse(cmd: &Command, assoc: &Peer, pc_id: u8, services: &Services) -> Option<Pdu> {
    use crate::auth::Permission;
    let f = cmd.field().ok()?;
    let sop_class = cmd
        .ui(super::command::tag::AFFECTED_SOP_CLASS_UID)
        .or_else(|| cmd.ui(super::command::tag::REQUESTED_SOP_CLASS_UID))
        .unwrap_or_default();
    let (needed, name) = match f {
        field::C_STORE_RQ if crate::auth::policy::is_derived_sop_class(&sop_class) => {
            (Permission::StoreDerived, "C-STORE")
        }
        field::C_STORE_RQ => (Permission::Store, "C-STORE"),
        field::C_FIND_RQ => (Permission::Query, "C-FIND"),
        field::C_MOVE_RQ => (Permission::Move, "C-MOVE"),
        field::C_GET_RQ => (Permission::Retrieve, "C-GET"),
        field::N_ACTION_RQ => (Permission::Commit, "N-ACTION (storage commitment)"),
        _ => return None,
    };
    if assoc.permissions.contains(needed) {
        return None;
    }
    tracing::info!(calling_ae = %assoc.calling_ae, service = name, "DIMSE request refused: not authorized");
    services.audit.record(
        crate::audit::Event::new(
            crate::audit::EventId::SecurityAlert,
            crate::audit::Action::E,
            crate::audit::Outcome::MinorFailure,
            assoc.actor(),
        )
        .event_type("Unauthorized Access")
        .detail(format!(
            "{name} refused: AE {} may not {needed}",
            assoc.calling_ae
        )),
    );
    let message_id = cmd.us(super::command::tag::MESSAGE_ID).unwrap_or(0);
    Some(command_pdu(
        pc_id,
        response(
            f | 0x8000,
            &sop_class,
            message_id,
            crate::error::status::NOT_AUTHORIZED,
        )
        .text(
            super::command::tag::ERROR_COMMENT,
            &format!("AE {} may not {needed} here", assoc.calling_ae),
        )
        .into_bytes(),
    ))
}
