//! DICOM status codes, once for both doors: DIMSE responses (PS3.7 Annex C)
//! and the Failure Reasons of STOW-RS (PS3.18 Table 10.5.3-1, which takes
//! them from PS3.4 Annex B and GG).

pub const SUCCESS: u16 = 0x0000;
pub(crate) const PENDING: u16 = 0xFF00;
pub(crate) const CANCEL: u16 = 0xFE00;
/// Sub-operations complete, one or more failures or warnings.
pub(crate) const SUB_OPERATIONS_WARNING: u16 = 0xB000;
/// Refused: out of resources.
pub(crate) const OUT_OF_RESOURCES: u16 = 0xA700;
/// Refused: out of resources, unable to calculate the number of matches.
pub(crate) const OUT_OF_RESOURCES_MATCHES: u16 = 0xA701;
/// Refused: out of resources, unable to perform sub-operations.
pub(crate) const OUT_OF_RESOURCES_SUB_OPERATIONS: u16 = 0xA702;
/// Refused: the instance was rejected by an IHE IOCM rejection note and is
/// sent again. PS3.4 leaves A7xx "Refused: Out of Resources" codes to the
/// implementation; A771 is the one dcm4chee-arc answers ("Subsequent
/// occurrence of rejected object"), so modalities that know IOCM know it.
pub(crate) const REJECTED_INSTANCE: u16 = 0xA771;
/// Refused: Move Destination unknown.
pub(crate) const MOVE_DESTINATION_UNKNOWN: u16 = 0xA801;
/// Identifier does not match SOP Class (C-FIND, C-MOVE, C-GET).
pub(crate) const IDENTIFIER_MISMATCH: u16 = 0xA900;
/// Error: Data Set does not match SOP Class (C-STORE; STOW-RS also uses it
/// for a Study Instance UID that does not match the request, PS3.18
/// §10.5.3). The same code as [`IDENTIFIER_MISMATCH`].
pub(crate) const DATASET_MISMATCH: u16 = 0xA900;
/// Unable to process (C-FIND, C-MOVE, C-GET).
pub(crate) const UNABLE_TO_PROCESS: u16 = 0xC000;
/// Error: Cannot understand (C-STORE, STOW-RS). The same code as
/// [`UNABLE_TO_PROCESS`].
pub(crate) const CANNOT_UNDERSTAND: u16 = 0xC000;
/// Processing failure.
pub(crate) const PROCESSING_FAILURE: u16 = 0x0110;
/// Duplicate SOP Instance.
pub(crate) const DUPLICATE_SOP_INSTANCE: u16 = 0x0111;
/// Storage commitment Failure Reasons (PS3.4 J.3.2.1.1.1).
pub(crate) const NO_SUCH_OBJECT_INSTANCE: u16 = 0x0112;
pub(crate) const CLASS_INSTANCE_CONFLICT: u16 = 0x0119;
/// N-ACTION: invalid argument value / missing attribute.
pub(crate) const INVALID_ARGUMENT: u16 = 0x0115;
pub(crate) const NO_SUCH_SOP_CLASS: u16 = 0x0118;
pub(crate) const MISSING_ATTRIBUTE: u16 = 0x0120;
/// N-ACTION: no such action type.
pub(crate) const NO_SUCH_ACTION: u16 = 0x0123;
/// Refused: Not Authorized (PS3.7 C.5: the caller may not invoke this).
pub(crate) const NOT_AUTHORIZED: u16 = 0x0124;
pub(crate) const RESOURCE_LIMITATION: u16 = 0x0213;

/// Warning statuses (0001, Bxxx) of a C-STORE-RSP.
pub(crate) fn is_warning(s: u16) -> bool {
    s == 0x0001 || (s & 0xF000) == 0xB000
}
