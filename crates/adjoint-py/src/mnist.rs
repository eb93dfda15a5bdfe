//! The bundled MNIST, embedded in the extension as in the CLI (the same four IDX files), so
//! `adjoint.mnist()` and `Network.fit()` work offline from any folder.

use adjoint::data::{mnist, Dataset};
use pyo3::exceptions::PyValueError;
use pyo3::PyResult;

const FILES: [&[u8]; 4] = [
    include_bytes!("../../adjoint-cli/data/mnist/train-images-idx3-ubyte.gz"),
    include_bytes!("../../adjoint-cli/data/mnist/train-labels-idx1-ubyte.gz"),
    include_bytes!("../../adjoint-cli/data/mnist/t10k-images-idx3-ubyte.gz"),
    include_bytes!("../../adjoint-cli/data/mnist/t10k-labels-idx1-ubyte.gz"),
];

/// The bundled MNIST's first `train` and `test` examples (all by default), pixels in [0, 1].
pub fn bundled_limited(train: Option<usize>, test: Option<usize>) -> PyResult<(Dataset, Dataset)> {
    mnist::from_file_bytes_limited(FILES, "<bundled>", train, test).map_err(|e| PyValueError::new_err(e.to_string()))
}
