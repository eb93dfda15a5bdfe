//! Image input for `adjoint predict`: PGM (P2, P5) and PNG.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = adjoint::data::image::decode_image(data, Path::new("fuzz.img")) {
        assert_eq!(image.pixels.len(), image.width * image.height);
        assert!(image.pixels.iter().all(|p| (0.0..=1.0).contains(p)));
    }
});
