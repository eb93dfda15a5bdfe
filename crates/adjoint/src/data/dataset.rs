//! An in-memory dataset (classification or regression) and its mini-batch loader.
//!
//! Features are kept as given: `f32`, or bytes with a divisor (images), converted a batch at
//! a time, so MNIST's 47 million pixels take 47 MB rather than 188 MB.

use std::borrow::Cow;

use ndarray::{s, Array1, Array2, ArrayD, Axis, IxDyn};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::ops::kernel::{threads_for, PARALLEL_MIN};
use crate::tensor::Tensor;

/// What is predicted for each example.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// A class index per example.
    Classes {
        /// One label per example.
        labels: Vec<usize>,
        /// The number of classes (labels are below it).
        classes: usize,
    },
    /// A row of real values per example (`[n, outputs]`).
    Values(Array2<f32>),
    /// A class index per position of each example (`[n, steps]`): a language model's next
    /// characters. The model's outputs are `[n, steps, classes]`.
    Sequences {
        /// One label per position.
        labels: Array2<usize>,
        /// The number of classes (labels are below it).
        classes: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Features {
    F32(Array2<f32>),
    /// Bytes, each meaning `byte / divisor`.
    Bytes {
        data: Array2<u8>,
        divisor: f32,
    },
}

/// Examples as rows of features, with their targets.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    features: Features,
    targets: Targets,
}

/// One mini-batch: `[b, d]` features and the targets of the same rows.
pub struct Batch {
    /// The features, one row per example.
    pub x: Tensor<f32>,
    /// The class labels (empty for regression; for sequences every position's, row by row).
    pub labels: Vec<usize>,
    /// The target values `[b, outputs]` (regression only).
    pub values: Option<Tensor<f32>>,
}

impl Dataset {
    /// A classification dataset; the number of classes is one more than the largest label,
    /// at least `min_classes`.
    ///
    /// # Panics
    /// If the label count differs from the row count.
    pub fn new(features: Array2<f32>, labels: Vec<usize>, min_classes: usize) -> Self {
        Self::check_rows("Dataset::new", features.nrows(), labels.len());
        let classes = labels.iter().max().map_or(0, |m| m + 1).max(min_classes);
        Dataset { features: Features::F32(features), targets: Targets::Classes { labels, classes } }
    }

    /// A classification dataset of byte features, each meaning `byte / divisor` (images: 255
    /// for pixels in [0, 1]).
    ///
    /// # Panics
    /// If the label count differs from the row count.
    pub fn from_bytes(data: Array2<u8>, divisor: f32, labels: Vec<usize>, min_classes: usize) -> Self {
        Self::check_rows("Dataset::from_bytes", data.nrows(), labels.len());
        let classes = labels.iter().max().map_or(0, |m| m + 1).max(min_classes);
        Dataset { features: Features::Bytes { data, divisor }, targets: Targets::Classes { labels, classes } }
    }

    /// A regression dataset: a row of target values per row of features.
    ///
    /// # Panics
    /// If the row counts differ.
    pub fn regression(features: Array2<f32>, values: Array2<f32>) -> Self {
        Self::check_rows("Dataset::regression", features.nrows(), values.nrows());
        Dataset { features: Features::F32(features), targets: Targets::Values(values) }
    }

    /// Sequence examples: ids stored as bytes when there are at most 256 classes.
    pub(crate) fn from_parts(inputs: Array2<usize>, targets: Targets) -> Self {
        let features = if targets_classes(&targets) <= 256 {
            Features::Bytes { data: inputs.mapv(|v| v as u8), divisor: 1.0 }
        } else {
            Features::F32(inputs.mapv(|v| v as f32))
        };
        Dataset { features, targets }
    }

    fn check_rows(op: &str, rows: usize, targets: usize) {
        assert_eq!(rows, targets, "{op}: {rows} rows of features but {targets} targets");
    }

    /// The number of examples.
    pub fn len(&self) -> usize {
        match &self.features {
            Features::F32(f) => f.nrows(),
            Features::Bytes { data, .. } => data.nrows(),
        }
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of features per example.
    pub fn width(&self) -> usize {
        match &self.features {
            Features::F32(f) => f.ncols(),
            Features::Bytes { data, .. } => data.ncols(),
        }
    }

    /// The targets.
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// The class labels (empty for a regression dataset; every position's, row by row, for
    /// sequences).
    pub fn labels(&self) -> &[usize] {
        match &self.targets {
            Targets::Classes { labels, .. } => labels,
            Targets::Values(_) => &[],
            Targets::Sequences { labels, .. } => labels.as_slice().expect("labels are kept in standard layout"),
        }
    }

    /// The number of classes (0 for a regression dataset).
    pub fn classes(&self) -> usize {
        targets_classes(&self.targets)
    }

    /// The number of values predicted per example: the classes, or the regression outputs.
    pub fn outputs(&self) -> usize {
        match &self.targets {
            Targets::Classes { classes, .. } | Targets::Sequences { classes, .. } => *classes,
            Targets::Values(v) => v.ncols(),
        }
    }

    /// The features as `f32` (borrowed, or converted from bytes).
    pub fn features(&self) -> Cow<'_, Array2<f32>> {
        match &self.features {
            Features::F32(f) => Cow::Borrowed(f),
            Features::Bytes { data, divisor } => Cow::Owned(data.mapv(|b| b as f32 / divisor)),
        }
    }

    /// Changes the features in place (converting bytes to `f32` first).
    pub fn map_features(&mut self, f: impl FnOnce(&mut Array2<f32>)) {
        if let Features::Bytes { data, divisor } = &self.features {
            self.features = Features::F32(data.mapv(|b| b as f32 / divisor));
        }
        if let Features::F32(x) = &mut self.features {
            f(x);
        }
    }

    /// The examples at `rows`, in that order.
    pub fn subset(&self, rows: &[usize]) -> Dataset {
        let features = match &self.features {
            Features::F32(f) => Features::F32(f.select(Axis(0), rows)),
            Features::Bytes { data, divisor } => {
                Features::Bytes { data: data.select(Axis(0), rows), divisor: *divisor }
            }
        };
        let targets = match &self.targets {
            Targets::Classes { labels, classes } => {
                Targets::Classes { labels: rows.iter().map(|&r| labels[r]).collect(), classes: *classes }
            }
            Targets::Values(v) => Targets::Values(v.select(Axis(0), rows)),
            Targets::Sequences { labels, classes } => {
                Targets::Sequences { labels: labels.select(Axis(0), rows), classes: *classes }
            }
        };
        Dataset { features, targets }
    }

    /// The first `n` examples (all if fewer).
    pub fn take(&self, n: usize) -> Dataset {
        let rows: Vec<usize> = (0..n.min(self.len())).collect();
        self.subset(&rows)
    }

    /// Splits off a `fraction` of the examples, picked by `seed`: (the rest, the part split
    /// off). Classification datasets are stratified: each class keeps its share on both
    /// sides (rounded per class). At least one example stays on each side when there are two.
    ///
    /// # Panics
    /// If `fraction` is not in [0, 1].
    pub fn split(&self, fraction: f64, seed: u64) -> (Dataset, Dataset) {
        assert!((0.0..=1.0).contains(&fraction), "split: fraction {fraction} is not in [0, 1]");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5_1175);
        let groups: Vec<Vec<usize>> = match &self.targets {
            Targets::Classes { labels, classes } => {
                let mut g = vec![Vec::new(); *classes];
                for (i, &l) in labels.iter().enumerate() {
                    g[l].push(i);
                }
                g
            }
            Targets::Values(_) | Targets::Sequences { .. } => vec![(0..self.len()).collect()],
        };
        let (mut kept, mut split) = (Vec::new(), Vec::new());
        for mut group in groups {
            group.shuffle(&mut rng);
            let n = (group.len() as f64 * fraction).round() as usize;
            split.extend_from_slice(&group[..n]);
            kept.extend_from_slice(&group[n..]);
        }
        // Keep both sides non-empty when possible (tiny datasets, tiny fractions).
        if fraction > 0.0 && split.is_empty() && kept.len() > 1 {
            split.push(kept.pop().expect("non-empty"));
        }
        if fraction < 1.0 && kept.is_empty() && split.len() > 1 {
            kept.push(split.pop().expect("non-empty"));
        }
        kept.sort_unstable();
        split.sort_unstable();
        (self.subset(&kept), self.subset(&split))
    }

    /// Three parts for training, validation and testing, split by `seed` as in
    /// [`Dataset::split`]: (train, validation, test).
    pub fn split3(&self, validation: f64, test: f64, seed: u64) -> (Dataset, Dataset, Dataset) {
        let (rest, test_part) = self.split(test, seed);
        let share = if test < 1.0 { validation / (1.0 - test) } else { 0.0 };
        let (train, validation_part) = rest.split(share.clamp(0.0, 1.0), seed.wrapping_add(1));
        (train, validation_part, test_part)
    }

    /// Per-feature mean and standard deviation (1 for a constant feature, so dividing by it
    /// is safe).
    pub fn feature_stats(&self) -> (Array1<f32>, Array1<f32>) {
        let f = self.features();
        let n = self.len().max(1) as f64;
        let mean = f.map_axis(Axis(0), |col| (col.iter().map(|&v| v as f64).sum::<f64>() / n) as f32);
        let std = f.map_axis(Axis(0), |col| {
            let m = col.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = col.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n;
            if var > 1e-12 {
                var.sqrt() as f32
            } else {
                1.0
            }
        });
        (mean, std)
    }

    /// Rescales every feature linearly so the smallest value seen is 0 and the largest 1.
    pub fn scale_to_unit(&mut self) {
        self.map_features(|f| {
            let (lo, hi) = f.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
            let span = if hi > lo { hi - lo } else { 1.0 };
            f.mapv_inplace(|v| (v - lo) / span);
        });
    }

    /// Mini-batches in an order shuffled by `seed` (or in order with `None`); the last,
    /// partial batch is included.
    ///
    /// # Panics
    /// If `batch` is 0.
    pub fn batches(&self, batch: usize, seed: Option<u64>) -> Batches<'_> {
        assert!(batch > 0, "batches: batch size must be positive");
        let mut order: Vec<usize> = (0..self.len()).collect();
        if let Some(seed) = seed {
            order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        }
        Batches { data: self, order, batch, pos: 0, shard: (0, 1) }
    }

    /// The batch of examples at `rows`.
    pub fn batch(&self, rows: &[usize]) -> Batch {
        let d = self.width();
        let len = rows.len() * d;
        // Filled row by row without zeroing first (a batch of MNIST is 1.5 MB), through
        // slices and a local divisor so that the conversion vectorises.
        // Rows are split across the pool's threads: the copy is bound by reading rows spread
        // over the whole dataset, and one thread alone took 0.3 ms of a 1.4 ms lecture step.
        let mut x: Vec<f32> = Vec::with_capacity(len);
        // Each row also asks for the one two ahead to be fetched into cache, since rows of a
        // shuffled batch lie far apart: 0.21 → 0.10 ms per MNIST batch on one thread.
        let fill = |(k, (out, &r)): (usize, (&mut [std::mem::MaybeUninit<f32>], &usize))| {
            let ahead = rows.get(k + 2).copied();
            match &self.features {
                Features::F32(f) => {
                    if let Some(a) = ahead {
                        prefetch(f.row(a))
                    }
                    fill_row(out, f.row(r), |v| v)
                }
                Features::Bytes { data, divisor } => {
                    if let Some(a) = ahead {
                        prefetch(data.row(a))
                    }
                    let divisor = *divisor;
                    fill_row(out, data.row(r), move |b| b as f32 / divisor)
                }
            }
        };
        let out = &mut x.spare_capacity_mut()[..len];
        if threads_for(len, PARALLEL_MIN) > 1 {
            use rayon::prelude::*;
            crate::autodiff::graph::parallel(|| {
                out.par_chunks_exact_mut(d.max(1)).zip(rows.par_iter()).enumerate().for_each(fill)
            });
        } else {
            out.chunks_exact_mut(d.max(1)).zip(rows).enumerate().for_each(fill);
        }
        // SAFETY: the loop wrote all `len` elements: `rows.len()` chunks of one row (`d`
        // values) each.
        unsafe { x.set_len(len) };
        let x = ArrayD::from_shape_vec(IxDyn(&[rows.len(), d]), x).expect("rows × width values");
        let (labels, values) = match &self.targets {
            Targets::Classes { labels, .. } => (rows.iter().map(|&r| labels[r]).collect(), None),
            Targets::Values(v) => {
                let picked = v.select(Axis(0), rows);
                (Vec::new(), Some(Tensor::from_array(picked.into_dyn())))
            }
            Targets::Sequences { labels, .. } => (rows.iter().flat_map(|&r| labels.row(r).to_vec()).collect(), None),
        };
        Batch { x: Tensor::from_array(x), labels, values }
    }

    /// A hash of the dataset for checking that two copies are the same (the ranks of a
    /// data-parallel job): its sizes, every target, and up to 256 rows of features spread
    /// evenly. Equal datasets have equal fingerprints; datasets that differ in a target or
    /// in a hashed row almost surely do not.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = rustc_hash::FxHasher::default();
        (self.len(), self.width()).hash(&mut h);
        match &self.targets {
            Targets::Classes { labels, classes } => (labels, classes).hash(&mut h),
            Targets::Values(v) => v.iter().for_each(|x| x.to_bits().hash(&mut h)),
            Targets::Sequences { labels, classes } => (labels.as_slice(), classes).hash(&mut h),
        }
        let n = self.len();
        for k in 0..n.min(256) {
            let r = k * n / n.min(256);
            match &self.features {
                Features::F32(f) => f.row(r).iter().for_each(|x| x.to_bits().hash(&mut h)),
                Features::Bytes { data, divisor } => (data.row(r).to_vec(), divisor.to_bits()).hash(&mut h),
            }
        }
        h.finish()
    }

    /// The rows `start..end` as a batch, in order.
    pub fn rows(&self, start: usize, end: usize) -> Batch {
        let rows: Vec<usize> = (start..end.min(self.len())).collect();
        self.batch(&rows)
    }

    /// The features of row `i` as `f32`.
    pub fn row(&self, i: usize) -> Array1<f32> {
        match &self.features {
            Features::F32(f) => f.row(i).to_owned(),
            Features::Bytes { data, divisor } => data.row(i).mapv(|b| b as f32 / divisor),
        }
    }

    /// The first rows of the features (for quick looks).
    pub fn head(&self, n: usize) -> Array2<f32> {
        self.features().slice(s![..n.min(self.len()), ..]).to_owned()
    }
}

fn targets_classes(targets: &Targets) -> usize {
    match targets {
        Targets::Classes { classes, .. } | Targets::Sequences { classes, .. } => *classes,
        Targets::Values(_) => 0,
    }
}

/// Standardisation fitted on training features, applied to every set (and to inputs at
/// prediction time): (x − mean) / std per feature.
#[derive(Debug, Clone, PartialEq)]
pub struct InputNorm {
    /// Per-feature mean.
    pub mean: Array1<f32>,
    /// Per-feature standard deviation (1 where constant).
    pub std: Array1<f32>,
}

impl InputNorm {
    /// Fits on `data`'s features.
    pub fn fit(data: &Dataset) -> Self {
        let (mean, std) = data.feature_stats();
        InputNorm { mean, std }
    }

    /// Applies to `data` in place.
    ///
    /// # Panics
    /// If the widths differ.
    pub fn apply(&self, data: &mut Dataset) {
        data.map_features(|f| self.apply_to(f));
    }

    /// Applies to rows of features in place.
    ///
    /// # Panics
    /// If the widths differ.
    pub fn apply_to(&self, features: &mut Array2<f32>) {
        assert_eq!(
            features.ncols(),
            self.mean.len(),
            "InputNorm: {} features, fitted on {}",
            features.ncols(),
            self.mean.len()
        );
        *features -= &self.mean;
        *features /= &self.std;
    }
}

/// An iterator over mini-batches.
pub struct Batches<'a> {
    data: &'a Dataset,
    order: Vec<usize>,
    batch: usize,
    pos: usize,
    /// (rank, ranks): each batch is this rank's share of the global batch.
    shard: (usize, usize),
}

impl Batches<'_> {
    /// Each batch becomes rank `rank`'s share of it among `ranks` (rows
    /// [`dist::shard`](crate::dist::shard) of the global batch; possibly none in a last,
    /// partial batch). The number of batches does not change.
    ///
    /// # Panics
    /// If `rank >= ranks`.
    pub fn shard(mut self, rank: usize, ranks: usize) -> Self {
        assert!(rank < ranks, "Batches::shard: rank {rank} of {ranks} ranks");
        self.shard = (rank, ranks);
        self
    }
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.pos >= self.order.len() {
            return None;
        }
        let end = (self.pos + self.batch).min(self.order.len());
        let mine = crate::dist::shard(end - self.pos, self.shard.0, self.shard.1);
        let b = self.data.batch(&self.order[self.pos + mine.start..self.pos + mine.end]);
        self.pos = end;
        Some(b)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.order.len() - self.pos).div_ceil(self.batch);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches<'_> {}

/// Asks the CPU to start loading a contiguous row into cache (a hint: it reads nothing and
/// cannot fault); a no-op elsewhere than x86-64 or for strided rows.
fn prefetch<S>(row: ndarray::ArrayView1<'_, S>) {
    #[cfg(target_arch = "x86_64")]
    if let Some(src) = row.to_slice() {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(src);
        let start = src.as_ptr().cast::<i8>();
        for offset in (0..bytes).step_by(64) {
            // SAFETY: the intrinsic needs SSE, which every x86-64 CPU has; a prefetch never
            // dereferences its address (and this one lies inside `src` anyway).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Writes `convert` of each element of `row` into `out` (of the row's length).
fn fill_row<S: Copy>(
    out: &mut [std::mem::MaybeUninit<f32>],
    row: ndarray::ArrayView1<'_, S>,
    convert: impl Fn(S) -> f32,
) {
    // `batch` relies on every element of `out` being written.
    debug_assert_eq!(out.len(), row.len(), "fill_row: output and row lengths differ");
    match row.to_slice() {
        // 8 lanes where the CPU has AVX2: the division is most of the conversion's time.
        Some(src) => crate::ops::kernel::wide::map(src, out, &convert),
        None => out.iter_mut().zip(row.iter()).for_each(|(o, &s)| {
            o.write(convert(s));
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ShapeBuilder;

    fn toy(n: usize) -> Dataset {
        let f = Array2::from_shape_fn((n, 2), |(i, j)| (i * 2 + j) as f32);
        Dataset::new(f, (0..n).map(|i| i % 3).collect(), 0)
    }

    #[test]
    fn a_batch_of_bytes_holds_each_byte_divided_exactly_in_either_memory_order() {
        let bytes = Array2::from_shape_fn((7, 5), |(i, j)| (i * 37 + j * 101) as u8);
        let labels: Vec<usize> = (0..7).map(|i| i % 2).collect();
        let rows = [6, 0, 3, 3, 5];
        let expected = bytes.select(Axis(0), &rows).mapv(|b| b as f32 / 255.0).into_dyn();
        // Row-major rows are copied as slices; column-major ones element by element.
        let column_major = Array2::from_shape_vec((7, 5).f(), bytes.t().iter().copied().collect()).unwrap();
        assert_eq!(column_major, bytes);
        for data in [bytes.clone(), column_major] {
            let batch = Dataset::from_bytes(data, 255.0, labels.clone(), 0).batch(&rows);
            assert_eq!(batch.x.to_array(), expected);
            assert_eq!(batch.labels, [0, 0, 1, 1, 1]);
        }
        let floats = Dataset::new(bytes.mapv(|b| b as f32 / 255.0), labels, 0);
        assert_eq!(floats.batch(&rows).x.to_array(), expected);
        assert_eq!(floats.batch(&[]).x.shape(), [0, 5]);
    }

    #[test]
    fn a_large_batch_split_across_threads_holds_the_same_rows_in_order() {
        // 300 rows of 200: a batch of 250 rows (50,000 values) is split on a 2-thread pool.
        let bytes = Array2::from_shape_fn((300, 200), |(i, j)| (i * 31 + j * 7) as u8);
        let labels: Vec<usize> = (0..300).map(|i| i % 10).collect();
        let rows: Vec<usize> = (0..250).map(|k| (k * 97 + 13) % 300).collect();
        let expected = bytes.select(Axis(0), &rows).mapv(|b| b as f32 / 255.0).into_dyn();
        let column_major = Array2::from_shape_vec((300, 200).f(), bytes.t().iter().copied().collect()).unwrap();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                assert_eq!(threads_for(expected.len(), PARALLEL_MIN), threads);
                for data in [bytes.clone(), column_major.clone()] {
                    let set = Dataset::from_bytes(data, 255.0, labels.clone(), 0);
                    let batch = set.batch(&rows);
                    assert_eq!(batch.x.to_array(), expected);
                    assert_eq!(batch.labels, rows.iter().map(|r| r % 10).collect::<Vec<_>>());
                }
                let floats = Dataset::new(bytes.mapv(|b| b as f32 / 255.0), labels.clone(), 0);
                assert_eq!(floats.batch(&rows).x.to_array(), expected);
            });
        }
    }

    #[test]
    fn batches_cover_every_example_once_with_the_last_partial_batch() {
        let d = toy(10);
        let batches: Vec<Batch> = d.batches(4, Some(1)).collect();
        assert_eq!(batches.iter().map(|b| b.x.shape()[0]).collect::<Vec<_>>(), vec![4, 4, 2]);
        let mut firsts: Vec<usize> = batches
            .iter()
            .flat_map(|b| b.x.view().index_axis(Axis(1), 0).iter().map(|v| *v as usize / 2).collect::<Vec<_>>())
            .collect();
        firsts.sort();
        assert_eq!(firsts, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn shards_of_every_batch_are_the_global_batch_in_order() {
        let d = toy(23);
        // Features are unique per row (2i, 2i + 1), so equal features mean equal rows.
        let whole: Vec<Vec<f32>> = d.batches(8, Some(5)).map(|b| b.x.to_vec()).collect();
        for ranks in [1, 2, 3, 4] {
            let parts: Vec<Vec<Vec<f32>>> =
                (0..ranks).map(|r| d.batches(8, Some(5)).shard(r, ranks).map(|b| b.x.to_vec()).collect()).collect();
            for (i, batch) in whole.iter().enumerate() {
                let joined: Vec<f32> = parts.iter().flat_map(|p| p[i].clone()).collect();
                assert_eq!(&joined, batch, "{ranks} ranks, batch {i}");
            }
        }
    }

    #[test]
    fn shuffling_is_seeded_and_changes_with_the_seed() {
        let d = toy(50);
        let order = |s| d.batches(50, Some(s)).next().unwrap().labels;
        assert_eq!(order(3), order(3));
        assert_ne!(order(3), order(4));
    }

    #[test]
    fn byte_features_convert_a_batch_at_a_time() {
        let bytes = Array2::from_shape_vec((2, 3), vec![0u8, 128, 255, 1, 2, 3]).unwrap();
        let d = Dataset::from_bytes(bytes, 255.0, vec![1, 0], 2);
        let b = d.rows(0, 2);
        assert_eq!(b.x.to_vec()[2], 1.0);
        assert_eq!(b.labels, vec![1, 0]);
        assert_eq!(d.features()[[1, 2]], 3.0 / 255.0);
    }

    #[test]
    fn splits_are_seeded_stratified_and_cover_everything_once() {
        let d = toy(30); // ten of each class
        let (train, test) = d.split(0.2, 5);
        assert_eq!((train.len(), test.len()), (24, 6));
        for c in 0..3 {
            assert_eq!(test.labels().iter().filter(|&&l| l == c).count(), 2, "class {c} keeps its share");
        }
        let mut all: Vec<f32> =
            train.features().column(0).iter().chain(test.features().column(0).iter()).copied().collect();
        all.sort_by(f32::total_cmp);
        assert_eq!(all, (0..30).map(|i| (i * 2) as f32).collect::<Vec<_>>());
        assert_eq!(d.split(0.2, 5).1, test);
        assert_ne!(d.split(0.2, 6).1, test);
        let (a, b, c) = d.split3(0.2, 0.2, 1);
        assert_eq!(a.len() + b.len() + c.len(), 30);
        // Regression data splits too.
        let r = Dataset::regression(Array2::zeros((10, 2)), Array2::zeros((10, 1)));
        assert_eq!(r.split(0.3, 1).1.len(), 3);
    }

    #[test]
    fn standardisation_uses_the_training_statistics() {
        let mut a = toy(4);
        let mut b = toy(4);
        let norm = InputNorm::fit(&a);
        norm.apply(&mut a);
        norm.apply(&mut b);
        let mean = a.features().sum_axis(Axis(0)) / 4.0;
        assert!(mean.iter().all(|m| m.abs() < 1e-6));
        assert_eq!(a.features(), b.features());
    }
}
