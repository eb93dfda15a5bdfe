//! Classification metrics: accuracy by argmax and the confusion matrix.

use crate::tensor::{Element, Tensor};

/// The fraction of rows of `logits` whose largest entry is at the label.
pub fn accuracy<T: Element>(logits: &Tensor<T>, labels: &[usize]) -> f64 {
    let predicted = logits.argmax_rows();
    let correct = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    correct as f64 / labels.len().max(1) as f64
}

/// Counts of (true class, predicted class) pairs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfusionMatrix {
    /// `counts[true][predicted]`
    pub counts: Vec<Vec<u64>>,
}

impl ConfusionMatrix {
    /// An all-zero matrix for `classes` classes.
    pub fn new(classes: usize) -> Self {
        ConfusionMatrix { counts: vec![vec![0; classes]; classes] }
    }

    /// Adds a batch of predictions (argmax of each row of `logits`). Every row is counted:
    /// the matrix grows to hold a class beyond its size (a label, or a prediction among the
    /// model's outputs that the data never uses).
    pub fn add<T: Element>(&mut self, logits: &Tensor<T>, labels: &[usize]) {
        if let Some(&outputs) = logits.shape().last() {
            self.grow(outputs);
        }
        for (p, &l) in logits.argmax_rows().into_iter().zip(labels) {
            self.grow(l.max(p) + 1);
            self.counts[l][p] += 1;
        }
    }

    /// Makes the matrix at least `classes` × `classes`, keeping its counts.
    pub fn grow(&mut self, classes: usize) {
        if classes > self.counts.len() {
            self.counts.iter_mut().for_each(|row| row.resize(classes, 0));
            self.counts.resize_with(classes, || vec![0; classes]);
        }
    }

    /// The number of rows counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Correct predictions over all predictions.
    pub fn accuracy(&self) -> f64 {
        let total: u64 = self.counts.iter().flatten().sum();
        let correct: u64 = (0..self.counts.len()).map(|i| self.counts[i][i]).sum();
        correct as f64 / total.max(1) as f64
    }

    /// A text table: rows are true classes, columns predictions.
    pub fn to_table(&self) -> String {
        let width = self.counts.iter().flatten().max().map_or(1, |m| m.to_string().len()).max(4);
        let mut s = format!("{:>6} |", "true\\p");
        for j in 0..self.counts.len() {
            s += &format!(" {j:>width$}");
        }
        s += "\n";
        for (i, row) in self.counts.iter().enumerate() {
            s += &format!("{i:>6} |");
            for c in row {
                s += &format!(" {c:>width$}");
            }
            s += "\n";
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_and_confusion_agree() {
        let logits = Tensor::from_vec(vec![0.9f32, 0.1, 0.2, 0.8, 0.7, 0.3], &[3, 2]);
        let labels = [0, 1, 1];
        assert!((accuracy(&logits, &labels) - 2.0 / 3.0).abs() < 1e-12);
        let mut cm = ConfusionMatrix::new(2);
        cm.add(&logits, &labels);
        assert_eq!(cm.counts, vec![vec![1, 0], vec![1, 1]]);
        assert!((cm.accuracy() - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn every_row_counts_when_the_data_has_fewer_classes_than_the_model() {
        // A 3-class model on data whose labels are all 0: predictions of class 2 are wrong
        // answers, not rows to leave out.
        let logits = Tensor::from_vec(vec![0.9f32, 0.1, 0.0, 0.0, 0.1, 0.9, 0.0, 0.9, 0.1], &[3, 3]);
        let mut cm = ConfusionMatrix::new(1);
        cm.add(&logits, &[0, 0, 0]);
        assert_eq!(cm.total(), 3);
        assert_eq!(cm.counts.len(), 3);
        assert_eq!(cm.counts[0], vec![1, 1, 1]);
        assert!((cm.accuracy() - 1.0 / 3.0).abs() < 1e-12);
    }
}
