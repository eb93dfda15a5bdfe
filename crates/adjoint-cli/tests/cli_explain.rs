//! `adjoint graph`, `compare`, `inspect` and `train --watch` end to end.

use std::process::{Command, Output};

fn adjoint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adjoint")).args(args).output().expect("runs")
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("adjoint-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into()
}

#[test]
fn graph_writes_dot_and_svg() {
    let prefix = tmp("lecture");
    ok(&adjoint(&["graph", "(x*y + sin(x) + 4) * (3*y^2 + 6)", "--at", "x=2,y=8", "--out", prefix.to_str().unwrap()]));
    let dot = std::fs::read_to_string(prefix.with_extension("dot")).unwrap();
    assert!(dot.starts_with("digraph") && dot.contains("s1 -> s3") && dot.contains("s1 -> s4"));
    let svg = std::fs::read_to_string(prefix.with_extension("svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("adjoint 1501.6029"));
}

#[test]
fn compare_reports_all_four_methods() {
    let out = ok(&adjoint(&["compare", "x^2 * y", "--at", "x=3,y=2"]));
    for needle in ["Symbolic", "2 * x * y", "Finite differences", "Forward mode", "Reverse mode", "central differences"]
    {
        assert!(out.contains(needle), "missing {needle} in\n{out}");
    }
    assert_eq!(adjoint(&["compare", "x +", "--at", "x=1"]).status.code(), Some(2));
}

#[test]
fn inspect_json_has_one_entry_per_layer_and_shows_vanishing_activations() {
    let pics = tmp("inspect");
    let args = [
        "inspect",
        "--layers",
        "784,64,64,64,10",
        "--activation",
        "tanh",
        "--batch",
        "64",
        "--json",
        "--out",
        pics.to_str().unwrap(),
    ];
    let v: serde_json::Value = serde_json::from_str(&ok(&adjoint(&args))).unwrap();
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4);
    assert_eq!(layers[3]["units"], 10);
    for key in ["index", "units", "mean", "std", "grad_norm", "dead_fraction"] {
        assert!(layers[0].get(key).is_some(), "{key}");
    }
    let small = [
        "inspect",
        "--layers",
        "784,64,64,64,10",
        "--init",
        "normal:0.01",
        "--batch",
        "64",
        "--json",
        "--out",
        pics.to_str().unwrap(),
        "--force",
    ];
    let v: serde_json::Value = serde_json::from_str(&ok(&adjoint(&small))).unwrap();
    let std: Vec<f64> = v["layers"].as_array().unwrap().iter().map(|l| l["std"].as_f64().unwrap()).collect();
    assert!(std[2] < std[0] / 10.0, "small weights and tanh shrink the activations: {std:?}");
    let relu = [
        "inspect",
        "--layers",
        "784,32,10",
        "--activation",
        "relu",
        "--compare-inits",
        "--batch",
        "32",
        "--json",
        "--out",
        pics.to_str().unwrap(),
        "--force",
    ];
    let v: serde_json::Value = serde_json::from_str(&ok(&adjoint(&relu))).unwrap();
    assert_eq!(v["inits"].as_array().unwrap().len(), 3);
    assert!(v["inits"][0]["layers"][0]["dead_fraction"].is_number());
    assert!(std::fs::read_to_string(pics.with_extension("svg")).unwrap().contains("init he"));
    // Without --force the pictures just written are not replaced.
    assert_eq!(adjoint(&relu[..relu.len() - 1]).status.code(), Some(2));
    assert_eq!(adjoint(&["inspect", "--layers", "100,10"]).status.code(), Some(2));
    assert_eq!(adjoint(&["inspect", "--init", "bogus"]).status.code(), Some(2));
}

#[test]
fn watch_logs_layer_statistics_into_the_metrics() {
    let dir = tmp("watch");
    let _ = std::fs::remove_dir_all(&dir);
    ok(&adjoint(&[
        "train",
        "--watch",
        "--limit",
        "500",
        "--test-limit",
        "100",
        "--epochs",
        "1",
        "--activation",
        "relu",
        "--quiet",
        "--out",
        dir.to_str().unwrap(),
    ]));
    let line = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let m: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert!(layers[0]["grad_norm"].as_f64().unwrap() > 0.0);
    assert!(layers[0]["dead_fraction"].is_number());
}

#[test]
fn backprop_checks_the_four_equations() {
    let out = ok(&adjoint(&["backprop", "--layers", "500,1000", "--batch", "2", "--activation", "tanh"]));
    assert!(out.contains("1000 × 500,000"), "{out}");
    assert!(out.contains("All four equations hold"));
    let out = ok(&adjoint(&["backprop", "--layers", "3,4,2", "--activation", "relu"]));
    assert!(out.contains("BP1") && out.contains("BP2") && out.contains("BP3") && out.contains("BP4"));
    assert_eq!(adjoint(&["backprop", "--activation", "softmax"]).status.code(), Some(2));
}
