//! Phim: an open-source PACS. DICOMweb (STOW-RS, WADO-RS, QIDO-RS) over
//! object storage and a SQL index. See ARCHITECTURE.md for the map.

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod dicom;
pub mod dicomweb;
pub mod dimse;
pub mod emr;
pub mod error;
pub mod fhir;
pub mod imaging;
pub mod import;
pub mod index;
pub mod ingest;
pub mod query;
pub mod redact;
pub mod search;
pub mod server;
pub mod state;
pub mod store;
pub mod synth;
pub mod tls;
pub mod viewer;
