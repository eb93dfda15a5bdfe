//! `adjoint grad` end to end: outputs, modes and bad input (exit 2, no panic).

use std::process::{Command, Output};

fn adjoint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adjoint")).args(args).output().expect("runs")
}

const LECTURE: &str = "(x*y + sin(x) + 4) * (3*y^2 + 6)";

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

#[test]
fn reverse_mode_json_has_value_and_every_partial() {
    let out = adjoint(&["grad", LECTURE, "--at", "x=2,y=8", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.starts_with("{\"value\": 4140.04"), "{text}");
    let v = json(&out);
    assert!((v["value"].as_f64().unwrap() - 4140.0408905).abs() < 1e-6);
    assert!((v["gradient"]["x"].as_f64().unwrap() - 1501.6029263).abs() < 1e-6);
    assert!((v["gradient"]["y"].as_f64().unwrap() - 1399.6462764).abs() < 1e-6);
}

#[test]
fn forward_mode_gives_the_one_variable() {
    let v = json(&adjoint(&["grad", LECTURE, "--at", "x=2,y=8", "--mode", "forward", "--wrt", "y", "--json"]));
    let g = v["gradient"].as_object().unwrap();
    assert_eq!(g.len(), 1);
    assert!((g["y"].as_f64().unwrap() - 1399.6462764).abs() < 1e-6);
}

#[test]
fn text_output_lists_the_partials() {
    let out = adjoint(&["grad", "-x^2", "--at", "x=3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("= -9"), "{text}");
    assert!(text.contains("∂f/∂x = -6"), "{text}");
}

fn assert_bad_input(args: &[&str], needle: &str) {
    let out = adjoint(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
    assert!(!err.contains("panicked") && !err.contains("internal error"), "{err}");
}

#[test]
fn bad_input_is_reported_with_exit_code_2() {
    assert_bad_input(&["grad", "x * (y + ", "--at", "x=1,y=2"], "column 10");
    assert_bad_input(&["grad", "x + * y", "--at", "x=1,y=2"], "column 5");
    assert_bad_input(&["grad", "x + zed", "--at", "x=1"], "'zed'");
    assert_bad_input(&["grad", "x", "--at", "x=abc"], "not a number");
    assert_bad_input(&["grad", "x", "--at", "x"], "NAME=VALUE");
    assert_bad_input(&["grad", "x*y", "--at", "x=1,y=2", "--mode", "forward"], "--wrt");
    assert_bad_input(&["grad", "x", "--at", "x=1", "--mode", "forward", "--wrt", "q"], "'q'");
    assert_bad_input(&["grad", "frob(x)", "--at", "x=1"], "unknown function 'frob'");
    assert_bad_input(&["grad", "x", "--nonsense"], "--nonsense");
}

#[test]
fn hessian_includes_the_mixed_partial_a_detaching_engine_gets_wrong() {
    let v = json(&adjoint(&["grad", LECTURE, "--at", "x=2,y=8", "--hessian", "--json"]));
    let h = &v["hessian"];
    // An engine that detaches gradients during backward gets 198 here.
    assert!((h["x"]["y"].as_f64().unwrap() - 562.0249518).abs() < 1e-6);
    assert!((h["y"]["x"].as_f64().unwrap() - 562.0249518).abs() < 1e-6);
    assert!((h["x"]["x"].as_f64().unwrap() + 8f64.sin() * 0.0 + 2f64.sin() * 198.0).abs() < 1e-9);
    assert!((h["y"]["y"].as_f64().unwrap() - 317.4557845609541).abs() < 1e-9);
    let text = String::from_utf8_lossy(&adjoint(&["grad", LECTURE, "--at", "x=2,y=8", "--hessian"]).stdout).to_string();
    assert!(text.contains("Hessian") && text.contains("562.024952"), "{text}");
}
