//! Checkpoints: everything needed to continue training, in one atomically written
//! safetensors file — the network (as [`Network::save`] writes it), the optimiser's state
//! arrays (`optim.{parameter}.{slot}`), and in the metadata the settings, optimiser, schedule
//! and history, plus any entries the caller adds (the command line keeps its configuration
//! there).
//!
//! Checkpoints of the earlier format (`adjoint-mlp-v1`) are read too: their weights and
//! optimiser state are transposed to the `[out, in]` layout and their settings taken from
//! the configuration they kept.

use std::collections::HashMap;
use std::path::Path;

use ndarray::ArrayD;
use serde::Deserialize;

use super::{EpochMetrics, TrainError, TrainSettings, Trainer};
use crate::io::{self, IoError, Limits};
use crate::nn::{Module, Network};
use crate::optim::{Optimizer, OptimizerKind, Scheduler};

const V1: &str = "adjoint-mlp-v1";

impl Trainer {
    /// Writes a checkpoint (atomically) with `extra` metadata entries.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save_checkpoint(&self, path: &Path, extra: &HashMap<String, String>) -> Result<(), TrainError> {
        let mut tensors = self.network.tensors();
        tensors.extend(self.optimizer.state_arrays().into_iter().map(|(n, a)| (format!("optim.{n}"), a.clone())));
        let mut meta = self.network.metadata();
        meta.insert("settings".into(), json(&self.settings));
        super::optimizer_metadata(&self.optimizer, &self.scheduler, &mut meta);
        meta.insert("history".into(), json(&self.history));
        if let Some(p) = &self.progress {
            meta.insert("progress".into(), json(p));
        }
        for (k, v) in extra {
            meta.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Ok(io::save(path, &tensors, &meta)?)
    }

    /// Reads a checkpoint written by [`Trainer::save_checkpoint`] (or by an earlier version):
    /// the trainer, ready to continue, and the file's metadata.
    ///
    /// # Errors
    /// If the file cannot be read or does not hold a consistent checkpoint.
    pub fn load_checkpoint(path: &Path) -> Result<(Trainer, HashMap<String, String>), TrainError> {
        Self::from_checkpoint_file(path, io::load::<f32>(path, &Limits::default())?)
    }

    /// A trainer from the bytes of a checkpoint file (see [`Trainer::load_checkpoint`]);
    /// `origin` names them in errors.
    ///
    /// # Errors
    /// As [`Trainer::load_checkpoint`].
    pub fn decode_checkpoint(bytes: &[u8], origin: &Path) -> Result<(Trainer, HashMap<String, String>), TrainError> {
        Self::from_checkpoint_file(origin, io::decode::<f32>(bytes, origin)?)
    }

    fn from_checkpoint_file(
        path: &Path,
        file: io::Loaded<f32>,
    ) -> Result<(Trainer, HashMap<String, String>), TrainError> {
        let meta = file.metadata;
        let invalid = |m: String| TrainError::Io(IoError::invalid(path, m));
        let get = |k: &str| meta.get(k).ok_or_else(|| invalid(format!("metadata '{k}' is missing")));
        let v1 = meta.get("format").map(String::as_str) == Some(V1);
        #[derive(Deserialize)]
        struct Optim {
            optimizer: OptimizerKind,
            lr: f64,
        }
        let (settings, kind, lr): (TrainSettings, OptimizerKind, f64) = if v1 {
            let config = get("config")?;
            let settings = serde_json::from_str(config).map_err(|e| invalid(format!("bad config: {e}")))?;
            let o: Optim = serde_json::from_str(config).map_err(|e| invalid(format!("bad config: {e}")))?;
            (settings, o.optimizer, o.lr)
        } else {
            let settings = serde_json::from_str(get("settings")?).map_err(|e| invalid(format!("bad settings: {e}")))?;
            let kind = serde_json::from_str(get("optimizer")?).map_err(|e| invalid(format!("bad optimizer: {e}")))?;
            let lr = get("lr")?.parse().map_err(|_| invalid("bad lr".into()))?;
            (settings, kind, lr)
        };
        let (mut tensors, mut optim): (HashMap<String, ArrayD<f32>>, HashMap<String, ArrayD<f32>>) =
            file.tensors.into_iter().partition(|(k, _)| !k.starts_with("optim."));
        let network = Network::<f32>::from_tensors(path, std::mem::take(&mut tensors), &meta)?;
        let shapes: Vec<Vec<usize>> = network.model.parameters().iter().map(|(_, p)| p.shape().to_vec()).collect();
        if v1 {
            // v1 kept weight-shaped state [in, out]: transpose what has the transposed shape.
            for a in optim.values_mut() {
                if a.ndim() == 2
                    && shapes
                        .iter()
                        .any(|s| s.len() == 2 && s[0] == a.shape()[1] && s[1] == a.shape()[0] && s[0] != s[1])
                {
                    *a = a.clone().reversed_axes().as_standard_layout().into_owned();
                }
            }
        }
        let mut optimizer = Optimizer::new(kind, lr);
        // AdamW as language-model recipes use it leaves biases and norms undecayed.
        optimizer.decay_matrices_only = meta.get("decay_matrices_only").is_some_and(|v| v == "true");
        let steps: u64 = get("optimizer_steps")?.parse().map_err(|_| invalid("bad optimizer_steps".into()))?;
        optimizer
            .restore_state(steps, &shapes, |n| optim.remove(&format!("optim.{n}")))
            .map_err(|e| invalid(e.to_string()))?;
        let scheduler: Scheduler =
            serde_json::from_str(get("scheduler")?).map_err(|e| invalid(format!("bad scheduler: {e}")))?;
        let history: Vec<EpochMetrics> =
            serde_json::from_str(get("history")?).map_err(|e| invalid(format!("bad history: {e}")))?;
        let progress = match meta.get("progress") {
            Some(p) => Some(serde_json::from_str(p).map_err(|e| invalid(format!("bad progress: {e}")))?),
            None => None,
        };
        let mut trainer = Trainer::new(network, optimizer, scheduler, settings)?;
        trainer.history = history;
        trainer.progress = progress;
        Ok((trainer, meta))
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises")
}
