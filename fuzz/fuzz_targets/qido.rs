#![no_main]
//! `cargo +nightly fuzz run qido`: see [`phim::fuzzing::qido`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| phim::fuzzing::qido(data));
