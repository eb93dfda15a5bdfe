//! Bounded versions of the cargo-fuzz targets in `fuzz/` that run with the tests: every
//! reader of outside data is given random bytes and mutations of valid files (the seeds in
//! `tests/fixtures/fuzz-seeds`, the same the fuzzers start from), and must return `Ok` or a
//! typed error — never panic, hang or allocate what a file merely claims.
//!
//! Whatever a reader accepts must also be usable: consistent sizes, values in range.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use adjoint::data::image::decode_image;
use adjoint::data::{idx, parse_csv};
use adjoint::expr::Expr;
use adjoint::nn::Network;
use adjoint::train::Trainer;
use proptest::prelude::*;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz-seeds").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("seed folder").map(|e| e.unwrap().path()).collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// One edit of a byte string, as a mutating fuzzer makes them.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    /// Overwrite 4 bytes with a big-endian number: sizes and counts in headers.
    Number(usize, u32),
    /// The same in little-endian (safetensors' header length).
    NumberLe(usize, u64),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, v)| Edit::Insert(i, v)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Remove(i, n)),
        (any::<usize>(), prop_oneof![Just(0u32), Just(1), Just(u32::MAX), Just(1 << 31), any::<u32>()])
            .prop_map(|(i, n)| Edit::Number(i, n)),
        (0usize..16, prop_oneof![Just(0u64), Just(u64::MAX), Just(1 << 40), any::<u64>()])
            .prop_map(|(i, n)| Edit::NumberLe(i, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = bytes.len().max(1);
        match e {
            Edit::Set(i, b) if !bytes.is_empty() => bytes[i % len] = *b,
            Edit::Flip(i, bit) if !bytes.is_empty() => bytes[i % len] ^= 1 << bit,
            Edit::Truncate(n) => bytes.truncate(n % len),
            Edit::Insert(i, v) => {
                let at = i % (bytes.len() + 1);
                bytes.splice(at..at, v.iter().copied());
            }
            Edit::Remove(i, n) if !bytes.is_empty() => {
                let at = i % len;
                bytes.drain(at..(at + n).min(bytes.len()));
            }
            Edit::Number(i, n) if bytes.len() >= 4 => {
                let at = i % (bytes.len() - 3);
                bytes[at..at + 4].copy_from_slice(&n.to_be_bytes());
            }
            Edit::NumberLe(i, n) if bytes.len() >= 8 => {
                let at = i % (bytes.len() - 7);
                bytes[at..at + 8].copy_from_slice(&n.to_le_bytes());
            }
            _ => {}
        }
    }
    bytes
}

/// A seed of `target` with up to four edits, or (one time in eight) random bytes.
fn input(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let all = seeds(target);
    let n = all.len();
    prop_oneof![
        7 => (0..n, proptest::collection::vec(edit(), 0..5)).prop_map(move |(k, e)| apply(all[k].clone(), &e)),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
    ]
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() }
}

#[test]
fn every_seed_is_valid() {
    // The mutations start from inputs the readers accept, so they reach deep paths.
    for s in seeds("idx") {
        idx::parse_idx(&s, Path::new("seed")).unwrap();
    }
    for s in seeds("csv") {
        parse_csv(std::str::from_utf8(&s).unwrap(), "label", Path::new("seed")).unwrap();
    }
    for s in seeds("expr") {
        Expr::parse(std::str::from_utf8(&s).unwrap()).unwrap();
    }
    for s in seeds("model") {
        Network::<f32>::decode(&s, Path::new("seed")).unwrap();
    }
    // Every checkpoint seed but "model-only" (a model file, which must be refused) decodes.
    let checkpoints = seeds("checkpoint");
    let valid = checkpoints.iter().filter(|s| Trainer::decode_checkpoint(s, Path::new("seed")).is_ok()).count();
    assert_eq!(valid, checkpoints.len() - 1);
    for s in seeds("image") {
        decode_image(&s, Path::new("seed")).unwrap();
    }
}

/// Runs the reader a fuzz target exercises; `Ok` or a typed error are both fine.
fn read(target: &str, bytes: &[u8]) {
    let origin = Path::new("input");
    match target {
        "idx" => drop(idx::parse_idx_limited(bytes, origin, None)),
        "csv" => drop(std::str::from_utf8(bytes).map(|t| parse_csv(t, "label", origin))),
        "expr" => drop(std::str::from_utf8(bytes).map(Expr::parse)),
        "model" => drop(Network::<f32>::decode(bytes, origin)),
        "checkpoint" => drop(Trainer::decode_checkpoint(bytes, origin)),
        "image" => drop(decode_image(bytes, origin)),
        other => panic!("no reader for fuzz target '{other}'"),
    }
}

#[test]
fn inputs_the_fuzzers_found_stay_fixed() {
    // Every crash a fuzzer found is kept in tests/fixtures/fuzz-regressions/<target>/.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz-regressions");
    let mut checked = 0;
    for target in std::fs::read_dir(&root).unwrap() {
        let target = target.unwrap().path();
        let name = target.file_name().unwrap().to_str().unwrap().to_string();
        for file in std::fs::read_dir(&target).unwrap() {
            read(&name, &std::fs::read(file.unwrap().path()).unwrap());
            checked += 1;
        }
    }
    assert!(checked > 0);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn idx_reader(bytes in input("idx"), limit in prop_oneof![Just(None), (0usize..5).prop_map(Some)]) {
        if let Ok(i) = idx::parse_idx_limited(&bytes, Path::new("fuzz"), limit) {
            prop_assert_eq!(i.data.len(), i.dims.iter().product::<usize>());
            if let Some(l) = limit {
                prop_assert!(i.dims[0] <= l);
            }
        }
    }

    #[test]
    fn csv_reader(bytes in input("csv")) {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            if let Ok(d) = parse_csv(text, "label", Path::new("fuzz")) {
                prop_assert_eq!(d.features().nrows(), d.labels().len());
                prop_assert!(d.labels().iter().all(|&l| l < d.classes()));
                prop_assert!(d.features().iter().all(|v| v.is_finite()));
            }
        }
    }

    #[test]
    fn expression_parser(bytes in input("expr")) {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            if let Ok(e) = Expr::parse(text) {
                let vars: HashMap<String, f64> = e.variables().into_iter().map(|v| (v, 0.7)).collect();
                let _ = e.eval_f64(&vars);
                if let Some(v) = e.variables().first() {
                    let _ = e.derivative_within(v, 10_000).map(|d| d.simplify());
                }
            }
        }
    }

    #[test]
    fn model_loader(bytes in input("model")) {
        if let Ok(net) = Network::<f32>::decode(&bytes, Path::new("fuzz")) {
            // A model that loads predicts with its own shape.
            let inputs = net.architecture.inputs();
            let out = net.predict(&ndarray::Array2::zeros((1, inputs)));
            prop_assert_eq!(out.shape(), &[1, net.architecture.outputs()][..]);
        }
    }

    #[test]
    fn checkpoint_loader(bytes in input("checkpoint")) {
        let _ = Trainer::decode_checkpoint(&bytes, Path::new("fuzz"));
    }

    #[test]
    fn image_reader(bytes in input("image")) {
        if let Ok(image) = decode_image(&bytes, Path::new("fuzz")) {
            prop_assert_eq!(image.pixels.len(), image.width * image.height);
            prop_assert!(image.pixels.iter().all(|p| (0.0..=1.0).contains(p)));
        }
    }
}
