//! The fuzz targets of `phim::fuzzing` on stable, in every test run: each
//! input kept in `tests/fuzz/corpus/<target>/` (inputs that once crashed a
//! target, and what cargo-fuzz found worth keeping), each seed, then
//! `PHIM_FUZZ_CASES` (default 1,000) mutations of the seeds per target,
//! from a fixed random seed (`PHIM_FUZZ_SEED` to explore others). A target
//! that panics fails the test with the smallest input proptest finds; that
//! input is written under `target/fuzz-failures/` to be kept in the corpus
//! once fixed.

use std::path::{Path, PathBuf};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

#[derive(Debug, Clone)]
enum Mutation {
    /// XOR a byte.
    Flip(usize, u8),
    /// Set a byte to one of the values parsers care about.
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
    /// Repeat a slice (lengths and counts that add up wrongly).
    Repeat(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        Just(0x00u8),
        Just(0xFF),
        Just(0x7F),
        Just(0x80),
        Just(0xFE),
        Just(0xE0),
        Just(0xDD),
        Just(b'-'),
        Just(b'\\'),
        Just(b'*'),
        any::<u8>()
    ];
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (any::<usize>(), interesting).prop_map(|(p, b)| Mutation::Set(p, b)),
        (any::<usize>(), vec(any::<u8>(), 1..16)).prop_map(|(p, b)| Mutation::Insert(p, b)),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Mutation::Remove(p, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..32).prop_map(|(p, n)| Mutation::Repeat(p, n)),
    ]
}

fn apply(seed: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for m in mutations {
        let at = |p: usize, len: usize| if len == 0 { 0 } else { p % len };
        match m {
            Mutation::Flip(p, b) if !d.is_empty() => {
                let i = at(*p, d.len());
                d[i] ^= b;
            }
            Mutation::Set(p, b) if !d.is_empty() => {
                let i = at(*p, d.len());
                d[i] = *b;
            }
            Mutation::Insert(p, bytes) => {
                let i = at(*p, d.len() + 1);
                d.splice(i..i, bytes.iter().copied());
            }
            Mutation::Remove(p, n) if !d.is_empty() => {
                let i = at(*p, d.len());
                let end = (i + n).min(d.len());
                d.drain(i..end);
            }
            Mutation::Truncate(p) => {
                let keep = at(*p, d.len() + 1);
                d.truncate(keep);
            }
            Mutation::Repeat(p, n) if !d.is_empty() => {
                let i = at(*p, d.len());
                let end = (i + n).min(d.len());
                let slice = d[i..end].to_vec();
                d.splice(end..end, slice);
            }
            _ => {}
        }
    }
    d
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("a corpus file");
            (p, bytes)
        })
        .collect()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fuzz(target: &str) {
    for (path, bytes) in corpus(target) {
        // A kept input that crashes again fails here, by name.
        let ok = std::panic::catch_unwind(|| phim::fuzzing::run(target, &bytes));
        assert!(
            ok.is_ok(),
            "{target}: {} crashes the target again",
            path.display()
        );
    }
    let mut seeds = phim::fuzzing::seeds(target);
    assert!(!seeds.is_empty(), "{target}: no seeds");
    seeds.push(Vec::new());
    for s in &seeds {
        assert!(phim::fuzzing::run(target, s));
    }
    let cases = env_u64("PHIM_FUZZ_CASES", 1000) as u32;
    let seed = env_u64("PHIM_FUZZ_SEED", 0x5eed_f022);
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..8 + target.len().min(24)].copy_from_slice(&target.as_bytes()[..target.len().min(24)]);
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &key));
    let strategy = (0..seeds.len(), vec(mutation(), 1..8));
    let result = runner.run(&strategy, |(i, mutations)| {
        phim::fuzzing::run(target, &apply(&seeds[i], &mutations));
        Ok(())
    });
    if let Err(e) = result {
        // Keep the smallest failing input for the corpus.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
        let _ = std::fs::create_dir_all(&dir);
        if let proptest::test_runner::TestError::Fail(_, (i, mutations)) = &e {
            let input = apply(&seeds[*i], mutations);
            let path = dir.join(format!("{target}-{seed:x}"));
            let _ = std::fs::write(&path, &input);
            panic!("{target}: {e}\n(input written to {})", path.display());
        }
        panic!("{target}: {e}");
    }
}

#[test]
fn instance() {
    fuzz("instance");
}

#[test]
fn frame() {
    fuzz("frame");
}

#[test]
fn multipart() {
    fuzz("multipart");
}

#[test]
fn qido() {
    fuzz("qido");
}

#[test]
fn dimse() {
    fuzz("dimse");
}

#[test]
fn text() {
    fuzz("text");
}

#[test]
fn every_target_is_driven_here() {
    for t in phim::fuzzing::TARGETS {
        assert!(
            ["instance", "frame", "multipart", "qido", "dimse", "text"].contains(t),
            "{t}"
        );
    }
}
