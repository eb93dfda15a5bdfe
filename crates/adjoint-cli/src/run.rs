//! Run folders: what `adjoint train` writes and `--resume`, `eval` and `predict` read.
//!
//! - `config.json`: the configuration (see [`TrainConfig`]);
//! - `model.safetensors`: the network (architecture, weights, input standardisation) and the
//!   configuration, so it is self-contained;
//! - `checkpoint.safetensors`: everything a resume needs (network, optimiser state, schedule,
//!   history and configuration), in one atomically written file;
//! - `metrics.jsonl`: one JSON object per epoch; `loss.svg`, `accuracy.svg`: curves.
//!
//! Every file is written atomically (temporary file, sync, rename), so a run folder is never
//! half-written.

use std::collections::HashMap;
use std::path::Path;

use adjoint::io::write_atomic;
use adjoint::nn::Network;
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

/// Writes the run folder for `trainer` trained with `config`.
pub fn save(dir: &Path, trainer: &Trainer, config: &TrainConfig) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|e| CliError::writing(format!("{}: {e}", dir.display())))?;
    let json = serde_json::to_string_pretty(config).expect("a configuration serialises");
    write_atomic(&dir.join(CONFIG), json.as_bytes()).map_err(CliError::writing)?;
    let extra = config_entry(config);
    trainer.network.save_with(&dir.join(MODEL), &extra).map_err(CliError::writing)?;
    trainer.save_checkpoint(&dir.join(CHECKPOINT), &extra).map_err(CliError::writing)?;
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
    for r in [
        line_chart(&dir.join("loss.svg"), "Loss", "epoch", "loss", &loss),
        line_chart(&dir.join("accuracy.svg"), "Test accuracy", "epoch", "accuracy", &acc),
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

/// Loads a run folder for resuming (from `checkpoint.safetensors`).
pub fn resume(dir: &Path) -> Result<(Trainer, TrainConfig), CliError> {
    let path = dir.join(CHECKPOINT);
    let (trainer, meta) = Trainer::load_checkpoint(&path)?;
    let config = config_of(&meta, &path)?;
    Ok((trainer, config))
}

/// Loads `model.safetensors` from a run folder, with the configuration it was trained with.
pub fn load_model(dir: &Path) -> Result<(Network<f32>, TrainConfig), CliError> {
    let path = dir.join(MODEL);
    let (network, meta) = Network::<f32>::load_with_metadata(&path)?;
    let config = config_of(&meta, &path)?;
    Ok((network, config))
}
