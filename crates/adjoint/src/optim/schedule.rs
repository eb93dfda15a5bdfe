//! Learning-rate schedules, per epoch, and reduce-on-plateau.

use serde::{Deserialize, Serialize};

use crate::SpecError;

/// How the learning rate changes with the epoch (0-based) from its base value α₀.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// α₀ throughout.
    Constant,
    /// α₀·γ^⌊epoch/every⌋.
    Step {
        /// epochs between cuts
        every: usize,
        /// factor per cut
        gamma: f64,
    },
    /// α₀·γ^epoch.
    Exponential {
        /// factor per epoch
        gamma: f64,
    },
    /// α₀/(1 + k·epoch).
    InverseTime {
        /// k
        decay: f64,
    },
    /// Cosine annealing from α₀ to `min_lr` over `epochs`.
    Cosine {
        /// the length of the schedule
        epochs: usize,
        /// the final rate
        min_lr: f64,
    },
    /// Multiply by `factor` when the monitored loss has not improved by more than
    /// `threshold` (relative) for `patience` epochs.
    Plateau {
        /// factor per cut
        factor: f64,
        /// epochs without improvement before a cut
        patience: usize,
        /// relative improvement that counts
        threshold: f64,
    },
}

impl LrSchedule {
    /// Parses `constant`, `step:EVERY:GAMMA`, `exp:GAMMA`, `inverse:K`, `cosine[:MIN]`
    /// (over the run's epochs), `plateau[:FACTOR[:PATIENCE]]`.
    pub fn parse(s: &str, epochs: usize) -> Result<Self, SpecError> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = |m: String| SpecError(format!("schedule '{s}': {m}"));
        let num = |i: usize, default: Option<f64>| -> Result<f64, SpecError> {
            match (parts.get(i), default) {
                (Some(p), _) => p
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| bad(format!("'{p}' is not a finite number"))),
                (None, Some(d)) => Ok(d),
                (None, None) => Err(bad("a value is missing".into())),
            }
        };
        let factor = |i: usize, default: Option<f64>, what: &str| -> Result<f64, SpecError> {
            let v = num(i, default)?;
            if v > 0.0 && v <= 1.0 {
                Ok(v)
            } else {
                Err(bad(format!("{what} must be in (0, 1], got {v}")))
            }
        };
        let max_parts = match parts[0] {
            "constant" => 1,
            "exp" | "exponential" | "inverse" | "1/t" | "cosine" => 2,
            _ => 3,
        };
        if parts.len() > max_parts {
            return Err(bad("too many values".into()));
        }
        let schedule = match parts[0] {
            "constant" => LrSchedule::Constant,
            "step" => {
                let every = num(1, None)?;
                if every < 1.0 || every.fract() != 0.0 {
                    return Err(bad("EVERY must be a whole number of epochs ≥ 1".into()));
                }
                LrSchedule::Step { every: every as usize, gamma: factor(2, Some(0.1), "GAMMA")? }
            }
            "exp" | "exponential" => LrSchedule::Exponential { gamma: factor(1, None, "GAMMA")? },
            "inverse" | "1/t" => {
                let decay = num(1, Some(1.0))?;
                if decay < 0.0 {
                    return Err(bad(format!("K must be ≥ 0, got {decay}")));
                }
                LrSchedule::InverseTime { decay }
            }
            "cosine" => {
                let min_lr = num(1, Some(0.0))?;
                if min_lr < 0.0 {
                    return Err(bad(format!("MIN must be ≥ 0, got {min_lr}")));
                }
                LrSchedule::Cosine { epochs: epochs.max(1), min_lr }
            }
            "plateau" => {
                let f = num(1, Some(0.5))?;
                if !(f > 0.0 && f < 1.0) {
                    return Err(bad(format!("FACTOR must be in (0, 1), got {f}")));
                }
                let patience = num(2, Some(2.0))?;
                if patience < 0.0 || patience.fract() != 0.0 {
                    return Err(bad(format!("PATIENCE must be a whole number of epochs ≥ 0, got {patience}")));
                }
                LrSchedule::Plateau { factor: f, patience: patience as usize, threshold: 1e-3 }
            }
            _ => {
                return Err(SpecError(format!(
                    "unknown schedule '{s}': use constant, step:EVERY:GAMMA, exp:GAMMA, inverse:K, cosine[:MIN] or plateau[:FACTOR[:PATIENCE]]"
                )))
            }
        };
        Ok(schedule)
    }
}

/// A schedule with its state (for reduce-on-plateau), serialisable for resuming.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scheduler {
    /// The schedule.
    pub schedule: LrSchedule,
    /// α₀
    pub base_lr: f64,
    /// The plateau schedule's current rate.
    plateau_lr: f64,
    best: Option<f64>,
    bad_epochs: usize,
}

impl Scheduler {
    /// A scheduler starting at `base_lr`.
    pub fn new(schedule: LrSchedule, base_lr: f64) -> Self {
        Scheduler { schedule, base_lr, plateau_lr: base_lr, best: None, bad_epochs: 0 }
    }

    /// The rate for `epoch` (0-based).
    pub fn lr(&self, epoch: usize) -> f64 {
        let e = epoch as f64;
        match self.schedule {
            LrSchedule::Constant => self.base_lr,
            LrSchedule::Step { every, gamma } => self.base_lr * gamma.powi((epoch / every.max(1)) as i32),
            LrSchedule::Exponential { gamma } => self.base_lr * gamma.powf(e),
            LrSchedule::InverseTime { decay } => self.base_lr / (1.0 + decay * e),
            LrSchedule::Cosine { epochs, min_lr } => {
                let progress = (e / epochs.max(1) as f64).min(1.0);
                min_lr + 0.5 * (self.base_lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            LrSchedule::Plateau { .. } => self.plateau_lr,
        }
    }

    /// Reports the monitored loss at the end of an epoch (only the plateau schedule uses it).
    pub fn observe(&mut self, loss: f64) {
        let LrSchedule::Plateau { factor, patience, threshold } = self.schedule else { return };
        match self.best {
            Some(best) if loss >= best * (1.0 - threshold) => {
                self.bad_epochs += 1;
                if self.bad_epochs > patience {
                    self.plateau_lr *= factor;
                    self.bad_epochs = 0;
                }
            }
            _ => {
                self.best = Some(loss);
                self.bad_epochs = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_follow_their_formulas() {
        let lr = |s: LrSchedule, e: usize| Scheduler::new(s, 0.1).lr(e);
        assert_eq!(lr(LrSchedule::Constant, 7), 0.1);
        assert!((lr(LrSchedule::Step { every: 2, gamma: 0.5 }, 5) - 0.025).abs() < 1e-15);
        assert!((lr(LrSchedule::Exponential { gamma: 0.9 }, 2) - 0.081).abs() < 1e-15);
        assert!((lr(LrSchedule::InverseTime { decay: 1.0 }, 4) - 0.02).abs() < 1e-15);
        let cos = LrSchedule::Cosine { epochs: 10, min_lr: 0.0 };
        assert!((lr(cos, 0) - 0.1).abs() < 1e-15 && (lr(cos, 5) - 0.05).abs() < 1e-15 && lr(cos, 10).abs() < 1e-15);
    }

    #[test]
    fn plateau_cuts_the_rate_when_the_loss_levels_off() {
        let mut s = Scheduler::new(LrSchedule::Plateau { factor: 0.5, patience: 1, threshold: 1e-3 }, 0.1);
        for loss in [1.0, 0.8, 0.8, 0.8] {
            s.observe(loss);
        }
        assert!((s.lr(4) - 0.05).abs() < 1e-15);
    }

    #[test]
    fn parsing() {
        assert_eq!(LrSchedule::parse("step:3:0.5", 10).unwrap(), LrSchedule::Step { every: 3, gamma: 0.5 });
        assert_eq!(LrSchedule::parse("cosine", 10).unwrap(), LrSchedule::Cosine { epochs: 10, min_lr: 0.0 });
        assert!(LrSchedule::parse("step:0", 10).is_err());
        assert!(LrSchedule::parse("wobbly", 10).is_err());
    }
}
