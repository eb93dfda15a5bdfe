//! Using a trained model as an outside tester did: `eval` and `predict` in evaluation mode,
//! every row counted, the data a run was trained on checked before it is used again, closed
//! pipes, and signals while a run is being prepared. Each test failed before the fix it
//! guards.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};

use common::{adjoint, csv, ok, refused, stderr, tmp};

fn final_accuracy(run: &std::path::Path) -> f64 {
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    last["test_accuracy"].as_f64().unwrap()
}

fn eval_accuracy(run: &std::path::Path) -> f64 {
    let out = ok(&adjoint(&["eval", "--model", run.to_str().unwrap(), "--json"]));
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    json["accuracy"].as_f64().unwrap()
}

#[test]
fn eval_of_a_dropout_and_a_batch_norm_run_equals_the_runs_own_final_accuracy() {
    for (name, arch) in [("dropout", "fc:128,relu,dropout:0.5,fc:10"), ("batchnorm", "fc:32,batchnorm,relu,fc:10")] {
        let run = tmp(&format!("mode-{name}")).join("run");
        let out = run.to_str().unwrap();
        ok(&adjoint(&[
            "train",
            "--arch",
            arch,
            "--limit",
            "3000",
            "--test-limit",
            "1000",
            "--epochs",
            "2",
            "--out",
            out,
            "--quiet",
        ]));
        // To the example: the same mode, chunks and threads as the run's own evaluation.
        assert_eq!(eval_accuracy(&run), final_accuracy(&run), "{arch}");
    }
}

/// A 28×28 8-bit PGM.
fn pgm(path: &std::path::Path, pixel: impl Fn(usize, usize) -> u8) {
    let mut bytes = b"P5 28 28 255\n".to_vec();
    bytes.extend((0..28 * 28).map(|i| pixel(i / 28, i % 28)));
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn predict_with_batch_norm_tells_images_apart() {
    let dir = tmp("predict-bn");
    let run = dir.join("run");
    ok(&adjoint(&[
        "train",
        "--arch",
        "fc:32,batchnorm,relu,fc:10",
        "--limit",
        "3000",
        "--test-limit",
        "200",
        "--epochs",
        "2",
        "--out",
        run.to_str().unwrap(),
        "--quiet",
    ]));
    // A vertical bar (a 1), a ring (a 0) and a black image: one image normalised over its
    // own batch would give the same answer for all three.
    pgm(&dir.join("one.pgm"), |_, x| if (13..16).contains(&x) { 255 } else { 0 });
    pgm(&dir.join("zero.pgm"), |y, x| {
        let r = ((y as f64 - 13.5).powi(2) + (x as f64 - 13.5).powi(2)).sqrt();
        if (6.0..9.0).contains(&r) {
            255
        } else {
            0
        }
    });
    pgm(&dir.join("black.pgm"), |_, _| 0);
    let answers: Vec<String> = ["one", "zero", "black"]
        .iter()
        .map(|n| {
            let p = dir.join(format!("{n}.pgm"));
            ok(&adjoint(&["predict", "--model", run.to_str().unwrap(), p.to_str().unwrap(), "--json"]))
        })
        .collect();
    assert_ne!(answers[0], answers[1]);
    assert_ne!(answers[0], answers[2]);
    assert_ne!(answers[1], answers[2]);
}

#[test]
fn every_row_is_counted_when_the_data_has_fewer_classes_than_the_model() {
    let dir = tmp("fewer-classes");
    csv(&dir.join("three.csv"), 300, 3, 1);
    let run = dir.join("run");
    ok(&adjoint(&[
        "train",
        "--data",
        dir.join("three.csv").to_str().unwrap(),
        "--label-column",
        "label",
        "--layers",
        "4,16,3",
        "--epochs",
        "3",
        "--out",
        run.to_str().unwrap(),
        "--quiet",
    ]));
    // 150 rows, all of class 0.
    let mut text = String::from("a,b,c,d,label\n");
    for i in 0..150 {
        let v = [0.3, 2.5, 5.0][i % 3];
        text += &format!("{v},{},{},{},0\n", 2.0 * v, 3.0 * v, 4.0 * v);
    }
    std::fs::write(dir.join("zeros.csv"), text).unwrap();
    let out = ok(&adjoint(&[
        "eval",
        "--model",
        run.to_str().unwrap(),
        "--data",
        dir.join("zeros.csv").to_str().unwrap(),
        "--label-column",
        "label",
        "--json",
    ]));
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let confusion: Vec<Vec<u64>> = serde_json::from_value(json["confusion"].clone()).unwrap();
    assert_eq!(confusion.len(), 3, "the matrix has the model's classes");
    assert_eq!(confusion.iter().flatten().sum::<u64>(), 150, "every row is counted");
    let correct = confusion[0][0] as f64 / 150.0;
    assert!((json["accuracy"].as_f64().unwrap() - correct).abs() < 1e-12);
}

#[test]
fn a_csv_that_changed_since_training_is_refused_by_resume_and_by_eval() {
    let dir = tmp("changed-csv");
    let data = dir.join("data.csv");
    csv(&data, 200, 2, 7);
    let run = dir.join("run");
    let run_arg = run.to_str().unwrap();
    ok(&adjoint(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--label-column",
        "label",
        "--layers",
        "4,8,2",
        "--epochs",
        "1",
        "--out",
        run_arg,
        "--quiet",
    ]));
    // The run names its data absolutely: eval works from any folder.
    let elsewhere = Command::new(env!("CARGO_BIN_EXE_adjoint"))
        .args(["eval", "--model", run.canonicalize().unwrap().to_str().unwrap()])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    ok(&elsewhere);
    // Appending a row changes the seeded split: both refuse, naming the file.
    let mut text = std::fs::read_to_string(&data).unwrap();
    text += "1,2,3,4,1\n";
    std::fs::write(&data, text).unwrap();
    refused(&adjoint(&["train", "--resume", run_arg, "--epochs", "2", "--quiet"]), &["data.csv", "has changed"]);
    refused(&adjoint(&["eval", "--model", run_arg]), &["data.csv", "has changed"]);
    // Evaluating on data named explicitly is the user's choice.
    ok(&adjoint(&["eval", "--model", run_arg, "--data", data.to_str().unwrap(), "--label-column", "label"]));
}

#[test]
fn a_closed_pipe_ends_eval_quietly() {
    let run = tmp("pipe").join("run");
    ok(&adjoint(&[
        "train",
        "--layers",
        "784,8,10",
        "--limit",
        "500",
        "--test-limit",
        "100",
        "--epochs",
        "1",
        "--out",
        run.to_str().unwrap(),
        "--quiet",
    ]));
    // The reader goes away before the table is printed.
    let mut child = Command::new(env!("CARGO_BIN_EXE_adjoint"))
        .args(["eval", "--model", run.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!err.contains("internal error") && !err.contains("Broken pipe"), "{err}");
    assert_ne!(status.code(), Some(1), "{err}");
}

#[test]
fn a_signal_while_a_large_csv_loads_ends_the_run_within_seconds_leaving_nothing() {
    let dir = tmp("signal-loading");
    // ~40 MB of CSV: reading and parsing it takes seconds.
    let mut text = String::with_capacity(45 << 20);
    text += &(0..40).map(|k| format!("f{k}")).collect::<Vec<_>>().join(",");
    text += ",label\n";
    let row: String = (0..40).map(|k| format!("{}.25,", k % 10)).collect();
    for i in 0..100_000 {
        text += &row;
        text += if i % 2 == 0 { "0\n" } else { "1\n" };
    }
    std::fs::write(dir.join("big.csv"), text).unwrap();
    let run = dir.join("run");
    let child = Command::new(env!("CARGO_BIN_EXE_adjoint"))
        .args([
            "train",
            "--data",
            dir.join("big.csv").to_str().unwrap(),
            "--label-column",
            "label",
            "--layers",
            "40,4,2",
            "--epochs",
            "1",
            "--out",
            run.to_str().unwrap(),
            "--quiet",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..500 {
        if run.join(".adjoint-run").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let sent = std::time::Instant::now();
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let waited = sent.elapsed();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(waited.as_secs_f64() < 3.0, "took {waited:?} to stop");
    // Stopped while loading: nothing to keep. (Had loading finished within the grace
    // second, training would have stopped after its first step and saved it instead.)
    if stderr(&out).contains("before training began") {
        assert!(!run.exists(), "the folder this run created is taken away again");
    } else {
        assert!(run.join("checkpoint.safetensors").exists(), "{}", stderr(&out));
    }
}
