//! Phim: an open-source PACS. DICOMweb (STOW-RS, WADO-RS, QIDO-RS) over
//! object storage and a SQL index. See ARCHITECTURE.md for the map.
//!
//! The crate's public seams are what `src/main.rs`, `tests/` and
//! `benches/` use; everything else is `pub(crate)` or narrower, and the
//! `unreachable_pub` lint (an error under `cargo clippy -D warnings`) keeps
//! it so: a `pub` item in a crate-private module must say `pub(crate)`.
#![warn(unreachable_pub)]

pub(crate) mod api;
pub mod audit;
pub mod auth;
pub(crate) mod backends;
pub mod config;
pub(crate) mod connections;
pub mod dicom;
pub(crate) mod dicomweb;
pub(crate) mod dimse;
pub(crate) mod emr;
pub(crate) mod error;
pub(crate) mod fhir;
pub mod fsck;
#[doc(hidden)]
pub mod fuzzing;
pub mod imaging;
pub mod import;
pub mod index;
pub mod ingest;
pub(crate) mod jobs;
pub mod query;
pub mod redact;
pub mod retention;
pub(crate) mod search;
pub mod server;
pub mod state;
pub mod store;
pub mod synth;
pub(crate) mod telemetry;
pub(crate) mod tls;
pub mod trash;
pub mod verify;
pub(crate) mod viewer;
