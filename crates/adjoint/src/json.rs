//! JSON for numbers that may not be finite.
//!
//! JSON has no spelling for NaN or ±∞, and `serde_json` writes them as `null`, which loses
//! which one it was and cannot be read back into an `f64`. Everywhere adjoint writes JSON
//! (run metrics, checkpoints, command-line output), a non-finite number is the string
//! `"NaN"`, `"inf"` or `"-inf"`; finite numbers stay numbers. Reading accepts both, and
//! `null` (as earlier versions wrote) as NaN.

use serde::{Deserialize, Deserializer, Serializer};

/// The JSON value of a number: itself if finite, else `"NaN"`, `"inf"` or `"-inf"`.
pub fn number(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!(v)
    } else {
        serde_json::Value::String(spell(v).into())
    }
}

fn spell(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "inf"
    } else {
        "-inf"
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Either {
    Number(f64),
    Text(String),
    Null(()),
}

fn read<E: serde::de::Error>(e: Either) -> Result<f64, E> {
    match e {
        Either::Number(v) => Ok(v),
        Either::Null(()) => Ok(f64::NAN),
        Either::Text(t) => match t.as_str() {
            "NaN" | "nan" => Ok(f64::NAN),
            "inf" | "Infinity" | "+inf" => Ok(f64::INFINITY),
            "-inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
            other => Err(E::custom(format!("'{other}' is not a number"))),
        },
    }
}

/// `#[serde(with = "adjoint::json::float")]` for an `f64` field.
pub mod float {
    use super::*;

    /// Writes a number, or its spelling if not finite.
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_str(spell(*v))
        }
    }

    /// Reads a number, a spelling, or `null` (NaN).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        read(Either::deserialize(d)?)
    }
}

/// `#[serde(with = "adjoint::json::option_float")]` for an `Option<f64>` field (absent or
/// a number).
pub mod option_float {
    use super::*;

    /// Writes `None` as null, a number, or its spelling if not finite.
    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::float::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    /// Reads a number or a spelling.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(Some(read(Either::deserialize(d)?)?))
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize, Debug)]
    struct S {
        #[serde(with = "super::float")]
        a: f64,
    }

    #[test]
    fn non_finite_numbers_round_trip_and_stay_distinguishable() {
        for v in [1.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let json = serde_json::to_string(&S { a: v }).unwrap();
            let back: S = serde_json::from_str(&json).unwrap();
            assert!(back.a == v || (v.is_nan() && back.a.is_nan()), "{json}");
        }
        assert_eq!(serde_json::to_string(&S { a: f64::NEG_INFINITY }).unwrap(), r#"{"a":"-inf"}"#);
        assert!(serde_json::from_str::<S>(r#"{"a":null}"#).unwrap().a.is_nan(), "earlier versions wrote null");
        assert_eq!(super::number(f64::INFINITY), serde_json::json!("inf"));
    }
}
