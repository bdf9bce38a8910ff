//! A C-MOVE, C-GET or storage commitment that runs beside the association's
//! loop (which keeps reading, so that a C-CANCEL-RQ or the C-STORE-RSPs of
//! a C-GET reach it), and the answer refusing a second one.

use dicom_ul::pdu::Pdu;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::command::{command_pdu, response, status, Command};

/// A C-MOVE, C-GET or storage commitment running beside the loop.
pub(crate) struct Job {
    /// PDUs to send on this association, in order.
    pub out: mpsc::Receiver<Pdu>,
    /// Set on C-CANCEL-RQ.
    pub(crate) cancel: CancellationToken,
    /// Responses received for the job's own requests on this association
    /// (C-STORE-RSP of a C-GET, N-EVENT-REPORT-RSP).
    pub(crate) responses: mpsc::Sender<Command>,
    /// The request's Message ID (what a C-CANCEL-RQ refers to).
    pub(crate) message_id: u16,
    pub task: tokio::task::JoinHandle<()>,
    /// Let the task finish after the association ends (a commitment
    /// report then goes on a new association).
    pub(crate) detached: bool,
}

impl Drop for Job {
    fn drop(&mut self) {
        if !self.detached {
            self.cancel.cancel();
            self.task.abort();
        }
    }
}

/// Capacity of a job's channels: a few PDUs ahead of the socket.
pub(crate) const JOB_QUEUE: usize = 4;

/// A final response refusing a request because another job runs.
pub(crate) fn busy_response(field: u16, sop_class: &str, message_id: u16, pc_id: u8) -> Pdu {
    command_pdu(
        pc_id,
        response(field, sop_class, message_id, status::OUT_OF_RESOURCES)
            .text(
                super::command::tag::ERROR_COMMENT,
                "another operation is running",
            )
            .into_bytes(),
    )
}
