//! Run folders: what `adjoint train` writes and `--resume`, `eval` and `predict` read.
//!
//! - `config.json`: the configuration (see [`TrainConfig`]);
//! - `model.safetensors`: the network (architecture, weights, input standardisation) and the
//!   configuration, so it is self-contained;
//! - `checkpoint.safetensors`: everything a resume needs (network, optimiser state, schedule,
//!   history and configuration), in one atomically written file;
//! - `metrics.jsonl`: one JSON object per epoch; `loss.svg`, `accuracy.svg` (and for a
//!   language model `bits_per_char.svg`): curves.
//!
//! Every file is written atomically (temporary file, sync, rename), so a run folder is never
//! half-written; the checkpoint is written first, so a process killed while saving leaves a
//! folder that `--resume` continues.
//!
//! A process writing a run folder holds it ([`RunDir`]): an exclusive lock on
//! `.adjoint.lock` (released by the system if the process dies), and a marker `.adjoint-run`
//! that tells a folder this tool made from a user's own. Another process wanting to write
//! the same folder is refused with exit 2. A user's own files (a `config.json` it did not
//! write) and another run's results are never overwritten without `--force`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use adjoint::io::write_atomic;
use adjoint::nn::{Module, Network};
use adjoint::train::{EpochMetrics, Trainer};

use crate::config::TrainConfig;
use crate::CliError;

/// The files of a run folder.
pub const CONFIG: &str = "config.json";
/// The model file.
pub const MODEL: &str = "model.safetensors";
/// The checkpoint.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// The metrics.
pub const METRICS: &str = "metrics.jsonl";

fn config_entry(config: &TrainConfig) -> HashMap<String, String> {
    [("config".to_string(), serde_json::to_string(config).expect("a configuration serialises"))].into()
}

/// The lock file and the marker of a folder this tool writes.
pub const LOCK: &str = ".adjoint.lock";
/// The marker.
pub const MARKER: &str = ".adjoint-run";
/// The files a run writes (which a user's own folder must not have).
const OURS: [&str; 8] =
    [CONFIG, MODEL, CHECKPOINT, METRICS, "loss.svg", "accuracy.svg", "metrics.json", "bits_per_char.svg"];

/// A run folder held for writing; see the module docs.
pub struct RunDir {
    /// The folder.
    pub path: PathBuf,
    _lock: File,
    /// Whether this claim created the folder (so that a run refused before its first save
    /// can take it away again).
    created: bool,
}

/// How a folder is being claimed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// A new run: the folder must be new, empty of run files, or a run of this tool that
    /// never saved (or `force`).
    Fresh { force: bool },
    /// Continuing a run: the folder holds it (resuming in place), or is new, or `force`.
    Continue { in_place: bool, force: bool },
}

impl RunDir {
    /// Claims `path`: checks it can hold the run, creates it, locks it, marks it, and removes
    /// temporary files a killed process left.
    pub fn claim(path: &Path, claim: Claim) -> Result<RunDir, CliError> {
        let usage = |m: String| CliError::Usage(format!("{}: {m}", path.display()));
        if path.exists() && !path.is_dir() {
            return Err(usage("exists and is not a folder: pick another --out".into()));
        }
        let has = |f: &str| path.join(f).exists();
        let ours = has(MARKER) || has(CHECKPOINT);
        match claim {
            Claim::Fresh { force: false } => {
                if has(CHECKPOINT) || has(MODEL) {
                    return Err(usage(format!(
                        "already holds a run: continue it with --resume {0}, pick another --out, or add --force to replace it",
                        path.display()
                    )));
                }
                if let Some(f) = OURS.iter().find(|f| has(f)).filter(|_| !ours) {
                    return Err(usage(format!(
                        "holds a {f} this tool did not write; pick another --out or add --force"
                    )));
                }
            }
            Claim::Continue { in_place: false, force: false } => {
                if has(CHECKPOINT) || has(MODEL) {
                    return Err(usage(
                        "already holds another run; pick another --out or add --force to replace it".into(),
                    ));
                }
                if let Some(f) = OURS.iter().find(|f| has(f)).filter(|_| !ours) {
                    return Err(usage(format!(
                        "holds a {f} this tool did not write; pick another --out or add --force"
                    )));
                }
            }
            _ => {}
        }
        let created = !path.exists();
        std::fs::create_dir_all(path).map_err(|e| usage(format!("cannot create the folder: {e}")))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .read(true)
            .open(path.join(LOCK))
            .map_err(|e| usage(format!("cannot write in the folder: {e}")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let who = holder_pid(path);
                return Err(usage(format!(
                    "another adjoint process{who} is writing this run; wait for it to finish or pick another --out"
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(usage(format!("cannot lock the folder: {e}"))),
        }
        let mut held = &lock;
        let _ = held.set_len(0);
        let _ = write!(held, "{}", std::process::id());
        // The marker: this folder is a run of this tool's (written first, so that a run
        // killed before its first save is still recognised as ours).
        if !has(MARKER) {
            write_atomic(&path.join(MARKER), b"written by adjoint train\n").map_err(CliError::writing)?;
        }
        // Temporary files of a killed process: no one else writes here while we hold the lock.
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with('.') && name.contains(".tmp-") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if let Claim::Fresh { force: true } | Claim::Continue { in_place: false, force: true } = claim {
            // Replacing: nothing of the old run may be mistaken for the new one's.
            for f in OURS {
                let _ = std::fs::remove_file(path.join(f));
            }
        }
        Ok(RunDir { path: path.to_path_buf(), _lock: lock, created })
    }

    /// Removes the folder again if this claim created it and nothing but the claim's own
    /// marker and lock was written (a run refused before any work leaves nothing behind).
    pub fn abandon(&self) {
        if self.created {
            abandon_created(&self.path);
        }
    }

    /// The folder, if this claim created it (what [`abandon_created`] may take away).
    pub fn created(&self) -> Option<&Path> {
        self.created.then_some(self.path.as_path())
    }

    /// A new folder under `runs/` named after the time, claimed atomically (two runs started
    /// in the same second get different folders).
    pub fn fresh() -> Result<RunDir, CliError> {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        std::fs::create_dir_all("runs").map_err(|e| CliError::Usage(format!("runs: cannot create the folder: {e}")))?;
        for k in 1..10_000 {
            let name = if k == 1 { format!("run-{secs}") } else { format!("run-{secs}-{k}") };
            let path = Path::new("runs").join(name);
            // create_dir fails if the folder exists: whoever creates it owns it.
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    let mut dir = RunDir::claim(&path, Claim::Fresh { force: false })?;
                    dir.created = true;
                    return Ok(dir);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(CliError::Usage(format!("{}: cannot create the folder: {e}", path.display()))),
            }
        }
        Err(CliError::Usage("runs: no free run folder name".into()))
    }
}

/// Removes a folder a claim created if nothing but the claim's own marker and lock is in it.
pub fn abandon_created(path: &Path) {
    let only_ours = std::fs::read_dir(path).is_ok_and(|entries| {
        entries.flatten().all(|e| {
            let name = e.file_name();
            name == MARKER || name == LOCK
        })
    });
    if only_ours {
        let _ = std::fs::remove_file(path.join(MARKER));
        let _ = std::fs::remove_file(path.join(LOCK));
        let _ = std::fs::remove_dir(path);
    }
}

/// Writes the run folder for `trainer` trained with `config`: the checkpoint first (all a
/// resume needs), then the model, the configuration, the metrics and the charts.
pub fn save(dir: &RunDir, trainer: &Trainer, config: &TrainConfig) -> Result<(), CliError> {
    let dir = &dir.path;
    let extra = config_entry(config);
    trainer.save_checkpoint(&dir.join(CHECKPOINT), &extra).map_err(CliError::writing)?;
    trainer.network.save_with(&dir.join(MODEL), &extra).map_err(CliError::writing)?;
    let json = serde_json::to_string_pretty(config).expect("a configuration serialises");
    write_atomic(&dir.join(CONFIG), json.as_bytes()).map_err(CliError::writing)?;
    let lines: String =
        trainer.history.iter().map(|m| serde_json::to_string(m).expect("metrics serialise") + "\n").collect();
    write_atomic(&dir.join(METRICS), lines.as_bytes()).map_err(CliError::writing)?;
    charts(dir, &trainer.history);
    Ok(())
}

/// Loss and accuracy curves; a failure to draw is reported but does not stop training.
#[cfg(feature = "charts")]
fn charts(dir: &Path, history: &[EpochMetrics]) {
    use crate::plot::line_chart;
    let pts =
        |f: fn(&EpochMetrics) -> f64| -> Vec<(f64, f64)> { history.iter().map(|m| (m.epoch as f64, f(m))).collect() };
    let loss = [("train loss", pts(|m| m.train_loss)), ("test loss", pts(|m| m.test_loss))];
    let acc = [("test accuracy", pts(|m| m.test_accuracy.unwrap_or(f64::NAN)))];
    let bits = [
        ("train", pts(|m| m.test_bits_per_char.map_or(f64::NAN, |_| m.train_loss / std::f64::consts::LN_2))),
        ("test", pts(|m| m.test_bits_per_char.unwrap_or(f64::NAN))),
    ];
    for r in [
        line_chart(&dir.join("loss.svg"), "Loss", "epoch", "loss", &loss),
        line_chart(&dir.join("accuracy.svg"), "Test accuracy", "epoch", "accuracy", &acc),
        // Drawn only for a language model (no finite point otherwise).
        line_chart(&dir.join("bits_per_char.svg"), "Bits per character", "epoch", "bits per character", &bits),
    ] {
        if let Err(e) = r {
            eprintln!("adjoint: could not draw a chart: {e}");
        }
    }
}

#[cfg(not(feature = "charts"))]
fn charts(_: &Path, _: &[EpochMetrics]) {}

/// The configuration a model or checkpoint file kept.
fn config_of(meta: &HashMap<String, String>, path: &Path) -> Result<TrainConfig, CliError> {
    let json = meta.get("config").ok_or_else(|| {
        CliError::Usage(format!("{}: not written by `adjoint train` (no configuration)", path.display()))
    })?;
    serde_json::from_str(json).map_err(|e| CliError::Usage(format!("{}: bad configuration: {e}", path.display())))
}

/// " (pid N)" of the process that holds `dir`'s lock, as it wrote it (or nothing).
fn holder_pid(dir: &Path) -> String {
    let pid = std::fs::read_to_string(dir.join(LOCK)).unwrap_or_default();
    match pid.trim() {
        "" => String::new(),
        pid => format!(" (pid {pid})"),
    }
}

/// If another process holds `dir`'s lock: " (pid N)" or "" (tested without taking it for long).
fn writer(dir: &Path) -> Option<String> {
    let lock = OpenOptions::new().read(true).write(true).open(dir.join(LOCK)).ok()?;
    match lock.try_lock() {
        Err(std::fs::TryLockError::WouldBlock) => Some(holder_pid(dir)),
        _ => None, // free (released again when `lock` closes), or no lock to test
    }
}

/// Fails with a message saying why if `dir` holds no run to resume.
pub fn check_resumable(dir: &Path) -> Result<(), CliError> {
    let path = dir.join(CHECKPOINT);
    if dir.join(MARKER).exists() && !path.exists() {
        if let Some(holder) = writer(dir) {
            return Err(CliError::Usage(format!(
                "{}: another adjoint process{holder} is training this run and has not saved its first epoch yet; \
                 wait for it, or pick another --out",
                dir.display()
            )));
        }
        return Err(CliError::Usage(format!(
            "{}: the run was stopped before it saved its first epoch; start it again without --resume (same --out)",
            dir.display()
        )));
    }
    if !path.is_file() {
        return Err(CliError::Usage(format!("{}: no run to resume here", path.display())));
    }
    Ok(())
}

/// Loads a run folder for resuming (from `checkpoint.safetensors`).
pub fn resume(dir: &Path) -> Result<(Trainer, TrainConfig), CliError> {
    check_resumable(dir)?;
    let path = dir.join(CHECKPOINT);
    let (trainer, meta) = Trainer::load_checkpoint(&path)?;
    let config = config_of(&meta, &path)?;
    Ok((trainer, config))
}

/// A language model's run folder: its network, configuration and vocabulary, checked to fit
/// together, and refused if its weights are not finite (a diverged run); `None` for a run of
/// another kind.
pub fn load_language_model(
    dir: &Path,
) -> Result<Option<(Network<f32>, TrainConfig, adjoint::data::Vocabulary)>, CliError> {
    let (network, config) = load_model(dir)?;
    let Some(vocab) = config.data.vocabulary().transpose()? else { return Ok(None) };
    let damaged = |what: String| {
        Err(CliError::Usage(format!("{}: {what}; the run folder is damaged", dir.join(MODEL).display())))
    };
    let embedded = network.architecture.layers.first().and_then(|l| match *l {
        adjoint::nn::LayerSpec::Embedding { vocab, .. } => Some(vocab),
        _ => None,
    });
    if embedded != Some(vocab.len()) || network.architecture.outputs() != vocab.len() {
        return damaged(format!(
            "the model reads {} characters and scores {} but its vocabulary has {}",
            embedded.unwrap_or(0),
            network.architecture.outputs(),
            vocab.len()
        ));
    }
    let mut finite = true;
    network.visit(&mut String::new(), &mut |_, p| finite &= p.view().iter().all(|v| v.is_finite()));
    if !finite {
        return Err(CliError::Usage(format!(
            "{}: the model's weights are not all finite numbers (e.g. from a diverged run), so it cannot predict",
            dir.display()
        )));
    }
    Ok(Some((network, config, vocab)))
}

/// Loads `model.safetensors` from a run folder, with the configuration it was trained with.
pub fn load_model(dir: &Path) -> Result<(Network<f32>, TrainConfig), CliError> {
    let path = dir.join(MODEL);
    let (network, meta) = Network::<f32>::load_with_metadata(&path)?;
    let config = config_of(&meta, &path)?;
    Ok((network, config))
}
