//! The checkpoint loader: a model plus optimiser state, settings, schedule and history.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = adjoint::train::Trainer::decode_checkpoint(data, Path::new("fuzz.safetensors"));
});
