//! The IDX reader (MNIST's format), gzipped or raw, with and without a limit on the items.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let origin = Path::new("fuzz.idx");
    let _ = adjoint::data::idx::parse_idx_limited(data, origin, None);
    let _ = adjoint::data::idx::parse_idx_limited(data, origin, Some(3));
});
