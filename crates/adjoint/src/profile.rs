//! Where the time goes: an opt-in count of the time spent in matrix products, for `adjoint
//! bench` and for users tuning a model. Off by default; then each matrix product pays one
//! relaxed atomic load. Products run inside tasks that already share a kernel's work
//! between threads (a convolution's per-image products) overlap in time and are not counted.
//!
//! ```
//! adjoint::profile::enable(true);
//! let a = adjoint::Tensor::<f32>::ones(&[64, 64]);
//! let _ = a.matmul(&a);
//! assert!(adjoint::profile::matmul_seconds() > 0.0);
//! adjoint::profile::enable(false);
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
static MATMUL_NANOS: AtomicU64 = AtomicU64::new(0);
static MATMUL_CALLS: AtomicU64 = AtomicU64::new(0);

/// Switches the counting on or off (for the whole process).
pub fn enable(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// Sets the counters to zero.
pub fn reset() {
    MATMUL_NANOS.store(0, Ordering::Relaxed);
    MATMUL_CALLS.store(0, Ordering::Relaxed);
}

/// Seconds spent in matrix products since the last [`reset`] while counting was on.
pub fn matmul_seconds() -> f64 {
    MATMUL_NANOS.load(Ordering::Relaxed) as f64 * 1e-9
}

/// Matrix products computed since the last [`reset`] while counting was on.
pub fn matmul_calls() -> u64 {
    MATMUL_CALLS.load(Ordering::Relaxed)
}

/// Runs a matrix product, counting its time if counting is on.
pub(crate) fn matmul<R>(f: impl FnOnce() -> R) -> R {
    if !ON.load(Ordering::Relaxed) {
        return f();
    }
    let start = Instant::now();
    let r = f();
    MATMUL_NANOS.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    MATMUL_CALLS.fetch_add(1, Ordering::Relaxed);
    r
}
