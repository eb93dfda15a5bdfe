//! Shape arithmetic: NumPy broadcasting and axis normalisation.

/// The broadcast shape of `a` and `b` under NumPy's rules (align trailing axes; an axis of
/// length 1 stretches), or `None` if they are incompatible.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Whether `from` can be broadcast to exactly `to`.
pub fn broadcasts_to(from: &[usize], to: &[usize]) -> bool {
    broadcast_shapes(from, to).is_some_and(|s| s == to)
}

/// Resolves a possibly negative axis (`-1` is the last) for an `ndim`-axis tensor.
///
/// # Panics
/// If the axis is out of range; `op` names the operation in the message.
pub fn normalize_axis(op: &str, axis: isize, ndim: usize) -> usize {
    let n = ndim as isize;
    let a = if axis < 0 { axis + n } else { axis };
    assert!((0..n).contains(&a), "{op}: axis {axis} is out of range for a tensor with {ndim} axes");
    a as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shapes(&[2, 3], &[3]), Some(vec![2, 3]));
        assert_eq!(broadcast_shapes(&[4, 1, 3], &[2, 1]), Some(vec![4, 2, 3]));
        assert_eq!(broadcast_shapes(&[], &[5]), Some(vec![5]));
        assert_eq!(broadcast_shapes(&[2, 3], &[4]), None);
        assert!(broadcasts_to(&[1, 3], &[2, 3]));
        assert!(!broadcasts_to(&[2, 3], &[1, 3]));
    }

    #[test]
    fn negative_axes_count_from_the_end() {
        assert_eq!(normalize_axis("sum", -1, 3), 2);
        assert_eq!(normalize_axis("sum", 0, 3), 0);
    }

    #[test]
    #[should_panic(expected = "sum: axis 3 is out of range")]
    fn axis_out_of_range_names_the_op() {
        normalize_axis("sum", 3, 3);
    }
}
