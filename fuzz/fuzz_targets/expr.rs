//! The expression parser, and what follows it in `adjoint grad` and `compare`: evaluation,
//! reverse-mode gradients and bounded symbolic differentiation.
#![no_main]
use std::collections::HashMap;

use adjoint::expr::Expr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(expr) = Expr::parse(text) else { return };
    let vars: HashMap<String, f64> = expr.variables().into_iter().map(|v| (v, 0.7)).collect();
    let _ = expr.eval_f64(&vars);
    if let Some(v) = expr.variables().first() {
        let _ = expr.derivative_within(v, 10_000).map(|d| d.simplify());
    }
});
