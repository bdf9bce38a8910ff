#![no_main]
//! `cargo +nightly fuzz run frame`: see [`phim::fuzzing::frame`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| phim::fuzzing::frame(data));
