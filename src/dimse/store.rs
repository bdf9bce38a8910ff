//! C-STORE SCP (PS3.4 Annex B, PS3.7 §9.1.1): the data set is written
//! behind our own file meta group (PS3.10 §7.1) into a spool file as its
//! fragments arrive, then goes through the same ingest pipeline as STOW-RS:
//! same validation, duplicate policy, store-then-index ordering.

use dicom_ul::pdu::PresentationContextNegotiated;

use super::command::{field, response, tag, Command, CommandError};
use crate::dicom::write::file_meta_prefix;
use crate::error::{failure_reason, is_server_fault};
use crate::ingest::{Ingest, IngestError, SpoolError, SpoolWriter};

/// A C-STORE whose data set is arriving.
pub(crate) struct Receiving {
    pc_id: u8,
    message_id: u16,
    sop_class: String,
    sop_instance: String,
    /// `None` once writing failed: later fragments are then drained.
    writer: Option<SpoolWriter>,
    failed: Option<SpoolError>,
}

impl Receiving {
    pub(crate) async fn start(
        rq: &Command,
        pc: &PresentationContextNegotiated,
        ingest: &Ingest,
    ) -> Result<Receiving, CommandError> {
        let message_id = rq.message_id()?;
        let sop_class = rq
            .ui(tag::AFFECTED_SOP_CLASS_UID)
            .ok_or(CommandError::Missing("Affected SOP Class UID"))?;
        let sop_instance = rq
            .ui(tag::AFFECTED_SOP_INSTANCE_UID)
            .ok_or(CommandError::Missing("Affected SOP Instance UID"))?;
        if !rq.has_data_set() {
            return Err(CommandError::Missing("data set"));
        }
        let meta = file_meta_prefix(
            &sop_class,
            &sop_instance,
            pc.transfer_syntax.trim_end_matches('\0'),
        );
        let (writer, failed) = match ingest.spool_writer().await {
            Ok(mut w) => match w.write(&meta).await {
                Ok(()) => (Some(w), None),
                Err(e) => (None, Some(e)),
            },
            Err(e) => (None, Some(e)),
        };
        Ok(Receiving {
            pc_id: pc.id,
            message_id,
            sop_class,
            sop_instance,
            writer,
            failed,
        })
    }

    pub(crate) fn pc_id(&self) -> u8 {
        self.pc_id
    }

    pub(crate) async fn write(&mut self, fragment: &[u8]) {
        if let Some(w) = &mut self.writer {
            if let Err(e) = w.write(fragment).await {
                self.writer = None;
                self.failed = Some(e);
            }
        }
    }

    /// Ingests the received instance; returns the C-STORE-RSP command and,
    /// when the instance is stored, its study. `derived_only`: the calling
    /// AE may store derived objects only, checked against the data set's
    /// own SOP class (the command's may say otherwise).
    pub(crate) async fn finish(
        self,
        ingest: &Ingest,
        derived_only: bool,
    ) -> (Vec<u8>, Option<String>) {
        let result = match (self.writer, self.failed) {
            (Some(w), None) => match w.finish().await {
                Ok(spool) => ingest
                    .ingest_as(spool, None, derived_only)
                    .await
                    .map_err(|f| f.error),
                Err(e) => Err(e.into()),
            },
            (_, Some(e)) => Err(IngestError::from(e)),
            (None, None) => Err(IngestError::Internal("C-STORE without a spool".into())),
        };
        let (status, comment) = match &result {
            Ok(stored) => {
                if stored.sop_uid.as_str() != self.sop_instance {
                    tracing::warn!(
                        command_sop = %self.sop_instance,
                        data_set_sop = %stored.sop_uid,
                        "C-STORE: SOP Instance UID of the command and the data set differ"
                    );
                }
                (0x0000, None)
            }
            Err(e) => {
                if is_server_fault(e) {
                    tracing::error!(sop = %self.sop_instance, error = %e, "C-STORE failed");
                } else {
                    tracing::warn!(sop = %self.sop_instance, error = %e, "C-STORE rejected");
                }
                (failure_reason(e), Some(e.to_string()))
            }
        };
        let mut rsp = response(field::C_STORE_RSP, &self.sop_class, self.message_id, status)
            .ui(tag::AFFECTED_SOP_INSTANCE_UID, &self.sop_instance);
        if let Some(c) = comment {
            rsp = rsp.error_comment(&c);
        }
        (
            rsp.into_bytes(),
            result.ok().map(|s| s.study_uid.to_string()),
        )
    }
}
