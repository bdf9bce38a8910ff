#![no_main]
//! `cargo +nightly fuzz run multipart`: see [`phim::fuzzing::multipart`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| phim::fuzzing::multipart(data));
