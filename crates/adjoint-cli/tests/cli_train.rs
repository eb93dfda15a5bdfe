//! `adjoint train`, `eval` and `predict` end to end on small subsets of the bundled MNIST,
//! and their bad-input behaviour (exit 2, a clear message, nothing saved damaged).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn adjoint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adjoint")).args(args).output().expect("runs")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("adjoint-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    dir
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn bad(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "expected exit 2; stderr: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert!(!err.contains("panicked") && !err.contains("internal error"), "{err}");
}

const SMALL: [&str; 6] = ["--limit", "1500", "--test-limit", "300", "--quiet", "--threads=1"];

fn train(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--out", out.to_str().unwrap()];
    args.extend(SMALL);
    args.extend(extra);
    adjoint(&args)
}

#[test]
fn train_writes_a_complete_run_folder() {
    let dir = tmp("full");
    let stdout = ok(&train(&dir, &["--epochs", "2"]));
    assert!(stdout.contains("epoch   2/2"), "{stdout}");
    for f in ["model.safetensors", "checkpoint.safetensors", "metrics.jsonl", "config.json", "loss.svg", "accuracy.svg"]
    {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for key in ["epoch", "train_loss", "test_loss", "test_accuracy", "lr", "train_seconds", "seconds"] {
        assert!(lines[1].get(key).is_some(), "{key} missing");
    }
    assert!(lines[1]["train_loss"].as_f64().unwrap() < lines[0]["train_loss"].as_f64().unwrap());
    assert!(lines[1]["test_accuracy"].as_f64().unwrap() > 0.7);
    let svg = std::fs::read_to_string(dir.join("loss.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["layers"], serde_json::json!([784, 100, 10]));
}

#[test]
fn resuming_gives_the_same_weights_as_one_run() {
    let (a, b) = (tmp("resume-a"), tmp("resume-b"));
    ok(&train(&a, &["--epochs", "1", "--optimizer", "adam", "--schedule", "step:1:0.5"]));
    ok(&adjoint(&["train", "--resume", a.to_str().unwrap(), "--epochs", "2", "--quiet"]));
    ok(&train(&b, &["--epochs", "2", "--optimizer", "adam", "--schedule", "step:1:0.5"]));
    // Compare the tensors (the file's metadata map is written in no fixed order).
    let wa = adjoint::io::load::<f32>(&a.join("model.safetensors"), &Default::default()).unwrap().tensors;
    let wb = adjoint::io::load::<f32>(&b.join("model.safetensors"), &Default::default()).unwrap().tensors;
    assert_eq!(wa.len(), 4);
    assert!(wa == wb, "resumed weights differ from an uninterrupted run");
    let lines = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2);
}

#[test]
fn a_per_step_schedule_with_warm_up_is_saved_and_resumed_exactly() {
    let (a, b) = (tmp("warmup-a"), tmp("warmup-b"));
    let flags = ["--optimizer", "adam", "--schedule", "exp:0.5", "--schedule-interval", "step", "--warmup", "40"];
    ok(&train(&a, &[&["--epochs", "1"][..], &flags].concat()));
    ok(&adjoint(&["train", "--resume", a.to_str().unwrap(), "--epochs", "2", "--quiet"]));
    ok(&train(&b, &[&["--epochs", "2"][..], &flags].concat()));
    let wa = adjoint::io::load::<f32>(&a.join("model.safetensors"), &Default::default()).unwrap().tensors;
    let wb = adjoint::io::load::<f32>(&b.join("model.safetensors"), &Default::default()).unwrap().tensors;
    assert!(wa == wb, "resumed weights differ from an uninterrupted run");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.join("config.json")).unwrap()).unwrap();
    assert_eq!((config["warmup"].as_u64(), config["schedule_per_step"].as_bool()), (Some(40), Some(true)));
    // The first epoch's reported rate is its first warm-up step's: 1/40 of --lr.
    let metrics = std::fs::read_to_string(b.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    assert!((first["lr"].as_f64().unwrap() - 0.001 / 40.0).abs() < 1e-12, "{first}");
    bad(&adjoint(&["train", "--schedule", "plateau", "--schedule-interval", "step"]), "plateau");
    bad(&adjoint(&["train", "--warmup", "-3"]), "--warmup");
    bad(&adjoint(&["train", "--schedule", "onecycle:1.5"]), "PCT_START");
    bad(&adjoint(&["train", "--schedule", "linear:0.5", "--lr", "0.1"]), "must not exceed --lr");
    // A flag given at its default against a saved non-default is named (found by an
    // outside tester: the list of differences was empty).
    bad(&adjoint(&["train", "--resume", a.to_str().unwrap(), "--epochs", "3", "--warmup", "0"]), "warmup: saved 40");
    bad(
        &adjoint(&["train", "--resume", a.to_str().unwrap(), "--epochs", "3", "--schedule-interval", "epoch"]),
        "schedule_per_step: saved true but given the default",
    );
}

#[test]
fn eval_and_predict_use_the_saved_model() {
    let dir = tmp("eval");
    ok(&train(&dir, &["--epochs", "1"]));
    let v: serde_json::Value =
        serde_json::from_str(&ok(&adjoint(&["eval", "--model", dir.to_str().unwrap(), "--json"]))).unwrap();
    let acc = v["accuracy"].as_f64().unwrap();
    let confusion = v["confusion"].as_array().unwrap();
    assert_eq!(confusion.len(), 10);
    let total: u64 = confusion.iter().flat_map(|r| r.as_array().unwrap()).map(|c| c.as_u64().unwrap()).sum();
    assert_eq!(total, 300);
    assert!(acc > 0.7);
    // A 28×28 PGM of a plain vertical bar (roughly a "1").
    let img = dir.join("one.pgm");
    let mut bytes = b"P5\n28 28\n255\n".to_vec();
    bytes.extend((0..784).map(|i| if (12..16).contains(&(i % 28)) && (4..24).contains(&(i / 28)) { 255u8 } else { 0 }));
    std::fs::write(&img, bytes).unwrap();
    let p: serde_json::Value = serde_json::from_str(&ok(&adjoint(&[
        "predict",
        "--model",
        dir.to_str().unwrap(),
        img.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    let probs: Vec<f64> = p["probabilities"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(probs.len(), 10);
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    // The same bar as an 8-bit greyscale PNG, dark on light (inverted to MNIST's convention).
    let png_path = dir.join("one.png");
    {
        let file = std::io::BufWriter::new(std::fs::File::create(&png_path).unwrap());
        let mut enc = png::Encoder::new(file, 28, 28);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let pixels: Vec<u8> = (0..784)
            .map(|i| if (12..16).contains(&(i % 28)) && (4..24).contains(&(i / 28)) { 0u8 } else { 255 })
            .collect();
        enc.write_header().unwrap().write_image_data(&pixels).unwrap();
    }
    let q: serde_json::Value = serde_json::from_str(&ok(&adjoint(&[
        "predict",
        "--model",
        dir.to_str().unwrap(),
        png_path.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(q["class"], p["class"], "the inverted PNG reads as the same image as the PGM");
    let garbage = dir.join("garbage.png");
    std::fs::write(&garbage, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    bad(&adjoint(&["predict", "--model", dir.to_str().unwrap(), garbage.to_str().unwrap()]), "PNG");
    let small = dir.join("small.pgm");
    std::fs::write(&small, b"P2 2 2 255 0 0 0 0").unwrap();
    bad(&adjoint(&["predict", "--model", dir.to_str().unwrap(), small.to_str().unwrap()]), "784 inputs");
}

#[test]
fn csv_data_trains_with_a_label_column() {
    let dir = tmp("csv");
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("blobs.csv");
    let mut text = String::from("x,y,class\n");
    for i in 0..200 {
        let (c, s) = (i % 2, (i as f64 * 0.7).sin());
        text += &format!("{},{},{c}\n", c as f64 * 3.0 + s, c as f64 * -2.0 + s * 0.5);
    }
    std::fs::write(&csv, text).unwrap();
    let out = dir.join("run");
    let stdout = ok(&adjoint(&[
        "train",
        "--data",
        csv.to_str().unwrap(),
        "--label-column",
        "class",
        "--layers",
        "2,8,2",
        "--epochs",
        "5",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]));
    assert!(stdout.contains("160 examples"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&ok(&adjoint(&[
        "eval",
        "--model",
        out.to_str().unwrap(),
        "--data",
        csv.to_str().unwrap(),
        "--label-column",
        "class",
        "--json",
    ])))
    .unwrap();
    assert!(v["accuracy"].as_f64().unwrap() > 0.9, "{v}");
    // Ragged rows and non-numbers are reported with their line.
    let ragged = dir.join("ragged.csv");
    std::fs::write(&ragged, "x,y,class\n1,2,0\n3,1\n").unwrap();
    bad(
        &adjoint(&["train", "--data", ragged.to_str().unwrap(), "--label-column", "class", "--layers", "2,4,2"]),
        "line 3",
    );
    let nan = dir.join("nan.csv");
    std::fs::write(&nan, "x,y,class\n1,abc,0\n").unwrap();
    bad(&adjoint(&["train", "--data", nan.to_str().unwrap(), "--label-column", "class", "--layers", "2,4,2"]), "'abc'");
    bad(
        &adjoint(&["train", "--data", csv.to_str().unwrap(), "--label-column", "class"]),
        "the network takes 784 (--layers 784,100,10)",
    );
    bad(&adjoint(&["train", "--data", csv.to_str().unwrap()]), "--label-column");
}

#[test]
fn bad_flags_and_files_exit_2_and_damage_nothing() {
    bad(&adjoint(&["train", "--activation", "wobble"]), "unknown activation");
    bad(&adjoint(&["train", "--init", "he:2"]), "takes no value");
    bad(&adjoint(&["train", "--optimizer", "rmsprop"]), "rmsprop");
    bad(&adjoint(&["train", "--layers", "784,abc,10"]), "abc");
    bad(&adjoint(&["train", "--layers", "784"]), "at least two");
    bad(&adjoint(&["train", "--schedule", "wavy"]), "unknown schedule");
    bad(&adjoint(&["train", "--lr=-1"]), "--lr");
    bad(&adjoint(&["train", "--batch", "0"]), "--batch");
    bad(&adjoint(&["train", "--data", "/nonexistent/mnist"]), "does not exist");
    bad(&adjoint(&["train", "--resume", "/nonexistent/run"]), "checkpoint.safetensors");
    bad(&adjoint(&["eval", "--model", "/nonexistent/run"]), "model.safetensors");

    // A folder of MNIST-named files, one of them truncated.
    let dir = tmp("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in [
        ("train-images-idx3-ubyte", vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2, 3]),
        ("train-labels-idx1-ubyte", vec![0, 0, 8, 1, 0, 0, 0, 2, 1, 2]),
        ("t10k-images-idx3-ubyte", vec![0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, 28, 0, 0, 0, 28]),
        ("t10k-labels-idx1-ubyte", vec![0, 0, 8, 1, 0, 0, 0, 0]),
    ] {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    bad(&adjoint(&["train", "--data", dir.to_str().unwrap()]), "train-images-idx3-ubyte: truncated");

    // A saved run is not overwritten, and a failed resume leaves it as it was.
    let run = tmp("keep");
    ok(&train(&run, &["--epochs", "1"]));
    let before = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    bad(&train(&run, &["--epochs", "1"]), "already holds a run");
    bad(&adjoint(&["train", "--resume", run.to_str().unwrap(), "--layers", "784,50,10"]), "contradict");
    bad(&adjoint(&["train", "--resume", run.to_str().unwrap(), "--data", dir.to_str().unwrap()]), "contradict");
    assert_eq!(std::fs::read(run.join("checkpoint.safetensors")).unwrap(), before);
    // A corrupted model file is an error, not a panic.
    let broken = tmp("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("model.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":1}").unwrap();
    bad(&adjoint(&["eval", "--model", broken.to_str().unwrap()]), "model.safetensors");
}

#[test]
fn run_folders_of_earlier_versions_evaluate_and_resume() {
    // tests/fixtures/v1-run was written by adjoint 0.1 (format adjoint-mlp-v1, weights
    // [in, out]): `train --layers 784,8,10 --limit 300 --test-limit 100 --epochs 1`, which
    // reported 54.00% test accuracy.
    let v1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-run");
    let v: serde_json::Value =
        serde_json::from_str(&ok(&adjoint(&["eval", "--model", v1.to_str().unwrap(), "--json"]))).unwrap();
    assert_eq!(v["accuracy"].as_f64(), Some(0.54), "{v}");
    let out = tmp("v1-resumed");
    let stdout = ok(&adjoint(&[
        "train",
        "--resume",
        v1.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "2",
        "--quiet",
    ]));
    assert!(stdout.contains("epoch   2/2"), "{stdout}");
    // The new folder is in the current format and loads as a PyTorch-layout state dict.
    let model = adjoint::io::load::<f32>(&out.join("model.safetensors"), &Default::default()).unwrap();
    assert_eq!(model.metadata["format"], "adjoint-model-v2");
    assert_eq!(model.tensors["0.weight"].shape(), &[8, 784]);
}

#[test]
fn the_same_seed_and_threads_give_byte_identical_run_files() {
    let (a, b) = (tmp("same-a"), tmp("same-b"));
    for dir in [&a, &b] {
        ok(&train(dir, &["--epochs", "2", "--layers", "784,16,10"]));
    }
    // (The checkpoint differs only in the epochs' timings it keeps.)
    let same =
        std::fs::read(a.join("model.safetensors")).unwrap() == std::fs::read(b.join("model.safetensors")).unwrap();
    assert!(same, "model.safetensors differs between two runs with the same seed");
}

#[test]
fn bench_runs_and_reports_json() {
    let out = ok(&adjoint(&["bench", "--rows", "gemm,scalar", "--repeats", "1", "--threads", "1", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v["rows"].as_array().unwrap();
    // Four products (two of them in the lecture step's own layouts), then the scalar row.
    assert_eq!(rows.len(), 5, "{v}");
    assert!(rows[..4].iter().all(|r| r["gflops"].as_f64().unwrap() > 0.0), "{v}");
    assert!(rows[2]["name"].as_str().unwrap().contains("lecture forward"), "{v}");
    assert!(rows[4]["scalar_tape_ns_per_op"].as_f64().unwrap() > 0.0);
    // The table shows the scalar row's time in nanoseconds, not as 0.000 ms.
    let table = ok(&adjoint(&["bench", "--rows", "scalar", "--repeats", "1", "--threads", "1"]));
    let scalar = table.lines().find(|l| l.contains("scalar graph")).unwrap();
    assert!(scalar.contains(" ns ") && !scalar.contains("0.000 ms"), "{table}");
    bad(&adjoint(&["bench", "--threads", "0"]), "--threads");
    bad(&adjoint(&["bench", "--repeats", "0"]), "--repeats must be between 1 and 1000");
}

/// A binary built without the `mpi` feature says how to get one, before touching anything.
#[cfg(not(feature = "mpi"))]
#[test]
fn distributed_needs_a_binary_built_with_mpi() {
    let dir = tmp("no-mpi");
    bad(
        &train(&dir, &["--distributed"]),
        "built without MPI; build it with `cargo install --path crates/adjoint-cli --features mpi`",
    );
    assert!(!dir.exists());
}

/// Under an MPI launcher but without --distributed, each rank would train a model of its own
/// into the same folder: refused, said by rank 0 alone, before anything is written.
#[test]
fn an_mpi_launch_without_distributed_is_refused_once() {
    let dir = tmp("launcher-refused");
    let run = |rank: &str| {
        Command::new(env!("CARGO_BIN_EXE_adjoint"))
            .env("OMPI_COMM_WORLD_SIZE", "4")
            .env("OMPI_COMM_WORLD_RANK", rank)
            .args(["train", "--out", dir.to_str().unwrap(), "--epochs", "1"])
            .args(SMALL)
            .output()
            .unwrap()
    };
    bad(&run("0"), "4 ranks but without --distributed: add --distributed");
    let other = run("3");
    assert_eq!(other.status.code(), Some(2));
    assert!(other.stderr.is_empty(), "{}", String::from_utf8_lossy(&other.stderr));
    assert!(!dir.exists());
    // A flag error too is printed by rank 0 only.
    let typo = Command::new(env!("CARGO_BIN_EXE_adjoint"))
        .env("OMPI_COMM_WORLD_RANK", "1")
        .args(["train", "--epoch", "1"])
        .output()
        .unwrap();
    assert_eq!(typo.status.code(), Some(2));
    assert!(typo.stderr.is_empty());
}
