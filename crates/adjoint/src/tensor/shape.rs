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

/// An integer that names an axis or a length: `usize`, or a signed type where negative axes
/// count from the end and a length of −1 is inferred.
pub trait Index: Copy {
    /// The value as an `i64`.
    fn to_i64(self) -> i64;
}

macro_rules! index {
    ($($t:ty),*) => {$(
        impl Index for $t {
            fn to_i64(self) -> i64 {
                self as i64
            }
        }
    )*};
}
index!(usize, isize, i32, i64, u32);

/// A list of axes: `&[0, -1]`, `&[1usize]`, a `Vec`. Negative axes count from the end, as
/// in NumPy and PyTorch.
pub trait Axes {
    /// The axes as positions in a tensor of `ndim` axes, sorted, without repeats.
    ///
    /// # Panics
    /// If an axis is out of range; `op` names the operation in the message.
    fn resolve(&self, op: &str, ndim: usize) -> Vec<usize>;

    /// The axes in the order given (for permutations), resolved against `ndim`.
    fn in_order(&self, op: &str, ndim: usize) -> Vec<usize>;
}

fn resolve_each<I: Index>(items: &[I], op: &str, ndim: usize) -> Vec<usize> {
    items.iter().map(|&a| normalize_axis(op, a.to_i64() as isize, ndim)).collect()
}

impl<I: Index> Axes for [I] {
    fn resolve(&self, op: &str, ndim: usize) -> Vec<usize> {
        let mut out = resolve_each(self, op, ndim);
        out.sort_unstable();
        out.dedup();
        out
    }
    fn in_order(&self, op: &str, ndim: usize) -> Vec<usize> {
        resolve_each(self, op, ndim)
    }
}

impl<I: Index, const N: usize> Axes for [I; N] {
    fn resolve(&self, op: &str, ndim: usize) -> Vec<usize> {
        Axes::resolve(&self[..], op, ndim)
    }
    fn in_order(&self, op: &str, ndim: usize) -> Vec<usize> {
        self[..].in_order(op, ndim)
    }
}

impl<I: Index> Axes for Vec<I> {
    fn resolve(&self, op: &str, ndim: usize) -> Vec<usize> {
        Axes::resolve(&self[..], op, ndim)
    }
    fn in_order(&self, op: &str, ndim: usize) -> Vec<usize> {
        self[..].in_order(op, ndim)
    }
}

/// A shape: `&[2, 3]`, `&[2, -1]` (one length inferred from the element count), a `Vec`.
pub trait Dims {
    /// The lengths for a tensor of `len` elements, with a −1 filled in.
    ///
    /// # Panics
    /// If more than one length is −1, a length is otherwise negative, or the element counts
    /// differ; `op` names the operation and `from` the original shape in the message.
    fn lengths(&self, op: &str, from: &[usize]) -> Vec<usize>;
}

/// Whether two shapes are equal, without calling `memcmp` for 0-d shapes: on AMD Zen 4,
/// glibc's AVX-512 `memcmp` of zero bytes issues a fully masked load that sometimes takes a
/// slow microcode path, which made the scalar graph's backward pass 4× slower (620 against
/// 160 ns per operation, depending on what the process had run before).
#[inline]
pub(crate) fn same_shape(a: &[usize], b: &[usize]) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

/// The shape of a 0-d tensor, for `reshape(SCALAR)` (an empty literal has no element type).
pub const SCALAR: &[usize] = &[];

fn resolve_dims<I: Index>(items: &[I], op: &str, from: &[usize]) -> Vec<usize> {
    let len: usize = from.iter().product();
    let raw: Vec<i64> = items.iter().map(|d| d.to_i64()).collect();
    let inferred: Vec<usize> = raw.iter().enumerate().filter(|(_, &d)| d == -1).map(|(i, _)| i).collect();
    assert!(inferred.len() <= 1, "{op}: only one length can be -1, got {raw:?}");
    assert!(raw.iter().all(|&d| d >= -1), "{op}: negative length in {raw:?}");
    let known: usize = raw.iter().filter(|&&d| d >= 0).map(|&d| d as usize).product();
    let mut out: Vec<usize> = raw.iter().map(|&d| d.max(0) as usize).collect();
    if let Some(&i) = inferred.first() {
        assert!(
            known > 0 && len.is_multiple_of(known),
            "{op}: cannot infer the -1 in {raw:?} for {from:?} ({len} elements)"
        );
        out[i] = len / known;
    }
    let n: usize = out.iter().product();
    assert!(n == len, "{op}: cannot reshape {from:?} ({len} elements) into {raw:?}");
    out
}

impl<I: Index> Dims for [I] {
    fn lengths(&self, op: &str, from: &[usize]) -> Vec<usize> {
        resolve_dims(self, op, from)
    }
}

impl<I: Index, const N: usize> Dims for [I; N] {
    fn lengths(&self, op: &str, from: &[usize]) -> Vec<usize> {
        resolve_dims(&self[..], op, from)
    }
}

impl<I: Index> Dims for Vec<I> {
    fn lengths(&self, op: &str, from: &[usize]) -> Vec<usize> {
        resolve_dims(&self[..], op, from)
    }
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

    #[test]
    fn same_shape_is_slice_equality() {
        static ONE: [usize; 1] = [0];
        assert!(same_shape(&[], &ONE[..0]));
        assert!(same_shape(&[2, 3], &[2, 3]));
        assert!(!same_shape(&[], &[1]));
        assert!(!same_shape(&[2, 3], &[3, 2]));
        assert!(!same_shape(&[2], &[2, 1]));
    }
}
