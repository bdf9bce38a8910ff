//! One association: negotiation, then P-DATA messages until release or
//! abort. DIMSE messages are assembled here from PDVs (PS3.8 §9.3.5,
//! Annex E): command fragments are gathered until the last one; data
//! fragments of a C-STORE are streamed to a spool file as they arrive, so
//! an instance never sits whole in memory. A command and the first data
//! fragment may share one PDU.

use std::net::SocketAddr;

use dicom_ul::association::server::ServerAssociationOptions;
use dicom_ul::association::Association;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu, PresentationContextResultReason};

use super::command::{field, Command, MAX_COMMAND_LEN};
use super::sop_classes::STORAGE_SOP_CLASSES;
use super::{echo, find, store, DimseConfig, Policy, Services, VERIFICATION};
use crate::dicom::transfer_syntax;

/// What the association is in the middle of.
enum State {
    Idle,
    /// A C-STORE whose data set is being received.
    Storing(Box<store::Receiving>),
    /// A C-FIND whose identifier is being received.
    Finding(Box<find::Finding>),
}

pub(super) async fn run(
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    config: &DimseConfig,
    policy: Policy,
    services: &Services,
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
        .with_abstract_syntax(find::STUDY_ROOT_FIND);
    for (uid, _) in STORAGE_SOP_CLASSES {
        options = options.with_abstract_syntax(*uid);
    }
    for ts in transfer_syntax::KNOWN {
        options = options.with_transfer_syntax(ts.uid);
    }
    let mut assoc = match options.establish_async(socket).await {
        Ok(a) => a,
        Err(e) => {
            tracing::info!(%peer, error = %e, "association not established");
            return;
        }
    };
    let calling = assoc.peer_ae_title().to_owned();
    let accepted = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .count();
    tracing::info!(%peer, calling_ae = %calling, contexts = accepted, "association established");

    let mut state = State::Idle;
    let mut command_buf: Vec<u8> = Vec::new();
    let mut stored = 0usize;
    loop {
        let pdu = match assoc.receive().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%peer, calling_ae = %calling, error = %e, "association ended by error");
                return; // a partial spool is removed on drop
            }
        };
        match pdu {
            Pdu::PData { data } => {
                for pdv in data {
                    let handled = handle_pdv(
                        pdv,
                        &mut state,
                        &mut command_buf,
                        &assoc,
                        services,
                        config,
                        &mut stored,
                    )
                    .await;
                    match handled {
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

/// Handles one PDV; returns the PDUs to send back.
async fn handle_pdv<S>(
    pdv: PDataValue,
    state: &mut State,
    command_buf: &mut Vec<u8>,
    assoc: &dicom_ul::association::server::AsyncServerAssociation<S>,
    services: &Services,
    config: &DimseConfig,
    stored: &mut usize,
) -> Result<Vec<Pdu>, String> {
    let ingest = &services.ingest;
    let pc_id = pdv.presentation_context_id;
    match pdv.value_type {
        PDataValueType::Command => {
            if !matches!(state, State::Idle) {
                return Err("command received in the middle of a data set".into());
            }
            if command_buf.len() + pdv.data.len() > MAX_COMMAND_LEN {
                return Err("command set too large".into());
            }
            command_buf.extend_from_slice(&pdv.data);
            if !pdv.is_last {
                return Ok(Vec::new());
            }
            let cmd = Command::parse(command_buf).map_err(|e| e.to_string());
            command_buf.clear();
            let cmd = cmd?;
            let pc = assoc
                .presentation_contexts()
                .iter()
                .find(|pc| {
                    pc.id == pc_id && pc.reason == PresentationContextResultReason::Acceptance
                })
                .ok_or_else(|| format!("presentation context {pc_id} was not accepted"))?;
            match cmd.field().map_err(|e| e.to_string())? {
                field::C_ECHO_RQ => {
                    let rsp = echo::respond(&cmd).map_err(|e| e.to_string())?;
                    Ok(vec![command_pdu(pc_id, rsp)])
                }
                field::C_STORE_RQ => {
                    let receiving = store::Receiving::start(&cmd, pc, ingest)
                        .await
                        .map_err(|e| e.to_string())?;
                    *state = State::Storing(Box::new(receiving));
                    Ok(Vec::new())
                }
                field::C_FIND_RQ => {
                    let finding = find::Finding::start(&cmd, pc).map_err(|e| e.to_string())?;
                    *state = State::Finding(Box::new(finding));
                    Ok(Vec::new())
                }
                // C-FIND answers are sent as soon as they are known, so a
                // cancel finds nothing running.
                field::C_CANCEL_RQ => Ok(Vec::new()),
                other => Err(format!("unsupported command field {other:#06x}")),
            }
        }
        PDataValueType::Data => match state {
            State::Idle => Err("data set without a command".into()),
            State::Storing(receiving) => {
                if receiving.pc_id() != pc_id {
                    return Err("data set on another presentation context".into());
                }
                receiving.write(&pdv.data).await;
                if !pdv.is_last {
                    return Ok(Vec::new());
                }
                let State::Storing(receiving) = std::mem::replace(state, State::Idle) else {
                    return Err("lost C-STORE state".into());
                };
                let (rsp, ok) = receiving.finish(ingest).await;
                if ok {
                    *stored += 1;
                }
                Ok(vec![command_pdu(pc_id, rsp)])
            }
            State::Finding(finding) => {
                if finding.pc_id() != pc_id {
                    return Err("identifier on another presentation context".into());
                }
                finding.write(&pdv.data)?;
                if !pdv.is_last {
                    return Ok(Vec::new());
                }
                let State::Finding(finding) = std::mem::replace(state, State::Idle) else {
                    return Err("lost C-FIND state".into());
                };
                Ok(finding
                    .finish(
                        services.index.as_ref(),
                        &config.ae_title,
                        assoc.requestor_max_pdu_length(),
                    )
                    .await)
            }
        },
    }
}

fn command_pdu(pc_id: u8, data: Vec<u8>) -> Pdu {
    Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc_id,
            value_type: PDataValueType::Command,
            is_last: true,
            data,
        }],
    }
}
