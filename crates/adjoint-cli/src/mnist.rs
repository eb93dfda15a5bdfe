//! The bundled MNIST: the four IDX files are embedded in the binary, so `adjoint train` needs
//! no download and works offline from any folder. They live with the command-line tool, not
//! the library: the library's package must stay small (crates.io takes at most 10 MB; these
//! are 11 MB), and library users load MNIST from its files (`adjoint::data::mnist::load_dir`).

use adjoint::data::{mnist, DataError, Dataset};

const FILES: [&[u8]; 4] = [
    include_bytes!("../data/mnist/train-images-idx3-ubyte.gz"),
    include_bytes!("../data/mnist/train-labels-idx1-ubyte.gz"),
    include_bytes!("../data/mnist/t10k-images-idx3-ubyte.gz"),
    include_bytes!("../data/mnist/t10k-labels-idx1-ubyte.gz"),
];

/// The bundled MNIST: (60,000 training, 10,000 test) examples, pixels scaled to [0, 1].
pub fn bundled() -> Result<(Dataset, Dataset), DataError> {
    bundled_limited(None, None)
}

/// The bundled MNIST's first `train` and `test` examples (only those are decompressed).
pub fn bundled_limited(train: Option<usize>, test: Option<usize>) -> Result<(Dataset, Dataset), DataError> {
    mnist::from_file_bytes_limited(FILES, "<bundled>", train, test)
}
