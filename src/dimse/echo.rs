//! C-ECHO SCP (PS3.4 Annex A, PS3.7 §9.1.5): verification.

use super::command::{field, response, Command, CommandError};
use super::VERIFICATION;

/// The C-ECHO-RSP for a C-ECHO-RQ (status Success).
pub(crate) fn respond(rq: &Command) -> Result<Vec<u8>, CommandError> {
    Ok(response(field::C_ECHO_RSP, VERIFICATION, rq.message_id()?, 0x0000).into_bytes())
}
