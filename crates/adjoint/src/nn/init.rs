//! Weight initialisers, seeded and reproducible.
//!
//! fan_in and fan_out are a weight matrix's input and output widths (`[fan_in, fan_out]`).

use std::fmt;
use std::str::FromStr;

use ndarray::{ArrayD, IxDyn};
use rand::Rng;
use rand_distr::{Distribution, Normal, Uniform};

use crate::tensor::Element;
use crate::SpecError;

/// How to draw a layer's initial weights.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Init {
    /// Every weight equal to `value`.
    ///
    /// **Warning:** equal weights give every unit of a layer the same gradient, so they get
    /// the same update and stay equal forever: the symmetry is never broken and the layer
    /// behaves like a single unit. Use it for biases, not for weights.
    Constant {
        /// The value of every weight.
        value: f64,
    },
    /// N(0, σ²); the lectures' "small random numbers", σ = 0.01 by default.
    Normal {
        /// The standard deviation σ.
        std: f64,
    },
    /// Xavier/Glorot uniform: U(±√(6/(fan_in + fan_out))); suits tanh and sigmoid.
    XavierUniform,
    /// Xavier/Glorot normal: N(0, 2/(fan_in + fan_out)).
    XavierNormal,
    /// He/Kaiming normal: N(0, 2/fan_in); suits ReLU.
    HeNormal,
    /// LeCun normal: N(0, 1/fan_in); suits SELU and tanh.
    LecunNormal,
}

impl Init {
    /// Draws an array of `shape` for a layer with the given fan-in and fan-out.
    pub fn sample<T: Element>(&self, shape: &[usize], fan_in: usize, fan_out: usize, rng: &mut impl Rng) -> ArrayD<T> {
        let (fi, fo) = (fan_in.max(1) as f64, fan_out.max(1) as f64);
        let normal = |std: f64, rng: &mut dyn rand::RngCore| -> ArrayD<T> {
            let d = Normal::new(0.0, std).expect("a finite, non-negative standard deviation");
            ArrayD::from_shape_simple_fn(IxDyn(shape), || T::from_f64_lossy(d.sample(rng)))
        };
        match *self {
            Init::Constant { value } => ArrayD::from_elem(IxDyn(shape), T::from_f64_lossy(value)),
            Init::Normal { std } => normal(std, rng),
            Init::XavierUniform => {
                let a = (6.0 / (fi + fo)).sqrt();
                let d = Uniform::new_inclusive(-a, a).expect("a finite range");
                ArrayD::from_shape_simple_fn(IxDyn(shape), || T::from_f64_lossy(d.sample(rng)))
            }
            Init::XavierNormal => normal((2.0 / (fi + fo)).sqrt(), rng),
            Init::HeNormal => normal((2.0 / fi).sqrt(), rng),
            Init::LecunNormal => normal((1.0 / fi).sqrt(), rng),
        }
    }
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Init::Constant { value } => write!(f, "constant:{value}"),
            Init::Normal { std } => write!(f, "normal:{std}"),
            Init::XavierUniform => write!(f, "xavier"),
            Init::XavierNormal => write!(f, "xavier-normal"),
            Init::HeNormal => write!(f, "he"),
            Init::LecunNormal => write!(f, "lecun"),
        }
    }
}

impl FromStr for Init {
    type Err = SpecError;

    /// `constant:V`, `normal[:STD]`, `xavier` (uniform), `xavier-normal`, `he`, `lecun`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let number = |default: Option<f64>| -> Result<f64, SpecError> {
            match (arg, default) {
                (Some(a), _) => {
                    a.parse::<f64>().ok().filter(|v| v.is_finite() && v.abs() <= f64::from(f32::MAX)).ok_or_else(|| {
                        SpecError(format!("'{a}' is not a finite number within ±3.4e38 (f32's range) in init '{s}'"))
                    })
                }
                (None, Some(d)) => Ok(d),
                (None, None) => Err(SpecError(format!("init '{name}' needs a value, e.g. {name}:0.1"))),
            }
        };
        let init = match name {
            "constant" => Init::Constant { value: number(None)? },
            "normal" => {
                let std = number(Some(0.01))?;
                if std < 0.0 {
                    return Err(SpecError(format!("normal: standard deviation {std} is negative")));
                }
                Init::Normal { std }
            }
            "xavier" | "glorot" | "xavier-uniform" => Init::XavierUniform,
            "xavier-normal" | "glorot-normal" => Init::XavierNormal,
            "he" | "kaiming" => Init::HeNormal,
            "lecun" => Init::LecunNormal,
            _ => {
                return Err(SpecError(format!(
                    "unknown init '{s}': use constant:V, normal[:STD], xavier, xavier-normal, he or lecun"
                )))
            }
        };
        if arg.is_some() && !matches!(init, Init::Constant { .. } | Init::Normal { .. }) {
            return Err(SpecError(format!("init '{name}' takes no value")));
        }
        Ok(init)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn stats(a: &ArrayD<f64>) -> (f64, f64) {
        let n = a.len() as f64;
        let mean = a.sum() / n;
        let var = a.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn each_initialiser_has_its_documented_statistics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (fi, fo) = (400, 200);
        let cases = [
            (Init::Normal { std: 0.01 }, 0.01),
            (Init::XavierUniform, (6.0f64 / 600.0).sqrt() / 3f64.sqrt()),
            (Init::XavierNormal, (2.0f64 / 600.0).sqrt()),
            (Init::HeNormal, (2.0f64 / 400.0).sqrt()),
            (Init::LecunNormal, (1.0f64 / 400.0).sqrt()),
        ];
        for (init, std) in cases {
            let a: ArrayD<f64> = init.sample(&[fi, fo], fi, fo, &mut rng);
            let (m, s) = stats(&a);
            assert!(m.abs() < 0.05 * std, "{init}: mean {m}");
            assert!((s - std).abs() < 0.02 * std, "{init}: std {s}, expected {std}");
        }
        let bound = (6.0f64 / 600.0).sqrt();
        let a: ArrayD<f64> = Init::XavierUniform.sample(&[fi, fo], fi, fo, &mut rng);
        assert!(a.iter().all(|v| v.abs() <= bound));
        let c: ArrayD<f64> = Init::Constant { value: 0.3 }.sample(&[3, 4], 3, 4, &mut rng);
        assert!(c.iter().all(|&v| v == 0.3));
    }

    #[test]
    fn same_seed_same_weights() {
        let draw =
            || -> ArrayD<f32> { Init::HeNormal.sample(&[5, 5], 5, 5, &mut rand::rngs::StdRng::seed_from_u64(1)) };
        assert_eq!(draw(), draw());
    }

    #[test]
    fn parsing_round_trips_and_rejects_nonsense() {
        for s in ["constant:0.5", "normal:0.01", "xavier", "xavier-normal", "he", "lecun"] {
            assert_eq!(s.parse::<Init>().unwrap().to_string(), s);
        }
        assert_eq!("normal".parse::<Init>().unwrap(), Init::Normal { std: 0.01 });
        assert!("normal:abc".parse::<Init>().is_err());
        assert!("he:3".parse::<Init>().is_err());
        assert!("magic".parse::<Init>().is_err());
        assert!("constant".parse::<Init>().is_err());
    }
}
