//! Datasets shared by the integration tests.

use adjoint::data::Dataset;
use rand::{Rng, SeedableRng};

/// 8×8 images of a vertical (class 0), horizontal (1) or diagonal (2) bar at a random place,
/// with noise: no single pixel tells the classes apart, a 3×3 filter does.
pub fn bars(count: usize, seed: u64) -> Dataset {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut features = Vec::with_capacity(count * 64);
    let mut labels = Vec::with_capacity(count);
    for _ in 0..count {
        let class = rng.random_range(0..3);
        let mut image = [0f32; 64];
        for v in image.iter_mut() {
            *v = rng.random_range(0.0..0.3);
        }
        let (r, c) = (rng.random_range(1..6), rng.random_range(1..6));
        for k in 0..3 {
            let (y, x) = match class {
                0 => (r + k - 1, c),
                1 => (r, c + k - 1),
                _ => (r + k - 1, c + k - 1),
            };
            image[y * 8 + x] = 1.0;
        }
        features.extend(image);
        labels.push(class);
    }
    Dataset::new(adjoint::ndarray::Array2::from_shape_vec((count, 64), features).unwrap(), labels, 3)
}
