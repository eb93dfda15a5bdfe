//! Snapshot tests of `adjoint trace`, and the trace's adjoints against the gradient.
//! Set UPDATE_SNAPSHOTS=1 to rewrite the files in tests/snapshots/ after a deliberate change.

use std::process::Command;

use adjoint::expr::Expr;
use adjoint_explain::trace::{Trace, TraceOptions};

fn adjoint(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_adjoint")).args(args).output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn snapshot(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    // A missing snapshot is a failure, not a new baseline: write it deliberately.
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!("snapshot {name} is missing; run with UPDATE_SNAPSHOTS=1 to write it, then review it")
    });
    assert_eq!(actual, expected, "snapshot {name} differs (UPDATE_SNAPSHOTS=1 rewrites it)");
}

const LECTURE: &str = "(x*y + sin(x) + 4) * (3*y^2 + 6)";

#[test]
fn lecture_function_trace_snapshots() {
    for (format, file) in [("text", "lecture.txt"), ("markdown", "lecture.md"), ("json", "lecture.json")] {
        let (code, out, err) = adjoint(&["trace", LECTURE, "--at", "x=2,y=8", "--wrt", "y", "--format", format]);
        assert_eq!(code, 0, "{err}");
        snapshot(file, &out);
    }
    let (_, out, _) = adjoint(&["trace", "sin(x1) + x1*x2", "--at", "x1=1.5,x2=0.5", "--wrt", "x1"]);
    snapshot("sin_x1_plus_x1_x2.txt", &out);
}

#[test]
fn the_lecture_function_has_exactly_ten_steps_with_constants_inside() {
    let (_, out, _) = adjoint(&["trace", LECTURE, "--at", "x=2,y=8", "--wrt", "y", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 10);
    assert_eq!(steps[2]["op"], "mul");
    assert_eq!(steps[2]["inputs"], serde_json::json!(["s1", "s2"]));
    assert_eq!(steps[2]["value"], 16.0);
    assert_eq!(steps[2]["tangent"], 2.0, "s3' = s1·s2' + s1'·s2 = 2 with the seed on y");
    assert_eq!(steps[5]["inputs"], serde_json::json!(["s5", 4.0]), "s6 = s5 + 4");
    assert_eq!(steps[7]["inputs"], serde_json::json!([3.0, "s7"]), "s8 = 3 × s7");
    assert!((steps[1]["adjoint"].as_f64().unwrap() - 1399.6462764).abs() < 1e-6);
    assert!((steps[0]["adjoint"].as_f64().unwrap() - 1501.6029263).abs() < 1e-6);
}

#[test]
fn adjoint_column_agrees_with_the_gradient_and_sums_its_terms() {
    let expr = Expr::parse("tanh(a*b) / (a + exp(b)) - max(a, b)^3").unwrap();
    let at = vec![("a".to_string(), 0.7), ("b".to_string(), -0.4)];
    let t = Trace::record(&expr, &at, &TraceOptions { forward_wrt: Some("b".into()), reverse: true, degrees: false })
        .unwrap();
    let h = 1e-6;
    let f = |a: f64, b: f64| expr.eval_f64(&[("a".into(), a), ("b".into(), b)].into_iter().collect()).unwrap();
    let (da, db) =
        ((f(0.7 + h, -0.4) - f(0.7 - h, -0.4)) / (2.0 * h), (f(0.7, -0.4 + h) - f(0.7, -0.4 - h)) / (2.0 * h));
    let input = |name: &str| t.steps.iter().find(|s| s.variable.as_deref() == Some(name)).unwrap();
    assert!((input("a").adjoint.unwrap() - da).abs() < 1e-8);
    assert!((input("b").adjoint.unwrap() - db).abs() < 1e-8);
    assert!((t.steps.last().unwrap().tangent.unwrap() - db).abs() < 1e-8, "forward mode seeded on b gives ∂f/∂b");
    for s in &t.steps[..t.steps.len() - 1] {
        let sum: f64 =
            s.adjoint_terms.iter().map(|term| t.steps[term.consumer].adjoint.unwrap() * term.partial_value).sum();
        assert!((sum - s.adjoint.unwrap()).abs() < 1e-12, "{}: terms sum to {sum}", s.name);
    }
}

#[test]
fn degrees_reproduce_the_slide_value_of_sin_2() {
    let (_, out, _) = adjoint(&["trace", "sin(x)", "--at", "x=2", "--degrees", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let last = v["steps"].as_array().unwrap().last().unwrap().clone();
    assert!((last["value"].as_f64().unwrap() - 0.0348995).abs() < 1e-6);
}

#[test]
fn trace_bad_input_exits_2() {
    let (code, _, err) = adjoint(&["trace", "x +", "--at", "x=1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("column"));
    let (code, _, err) = adjoint(&["trace", "x", "--at", "x=1", "--wrt", "q"]);
    assert_eq!(code, 2, "{err}");
}
