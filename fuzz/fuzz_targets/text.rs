#![no_main]
//! `cargo +nightly fuzz run text`: see [`phim::fuzzing::text`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| phim::fuzzing::text(data));
