//! `adjoint train --arch`: convolutional networks from the layer language, saved with their
//! architecture so that `eval`, `predict` and `--resume` rebuild them; architectures that
//! do not fit the data are refused before training, naming the element.

use std::path::PathBuf;
use std::process::{Command, Output};

fn adjoint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adjoint")).args(args).output().expect("runs")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("adjoint-arch-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn ok(out: &Output) -> String {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    stdout.to_string()
}

fn bad(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "expected exit 2; stderr: {err}");
    for needle in needles {
        assert!(err.contains(needle), "expected '{needle}' in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

const CNN: &str = "conv:4:5,batchnorm,relu,maxpool:2,conv:6:3:1:1,tanh,avgpool:2,flatten,dropout:0.3,fc:10";
const SMALL: [&str; 7] = ["--limit", "300", "--test-limit", "100", "--quiet", "--threads=1", "--batch=25"];

fn train(out: &str, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--out", out, "--arch", CNN];
    args.extend(SMALL);
    args.extend(extra);
    adjoint(&args)
}

#[test]
fn a_cnn_trains_evaluates_predicts_and_resumes_bit_for_bit() {
    let (a, b) = (tmp("a"), tmp("b"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let out = ok(&train(a, &["--epochs", "2"]));
    assert!(out.contains("image:1:28:28,conv:4:5,batchnorm,relu,maxpool:2"), "{out}");
    ok(&train(b, &["--epochs", "1"]));
    ok(&adjoint(&["train", "--resume", b, "--epochs", "2", "--quiet"]));
    let model = |dir: &str| std::fs::read(PathBuf::from(dir).join("model.safetensors")).unwrap();
    assert!(model(a) == model(b), "a resumed CNN differs from an uninterrupted one");
    let config = std::fs::read_to_string(PathBuf::from(a).join("config.json")).unwrap();
    assert!(config.contains("\"conv2d\""), "{config}");

    let eval = ok(&adjoint(&["eval", "--model", a, "--json"]));
    assert!(eval.contains("accuracy"), "{eval}");
    let image = PathBuf::from(a).join("seven.pgm");
    let mut pgm = b"P5 28 28 255\n".to_vec();
    pgm.extend((0..784).map(|i| if (i % 28) > 8 && (i % 28) < 20 && i / 28 == 6 || i % 29 == 0 { 255u8 } else { 0 }));
    std::fs::write(&image, pgm).unwrap();
    assert!(ok(&adjoint(&["predict", "--model", a, image.to_str().unwrap()])).contains("class"));
    // The architecture is the run's: another one with --resume is a contradiction.
    bad(&adjoint(&["train", "--resume", a, "--arch", "lenet", "--epochs", "3"]), &["contradict", "network"]);
}

#[test]
fn architectures_that_do_not_fit_are_refused_before_training_naming_the_element() {
    let run = tmp("refused");
    let run = run.to_str().unwrap();
    let cases: [(&str, &[&str]); 8] = [
        ("conv:8:29,flatten,fc:10", &["element 1 'conv:8:29'", "characters 1–9", "28×28"]),
        ("conv:8:5,relu,maxpool:30,flatten,fc:10", &["element 3 'maxpool:30'", "characters 15–24"]),
        ("conv:8:5,relu,fc:10", &["element 3 'fc:10'", "flatten"]),
        ("conv:8:5,relu,flatten,fc:9", &["9 outputs", "10 classes"]),
        ("conv:8:5,wobble,flatten,fc:10", &["element 2 'wobble'", "unknown layer"]),
        ("image:1:27:28,conv:4:3,flatten,fc:10", &["element 1", "784 features"]),
        ("conv:8:x", &["element 1", "'x'"]),
        ("conv:1000000:5,flatten,fc:10", &["parameters"]),
    ];
    for (arch, needles) in cases {
        bad(&adjoint(&["train", "--out", run, "--arch", arch, "--epochs", "1", "--limit", "50"]), needles);
        assert!(!PathBuf::from(run).exists(), "{arch}: a refused run leaves no folder");
    }
    bad(&adjoint(&["train", "--arch", "lenet", "--layers", "784,10,10"]), &["--layers", "--arch"]);
    bad(&adjoint(&["train", "--arch", "lenet", "--activation", "relu"]), &["--activation", "--arch"]);
}

#[test]
fn a_run_refused_after_claiming_its_default_folder_leaves_none_behind() {
    let cwd = tmp("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    // 9 outputs for MNIST's 10 classes: found when the data is checked, after the claim.
    let out = Command::new(env!("CARGO_BIN_EXE_adjoint"))
        .current_dir(&cwd)
        .args(["train", "--arch", "conv:2:5,relu,flatten,fc:9", "--limit", "20", "--epochs", "1"])
        .output()
        .unwrap();
    bad(&out, &["10 classes"]);
    let left: Vec<_> =
        std::fs::read_dir(cwd.join("runs")).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}
