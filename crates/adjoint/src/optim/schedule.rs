//! Learning-rate schedules: per epoch or per step, with a linear warm-up, and
//! reduce-on-plateau.
//!
//! Invariants: the rate is a function of (epoch, step within the epoch, steps per epoch) and
//! of the plateau state alone, so a run resumed from a checkpoint mid-epoch gets the same
//! rates as one that never stopped; a [`Scheduler`] saved by an older version (no warm-up,
//! per epoch) loads and behaves as it did.

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
    /// Linear from α₀ to `end_lr` over `epochs`.
    Linear {
        /// the length of the schedule
        epochs: usize,
        /// the final rate
        end_lr: f64,
    },
    /// PyTorch's `OneCycleLR` (cosine annealing, two phases) with α₀ as the peak: from
    /// α₀/`div_factor` up to α₀ over the first `pct_start` of the steps, then down to
    /// α₀/(`div_factor`·`final_div_factor`). It moves at every step even in a per-epoch
    /// [`Scheduler`].
    OneCycle {
        /// the length of the schedule
        epochs: usize,
        /// the share of the steps spent rising
        pct_start: f64,
        /// α₀ / the starting rate
        div_factor: f64,
        /// the starting rate / the final rate
        final_div_factor: f64,
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
    /// Parses `constant`, `step:EVERY:GAMMA`, `exp:GAMMA`, `inverse:K`, `cosine[:MIN]`,
    /// `linear[:END]`, `onecycle[:PCT_START]` (these three over the run's epochs),
    /// `plateau[:FACTOR[:PATIENCE]]`.
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
            "exp" | "exponential" | "inverse" | "1/t" | "cosine" | "linear" | "onecycle" => 2,
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
            "linear" => {
                let end_lr = num(1, Some(0.0))?;
                if end_lr < 0.0 {
                    return Err(bad(format!("END must be ≥ 0, got {end_lr}")));
                }
                LrSchedule::Linear { epochs: epochs.max(1), end_lr }
            }
            "onecycle" => {
                let pct_start = num(1, Some(0.3))?;
                if !(pct_start > 0.0 && pct_start < 1.0) {
                    return Err(bad(format!("PCT_START must be in (0, 1), got {pct_start}")));
                }
                LrSchedule::OneCycle { epochs: epochs.max(1), pct_start, div_factor: 25.0, final_div_factor: 1e4 }
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
                    "unknown schedule '{s}': use constant, step:EVERY:GAMMA, exp:GAMMA, inverse:K, cosine[:MIN], linear[:END], onecycle[:PCT_START] or plateau[:FACTOR[:PATIENCE]]"
                )))
            }
        };
        Ok(schedule)
    }
}

/// A schedule with its state (for reduce-on-plateau), serialisable for resuming.
///
/// By default the rate changes at epoch boundaries, as PyTorch's schedulers stepped once
/// per epoch do. [`Scheduler::per_step`] evaluates the schedule at every step instead, at
/// the fractional epoch reached (smooth decay within an epoch, as language-model recipes
/// use), and [`Scheduler::warmup`] ramps the rate up linearly over the first steps: step g
/// (0-based) of a warm-up of W steps gets (g + 1)/W of the rate. With both, the schedule's
/// own clock starts when the warm-up ends, so a cosine over the run's epochs reaches its
/// minimum at the run's last step (as Hugging Face's `get_cosine_schedule_with_warmup`).
///
/// ```
/// use adjoint::optim::{LrSchedule, Scheduler};
/// let s = Scheduler::new(LrSchedule::Cosine { epochs: 2, min_lr: 0.0 }, 0.1).warmup(10).per_step(true);
/// assert!((s.lr_at(0, 0, 100) - 0.01).abs() < 1e-12); // first warm-up step: 1/10 of α₀
/// assert!((s.lr_at(0, 10, 100) - 0.1).abs() < 1e-12); // the warm-up is over
/// assert!(s.lr_at(1, 99, 100) < 1e-4); // the last step of the run
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scheduler {
    /// The schedule.
    pub schedule: LrSchedule,
    /// α₀
    pub base_lr: f64,
    /// Steps of linear warm-up (0: none).
    #[serde(default)]
    pub warmup_steps: usize,
    /// Whether the schedule is evaluated at every step rather than once per epoch.
    #[serde(default)]
    pub per_step: bool,
    /// The plateau schedule's current rate.
    plateau_lr: f64,
    best: Option<f64>,
    bad_epochs: usize,
}

impl Scheduler {
    /// A scheduler starting at `base_lr`, per epoch, without warm-up.
    pub fn new(schedule: LrSchedule, base_lr: f64) -> Self {
        Scheduler {
            schedule,
            base_lr,
            warmup_steps: 0,
            per_step: false,
            plateau_lr: base_lr,
            best: None,
            bad_epochs: 0,
        }
    }

    /// The same scheduler with a linear warm-up over the first `steps` steps.
    pub fn warmup(mut self, steps: usize) -> Self {
        self.warmup_steps = steps;
        self
    }

    /// The same scheduler, evaluated at every step (`true`) or once per epoch (`false`).
    pub fn per_step(mut self, per_step: bool) -> Self {
        self.per_step = per_step;
        self
    }

    /// The rate at the start of `epoch` (0-based), warm-up left out: the per-epoch schedule.
    pub fn lr(&self, epoch: usize) -> f64 {
        self.decayed(epoch as f64, 1.0, |epochs| epochs as f64)
    }

    /// The rate for step `step` (0-based) of `epoch` (0-based) in a run of
    /// `steps_per_epoch` steps per epoch, warm-up included.
    pub fn lr_at(&self, epoch: usize, step: usize, steps_per_epoch: usize) -> f64 {
        let per_epoch = steps_per_epoch.max(1);
        let global = epoch * per_epoch + step;
        let warm = if global < self.warmup_steps { (global + 1) as f64 / self.warmup_steps as f64 } else { 1.0 };
        // One-cycle is a per-step schedule by definition (PyTorch's counts steps): per
        // epoch, a short run would skip its rise entirely.
        if !self.per_step && !matches!(self.schedule, LrSchedule::OneCycle { .. }) {
            return warm * self.lr(epoch);
        }
        // Counted in steps from the end of the warm-up; a schedule of E epochs lasts the
        // run's E·steps_per_epoch steps minus the warm-up.
        let after = global.saturating_sub(self.warmup_steps) as f64;
        let warmup = self.warmup_steps;
        warm * self.decayed(after, per_epoch as f64, |epochs| (epochs * per_epoch).saturating_sub(warmup).max(1) as f64)
    }

    /// The schedule's rate `units` into it (epochs, or steps when per step), with
    /// `units_per_epoch` of them per epoch and `length(E)` of them in a schedule of E epochs.
    fn decayed(&self, units: f64, units_per_epoch: f64, length: impl Fn(usize) -> f64) -> f64 {
        let base = self.base_lr;
        let epochs = units / units_per_epoch;
        let progress = |of: usize| (units / length(of)).min(1.0);
        // From `start` to `end` along half a cosine, as PyTorch's `_annealing_cos`.
        let cosine =
            |start: f64, end: f64, pct: f64| end + 0.5 * (start - end) * (1.0 + (std::f64::consts::PI * pct).cos());
        match self.schedule {
            LrSchedule::Constant => base,
            LrSchedule::Step { every, gamma } => base * gamma.powf((epochs / every.max(1) as f64).floor()),
            LrSchedule::Exponential { gamma } => base * gamma.powf(epochs),
            LrSchedule::InverseTime { decay } => base / (1.0 + decay * epochs),
            LrSchedule::Cosine { epochs: of, min_lr } => cosine(base, min_lr, progress(of)),
            LrSchedule::Linear { epochs: of, end_lr } => base + (end_lr - base) * progress(of),
            LrSchedule::OneCycle { epochs: of, pct_start, div_factor, final_div_factor } => {
                // PyTorch's phases: up until step pct_start·T − 1, down until step T − 1.
                let total = length(of);
                let (initial, peak) = (base / div_factor, base);
                let last = initial / final_div_factor;
                let rise_end = pct_start * total - 1.0;
                if units <= rise_end {
                    cosine(initial, peak, if rise_end > 0.0 { units / rise_end } else { 1.0 })
                } else {
                    let pct = ((units - rise_end) / (total - 1.0 - rise_end).max(f64::MIN_POSITIVE)).min(1.0);
                    cosine(peak, last, pct)
                }
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
    fn one_cycle_gives_pytorchs_rates_step_by_step() {
        // torch.optim.lr_scheduler.OneCycleLR(max_lr=0.1, epochs=3, steps_per_epoch=7,
        // pct_start=0.3, anneal_strategy="cos"), PyTorch 2.15.
        let torch = [
            0.0040000000000000036,
            0.012188527098390314,
            0.03396027605851658,
            0.06188697369957272,
            0.08644034833812791,
            0.09924306774148466,
            0.09944154354509119,
            0.09673623556045154,
            0.09190443762697105,
            0.08516599658482699,
            0.07682751154913771,
            0.0672683836480545,
            0.056923553268744854,
            0.046263710266697504,
            0.035773877573965704,
            0.02593134265232537,
            0.01718394091038552,
            0.009929679189326548,
            0.004498626448808909,
            0.0011378956269720922,
            4e-07,
        ];
        let schedule = LrSchedule::parse("onecycle", 3).unwrap();
        let s = Scheduler::new(schedule, 0.1).per_step(true);
        for (g, &expected) in torch.iter().enumerate() {
            let got = s.lr_at(g / 7, g % 7, 7);
            assert!((got - expected).abs() <= 1e-15 + 1e-12 * expected, "step {g}: {got} against {expected}");
        }
    }

    #[test]
    fn warm_up_then_cosine_follows_the_closed_form() {
        // Hugging Face's get_cosine_schedule_with_warmup, with the warm-up counted from 1:
        // (g+1)/W·α₀ during W steps, then α₀·½(1 + cos(π·(g − W)/(T − W))).
        let (w, per_epoch, epochs, base) = (5usize, 8usize, 3usize, 0.2);
        let s = Scheduler::new(LrSchedule::Cosine { epochs, min_lr: 0.0 }, base).warmup(w).per_step(true);
        let total = per_epoch * epochs;
        for g in 0..total {
            let expected = if g < w {
                (g + 1) as f64 / w as f64 * base
            } else {
                base * 0.5 * (1.0 + (std::f64::consts::PI * (g - w) as f64 / (total - w) as f64).cos())
            };
            let got = s.lr_at(g / per_epoch, g % per_epoch, per_epoch);
            assert!((got - expected).abs() < 1e-15, "step {g}: {got} against {expected}");
        }
        // Linear decay to 0 after the warm-up reaches 0 one step after the run's end.
        let lin = Scheduler::new(LrSchedule::Linear { epochs, end_lr: 0.0 }, base).warmup(w).per_step(true);
        assert!((lin.lr_at(0, w, per_epoch) - base).abs() < 1e-15);
        let last = lin.lr_at(epochs - 1, per_epoch - 1, per_epoch);
        assert!((last - base / (total - w) as f64).abs() < 1e-15, "{last}");
    }

    #[test]
    fn per_epoch_schedules_keep_their_rate_through_the_epoch_and_warm_up_multiplies_it() {
        let s = Scheduler::new(LrSchedule::Exponential { gamma: 0.5 }, 0.1);
        assert_eq!(s.lr_at(2, 0, 10), s.lr(2));
        assert_eq!(s.lr_at(2, 9, 10), s.lr(2));
        let smooth = s.clone().per_step(true);
        // One-cycle moves per step either way: a 1-epoch run still rises from α₀/25.
        let cycle = Scheduler::new(LrSchedule::parse("onecycle", 1).unwrap(), 0.1);
        assert!((cycle.lr_at(0, 0, 10) - 0.004).abs() < 1e-15);
        assert_eq!(cycle.lr_at(0, 5, 10), cycle.clone().per_step(true).lr_at(0, 5, 10));
        assert!((smooth.lr_at(2, 5, 10) - 0.1 * 0.5f64.powf(2.5)).abs() < 1e-15);
        let warm = s.warmup(4);
        assert!((warm.lr_at(0, 1, 10) - 0.05).abs() < 1e-15);
        assert_eq!(warm.lr_at(0, 4, 10), 0.1);
    }

    #[test]
    fn a_scheduler_saved_before_warm_up_existed_loads_as_it_was() {
        let old = r#"{"schedule":{"kind":"exponential","gamma":0.85},"base_lr":0.5,"plateau_lr":0.5,"best":null,"bad_epochs":0}"#;
        let s: Scheduler = serde_json::from_str(old).unwrap();
        assert_eq!(s, Scheduler::new(LrSchedule::Exponential { gamma: 0.85 }, 0.5));
        let round: Scheduler =
            serde_json::from_str(&serde_json::to_string(&s.clone().warmup(7).per_step(true)).unwrap()).unwrap();
        assert_eq!((round.warmup_steps, round.per_step), (7, true));
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
        assert_eq!(LrSchedule::parse("linear:0.01", 4).unwrap(), LrSchedule::Linear { epochs: 4, end_lr: 0.01 });
        assert!(
            matches!(LrSchedule::parse("onecycle:0.25", 4).unwrap(), LrSchedule::OneCycle { epochs: 4, pct_start, .. } if pct_start == 0.25)
        );
        assert!(LrSchedule::parse("onecycle:1", 4).is_err());
        assert!(LrSchedule::parse("linear:-1", 4).is_err());
    }
}
