//! What the command-line tests share: running the binary, scratch folders, and checking
//! outcomes (success, or exit 2 with a message and no sign of a panic).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs `adjoint` with `args`.
pub fn adjoint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adjoint")).args(args).output().expect("runs")
}

/// A fresh, empty scratch folder for one test.
pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("adjoint-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Standard output as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Asserts success; returns standard output.
pub fn ok(out: &Output) -> String {
    assert!(out.status.success(), "stdout: {}\nstderr: {}", stdout(out), stderr(out));
    stdout(out)
}

/// Asserts exit 2 with every needle in the message and no sign of a panic.
pub fn refused(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "stdout: {}\nstderr: {err}", stdout(out));
    for needle in needles {
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
    }
    assert!(!err.contains("panicked") && !err.contains("internal error"), "{err}");
}

/// A CSV file of `rows` examples with four features and labels 0..`classes` (seeded).
pub fn csv(path: &std::path::Path, rows: usize, classes: usize, seed: u64) {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) as f64) / (1u64 << 31) as f64
    };
    let mut text = String::from("a,b,c,d,label\n");
    for i in 0..rows {
        let label = i % classes;
        let features: Vec<String> =
            (0..4).map(|k| format!("{:.4}", label as f64 * (k as f64 + 1.0) + next())).collect();
        text += &format!("{},{label}\n", features.join(","));
    }
    std::fs::write(path, text).unwrap();
}
