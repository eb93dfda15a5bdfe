//! Sliding windows over images (NCHW): convolution and pooling.
//!
//! One pair of linear primitives carries all of it. [`Tensor::unfold2d`] (im2col) copies
//! every window of an `[N, C, H, W]` batch into a column of a `[C·kh·kw, N·OH·OW]` matrix;
//! its adjoint `fold2d` (col2im) adds each column back where it came from. Each is the
//! other's VJP and its own JVP, so everything built on them is differentiable to any order:
//!
//! - convolution ([`Tensor::conv2d`], in `convolution.rs`) is a product of the weights with
//!   each image's columns, as three primitives of its own that unfold one image at a time;
//! - `avg_pool2d` is a mean over each column's window positions;
//! - `max_pool2d` picks each window's first maximum by index ([`Tensor::take`]), as
//!   PyTorch does, so ties send the whole gradient to one input.
//!
//! Borders other than implicit zeros (asymmetric, `"same"` with even kernels, reflect,
//! replicate, circular) are an explicit [`Tensor::pad2d`] before the window: a gather
//! ([`Tensor::take`]) or a concatenation, differentiable like the rest.
//!
//! Invariants: inputs are `[N, C, H, W]`, or one unbatched image `[C, H, W]` (treated as a
//! batch of one and returned without the batch axis, as PyTorch does); padding is at most
//! half the (dilated) kernel, as in PyTorch, and with `ceil_mode` the last window starts
//! inside the input or its left padding; window positions that fall on padding or past the
//! input read as 0 and receive no gradient. With dilation a window can fall wholly on
//! padding (a 1×1 input, kernel 2, dilation 2, padding 1): max pooling refuses such a window,
//! naming it, since it has no element to pick.

use std::mem::MaybeUninit;

use ndarray::{ArrayD, IxDyn};

use crate::autodiff::primitive::{record_rule, Cotangents, Primitive};
use crate::ops::kernel::{threads_for, PARALLEL_MIN};
use crate::tensor::{Data, Element, Tensor};

/// The geometry of a 2-D sliding window: kernel size, stride, zero padding and dilation,
/// each as (height, width), and whether a last partial window counts (`ceil_mode`, as in
/// PyTorch's pooling layers).
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
    /// Round the output size up rather than down, so that a last window that runs past
    /// the (padded) input still gives an output, as long as it starts inside the input or
    /// its left padding (PyTorch's `ceil_mode`).
    pub ceil_mode: bool,
}

impl Window2d {
    /// A window of `kernel` with stride 1, no padding, no dilation.
    pub fn new(kernel: [usize; 2]) -> Self {
        Window2d { kernel, stride: [1, 1], padding: [0, 0], dilation: [1, 1], ceil_mode: false }
    }

    /// The same window with the output size rounded up (PyTorch's `ceil_mode=True`).
    ///
    /// ```
    /// use adjoint::ops::Window2d;
    /// let w = Window2d::new([2, 2]).stride(2);
    /// assert_eq!(w.output_size([5, 5]), Some([2, 2]));
    /// assert_eq!(w.ceil_mode(true).output_size([5, 5]), Some([3, 3]));
    /// ```
    pub fn ceil_mode(mut self, ceil_mode: bool) -> Self {
        self.ceil_mode = ceil_mode;
        self
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
            let room = padded - span;
            out[d] = if self.ceil_mode { room.div_ceil(s) } else { room / s } + 1;
            // PyTorch's rule: the last window must start inside the input or its left
            // padding, never wholly in the right padding.
            if self.ceil_mode && (out[d] - 1) * s >= size[d] + p {
                out[d] -= 1;
            }
        }
        Some(out)
    }

    /// Whether some window of an input of `size` reads outside it (padding, or a
    /// `ceil_mode` window running past the end); if not, every tap is a real pixel.
    pub(crate) fn reads_outside(&self, size: [usize; 2], out: [usize; 2]) -> bool {
        (0..2).any(|d| {
            let span = self.dilation[d] * (self.kernel[d] - 1) + 1;
            self.padding[d] > 0 || (out[d] - 1) * self.stride[d] + span > size[d]
        })
    }

    /// `output_size` or a panic naming `op`, the window and the input shape.
    #[track_caller]
    pub(crate) fn output_or_panic(&self, op: &str, shape: &[usize]) -> [usize; 2] {
        assert!(shape.len() == 4, "{op}: needs an [N, C, H, W] input, got shape {shape:?}");
        self.output_size([shape[2], shape[3]])
            .unwrap_or_else(|| panic!("{op}: the window {self:?} does not fit an input of shape {shape:?}"))
    }

    /// Input row (or column) read by output position `o` at kernel tap `k` along `d`,
    /// or `None` on padding.
    #[inline]
    pub(crate) fn source(&self, d: usize, o: usize, k: usize, size: usize) -> Option<usize> {
        let at = (o * self.stride[d] + k * self.dilation[d]).checked_sub(self.padding[d])?;
        (at < size).then_some(at)
    }

    /// For each kernel column `j`, where output columns `0..ow` read in an input row of
    /// `width`: a contiguous run starting at the returned offset when every tap is inside
    /// the row and the stride is 1, otherwise each column's source (`None` on padding).
    /// Computed once per call so the inner loops are copies or table lookups.
    pub(crate) fn column_taps(&self, ow: usize, width: usize) -> Vec<ColumnTaps> {
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
pub(crate) enum ColumnTaps {
    /// Output columns read `start..start + ow`.
    Run(usize),
    /// Output column `x` reads `sources[x]` (nothing on padding).
    Gather(Vec<Option<usize>>),
}

/// Tap `(i, j)` of one channel's `plane` (`size` = [h, w], row-major) for every output
/// position, written to `dst` (`out` = [oh, ow] values, row-major); `taps` is kernel column
/// `j`'s. Positions that read padding are left as they are (zero-filled by the caller).
#[inline]
pub(crate) fn unfold_tap<T: Copy>(
    window: &Window2d,
    taps: &ColumnTaps,
    i: usize,
    plane: &[T],
    [h, w]: [usize; 2],
    [oh, ow]: [usize; 2],
    dst: &mut [MaybeUninit<T>],
) {
    for y in 0..oh {
        let Some(iy) = window.source(0, y, i, h) else { continue };
        let src = &plane[iy * w..][..w];
        let dst = &mut dst[y * ow..][..ow];
        match taps {
            ColumnTaps::Run(start) => copy_run(&src[*start..][..ow], dst),
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

/// `dst = src` for the short runs of an unfold (an output row: 8 elements in LeNet's second
/// layer). A copy loop of unknown length becomes a call to `memcpy`, which costs more than
/// copying a few elements, so the runs go in blocks of 8 and a tail of fixed bound.
#[inline(always)]
fn copy_run<T: Copy>(src: &[T], dst: &mut [MaybeUninit<T>]) {
    let mut blocks = dst.chunks_exact_mut(8);
    let mut from = src.chunks_exact(8);
    for (d, s) in (&mut blocks).zip(&mut from) {
        let s: &[T; 8] = s.try_into().expect("blocks of 8");
        for (d, &v) in d.iter_mut().zip(s) {
            d.write(v);
        }
    }
    let (d, s) = (blocks.into_remainder(), from.remainder());
    for k in 0..8 {
        if k < s.len() {
            d[k].write(s[k]);
        }
    }
}

/// The adjoint of [`unfold_tap`]: `src` (one tap's [oh, ow] values) added back into `plane`.
#[inline]
pub(crate) fn fold_tap<T: Element>(
    window: &Window2d,
    taps: &ColumnTaps,
    i: usize,
    src: &[T],
    [h, w]: [usize; 2],
    [oh, ow]: [usize; 2],
    plane: &mut [T],
) {
    for y in 0..oh {
        let Some(iy) = window.source(0, y, i, h) else { continue };
        let src = &src[y * ow..][..ow];
        let dst = &mut plane[iy * w..][..w];
        match taps {
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

/// How [`Tensor::pad2d`] fills a border (PyTorch's `padding_mode` of `Conv2d` and the
/// modes of `F.pad`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PadMode {
    /// Zeros.
    #[default]
    Zeros,
    /// The input mirrored at its edge, the edge itself not repeated: `[a b c]` padded by
    /// 2 on the left reads `c b | a b c`. Each side's padding must be below the input's
    /// size along that axis.
    Reflect,
    /// The edge value repeated.
    Replicate,
    /// The input wrapped around: the left border is the input's right end. Each side's
    /// padding must be at most the input's size along that axis.
    Circular,
}

impl PadMode {
    /// PyTorch's name for the mode (`zeros`, `reflect`, `replicate`, `circular`).
    pub fn name(self) -> &'static str {
        match self {
            PadMode::Zeros => "zeros",
            PadMode::Reflect => "reflect",
            PadMode::Replicate => "replicate",
            PadMode::Circular => "circular",
        }
    }

    /// The input position read at padded position `i` (counted from the start of the
    /// input, negative in the leading border) along an axis of `size`; `None` for zeros.
    fn source(self, i: isize, size: usize) -> Option<usize> {
        let n = size as isize;
        let at = match self {
            PadMode::Zeros => return (0..n).contains(&i).then_some(i as usize),
            PadMode::Reflect if i < 0 => -i,
            PadMode::Reflect if i >= n => 2 * (n - 1) - i,
            PadMode::Reflect => i,
            PadMode::Replicate => i.clamp(0, n - 1),
            PadMode::Circular => i.rem_euclid(n),
        };
        Some(at as usize)
    }
}

/// Average pooling's divisor, beyond the window (PyTorch's `AvgPool2d` options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPoolOptions {
    /// Count padded positions in the divisor (PyTorch's default `true`); with `false` each
    /// window is divided by the number of real pixels it covers.
    pub count_include_pad: bool,
    /// Divide every window's sum by this instead.
    pub divisor_override: Option<usize>,
}

impl Default for AvgPoolOptions {
    fn default() -> Self {
        AvgPoolOptions { count_include_pad: true, divisor_override: None }
    }
}

/// Runs `f` on `x` as a batch: an unbatched `[C, H, W]` image becomes a batch of one and
/// the result loses the batch axis again, as PyTorch's layers do.
pub(crate) fn as_batch<T: Element>(x: &Tensor<T>, f: impl FnOnce(&Tensor<T>) -> Tensor<T>) -> Tensor<T> {
    if x.ndim() != 3 {
        return f(x);
    }
    let s = x.shape();
    let y = f(&x.reshape(&[1, s[0], s[1], s[2]]));
    let unbatched = y.shape()[1..].to_vec();
    y.reshape(&unbatched[..])
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
        let padded = window.reads_outside([h, w], [oh, ow]);
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
                let plane = &x[(b * c + ch) * h * w..][..h * w];
                unfold_tap(window, &taps[j], i, plane, [h, w], [oh, ow], &mut row[b * oh * ow..][..oh * ow]);
            }
        });
        // SAFETY: when no window reads outside the image every (row, image, y, x) above was
        // written (no `continue` or `None` skipped one); otherwise the buffer was
        // zero-filled first.
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
        for_rows(&mut out, h * w, |at, plane| {
            let (b, ch) = (at / c, at % c);
            for i in 0..kh {
                for j in 0..kw {
                    let row = &cols[((ch * kh + i) * kw + j) * l..][..l];
                    fold_tap(window, &taps[j], i, &row[b * oh * ow..][..oh * ow], [h, w], [oh, ow], plane);
                }
            }
        });
        let out = ArrayD::from_shape_vec(IxDyn(&input), out).expect("sized above");
        record_rule(Fold { window: *window, input }, &[self], Data::from_array(out))
    }

    /// Average pooling over `[N, C, H, W]` (or one `[C, H, W]` image): the mean of each
    /// window, padding counted as zeros (PyTorch's defaults; see
    /// [`Tensor::avg_pool2d_with`] for the other divisors).
    ///
    /// # Panics
    /// If the input is not 3- or 4-D or the window does not fit it.
    #[track_caller]
    pub fn avg_pool2d(&self, window: &Window2d) -> Tensor<T> {
        self.avg_pool2d_with(window, AvgPoolOptions::default())
    }

    /// Average pooling with PyTorch's options: each window's sum divided by the positions
    /// it covers in the padded input (`count_include_pad`, the default; a `ceil_mode`
    /// window running past the padding counts only what it covers), by the real pixels it
    /// covers (`count_include_pad: false`), or by `divisor_override`.
    ///
    /// ```
    /// use adjoint::{ops::{AvgPoolOptions, Window2d}, Tensor};
    /// let x = Tensor::<f64>::ones(&[1, 1, 2, 2]);
    /// let w = Window2d::new([2, 2]).padding(1).stride(2);
    /// let counted = x.avg_pool2d(&w); // each window holds one pixel and three zeros
    /// assert_eq!(counted.to_vec(), vec![0.25; 4]);
    /// let real = AvgPoolOptions { count_include_pad: false, ..Default::default() };
    /// assert_eq!(x.avg_pool2d_with(&w, real).to_vec(), vec![1.0; 4]);
    /// ```
    ///
    /// # Panics
    /// If the input is not 3- or 4-D, the window does not fit it, or the divisor override
    /// is 0.
    #[track_caller]
    pub fn avg_pool2d_with(&self, window: &Window2d, options: AvgPoolOptions) -> Tensor<T> {
        if self.ndim() == 3 {
            return as_batch(self, |x| x.avg_pool2d_with(window, options));
        }
        let [oh, ow] = window.output_or_panic("avg_pool2d", self.shape());
        assert!(options.divisor_override != Some(0), "avg_pool2d: divisor_override must be positive");
        let s = self.shape();
        let (n, c, taps) = (s[0], s[1], window.kernel[0] * window.kernel[1]);
        // Taps of output position `o` along axis `d` that the divisor counts.
        let counted = |d: usize, o: usize| {
            (0..window.kernel[d])
                .filter(|&k| {
                    let at = o * window.stride[d] + k * window.dilation[d]; // in padded coordinates
                    let p = window.padding[d];
                    if options.count_include_pad {
                        at < s[2 + d] + 2 * p
                    } else {
                        (p..s[2 + d] + p).contains(&at)
                    }
                })
                .count()
        };
        let divisor = ArrayD::from_shape_fn(IxDyn(&[oh, ow]), |at| {
            let count = options.divisor_override.unwrap_or_else(|| counted(0, at[0]) * counted(1, at[1]));
            T::from_f64_lossy(count as f64)
        });
        let sums = self.unfold2d(window).reshape(&[c, taps, n * oh * ow]).sum(&[1][..], false);
        (sums.reshape(&[c, n, oh, ow]) / Tensor::from_array(divisor)).permute(&[1, 0, 2, 3]).contiguous()
    }

    /// Max pooling over `[N, C, H, W]` (or one `[C, H, W]` image): the largest element of each window (padding never
    /// wins; NaN propagates). The gradient goes to the first maximum of each window, or to
    /// the window's last NaN if it has any, as in PyTorch's CPU kernel.
    ///
    /// # Panics
    /// If the input is not 3- or 4-D or the window does not fit it.
    #[track_caller]
    pub fn max_pool2d(&self, window: &Window2d) -> Tensor<T> {
        if self.ndim() == 3 {
            return as_batch(self, |x| x.max_pool2d(window));
        }
        let [oh, ow] = window.output_or_panic("max_pool2d", self.shape());
        let s = self.shape();
        let [n, c, h, w] = [s[0], s[1], s[2], s[3]];
        let [kh, kw] = window.kernel;
        let empty = |d: usize, out: usize, size: usize| {
            (0..out).any(|o| (0..window.kernel[d]).all(|k| window.source(d, o, k, size).is_none()))
        };
        assert!(
            !empty(0, oh, h) && !empty(1, ow, w),
            "max_pool2d: the window {window:?} has positions that read only padding in an input of shape {s:?} \
             (no element to pick)"
        );
        let x = self.view();
        let x = x.as_standard_layout();
        let x = x.as_slice().expect("standard layout");
        let (per_out, per_in) = (oh * ow, h * w);
        let mut index = vec![0usize; n * c * per_out];
        let mut values = crate::tensor::pool::zeros::<T>(n * c * per_out);
        let plain = !window.reads_outside([h, w], [oh, ow]);
        // sources[xo * kw + j]: the input column of tap j for output column xo (only windows
        // that read outside the image need it).
        let sources: Vec<Option<usize>> = if plain {
            Vec::new()
        } else {
            (0..ow).flat_map(|xo| (0..kw).map(move |j| window.source(1, xo, j, w))).collect()
        };
        let [sh, sw] = window.stride;
        let [dh, dw] = window.dilation;
        let planes = n * c;
        let threads = threads_for(planes * per_out * kh * kw, PARALLEL_MIN);
        let per_run = planes.div_ceil(threads).max(1);
        type Run<'a, T> = (usize, (&'a mut [usize], &'a mut [T]));
        let runs: Vec<Run<'_, T>> = index
            .chunks_mut(per_run * per_out)
            .zip(values.chunks_mut(per_run * per_out))
            .enumerate()
            .map(|(r, run)| (r * per_run, run))
            .collect();
        crate::ops::kernel::for_each_part(runs, |(first, (index, values))| {
            for (q, (best, top)) in index.chunks_mut(per_out).zip(values.chunks_mut(per_out)).enumerate() {
                let plane = first + q;
                let base = plane * per_in;
                let image = &x[base..][..per_in];
                if plain {
                    // Every tap is inside the image (the usual case). Taps in row-major
                    // order; the first maximum wins, and a NaN wins, the last NaN of the
                    // window (PyTorch's CPU kernel). Which tap wins is data-dependent (ties
                    // of ReLU's zeros, too), so the selects are arithmetic, not branches;
                    // and each tap goes over a whole output row, so the row's outputs are
                    // independent chains the CPU overlaps (one window at a time is a chain
                    // of dependent compares, latency-bound).
                    for y in 0..oh {
                        let (best, top) = (&mut best[y * ow..][..ow], &mut top[y * ow..][..ow]);
                        let corner = y * sh * w;
                        for (xo, (b, t)) in best.iter_mut().zip(top.iter_mut()).enumerate() {
                            *b = corner + xo * sw;
                            *t = image[*b];
                        }
                        for i in 0..kh {
                            for j in 0..kw {
                                if i == 0 && j == 0 {
                                    continue;
                                }
                                let start = corner + i * dh * w + j * dw;
                                for (xo, (b, t)) in best.iter_mut().zip(top.iter_mut()).enumerate() {
                                    let at = start + xo * sw;
                                    let v = image[at];
                                    // `|`, not `||`: a short-circuit is a branch.
                                    let wins = (v > *t) | v.is_nan();
                                    let mask = (wins as usize).wrapping_neg();
                                    *b = (*b & !mask) | (at & mask);
                                    *t = std::hint::select_unpredictable(wins, v, *t);
                                }
                            }
                        }
                        best.iter_mut().for_each(|b| *b += base);
                    }
                    continue;
                }
                for y in 0..oh {
                    for xo in 0..ow {
                        let columns = &sources[xo * kw..][..kw];
                        let mut found = usize::MAX;
                        let mut value = T::neg_infinity();
                        for i in 0..kh {
                            let Some(iy) = window.source(0, y, i, h) else { continue };
                            for ix in columns.iter().flatten() {
                                let v = image[iy * w + ix];
                                // As above: the first maximum, or the last NaN.
                                if found == usize::MAX || v > value || v.is_nan() {
                                    found = iy * w + ix;
                                    value = v;
                                }
                            }
                        }
                        debug_assert!(found != usize::MAX, "padding is at most half the window");
                        best[y * ow + xo] = base + found;
                        top[y * ow + xo] = value;
                    }
                }
            }
        });
        let index = ArrayD::from_shape_vec(IxDyn(&[n, c, oh, ow]), index).expect("sized above");
        let values = ArrayD::from_shape_vec(IxDyn(&[n, c, oh, ow]), values).expect("sized above");
        self.take_computed(index, values, [per_out, per_in])
    }

    /// The last two axes padded: `sides = [[top, bottom], [left, right]]` positions added
    /// before and after along height and width, filled as `mode` says (PyTorch's
    /// `F.pad(x, (left, right, top, bottom), mode)`). Any leading axes are kept. Built on
    /// [`Tensor::take`] (or a concatenation with zeros), so it differentiates to any order:
    /// a border element's gradient goes to the input element it copies.
    ///
    /// ```
    /// use adjoint::{ops::PadMode, Tensor};
    /// let x = Tensor::<f64>::from_vec(vec![1.0, 2.0, 3.0], &[1, 3]);
    /// assert_eq!(x.pad2d([[0, 0], [2, 1]], PadMode::Reflect).to_vec(), [3.0, 2.0, 1.0, 2.0, 3.0, 2.0]);
    /// assert_eq!(x.pad2d([[0, 0], [2, 1]], PadMode::Replicate).to_vec(), [1.0, 1.0, 1.0, 2.0, 3.0, 3.0]);
    /// assert_eq!(x.pad2d([[0, 0], [2, 1]], PadMode::Circular).to_vec(), [2.0, 3.0, 1.0, 2.0, 3.0, 1.0]);
    /// assert_eq!(x.pad2d([[1, 0], [0, 1]], PadMode::Zeros).to_vec(), [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 0.0]);
    /// ```
    ///
    /// # Panics
    /// If the tensor has fewer than two axes, or the padding does not fit the mode: reflect
    /// needs each side below the axis' size, circular at most the size, replicate a
    /// non-empty axis.
    #[track_caller]
    pub fn pad2d(&self, sides: [[usize; 2]; 2], mode: PadMode) -> Tensor<T> {
        let shape = self.shape().to_vec();
        assert!(shape.len() >= 2, "pad2d: needs at least two axes, got shape {shape:?}");
        let r = shape.len() - 2;
        let (h, w) = (shape[r], shape[r + 1]);
        for (d, &size) in [h, w].iter().enumerate() {
            let [before, after] = sides[d];
            let fits = match mode {
                PadMode::Zeros => true,
                PadMode::Reflect => before < size && after < size,
                PadMode::Circular => before <= size && after <= size,
                PadMode::Replicate => size > 0 || before + after == 0,
            };
            assert!(
                fits,
                "pad2d: {} padding of {:?} does not fit an input of shape {shape:?} (reflect needs each side \
                 below the size, circular at most the size)",
                mode.name(),
                sides[d]
            );
        }
        if sides == [[0, 0], [0, 0]] {
            return self.identity();
        }
        let (ph, pw) = (h + sides[0][0] + sides[0][1], w + sides[1][0] + sides[1][1]);
        if mode == PadMode::Zeros {
            let mut x = self.clone();
            for (axis, [before, after]) in [(r, sides[0]), (r + 1, sides[1])] {
                let mut edge = x.shape().to_vec();
                let mut parts = Vec::with_capacity(3);
                edge[axis] = before;
                let head = Tensor::zeros(&edge);
                edge[axis] = after;
                let tail = Tensor::zeros(&edge);
                if before > 0 {
                    parts.push(&head);
                }
                parts.push(&x);
                if after > 0 {
                    parts.push(&tail);
                }
                let joined = Tensor::concat(&parts, axis as isize);
                x = joined;
            }
            return x;
        }
        let rows: Vec<usize> =
            (0..ph).map(|y| mode.source(y as isize - sides[0][0] as isize, h).expect("not zeros")).collect();
        let columns: Vec<usize> =
            (0..pw).map(|x| mode.source(x as isize - sides[1][0] as isize, w).expect("not zeros")).collect();
        let mut padded = shape.clone();
        padded[r] = ph;
        padded[r + 1] = pw;
        let index = ArrayD::from_shape_fn(IxDyn(&padded), |at| {
            let lead = (0..r).fold(0, |flat, d| flat * shape[d] + at[d]);
            (lead * h + rows[at[r]]) * w + columns[at[r + 1]]
        });
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
