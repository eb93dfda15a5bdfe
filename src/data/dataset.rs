//! An in-memory classification dataset and its mini-batch loader.

use ndarray::{Array2, Axis, IxDyn};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::tensor::Tensor;

/// Examples as rows of `features` (`[n, d]`, `f32`) with a class label each.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `[n, d]`
    pub features: Array2<f32>,
    /// One class index per row.
    pub labels: Vec<usize>,
    /// The number of classes (labels are below it).
    pub classes: usize,
}

impl Dataset {
    /// A dataset; the number of classes is one more than the largest label, at least `min_classes`.
    ///
    /// # Panics
    /// If the label count differs from the row count.
    pub fn new(features: Array2<f32>, labels: Vec<usize>, min_classes: usize) -> Self {
        assert_eq!(
            features.nrows(),
            labels.len(),
            "Dataset::new: {} rows but {} labels",
            features.nrows(),
            labels.len()
        );
        let classes = labels.iter().max().map_or(0, |m| m + 1).max(min_classes);
        Dataset { features, labels, classes }
    }

    /// The number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The number of features per example.
    pub fn width(&self) -> usize {
        self.features.ncols()
    }

    /// The first `n` examples (all if fewer).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            features: self.features.slice(ndarray::s![..n, ..]).to_owned(),
            labels: self.labels[..n].to_vec(),
            classes: self.classes,
        }
    }

    /// Rescales every feature linearly so the smallest value seen is 0 and the largest 1.
    pub fn scale_to_unit(&mut self) {
        let (lo, hi) = self.features.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
        let span = if hi > lo { hi - lo } else { 1.0 };
        self.features.mapv_inplace(|v| (v - lo) / span);
    }

    /// Per-feature mean and standard deviation (1 for a constant feature, so dividing by it
    /// is safe).
    pub fn feature_stats(&self) -> (ndarray::Array1<f32>, ndarray::Array1<f32>) {
        let n = self.len().max(1) as f32;
        let mean = self.features.sum_axis(Axis(0)) / n;
        let var =
            self.features.map_axis(Axis(0), |col| col.iter().map(|v| v * v).sum::<f32>()) / n - mean.mapv(|m| m * m);
        (mean, var.mapv(|v| if v > 1e-12 { v.sqrt() } else { 1.0 }))
    }

    /// Standardises each feature to mean 0 and standard deviation 1 using this dataset's
    /// statistics, and applies the same transform to `others` (e.g. the test set).
    pub fn standardize(&mut self, others: &mut [&mut Dataset]) {
        let (mean, std) = self.feature_stats();
        for d in std::iter::once(&mut *self).chain(others.iter_mut().map(|d| &mut **d)) {
            d.features -= &mean;
            d.features /= &std;
        }
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
        Batches { data: self, order, batch, pos: 0 }
    }
}

/// An iterator over mini-batches: (`[b, d]` features, labels).
pub struct Batches<'a> {
    data: &'a Dataset,
    order: Vec<usize>,
    batch: usize,
    pos: usize,
}

impl Iterator for Batches<'_> {
    type Item = (Tensor<f32>, Vec<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.order.len() {
            return None;
        }
        let end = (self.pos + self.batch).min(self.order.len());
        let rows = &self.order[self.pos..end];
        self.pos = end;
        let d = self.data.width();
        let mut x = ndarray::ArrayD::<f32>::zeros(IxDyn(&[rows.len(), d]));
        for (mut dst, &r) in x.axis_iter_mut(Axis(0)).zip(rows) {
            dst.assign(&self.data.features.row(r));
        }
        let labels = rows.iter().map(|&r| self.data.labels[r]).collect();
        Some((Tensor::from_array(x), labels))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.order.len() - self.pos).div_ceil(self.batch);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize) -> Dataset {
        let f = Array2::from_shape_fn((n, 2), |(i, j)| (i * 2 + j) as f32);
        Dataset::new(f, (0..n).map(|i| i % 3).collect(), 0)
    }

    #[test]
    fn batches_cover_every_example_once_with_the_last_partial_batch() {
        let d = toy(10);
        let batches: Vec<_> = d.batches(4, Some(1)).collect();
        assert_eq!(batches.iter().map(|(x, _)| x.shape()[0]).collect::<Vec<_>>(), vec![4, 4, 2]);
        let mut firsts: Vec<usize> = batches
            .iter()
            .flat_map(|(x, _)| x.view().index_axis(Axis(1), 0).iter().map(|v| *v as usize / 2).collect::<Vec<_>>())
            .collect();
        firsts.sort();
        assert_eq!(firsts, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn shuffling_is_seeded_and_changes_with_the_seed() {
        let d = toy(50);
        let order = |s| d.batches(50, Some(s)).next().unwrap().1;
        assert_eq!(order(3), order(3));
        assert_ne!(order(3), order(4));
    }

    #[test]
    fn standardisation_uses_the_training_statistics() {
        let mut a = toy(4);
        let mut b = toy(4);
        a.standardize(&mut [&mut b]);
        let mean = a.features.sum_axis(Axis(0)) / 4.0;
        assert!(mean.iter().all(|m| m.abs() < 1e-6));
        assert_eq!(a.features, b.features);
    }
}
