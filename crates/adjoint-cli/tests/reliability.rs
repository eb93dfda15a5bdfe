//! Runs are never lost: concurrent writers, foreign folders, divergence, kills and Ctrl-C,
//! each reproduced from a finding of the reliability review and turned into a test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn adjoint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adjoint")).args(args).output().expect("runs")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("adjoint-rel-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

const SMALL: [&str; 8] = ["--limit", "1200", "--test-limit", "200", "--quiet", "--threads=1", "--layers", "784,16,10"];

fn train(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--out", out.to_str().unwrap()];
    args.extend(SMALL);
    args.extend(extra);
    adjoint(&args)
}

fn ok(out: &Output) {
    assert_eq!(code(out), 0, "stdout: {}\nstderr: {}", String::from_utf8_lossy(&out.stdout), stderr(out));
}

#[test]
fn a_run_folder_has_one_writer_at_a_time() {
    let dir = tmp("locked");
    // Two trainings into the same folder at once: one writes, the other is refused.
    let spawn = || {
        let mut args =
            vec!["train".to_string(), "--out".into(), dir.to_str().unwrap().into(), "--epochs".into(), "3".into()];
        args.extend(SMALL.iter().map(|s| s.to_string()));
        Command::new(env!("CARGO_BIN_EXE_adjoint")).args(&args).output().expect("runs")
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().unwrap(), b.join().unwrap())
    });
    let codes = [code(&a), code(&b)];
    assert!(codes.contains(&0), "one run succeeds: {} / {}", stderr(&a), stderr(&b));
    let refused = if code(&a) == 0 { &b } else { &a };
    assert_eq!(code(refused), 2, "{}", stderr(refused));
    let e = stderr(refused);
    assert!(e.contains("another adjoint process") || e.contains("already holds a run"), "{e}");
    // The folder holds one consistent run that resumes.
    ok(&adjoint(&["train", "--resume", dir.to_str().unwrap(), "--epochs", "4", "--quiet"]));
}

#[test]
fn default_run_folders_started_in_the_same_second_differ() {
    let cwd = tmp("defaults");
    std::fs::create_dir_all(&cwd).unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_adjoint"))
            .current_dir(&cwd)
            .args(["train", "--epochs", "1"])
            .args(SMALL)
            .output()
            .expect("runs")
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(run);
        let b = s.spawn(run);
        (a.join().unwrap(), b.join().unwrap())
    });
    ok(&a);
    ok(&b);
    let folders: Vec<_> = std::fs::read_dir(cwd.join("runs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(folders.len(), 2, "{folders:?}");
    for f in folders {
        assert!(f.join("checkpoint.safetensors").exists() && f.join("model.safetensors").exists());
    }
}

#[test]
fn another_run_and_a_users_own_files_are_not_overwritten_without_force() {
    let (a, b) = (tmp("resume-a"), tmp("resume-b"));
    ok(&train(&a, &["--epochs", "1"]));
    ok(&train(&b, &["--epochs", "1", "--seed", "2"]));
    let before = std::fs::read(b.join("model.safetensors")).unwrap();
    let out =
        adjoint(&["train", "--resume", a.to_str().unwrap(), "--out", b.to_str().unwrap(), "--epochs", "2", "--quiet"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("another run") && stderr(&out).contains("--force"));
    assert_eq!(std::fs::read(b.join("model.safetensors")).unwrap(), before, "B is untouched");
    ok(&adjoint(&[
        "train",
        "--resume",
        a.to_str().unwrap(),
        "--out",
        b.to_str().unwrap(),
        "--epochs",
        "2",
        "--quiet",
        "--force",
    ]));

    // A folder with the user's own config.json.
    let mine = tmp("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("config.json"), "{\"mine\": true}").unwrap();
    let out = train(&mine, &["--epochs", "1"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("config.json"));
    assert_eq!(std::fs::read_to_string(mine.join("config.json")).unwrap(), "{\"mine\": true}");
    ok(&train(&mine, &["--epochs", "1", "--force"]));

    // --out that is a file, or that cannot be written, is refused before any work.
    let file = tmp("a-file");
    std::fs::write(&file, "x").unwrap();
    let out = train(&file, &["--epochs", "1"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("not a folder"), "{}", stderr(&out));
}

#[test]
fn a_diverging_run_stops_where_it_starts_and_stays_resumable() {
    let dir = tmp("diverge");
    ok(&train(&dir, &["--epochs", "1", "--activation", "relu"]));
    let good = std::fs::read(dir.join("checkpoint.safetensors")).unwrap();
    // Resume with an absurd learning rate is refused (flags contradict the run); a fresh one
    // that diverges stops at the first non-finite loss with exit 3 and saves nothing.
    let wild = tmp("diverge-wild");
    let out = train(&wild, &["--epochs", "2", "--activation", "relu", "--lr", "1e30"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("diverged at epoch 1, step") && e.contains("not finite") || e.contains("NaN"), "{e}");
    assert!(!wild.join("model.safetensors").exists(), "no NaN weights are written");
    // With --keep-going the run trains on; NaN metrics are saved so that they read back and
    // the folder resumes.
    let going = tmp("diverge-going");
    ok(&train(&going, &["--epochs", "1", "--activation", "relu", "--lr", "1e30", "--keep-going"]));
    let metrics = std::fs::read_to_string(going.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"NaN\""), "{metrics}");
    ok(&adjoint(&["train", "--resume", going.to_str().unwrap(), "--epochs", "2", "--quiet", "--keep-going"]));
    assert_eq!(std::fs::read(dir.join("checkpoint.safetensors")).unwrap(), good);
}

#[test]
fn a_killed_save_never_leaves_a_dead_end() {
    let dir = tmp("killed");
    ok(&train(&dir, &["--epochs", "1"]));
    // Killed after the checkpoint but before the model was renamed into place, with a
    // temporary file left behind.
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join(".model.safetensors.tmp-99999"), b"partial").unwrap();
    let out = train(&dir, &["--epochs", "2"]);
    assert_eq!(code(&out), 2, "a fresh run is refused: the folder holds a run");
    assert!(stderr(&out).contains("--resume"));
    ok(&adjoint(&["train", "--resume", dir.to_str().unwrap(), "--epochs", "2", "--quiet"]));
    assert!(dir.join("model.safetensors").exists());
    assert!(!dir.join(".model.safetensors.tmp-99999").exists(), "orphaned temporary files are cleaned");

    // Killed before its first save: the folder holds only the marker; a fresh run reuses it.
    let early = tmp("killed-early");
    std::fs::create_dir_all(&early).unwrap();
    std::fs::write(early.join(".adjoint-run"), "written by adjoint train\n").unwrap();
    std::fs::write(early.join("config.json"), "{}").unwrap();
    let out = adjoint(&["train", "--resume", early.to_str().unwrap(), "--quiet"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("without --resume"), "{}", stderr(&out));
    ok(&train(&early, &["--epochs", "1"]));
}

#[test]
fn ctrl_c_saves_the_epoch_in_progress_and_resuming_finishes_it_exactly() {
    interrupt_and_resume("INT");
}

/// SIGTERM (what `kill`, a scheduler's time limit and `mpirun` on Ctrl-C send) stops a run
/// the same way.
#[test]
fn sigterm_saves_the_epoch_in_progress_like_ctrl_c() {
    interrupt_and_resume("TERM");
}

fn interrupt_and_resume(signal: &str) {
    let (interrupted, whole) = (tmp(&format!("sig{signal}")), tmp(&format!("sig{signal}-whole")));
    // A run long enough to be interrupted mid-epoch (batch 1: 3 × 20,000 steps, ~2 s).
    let common = [
        "--limit",
        "20000",
        "--test-limit",
        "200",
        "--quiet",
        "--threads=1",
        "--layers",
        "784,16,10",
        "--epochs",
        "3",
        "--batch",
        "1",
        "--lr",
        "0.01",
    ];
    let mut args: Vec<String> = vec!["train".into(), "--out".into(), interrupted.to_str().unwrap().into()];
    args.extend(common.iter().map(|s| s.to_string()));
    let child = Command::new(env!("CARGO_BIN_EXE_adjoint"))
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it is training (the folder is claimed), then interrupt.
    for _ in 0..200 {
        if interrupted.join(".adjoint-run").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(150));
    let killed = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert_ne!(code(&out), 0, "the run finished before it was interrupted: make it longer");
    assert_eq!(code(&out), 130, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("interrupted at epoch ")
            && stderr(&out).contains(", step")
            && stderr(&out).contains("--resume"),
        "{}",
        stderr(&out)
    );
    ok(&adjoint(&["train", "--resume", interrupted.to_str().unwrap(), "--quiet"]));
    let mut whole_args = vec!["train", "--out", whole.to_str().unwrap()];
    whole_args.extend(common);
    ok(&adjoint(&whole_args));
    assert_eq!(
        std::fs::read(interrupted.join("model.safetensors")).unwrap(),
        std::fs::read(whole.join("model.safetensors")).unwrap(),
        "an interrupted and resumed run ends with the same weights as one that ran through"
    );
}

#[test]
fn huge_sizes_are_refused_before_allocating() {
    let dir = tmp("huge");
    let out = adjoint(&["train", "--out", dir.to_str().unwrap(), "--layers", "784,1000000000,10"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("parameters"), "{}", stderr(&out));
    let out = adjoint(&["train", "--out", dir.to_str().unwrap(), "--layers", "784,300000,10", "--batch", "100000"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(!dir.exists(), "nothing is created for a refused run");
    let out = adjoint(&["train", "--threads", "100000"]);
    assert_eq!(code(&out), 2);
}

/// Resuming a run another process is still training before its first save says so (not that
/// the run was stopped).
#[test]
fn resuming_a_run_still_in_its_first_epoch_names_its_writer() {
    let dir = tmp("first-epoch");
    let mut child = Command::new(env!("CARGO_BIN_EXE_adjoint"))
        .args(["train", "--out", dir.to_str().unwrap(), "--limit", "20000", "--batch", "1", "--epochs", "1"])
        .args(["--quiet", "--threads=1", "--layers", "784,16,10"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..500 {
        if dir.join(".adjoint.lock").exists() && dir.join(".adjoint-run").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = adjoint(&["train", "--resume", dir.to_str().unwrap(), "--quiet"]);
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(still_running, "the first run ended before the resume was tried: make it longer");
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("another adjoint process (pid {}) is training this run", child.id())),
        "{}",
        stderr(&out)
    );
}
