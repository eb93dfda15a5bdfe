//! Sliding windows over images (NCHW): convolution and pooling.
//!
//! One pair of linear primitives carries all of it. [`Tensor::unfold2d`] (im2col) copies
//! every window of an `[N, C, H, W]` batch into a column of a `[C·kh·kw, N·OH·OW]` matrix;
//! its adjoint `fold2d` (col2im) adds each column back where it came from. Each is the
//! other's VJP and its own JVP, so everything built on them is differentiable to any order:
//!
//! - `conv2d` is one GEMM of the weights `[O, C/G·kh·kw]` with the columns per group (one
//!   product over the whole batch, not one per image), then a permutation to NCHW;
//! - `avg_pool2d` is a mean over each column's window positions;
//! - `max_pool2d` picks each window's first maximum by index ([`Tensor::take`]), as
//!   PyTorch does, so ties send the whole gradient to one input.
//!
//! Invariants: inputs are 4-D; padding is at most half the (dilated) kernel, as in PyTorch,
//! so every window holds at least one real pixel; window positions that fall on padding
//! read as 0 and receive no gradient.

use std::mem::MaybeUninit;

use ndarray::{ArrayD, IxDyn};

use crate::autodiff::primitive::{record_rule, Cotangents, Primitive};
use crate::ops::kernel::{threads_for, PARALLEL_MIN};
use crate::tensor::{Data, Element, Tensor};

/// The geometry of a 2-D sliding window: kernel size, stride, zero padding and dilation,
/// each as (height, width).
///
/// ```
/// use adjoint::ops::Window2d;
/// let w = Window2d::new([5, 5]).stride(2).padding(2);
/// assert_eq!(w.output_size([28, 28]), Some([14, 14]));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window2d {
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Step between windows.
    pub stride: [usize; 2],
    /// Implicit padding on each side.
    pub padding: [usize; 2],
    /// Spacing between kernel taps (1: adjacent).
    pub dilation: [usize; 2],
}

impl Window2d {
    /// A window of `kernel` with stride 1, no padding, no dilation.
    pub fn new(kernel: [usize; 2]) -> Self {
        Window2d { kernel, stride: [1, 1], padding: [0, 0], dilation: [1, 1] }
    }

    /// The same window with this stride in both directions.
    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = [stride, stride];
        self
    }

    /// The same window with this padding on every side.
    pub fn padding(mut self, padding: usize) -> Self {
        self.padding = [padding, padding];
        self
    }

    /// The same window with this dilation in both directions.
    pub fn dilation(mut self, dilation: usize) -> Self {
        self.dilation = [dilation, dilation];
        self
    }

    /// The output height and width for an input of `size`, or `None` when the window does
    /// not fit (larger than the padded input, a zero stride or kernel, or padding over half
    /// the dilated kernel).
    pub fn output_size(&self, size: [usize; 2]) -> Option<[usize; 2]> {
        let mut out = [0; 2];
        for d in 0..2 {
            let (k, s, p, dil) = (self.kernel[d], self.stride[d], self.padding[d], self.dilation[d]);
            if k == 0 || s == 0 || dil == 0 {
                return None;
            }
            let span = dil.checked_mul(k - 1)?.checked_add(1)?;
            let padded = size[d].checked_add(p.checked_mul(2)?)?;
            if span > padded || 2 * p > span {
                return None;
            }
            out[d] = (padded - span) / s + 1;
        }
        Some(out)
    }

    /// `output_size` or a panic naming `op`, the window and the input shape.
    #[track_caller]
    fn output_or_panic(&self, op: &str, shape: &[usize]) -> [usize; 2] {
        assert!(shape.len() == 4, "{op}: needs an [N, C, H, W] input, got shape {shape:?}");
        self.output_size([shape[2], shape[3]])
            .unwrap_or_else(|| panic!("{op}: the window {self:?} does not fit an input of shape {shape:?}"))
    }

    /// Input row (or column) read by output position `o` at kernel tap `k` along `d`,
    /// or `None` on padding.
    #[inline]
    fn source(&self, d: usize, o: usize, k: usize, size: usize) -> Option<usize> {
        let at = (o * self.stride[d] + k * self.dilation[d]).checked_sub(self.padding[d])?;
        (at < size).then_some(at)
    }

    /// For each kernel column `j`, where output columns `0..ow` read in an input row of
    /// `width`: a contiguous run starting at the returned offset when every tap is inside
    /// the row and the stride is 1, otherwise each column's source (`None` on padding).
    /// Computed once per call so the inner loops are copies or table lookups.
    fn column_taps(&self, ow: usize, width: usize) -> Vec<ColumnTaps> {
        (0..self.kernel[1])
            .map(|j| {
                let sources: Vec<Option<usize>> = (0..ow).map(|x| self.source(1, x, j, width)).collect();
                match sources.first() {
                    Some(Some(first)) if self.stride[1] == 1 && sources.iter().all(Option::is_some) => {
                        ColumnTaps::Run(*first)
                    }
                    _ => ColumnTaps::Gather(sources),
                }
            })
            .collect()
    }
}

/// Where one kernel column's taps fall in an input row (see [`Window2d::column_taps`]).
enum ColumnTaps {
    /// Output columns read `start..start + ow`.
    Run(usize),
    /// Output column `x` reads `sources[x]` (nothing on padding).
    Gather(Vec<Option<usize>>),
}

/// im2col: `[N, C, H, W]` → `[C·kh·kw, N·OH·OW]`.
struct Unfold {
    window: Window2d,
    input: [usize; 4],
}
impl<T: Element> Primitive<T> for Unfold {
    fn name(&self) -> &'static str {
        "unfold2d"
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        [Some(g.fold2d(&self.window, self.input))].into()
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| t.unfold2d(&self.window))
    }
    fn parameters(&self) -> Vec<f64> {
        let w = &self.window;
        [w.kernel, w.stride, w.padding, w.dilation].iter().flatten().map(|&v| v as f64).collect()
    }
}

/// col2im: the adjoint of [`Unfold`], adding each column back into its window.
struct Fold {
    window: Window2d,
    input: [usize; 4],
}
impl<T: Element> Primitive<T> for Fold {
    fn name(&self) -> &'static str {
        "fold2d"
    }
    fn vjp(&self, _: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        [Some(g.unfold2d(&self.window))].into()
    }
    fn jvp(&self, _: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        t[0].as_ref().map(|t| t.fold2d(&self.window, self.input))
    }
}

/// Runs `f(row_index, row)` over the rows of `out` (of length `len` each), in parallel
/// when there is enough work.
fn for_rows<T: Send>(out: &mut [T], len: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if len == 0 {
        return;
    }
    let threads = threads_for(out.len(), PARALLEL_MIN);
    if threads > 1 {
        crate::ops::kernel::for_each_run(out, len, threads, f);
    } else {
        out.chunks_mut(len).enumerate().for_each(|(r, row)| f(r, row));
    }
}

impl<T: Element> Tensor<T> {
    /// Every window of an `[N, C, H, W]` batch as a column (im2col): the result is
    /// `[C·kh·kw, N·OH·OW]`, row `(c, i, j)` holding tap `(i, j)` of channel `c` for every
    /// output position of every image. Taps on padding are 0.
    ///
    /// # Panics
    /// If the input is not 4-D or the window does not fit it.
    #[track_caller]
    pub fn unfold2d(&self, window: &Window2d) -> Tensor<T> {
        let [oh, ow] = window.output_or_panic("unfold2d", self.shape());
        let s = self.shape();
        let [n, c, h, w] = [s[0], s[1], s[2], s[3]];
        let [kh, kw] = window.kernel;
        let x = self.view();
        let x = x.as_standard_layout();
        let x = x.as_slice().expect("standard layout");
        let l = n * oh * ow;
        // Without padding every element is written below, so the buffer is not zero-filled
        // first (for a large convolution that fill costs as much as the copy).
        let mut out: Vec<MaybeUninit<T>> = Vec::with_capacity(c * kh * kw * l);
        let zero = MaybeUninit::new(T::zero());
        let padded = window.padding != [0, 0];
        if padded {
            out.resize(c * kh * kw * l, zero);
        } else {
            // SAFETY: MaybeUninit needs no initialisation.
            unsafe { out.set_len(c * kh * kw * l) };
        }
        let taps = window.column_taps(ow, w);
        for_rows(&mut out, l, |r, row| {
            let (ch, i, j) = (r / (kh * kw), r / kw % kh, r % kw);
            for b in 0..n {
                let image = &x[(b * c + ch) * h * w..][..h * w];
                for y in 0..oh {
                    let Some(iy) = window.source(0, y, i, h) else { continue };
                    let src = &image[iy * w..][..w];
                    let dst = &mut row[(b * oh + y) * ow..][..ow];
                    match &taps[j] {
                        ColumnTaps::Run(start) => {
                            for (d, &v) in dst.iter_mut().zip(&src[*start..][..ow]) {
                                d.write(v);
                            }
                        }
                        ColumnTaps::Gather(sources) => {
                            for (d, ix) in dst.iter_mut().zip(sources) {
                                if let Some(ix) = ix {
                                    d.write(src[*ix]);
                                }
                            }
                        }
                    }
                }
            }
        });
        // SAFETY: without padding every (row, image, y, x) above was written (no tap falls
        // outside the image, so no `continue` or `None` skipped one); with padding the
        // buffer was zero-filled first.
        let out: Vec<T> = unsafe {
            let mut out = std::mem::ManuallyDrop::new(out);
            Vec::from_raw_parts(out.as_mut_ptr().cast::<T>(), out.len(), out.capacity())
        };
        let out = ArrayD::from_shape_vec(IxDyn(&[c * kh * kw, l]), out).expect("sized above");
        record_rule(Unfold { window: *window, input: [n, c, h, w] }, &[self], Data::from_array(out))
    }

    /// The adjoint of [`Tensor::unfold2d`] (col2im): columns `[C·kh·kw, N·OH·OW]` added back
    /// into an `[N, C, H, W]` batch of shape `input`; overlapping windows add up.
    ///
    /// # Panics
    /// If the shape of `self` is not the one `unfold2d` gives for `input` and `window`.
    #[track_caller]
    pub fn fold2d(&self, window: &Window2d, input: [usize; 4]) -> Tensor<T> {
        let [oh, ow] = window.output_or_panic("fold2d", &input);
        let [n, c, h, w] = input;
        let [kh, kw] = window.kernel;
        let l = n * oh * ow;
        assert!(
            self.shape() == [c * kh * kw, l],
            "fold2d: columns of shape {:?} do not come from an input of shape {input:?} with {window:?}",
            self.shape()
        );
        let cols = self.view();
        let cols = cols.as_standard_layout();
        let cols = cols.as_slice().expect("standard layout");
        let mut out = vec![T::zero(); n * c * h * w];
        let taps = window.column_taps(ow, w);
        // One output plane per (image, channel): planes are written by one thread each.
        for_rows(&mut out, h * w, |plane, image| {
            let (b, ch) = (plane / c, plane % c);
            for i in 0..kh {
                for j in 0..kw {
                    let row = &cols[((ch * kh + i) * kw + j) * l..][..l];
                    for y in 0..oh {
                        let Some(iy) = window.source(0, y, i, h) else { continue };
                        let src = &row[(b * oh + y) * ow..][..ow];
                        let dst = &mut image[iy * w..][..w];
                        match &taps[j] {
                            ColumnTaps::Run(start) => {
                                for (d, &v) in dst[*start..][..ow].iter_mut().zip(src) {
                                    *d += v;
                                }
                            }
                            ColumnTaps::Gather(sources) => {
                                for (&v, ix) in src.iter().zip(sources) {
                                    if let Some(ix) = ix {
                                        dst[*ix] += v;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        });
        let out = ArrayD::from_shape_vec(IxDyn(&input), out).expect("sized above");
        record_rule(Fold { window: *window, input }, &[self], Data::from_array(out))
    }

    /// 2-D convolution (cross-correlation, as PyTorch's `conv2d`) of an `[N, C, H, W]` batch
    /// with `weight` `[O, C/groups, kh, kw]` and an optional `bias` `[O]`; the window's kernel
    /// size must be the weight's. Gives `[N, O, OH, OW]`.
    ///
    /// ```
    /// use adjoint::{ops::Window2d, Tensor};
    /// let x = Tensor::<f64>::from_vec((0..16).map(f64::from).collect(), &[1, 1, 4, 4]);
    /// let w = Tensor::from_vec(vec![1.0, 0.0, 0.0, -1.0], &[1, 1, 2, 2]);
    /// let y = x.conv2d(&w, None, &Window2d::new([2, 2]), 1);
    /// assert_eq!(y.shape(), [1, 1, 3, 3]);
    /// assert!(y.to_vec().iter().all(|&v| v == -5.0)); // x[i][j] − x[i+1][j+1]
    /// ```
    ///
    /// # Panics
    /// If the shapes do not fit, naming them.
    #[track_caller]
    pub fn conv2d(&self, weight: &Tensor<T>, bias: Option<&Tensor<T>>, window: &Window2d, groups: usize) -> Tensor<T> {
        let (sx, sw) = (self.shape(), weight.shape());
        let fits = sx.len() == 4
            && sw.len() == 4
            && groups > 0
            && sx[1] % groups == 0
            && sw[0] % groups == 0
            && sw[1] * groups == sx[1]
            && [sw[2], sw[3]] == window.kernel;
        assert!(
            fits,
            "conv2d: input of shape {sx:?} does not fit a weight of shape {sw:?} with kernel {:?} and {groups} group(s) \
             (input [N, C, H, W], weight [O, C/groups, kh, kw])",
            window.kernel
        );
        if let Some(b) = bias {
            assert!(b.shape() == [sw[0]], "conv2d: bias of shape {:?} for a weight of shape {sw:?}", b.shape());
        }
        let [oh, ow] = window.output_or_panic("conv2d", sx);
        let (n, o) = (sx[0], sw[0]);
        let per_group = sw[1] * sw[2] * sw[3];
        let cols = self.unfold2d(window).reshape(&[groups, per_group, n * oh * ow]);
        let w = weight.reshape(&[groups, o / groups, per_group]);
        let mut y = w.matmul(&cols).reshape(&[o, n, oh, ow]);
        if let Some(b) = bias {
            y = y + b.reshape(&[o, 1, 1, 1]);
        }
        y.permute(&[1, 0, 2, 3]).contiguous()
    }

    /// Average pooling over `[N, C, H, W]`: the mean of each window, padding counted as
    /// zeros (PyTorch's default `count_include_pad=True`).
    ///
    /// # Panics
    /// If the input is not 4-D or the window does not fit it.
    #[track_caller]
    pub fn avg_pool2d(&self, window: &Window2d) -> Tensor<T> {
        let [oh, ow] = window.output_or_panic("avg_pool2d", self.shape());
        let s = self.shape();
        let (n, c, taps) = (s[0], s[1], window.kernel[0] * window.kernel[1]);
        self.unfold2d(window)
            .reshape(&[c, taps, n * oh * ow])
            .mean(&[1][..], false)
            .reshape(&[c, n, oh, ow])
            .permute(&[1, 0, 2, 3])
            .contiguous()
    }

    /// Max pooling over `[N, C, H, W]`: the largest element of each window (padding never
    /// wins; NaN propagates). The gradient goes to the first maximum of each window, or to
    /// the window's last NaN if it has any, as in PyTorch's CPU kernel.
    ///
    /// # Panics
    /// If the input is not 4-D or the window does not fit it.
    #[track_caller]
    pub fn max_pool2d(&self, window: &Window2d) -> Tensor<T> {
        let [oh, ow] = window.output_or_panic("max_pool2d", self.shape());
        let s = self.shape();
        let [n, c, h, w] = [s[0], s[1], s[2], s[3]];
        let [kh, kw] = window.kernel;
        let x = self.view();
        let x = x.as_standard_layout();
        let x = x.as_slice().expect("standard layout");
        let mut index = vec![0usize; n * c * oh * ow];
        // sources[xo * kw + j]: the input column of tap j for output column xo.
        let sources: Vec<Option<usize>> =
            (0..ow).flat_map(|xo| (0..kw).map(move |j| window.source(1, xo, j, w))).collect();
        let plain = window.padding == [0, 0] && window.dilation == [1, 1];
        for_rows(&mut index, oh * ow, |plane, out| {
            let base = plane * h * w;
            if plain {
                // No padding, no dilation (the usual case): every tap is inside the image.
                for y in 0..oh {
                    for xo in 0..ow {
                        let corner = base + y * window.stride[0] * w + xo * window.stride[1];
                        let (mut best, mut top, mut nan) = (corner, x[corner], false);
                        // Branch-free selects: which tap wins is data-dependent and would
                        // mispredict about half the time.
                        for i in 0..kh {
                            let row = corner + i * w;
                            for (j, &v) in x[row..row + kw].iter().enumerate() {
                                let greater = v > top;
                                best = if greater { row + j } else { best };
                                top = if greater { v } else { top };
                                nan |= v.is_nan();
                            }
                        }
                        if nan {
                            // NaN propagates: the last NaN of the window wins, as in
                            // PyTorch's CPU kernel.
                            best = (0..kh)
                                .flat_map(|i| (0..kw).map(move |j| corner + i * w + j))
                                .rfind(|&at| x[at].is_nan())
                                .expect("a NaN was seen");
                        }
                        out[y * ow + xo] = best;
                    }
                }
                return;
            }
            for y in 0..oh {
                for xo in 0..ow {
                    let columns = &sources[xo * kw..][..kw];
                    let mut best = usize::MAX;
                    let mut top = T::neg_infinity();
                    for i in 0..kh {
                        let Some(iy) = window.source(0, y, i, h) else { continue };
                        let row = base + iy * w;
                        for ix in columns.iter().flatten() {
                            let v = x[row + ix];
                            // The first maximum wins; a NaN wins, and the last NaN (as in
                            // PyTorch's CPU kernel).
                            if best == usize::MAX || v > top || v.is_nan() {
                                best = row + ix;
                                top = v;
                            }
                        }
                    }
                    debug_assert!(best != usize::MAX, "padding is at most half the window");
                    out[y * ow + xo] = best;
                }
            }
        });
        let index = ArrayD::from_shape_vec(IxDyn(&[n, c, oh, ow]), index).expect("sized above");
        self.take(&index)
    }

    /// The batch with everything after the first axis flattened: `[N, …]` → `[N, rest]`.
    ///
    /// # Panics
    /// If the tensor has no axes.
    #[track_caller]
    pub fn flatten(&self) -> Tensor<T> {
        assert!(self.ndim() >= 1, "flatten: needs a batch axis, got a scalar");
        let n = self.shape()[0];
        let rest = self.shape()[1..].iter().product::<usize>();
        self.reshape(&[n, rest])
    }
}
