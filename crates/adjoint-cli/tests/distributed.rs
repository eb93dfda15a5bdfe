//! `mpirun -np N adjoint train --distributed`, as a user runs it (needs `--features mpi` and
//! Open MPI's `mpirun`; `.ci/run` installs both and runs these tests). Ranks are
//! oversubscribed on one machine: the tests check results and failure handling, not speed.
//!
//! Tolerance: N ranks sum the same gradients in another order, so weights drift from a
//! single process by rounding only; after the tens of steps trained here they agree to 1e-5
//! of the largest weight (measured: 0.9–1.5e-7), and losses to 1e-4 relative.
#![cfg(feature = "mpi")]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_adjoint");

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("adjoint-dist-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn mpirun(ranks: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-np", &ranks.to_string(), BIN]);
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

fn ok(out: &Output) {
    assert!(out.status.success(), "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
}

/// Small MNIST runs: 1,200 training examples (not a multiple of the batches below, so the
/// last batch is partial), 300 test examples, one thread per rank.
fn small(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> =
        ["train", "--limit", "1210", "--test-limit", "300", "--threads", "1", "--quiet", "--out"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.push(out.to_str().unwrap().into());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn single(out: &Path, extra: &[&str]) -> Output {
    Command::new(BIN).args(small(out, extra)).output().unwrap()
}

fn distributed(ranks: usize, out: &Path, extra: &[&str]) -> Output {
    let mut args = small(out, extra);
    args.push("--distributed".into());
    mpirun(ranks).args(args).output().unwrap()
}

fn weights(dir: &Path) -> HashMap<String, Vec<f32>> {
    let loaded = adjoint::io::load::<f32>(&dir.join("model.safetensors"), &Default::default()).unwrap();
    loaded.tensors.into_iter().map(|(k, v)| (k, v.iter().copied().collect())).collect()
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Same training up to rounding (see the module documentation for the tolerance).
fn assert_same(a: &Path, b: &Path) {
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.keys().len(), wb.keys().len());
    let scale = wa.values().flatten().fold(1f32, |m, v| m.max(v.abs()));
    let mut worst = 0f32;
    for (name, x) in &wa {
        let y = &wb[name];
        assert_eq!(x.len(), y.len(), "{name}");
        worst = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(worst, f32::max);
    }
    eprintln!("{} vs {}: weights differ by {:e} of the largest", a.display(), b.display(), worst / scale);
    assert!(worst / scale < 1e-5, "weights differ by {:e} of the largest", worst / scale);
    let (ma, mb) = (metrics(a), metrics(b));
    assert_eq!(ma.len(), mb.len());
    for (x, y) in ma.iter().zip(&mb) {
        for key in ["train_loss", "test_loss"] {
            let (p, q) = (x[key].as_f64().unwrap(), y[key].as_f64().unwrap());
            assert!((p - q).abs() <= 1e-4 * p.abs().max(1.0), "{key}: {p} vs {q}");
        }
    }
}

#[test]
fn an_mlp_on_two_and_four_ranks_trains_as_one_process() {
    let one = tmp("mlp-1");
    ok(&single(&one, &["--epochs", "2", "--batch", "50"]));
    for ranks in [2, 4] {
        let many = tmp(&format!("mlp-{ranks}"));
        let out = distributed(ranks, &many, &["--epochs", "2", "--batch", "50"]);
        ok(&out);
        let stdout = text(&out.stdout);
        // Rank 0 alone prints.
        assert_eq!(stdout.matches("training 784-100-10").count(), 1, "{stdout}");
        assert!(stdout.contains(&format!("distributed over {ranks} ranks")), "{stdout}");
        assert_same(&one, &many);
        let m = metrics(&many);
        assert_eq!(m[0]["communication"]["ranks"], ranks);
        // Gradients of 79,510 parameters, a "has a gradient" flag for each of the 4
        // parameter tensors, the loss and the stop flag, as f32.
        assert_eq!(m[0]["communication"]["bytes_per_step"], 4 * (79_510 + 4 + 2));
        let _ = std::fs::remove_dir_all(&many);
    }
    let _ = std::fs::remove_dir_all(&one);
}

#[test]
fn a_cnn_on_two_and_four_ranks_trains_as_one_process() {
    // With dropout: ranks draw the masks one process would.
    let arch = ["--arch", "conv:4:5,relu,maxpool:2,flatten,dropout:0.3,fc:10", "--epochs", "1", "--batch", "40"];
    let one = tmp("cnn-1");
    ok(&single(&one, &arch));
    for ranks in [2, 4] {
        let many = tmp(&format!("cnn-{ranks}"));
        ok(&distributed(ranks, &many, &arch));
        assert_same(&one, &many);
        let _ = std::fs::remove_dir_all(&many);
    }
    let _ = std::fs::remove_dir_all(&one);
}

#[test]
fn rank_zero_alone_writes_one_run_folder() {
    // No --out: the default folder under runs/ of the working directory.
    let cwd = tmp("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let out = mpirun(3)
        .current_dir(&cwd)
        .args(["train", "--distributed", "--limit", "300", "--test-limit", "100", "--epochs", "1", "--threads", "1"])
        .output()
        .unwrap();
    ok(&out);
    let runs: Vec<_> = std::fs::read_dir(cwd.join("runs")).unwrap().flatten().collect();
    assert_eq!(runs.len(), 1, "one run folder for the job");
    assert!(runs[0].path().join("model.safetensors").is_file());
    let _ = std::fs::remove_dir_all(&cwd);
}

#[test]
fn a_run_resumes_on_another_number_of_ranks() {
    let one = tmp("resume-1");
    ok(&single(&one, &["--epochs", "3", "--batch", "60"]));
    let many = tmp("resume-n");
    ok(&distributed(2, &many, &["--epochs", "1", "--batch", "60"]));
    let resume = |ranks: usize, epochs: &str| {
        let args = ["train", "--distributed", "--resume", many.to_str().unwrap(), "--epochs", epochs, "--quiet"];
        let out = mpirun(ranks).args(args).output().unwrap();
        ok(&out);
    };
    resume(4, "2");
    // And the last epoch in a single process.
    let out = Command::new(BIN).args(["train", "--resume", many.to_str().unwrap(), "--epochs", "3"]).output().unwrap();
    ok(&out);
    assert_same(&one, &many);
    let ranks: Vec<_> = metrics(&many).iter().map(|m| m["communication"]["ranks"].as_u64()).collect();
    assert_eq!(ranks, [Some(2), Some(4), None]);
    let _ = std::fs::remove_dir_all(&one);
    let _ = std::fs::remove_dir_all(&many);
}

#[test]
fn bad_use_is_exit_2_with_one_clear_message() {
    let dir = tmp("bad");
    // Without mpirun.
    let out = Command::new(BIN).args(small(&dir, &["--distributed"])).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not started by an MPI launcher"), "{}", text(&out.stderr));
    // A global batch smaller than the number of ranks; nothing is left behind.
    let out = distributed(4, &dir, &["--batch", "3"]);
    assert_eq!(out.status.code(), Some(2));
    let e = text(&out.stderr);
    assert_eq!(e.matches("--batch 3 cannot be shared among 4 ranks").count(), 1, "{e}");
    assert!(!dir.exists(), "no run folder for a refused job");
    // Ranks started with different flags (Open MPI's colon syntax) disagree before training.
    let first = small(&dir, &["--distributed"]);
    let out = two_programs(&first, &small(&tmp("bad-other"), &["--distributed", "--seed", "2"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("the ranks differ"), "{}", text(&out.stderr));
    // Any flag that changes training, even one with no weights behind it, is caught.
    for (flag, value) in [("--lr", "0.1"), ("--schedule", "constant"), ("--activation", "relu")] {
        let out = two_programs(&first, &small(&tmp("bad-other"), &["--distributed", flag, value]));
        assert_eq!(out.status.code(), Some(2), "{flag}: {}", text(&out.stderr));
        assert_eq!(text(&out.stderr).matches("the ranks differ").count(), 1, "{flag}: {}", text(&out.stderr));
    }
    // One message for a flag that does not go with --distributed.
    let out = distributed(2, &dir, &["--detect-anomaly"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stderr).matches("--detect-anomaly checks one process").count(), 1, "{}", text(&out.stderr));
    // A file only one rank cannot read: that rank names itself.
    let out = two_programs(&first, &small(&tmp("bad-third"), &["--distributed", "--data", "/nonexistent/mnist"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("rank 1 of 2: --data: /nonexistent/mnist does not exist"),
        "{}",
        text(&out.stderr)
    );
    // Several ranks failing: the lowest speaks for all, once.
    let missing = small(&tmp("bad-fourth"), &["--distributed", "--data", "/nonexistent/mnist"]);
    let out = programs(&[&first, &missing, &missing]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr).matches("does not exist").count(), 1, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("rank 1 of 3: --data"), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

/// One job of two ranks started with different arguments (Open MPI's `a : b` syntax).
fn two_programs(first: &[String], second: &[String]) -> Output {
    programs(&[first, second])
}

/// One job with a rank per element of `each`, started with those arguments.
fn programs(each: &[&[String]]) -> Output {
    let mut args = vec!["--allow-run-as-root", "--oversubscribe"];
    for (i, rank) in each.iter().enumerate() {
        if i > 0 {
            args.push(":");
        }
        args.extend(["-np", "1", BIN]);
        args.extend(rank.iter().map(String::as_str));
    }
    Command::new("mpirun").args(&args).output().unwrap()
}

/// Starts a full-MNIST job on 2 ranks and waits for its first epoch line.
fn start_long_job(dir: &Path) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = mpirun(2)
        .args(["train", "--distributed", "--epochs", "30", "--threads", "1", "--quiet", "--out", dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("epoch   1/30") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the job ended before its first epoch");
    }
    (child, stdout)
}

fn rank_pid(mpirun_pid: u32, rank: usize) -> u32 {
    // The ranks are children of mpirun on this machine; Open MPI tells each its rank.
    let children = Command::new("pgrep").args(["-P", &mpirun_pid.to_string()]).output().unwrap();
    text(&children.stdout)
        .split_whitespace()
        .map(|p| p.parse::<u32>().unwrap())
        .find(|p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == format!("OMPI_COMM_WORLD_RANK={rank}").as_bytes()))
        })
        .expect("a process of that rank")
}

fn wait(child: &mut std::process::Child, limit: Duration) -> (Duration, String) {
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(started.elapsed() < limit, "the job did not stop within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (started.elapsed(), stderr)
}

#[test]
fn a_rank_that_dies_stops_the_job_in_seconds_naming_it_and_the_run_resumes() {
    let dir = tmp("dead");
    let (mut child, _stdout) = start_long_job(&dir);
    let victim = rank_pid(child.id(), 1);
    assert!(Command::new("kill").args(["-9", &victim.to_string()]).status().unwrap().success());
    let (took, stderr) = wait(&mut child, Duration::from_secs(30));
    eprintln!("the job stopped {took:?} after rank 1 was killed");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(stderr.contains("process rank 1") && stderr.contains("signal 9"), "{stderr}");
    // The run folder holds the last whole epoch and resumes, here on 3 ranks.
    let done = metrics(&dir).len();
    assert!(done >= 1);
    let out = mpirun(3)
        .args(["train", "--distributed", "--resume", dir.to_str().unwrap(), "--epochs", &(done + 1).to_string()])
        .args(["--threads", "1", "--quiet"])
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(metrics(&dir).len(), done + 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_on_mpirun_saves_the_epoch_in_progress_once() {
    let dir = tmp("interrupt");
    let (mut child, _stdout) = start_long_job(&dir);
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let (_, stderr) = wait(&mut child, Duration::from_secs(30));
    // mpirun turns Ctrl-C into SIGTERM for every rank; the ranks agree on the step to stop
    // at and rank 0 saves it and says so, once.
    assert_eq!(stderr.matches("adjoint: interrupted").count(), 1, "{stderr}");
    let mid_epoch = stderr.contains("interrupted at epoch");
    let out = mpirun(2)
        .args(["train", "--distributed", "--resume", dir.to_str().unwrap(), "--epochs", "3", "--threads", "1"])
        .output()
        .unwrap();
    ok(&out);
    if mid_epoch {
        assert!(text(&out.stdout).contains("from step"), "{}", text(&out.stdout));
    }
    assert_eq!(metrics(&dir).len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}
