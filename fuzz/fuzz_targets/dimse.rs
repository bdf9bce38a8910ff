#![no_main]
//! `cargo +nightly fuzz run dimse`: see [`phim::fuzzing::dimse`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| phim::fuzzing::dimse(data));
