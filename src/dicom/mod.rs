//! DICOM encoding knowledge: UIDs, transfer syntaxes, the Part 10 walker,
//! text decoding and the DICOM JSON model (PS3.18 Annex F).

pub(crate) mod dicomdir;
pub mod frames;
pub mod json;
pub mod scan;
pub mod status;
pub mod text;
pub mod transfer_syntax;
pub mod uid;
pub mod write;

pub use dicom_dictionary_std::tags;
pub use uid::Uid;
