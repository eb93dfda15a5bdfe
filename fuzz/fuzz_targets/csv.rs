//! The CSV reader: a header, numeric features and a class-label column.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let origin = Path::new("fuzz.csv");
        if let Ok(d) = adjoint::data::parse_csv(text, "label", origin) {
            // What parses is usable: every row has the width, every label a class.
            assert_eq!(d.features().nrows(), d.labels().len());
            assert!(d.labels().iter().all(|&l| l < d.classes()));
        }
    }
});
