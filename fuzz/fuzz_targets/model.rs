//! The model loader: safetensors bytes with an architecture in the metadata.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = adjoint::nn::Network::<f32>::decode(data, Path::new("fuzz.safetensors"));
});
