//! Input a hostile or careless user would give, each from a finding of the reliability
//! review: files that lie about their sizes, values that are not finite, expressions that
//! swell, sizes that do not fit. Every one ends in a clear message and exit 2 (or a correct
//! answer), never a panic, a hang or an allocation the machine cannot make.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn adjoint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adjoint")).args(args).output().expect("runs")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("adjoint-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "stdout: {}\nstderr: {}", stdout(out), String::from_utf8_lossy(&out.stderr));
    stdout(out)
}

/// Asserts exit 2 with `needle` in the message and no sign of a panic.
fn refused(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stdout: {}\nstderr: {err}", stdout(out));
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// An IDX file of `u8` items: `claimed` along the outer dimension, but only `held` of them
/// present.
fn idx(path: &Path, inner: &[u32], claimed: u32, held: usize, fill: impl Fn(usize) -> u8) {
    let mut bytes = vec![0, 0, 0x08, 1 + inner.len() as u8];
    bytes.extend(claimed.to_be_bytes());
    for d in inner {
        bytes.extend(d.to_be_bytes());
    }
    let per: usize = inner.iter().map(|&d| d as usize).product();
    bytes.extend((0..held * per).map(fill));
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn an_idx_file_claiming_millions_of_images_costs_only_the_limit() {
    let dir = tmp("idx-claims");
    // The training files claim two million images and hold 300; the test files are honest.
    idx(&dir.join("train-images-idx3-ubyte"), &[28, 28], 2_000_000, 300, |i| (i * 7 % 256) as u8);
    idx(&dir.join("train-labels-idx1-ubyte"), &[], 2_000_000, 300, |i| (i % 10) as u8);
    idx(&dir.join("t10k-images-idx3-ubyte"), &[28, 28], 50, 50, |i| (i * 3 % 256) as u8);
    idx(&dir.join("t10k-labels-idx1-ubyte"), &[], 50, 50, |i| (i % 10) as u8);
    let data = dir.to_str().unwrap();
    let out = dir.join("run");
    let common = ["--data", data, "--epochs", "1", "--quiet", "--layers", "784,8,10"];
    let mut args = vec!["train", "--out", out.to_str().unwrap(), "--limit", "200"];
    args.extend(common);
    ok(&adjoint(&args));
    // Without a limit the lie is found, and the message says what is missing.
    let out2 = dir.join("run2");
    let mut args = vec!["train", "--out", out2.to_str().unwrap()];
    args.extend(common);
    refused(&adjoint(&args), "truncated");
    // A label file that disagrees with its images is named.
    idx(&dir.join("t10k-labels-idx1-ubyte"), &[], 40, 40, |i| (i % 10) as u8);
    refused(&adjoint(&["eval", "--model", out.to_str().unwrap(), "--data", data]), "label");
}

#[test]
fn non_finite_results_are_spelled_out_in_json() {
    // JSON has no infinity or NaN; a bare `inf` would make the output unreadable.
    let out = ok(&adjoint(&["grad", "log(x)", "--at", "x=0", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v["value"], "-inf", "{out}");
    assert_eq!(v["gradient"]["x"], "inf", "{out}");
    let out = ok(&adjoint(&["grad", "sqrt(x)", "--at", "x=-1", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v["value"], "NaN", "{out}");
    // A point that is not finite is refused rather than evaluated.
    refused(&adjoint(&["grad", "x", "--at", "x=1e999"]), "x");
}

#[test]
fn an_expression_that_swells_symbolically_is_bounded() {
    // Nested max over 450 levels (900 operations deep): the symbolic derivative would double at every level.
    let mut e = "x".to_string();
    for _ in 0..450 {
        e = format!("max({e}, y)*x");
    }
    let out = ok(&adjoint(&["compare", &e, "--at", "x=1.0001,y=0.5"]));
    assert!(out.contains("expression swell"), "{}", &out[..out.len().min(2000)]);
    // The echoed expression is shortened, not printed in full.
    let first = out.lines().next().unwrap();
    assert!(first.chars().count() < 300, "{}", first.chars().count());
    assert!(first.contains("characters)"), "{first}");
}

#[test]
fn schedules_that_make_no_sense_are_refused() {
    for (schedule, needle) in
        [("exp:1e9", "exp"), ("exp:0", "exp"), ("step:1:0", "step"), ("plateau:2:1", "plateau"), ("wobble", "wobble")]
    {
        let out = adjoint(&["train", "--schedule", schedule, "--epochs", "1", "--limit", "10", "--quiet"]);
        refused(&out, needle);
    }
}

#[test]
fn sizes_that_cannot_fit_are_refused_before_allocating() {
    refused(&adjoint(&["inspect", "--layers", "784,1000000000,10"]), "1000000000");
    refused(&adjoint(&["inspect", "--layers", "784,100000,100000,10"]), "parameters");
    refused(&adjoint(&["backprop", "--layers", "4,5,3", "--batch", "1000000000000"]), "memory");
    refused(&adjoint(&["train", "--layers", "784,1000000000,10", "--epochs", "1"]), "parameters");
}

#[test]
fn images_that_lie_are_refused() {
    let dir = tmp("images");
    let run = dir.join("run");
    ok(&adjoint(&[
        "train",
        "--out",
        run.to_str().unwrap(),
        "--limit",
        "300",
        "--test-limit",
        "50",
        "--epochs",
        "1",
        "--quiet",
        "--layers",
        "784,8,10",
    ]));
    let model = run.to_str().unwrap();
    let cases: [(&str, &[u8], &str); 7] = [
        ("empty.pgm", b"", "empty"),
        ("zero.pgm", b"P5 0 0 255\n", "0\u{d7}0"),
        ("maxval0.pgm", b"P5 28 28 0\n", "maxval"),
        ("huge.pgm", b"P5 100000 100000 255\n\x00", "too large"),
        ("short.pgm", b"P5 28 28 255\n\x00\x01", "truncated"),
        ("garbage.png", b"\x89PNG\r\n\x1a\n garbage", "png"),
        ("text.pgm", b"P2 2 1 10\n0 11\n", "above the maxval"),
    ];
    for (name, bytes, needle) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = adjoint(&["predict", "--model", model, path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(&needle.to_lowercase()), "{name}: expected {needle:?} in {err}");
    }
    // Junk after the pixels of a binary PGM is a sign of a wrong size.
    let mut junk = b"P5 28 28 255\n".to_vec();
    junk.extend([0u8; 28 * 28 + 5]);
    let path = dir.join("junk.pgm");
    std::fs::write(&path, junk).unwrap();
    refused(&adjoint(&["predict", "--model", model, path.to_str().unwrap()]), "after the pixels");
    // An endless input is refused before it is opened (only regular files are read).
    if Path::new("/dev/zero").exists() {
        refused(&adjoint(&["predict", "--model", model, "/dev/zero"]), "not a regular file");
    }
    // An empty CSV to evaluate on is refused, not divided by zero.
    let csv = dir.join("empty.csv");
    std::fs::write(&csv, "label,a\n").unwrap();
    let out = adjoint(&["eval", "--model", model, "--data", csv.to_str().unwrap(), "--label-column", "label"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
