#![no_main]
//! `cargo +nightly fuzz run instance`: see [`phim::fuzzing::instance`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| phim::fuzzing::instance(data));
