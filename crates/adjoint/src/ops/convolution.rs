//! 2-D convolution as three primitives that are each other's rules: the convolution
//! `y = conv(x, W) + b`, its transpose in the input `∂x = conv_input(g, W)` and its transpose
//! in the weight `∂W = conv_weight(x, g)`.
//!
//! With `U(x)` the columns of [`Tensor::unfold2d`] (one image's `[C·kh·kw, OH·OW]`) and `F`
//! its adjoint (fold), per image and group: `y = W·U(x)`, `conv_input(g, W) = F(Wᵀ·g)` and
//! `conv_weight(x, g) = Σ_images g·U(x)ᵀ`. Each is bilinear, and the adjoint of each in
//! either argument is one of the three again:
//!
//! | primitive | cotangent `h` to its first input | to its second input |
//! |---|---|---|
//! | `conv(x, W)` | `conv_input(h, W)` | `conv_weight(x, h)` |
//! | `conv_input(g, W)` | `conv(h, W)` | `conv_weight(h, g)` |
//! | `conv_weight(x, g)` | `conv_input(g, h)` | `conv(x, h)` |
//!
//! so gradients of any order stay within these kernels (as JAX's `conv_general_dilated`
//! transposes into itself). The result is the same as `unfold2d`, a product and a
//! permutation to NCHW (the composed rule; tested against it to second order), without the
//! batch's column matrix or the permutation's copies: each task unfolds one image at a time
//! into a buffer of its own, multiplies it in place in the output, and adds the bias there.
//!
//! Invariants: the batch is cut into tasks of whole images, one per thread, when there are
//! at least as many images as threads (each product then runs on its task's thread);
//! otherwise the images go one after the other and each product is shared between the
//! threads. Positions on padding read 0 and receive nothing.

use std::mem::MaybeUninit;

use ndarray::{ArrayD, ArrayView2, ArrayViewMut2, IxDyn};

use crate::autodiff::primitive::{add_optional, record_rule, Cotangents, Primitive};
use crate::ops::conv::{as_batch, fold_tap, unfold_tap, ColumnTaps, Window2d};
use crate::ops::kernel::{for_each_part, threads_for, wants};
use crate::ops::matmul::{gemm_into_on, PARALLEL_WORK};
use crate::tensor::{pool, Data, Element, Tensor};

/// The sizes of one convolution, shared by its three primitives.
#[derive(Debug, Clone, Copy)]
struct ConvShape {
    window: Window2d,
    groups: usize,
    /// The input's `[N, C, H, W]`.
    input: [usize; 4],
    /// Output channels.
    channels: usize,
    /// Output height and width.
    out: [usize; 2],
}

impl ConvShape {
    fn taps(&self) -> usize {
        self.window.kernel[0] * self.window.kernel[1]
    }
    /// Rows of one group's columns (and columns of its weight matrix): C/G · kh · kw.
    fn rows(&self) -> usize {
        self.input[1] / self.groups * self.taps()
    }
    fn channels_per_group(&self) -> usize {
        self.channels / self.groups
    }
    fn positions(&self) -> usize {
        self.out[0] * self.out[1]
    }
    fn image_len(&self) -> usize {
        self.input[1] * self.input[2] * self.input[3]
    }
    fn output_shape(&self) -> [usize; 4] {
        [self.input[0], self.channels, self.out[0], self.out[1]]
    }
    fn weight_shape(&self) -> [usize; 4] {
        [self.channels, self.input[1] / self.groups, self.window.kernel[0], self.window.kernel[1]]
    }
    /// Tasks to cut the batch into (see the module's invariants).
    fn tasks(&self) -> usize {
        let work = self.input[0] * self.channels * self.rows() * self.positions();
        let threads = threads_for(work, PARALLEL_WORK);
        if threads > 1 && self.input[0] >= threads {
            threads
        } else {
            1
        }
    }
    fn column_taps(&self) -> Vec<ColumnTaps> {
        self.window.column_taps(self.out[1], self.input[3])
    }
    /// A buffer for one image's columns, zero where windows read padding (those positions
    /// are never written, so the zeros last while the buffer is reused).
    fn column_buffer<T: Element>(&self) -> Vec<MaybeUninit<T>> {
        let len = self.input[1] * self.taps() * self.positions();
        let padded = self.window.reads_outside([self.input[2], self.input[3]], self.out);
        let mut buffer = pool::vec_for::<T>(len);
        if padded {
            buffer.resize(len, T::zero());
        }
        let mut buffer = std::mem::ManuallyDrop::new(buffer);
        // SAFETY: `MaybeUninit<T>` has `T`'s layout; the first `len` elements need no
        // initialisation as MaybeUninit (and are zeros when padded).
        unsafe { Vec::from_raw_parts(buffer.as_mut_ptr().cast::<MaybeUninit<T>>(), len, buffer.capacity()) }
    }

    /// Every window of one `image` (`[C, H, W]`, row-major) as its columns
    /// `[C·kh·kw, OH·OW]`, rows in (channel, tap row, tap column) order.
    fn unfold_image<T: Element>(&self, taps: &[ColumnTaps], image: &[T], columns: &mut [MaybeUninit<T>]) {
        let [_, c, h, w] = self.input;
        let [kh, kw] = self.window.kernel;
        let p = self.positions();
        for ch in 0..c {
            let plane = &image[ch * h * w..][..h * w];
            for i in 0..kh {
                for (j, taps) in taps.iter().enumerate().take(kw) {
                    let row = (ch * kh + i) * kw + j;
                    unfold_tap(&self.window, taps, i, plane, [h, w], self.out, &mut columns[row * p..][..p]);
                }
            }
        }
    }

    /// The adjoint of [`ConvShape::unfold_image`]: columns added back into `image`.
    fn fold_image<T: Element>(&self, taps: &[ColumnTaps], columns: &[T], image: &mut [T]) {
        let [_, c, h, w] = self.input;
        let [kh, kw] = self.window.kernel;
        let p = self.positions();
        for ch in 0..c {
            let plane = &mut image[ch * h * w..][..h * w];
            for i in 0..kh {
                for (j, taps) in taps.iter().enumerate().take(kw) {
                    let row = (ch * kh + i) * kw + j;
                    fold_tap(&self.window, taps, i, &columns[row * p..][..p], [h, w], self.out, plane);
                }
            }
        }
    }

    fn parameters(&self) -> Vec<f64> {
        let w = &self.window;
        let mut p: Vec<f64> = [w.kernel, w.stride, w.padding, w.dilation].iter().flatten().map(|&v| v as f64).collect();
        p.push(self.groups as f64);
        p
    }
}

/// The elements of a buffer whose every element has been written.
///
/// # Safety
/// Every element of `buffer` must be initialised.
unsafe fn written<T>(buffer: &[MaybeUninit<T>]) -> &[T] {
    // SAFETY: the caller guarantees initialisation; the layouts are the same.
    unsafe { std::slice::from_raw_parts(buffer.as_ptr().cast::<T>(), buffer.len()) }
}

/// A row-major `[rows, cols]` matrix over `data` from `offset`.
fn matrix<T>(data: &[T], offset: usize, rows: usize, cols: usize) -> ArrayView2<'_, T> {
    ArrayView2::from_shape((rows, cols), &data[offset..][..rows * cols]).expect("sized by the caller")
}

/// Runs `f(first_image, run)` over `out` (`per_image` elements per image) cut into `tasks`
/// runs of whole images, in parallel.
fn over_images<E: Send>(out: &mut [E], per_image: usize, tasks: usize, f: impl Fn(usize, &mut [E]) + Sync) {
    let images = out.len() / per_image.max(1);
    let per_run = images.div_ceil(tasks.max(1)).max(1);
    let runs: Vec<(usize, &mut [E])> =
        out.chunks_mut(per_run * per_image.max(1)).enumerate().map(|(i, run)| (i * per_run, run)).collect();
    for_each_part(runs, |(first, run)| f(first, run));
}

/// `y = conv(x, W) + b` as `[N, O, OH, OW]`.
fn forward<T: Element>(s: &ConvShape, x: &[T], weight: &[T], bias: Option<&[T]>) -> ArrayD<T> {
    let (k, og, p) = (s.rows(), s.channels_per_group(), s.positions());
    let tasks = s.tasks();
    let taps = s.column_taps();
    let mut out = pool::array_uninit::<T>(&s.output_shape());
    let per_image = s.channels * p;
    let flat = out.as_slice_mut().expect("fresh arrays are row-major");
    over_images(flat, per_image, tasks, |first, run| {
        let mut columns = s.column_buffer::<T>();
        for (b, y) in run.chunks_mut(per_image).enumerate() {
            s.unfold_image(&taps, &x[(first + b) * s.image_len()..][..s.image_len()], &mut columns);
            // SAFETY: `unfold_image` wrote every position that does not read padding, and
            // those that do were zero-filled by `column_buffer`.
            let columns = unsafe { written(&columns) };
            for g in 0..s.groups {
                // SAFETY: this image's output rows of group g, inside `y`; gemm writes them
                // without reading them (no accumulation).
                let mut dst =
                    unsafe { ArrayViewMut2::from_shape_ptr((og, p), y.as_mut_ptr().cast::<T>().add(g * og * p)) };
                let w = matrix(weight, g * og * k, og, k);
                gemm_into_on(&mut dst, w, matrix(columns, g * k * p, k, p), false, tasks == 1);
                if let Some(bias) = bias {
                    for (o, mut row) in dst.rows_mut().into_iter().enumerate() {
                        let b = bias[g * og + o];
                        row.iter_mut().for_each(|v| *v += b);
                    }
                }
            }
        }
    });
    // SAFETY: every image's every output row was written by gemm above.
    unsafe { out.assume_init() }
}

/// `∂x = conv_input(g, W)`: each image's `Wᵀ·g` folded back, `[N, C, H, W]`.
fn input_grad<T: Element>(s: &ConvShape, g: &[T], weight: &[T]) -> ArrayD<T> {
    let (k, og, p) = (s.rows(), s.channels_per_group(), s.positions());
    let tasks = s.tasks();
    let taps = s.column_taps();
    let mut out = pool::array_zeros::<T>(&s.input);
    let flat = out.as_slice_mut().expect("fresh arrays are row-major");
    over_images(flat, s.image_len(), tasks, |first, run| {
        let mut columns = s.column_buffer::<T>();
        for (b, image) in run.chunks_mut(s.image_len()).enumerate() {
            let gb = &g[(first + b) * s.channels * p..][..s.channels * p];
            for grp in 0..s.groups {
                // SAFETY: group grp's rows of the buffer, written by gemm without reading.
                let mut dst =
                    unsafe { ArrayViewMut2::from_shape_ptr((k, p), columns.as_mut_ptr().cast::<T>().add(grp * k * p)) };
                let w = matrix(weight, grp * og * k, og, k);
                gemm_into_on(&mut dst, w.t(), matrix(gb, grp * og * p, og, p), false, tasks == 1);
            }
            // SAFETY: the products above wrote every row of every group.
            s.fold_image(&taps, unsafe { written(&columns) }, image);
        }
    });
    out
}

/// `∂W = conv_weight(x, g)`: `Σ_images g·U(x)ᵀ`, `[O, C/G, kh, kw]`. Each task sums its
/// images into a matrix of its own; the tasks' matrices are added at the end.
fn weight_grad<T: Element>(s: &ConvShape, x: &[T], g: &[T]) -> ArrayD<T> {
    let (k, og, p) = (s.rows(), s.channels_per_group(), s.positions());
    let n = s.input[0];
    let tasks = s.tasks();
    let taps = s.column_taps();
    let len = s.channels * k;
    if len == 0 {
        // No output channels, or no input channels: an empty weight, an empty gradient.
        return pool::array_zeros(&s.weight_shape());
    }
    let mut partial = pool::zeros::<T>(tasks * len);
    let per_run = n.div_ceil(tasks);
    let parts: Vec<(usize, &mut [T])> = partial.chunks_mut(len).enumerate().map(|(t, m)| (t * per_run, m)).collect();
    for_each_part(parts, |(first, sum)| {
        let mut columns = s.column_buffer::<T>();
        for b in first..(first + per_run).min(n) {
            s.unfold_image(&taps, &x[b * s.image_len()..][..s.image_len()], &mut columns);
            // SAFETY: as in `forward`.
            let columns = unsafe { written(&columns) };
            let gb = &g[b * s.channels * p..][..s.channels * p];
            for grp in 0..s.groups {
                let mut dst = ArrayViewMut2::from_shape((og, k), &mut sum[grp * og * k..][..og * k]).expect("sized");
                let cols = matrix(columns, grp * k * p, k, p);
                gemm_into_on(&mut dst, matrix(gb, grp * og * p, og, p), cols.t(), true, tasks == 1);
            }
        }
    });
    let mut out = pool::vec_for::<T>(len);
    out.extend_from_slice(&partial[..len]);
    for other in partial[len..].chunks(len) {
        out.iter_mut().zip(other).for_each(|(a, &b)| *a += b);
    }
    pool::give(partial);
    ArrayD::from_shape_vec(IxDyn(&s.weight_shape()), out).expect("sized above")
}

/// A tensor's elements in row-major order (a copy only when it is not row-major already).
fn elements<T: Element>(t: &Tensor<T>, f: impl FnOnce(&[T]) -> ArrayD<T>) -> ArrayD<T> {
    let view = t.view();
    let standard = view.as_standard_layout();
    f(standard.as_slice().expect("standard layout"))
}

fn conv<T: Element>(s: &ConvShape, x: &Tensor<T>, weight: &Tensor<T>, bias: Option<&Tensor<T>>) -> Tensor<T> {
    let y = elements(x, |xs| {
        elements(weight, |ws| match bias {
            Some(b) => elements(b, |bs| forward(s, xs, ws, Some(bs))),
            None => forward(s, xs, ws, None),
        })
    });
    let inputs: Vec<&Tensor<T>> = [Some(x), Some(weight), bias].into_iter().flatten().collect();
    record_rule(Conv { shape: *s }, &inputs, Data::from_array(y))
}

fn conv_input<T: Element>(s: &ConvShape, g: &Tensor<T>, weight: &Tensor<T>) -> Tensor<T> {
    let dx = elements(g, |gs| elements(weight, |ws| input_grad(s, gs, ws)));
    record_rule(ConvInput { shape: *s }, &[g, weight], Data::from_array(dx))
}

fn conv_weight<T: Element>(s: &ConvShape, x: &Tensor<T>, g: &Tensor<T>) -> Tensor<T> {
    let dw = elements(x, |xs| elements(g, |gs| weight_grad(s, xs, gs)));
    record_rule(ConvWeight { shape: *s }, &[x, g], Data::from_array(dw))
}

/// `conv(x, W) + b`; inputs `[x, W]` or `[x, W, b]`.
struct Conv {
    shape: ConvShape,
}
impl<T: Element> Primitive<T> for Conv {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn vjp(&self, inputs: &[Tensor<T>], _: &Tensor<T>, g: &Tensor<T>) -> Cotangents<T> {
        let (x, w, s) = (&inputs[0], &inputs[1], &self.shape);
        let mut out = Cotangents::new();
        out.push(wants(x).then(|| conv_input(s, g, w)));
        out.push(wants(w).then(|| conv_weight(s, x, g)));
        if let Some(b) = inputs.get(2) {
            out.push(wants(b).then(|| g.sum(&[0, 2, 3][..], false)));
        }
        out
    }
    fn jvp(&self, inputs: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        let (x, w, s) = (&inputs[0], &inputs[1], &self.shape);
        let linear =
            add_optional(t[0].as_ref().map(|t| conv(s, t, w, None)), t[1].as_ref().map(|t| conv(s, x, t, None)));
        let bias = t.get(2).and_then(Option::as_ref).map(|t| t.reshape(&[s.channels, 1, 1]));
        add_optional(linear, bias)
    }
    fn parameters(&self) -> Vec<f64> {
        self.shape.parameters()
    }
}

/// `conv_input(g, W)`, the convolution's transpose in its input; inputs `[g, W]`.
struct ConvInput {
    shape: ConvShape,
}
impl<T: Element> Primitive<T> for ConvInput {
    fn name(&self) -> &'static str {
        "conv2d_input"
    }
    fn vjp(&self, inputs: &[Tensor<T>], _: &Tensor<T>, h: &Tensor<T>) -> Cotangents<T> {
        let (g, w, s) = (&inputs[0], &inputs[1], &self.shape);
        [wants(g).then(|| conv(s, h, w, None)), wants(w).then(|| conv_weight(s, h, g))].into()
    }
    fn jvp(&self, inputs: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        let (g, w, s) = (&inputs[0], &inputs[1], &self.shape);
        add_optional(t[0].as_ref().map(|t| conv_input(s, t, w)), t[1].as_ref().map(|t| conv_input(s, g, t)))
    }
    fn parameters(&self) -> Vec<f64> {
        self.shape.parameters()
    }
}

/// `conv_weight(x, g)`, the convolution's transpose in its weight; inputs `[x, g]`.
struct ConvWeight {
    shape: ConvShape,
}
impl<T: Element> Primitive<T> for ConvWeight {
    fn name(&self) -> &'static str {
        "conv2d_weight"
    }
    fn vjp(&self, inputs: &[Tensor<T>], _: &Tensor<T>, h: &Tensor<T>) -> Cotangents<T> {
        let (x, g, s) = (&inputs[0], &inputs[1], &self.shape);
        [wants(x).then(|| conv_input(s, g, h)), wants(g).then(|| conv(s, x, h, None))].into()
    }
    fn jvp(&self, inputs: &[Tensor<T>], _: &Tensor<T>, t: &[Option<Tensor<T>>]) -> Option<Tensor<T>> {
        let (x, g, s) = (&inputs[0], &inputs[1], &self.shape);
        add_optional(t[0].as_ref().map(|t| conv_weight(s, t, g)), t[1].as_ref().map(|t| conv_weight(s, x, t)))
    }
    fn parameters(&self) -> Vec<f64> {
        self.shape.parameters()
    }
}

impl<T: Element> Tensor<T> {
    /// 2-D convolution (cross-correlation, as PyTorch's `conv2d`) of an `[N, C, H, W]` batch
    /// with `weight` `[O, C/groups, kh, kw]` and an optional `bias` `[O]`; the window's kernel
    /// size must be the weight's. Gives `[N, O, OH, OW]`. One `[C, H, W]` image gives
    /// `[O, OH, OW]`. Differentiable to any order in input, weight and bias.
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
        if self.ndim() == 3 {
            return as_batch(self, |x| x.conv2d(weight, bias, window, groups));
        }
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
             (input [N, C, H, W] or [C, H, W], weight [O, C/groups, kh, kw])",
            window.kernel
        );
        if let Some(b) = bias {
            assert!(b.shape() == [sw[0]], "conv2d: bias of shape {:?} for a weight of shape {sw:?}", b.shape());
        }
        let out = window.output_or_panic("conv2d", sx);
        let shape = ConvShape { window: *window, groups, input: [sx[0], sx[1], sx[2], sx[3]], channels: sw[0], out };
        conv(&shape, self, weight, bias)
    }
}
