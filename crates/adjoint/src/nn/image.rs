//! Layers for images (NCHW batches, or one unbatched `[C, H, W]` image): [`Conv2d`], [`MaxPool2d`], [`AvgPool2d`], and the
//! reshapes between flat feature rows and images, [`Unflatten`] and [`Flatten`].
//!
//! Parameter names and layouts are PyTorch's (`weight` `[out, in/groups, kh, kw]`, `bias`
//! `[out]`), so state dicts load into the equivalent `nn.Sequential`.

use rand::Rng;

use super::{Init, Module};
use crate::ops::{AvgPoolOptions, PadMode, Window2d};
use crate::tensor::{Element, Tensor};

/// A 2-D convolution layer: `[N, C, H, W]` → `[N, O, OH, OW]`, or one `[C, H, W]` image
/// → `[O, OH, OW]`.
///
/// Zero padding on both sides alike is the window's own (`window.padding`, no copy); any
/// other border (asymmetric, `"same"` with an even kernel, reflect, replicate, circular) is
/// padded explicitly first, as PyTorch's `Conv2d` does: see [`Conv2d::with_padding`].
pub struct Conv2d<T: Element> {
    /// `[out, in/groups, kh, kw]`
    pub weight: Tensor<T>,
    /// `[out]`
    pub bias: Tensor<T>,
    /// Kernel, stride, implicit zero padding and dilation.
    pub window: Window2d,
    /// Channel groups (1: every output sees every input channel).
    pub groups: usize,
    /// A border padded before the window, `[[top, bottom], [left, right]]`.
    pub border: [[usize; 2]; 2],
    /// How `border` is filled.
    pub padding_mode: PadMode,
}

/// A convolution's padding, as PyTorch's `Conv2d(padding=…)` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// None (`"valid"`).
    Valid,
    /// As much as keeps the output the input's size at stride 1 (`"same"`): a total of
    /// `dilation·(k − 1)` per axis, the odd one at the end (bottom, right) as in PyTorch.
    Same,
    /// This many on each side of both axes.
    Uniform(usize),
    /// `[[top, bottom], [left, right]]`.
    Sides([[usize; 2]; 2]),
}

impl<T: Element> Conv2d<T> {
    /// A layer of `outputs` filters over `inputs` channels with weights from `init` (fan-in
    /// and fan-out count the kernel's taps, as PyTorch's) and zero biases.
    ///
    /// # Panics
    /// If the channels do not divide into `groups` or the kernel is empty.
    pub fn new(inputs: usize, outputs: usize, window: Window2d, groups: usize, init: Init, rng: &mut impl Rng) -> Self {
        let [kh, kw] = window.kernel;
        assert!(
            groups > 0 && inputs.is_multiple_of(groups) && outputs.is_multiple_of(groups) && kh * kw > 0,
            "Conv2d::new: {inputs} → {outputs} channels, kernel {kh}×{kw}, {groups} group(s) do not fit"
        );
        let taps = kh * kw;
        let shape = [outputs, inputs / groups, kh, kw];
        let w = init.sample::<T>(&shape, inputs / groups * taps, outputs / groups * taps, rng);
        Conv2d {
            weight: Tensor::from_array(w).requires_grad(),
            bias: Tensor::zeros(&[outputs]).requires_grad(),
            window,
            groups,
            border: [[0; 2]; 2],
            padding_mode: PadMode::Zeros,
        }
    }

    /// The same layer with `padding` (replacing the window's) filled as `mode` says.
    ///
    /// ```
    /// use adjoint::nn::{Conv2d, Init, Module, Padding};
    /// use adjoint::{ops::{PadMode, Window2d}, Tensor};
    /// let mut rng = rand::rng();
    /// // PyTorch: nn.Conv2d(3, 8, 4, padding="same", padding_mode="reflect")
    /// let conv = Conv2d::<f32>::new(3, 8, Window2d::new([4, 4]), 1, Init::HeNormal, &mut rng)
    ///     .with_padding(Padding::Same, PadMode::Reflect);
    /// assert_eq!(conv.border, [[1, 2], [1, 2]]);
    /// assert_eq!(conv.forward(&Tensor::zeros(&[3, 10, 12])).shape(), [8, 10, 12]);
    /// ```
    ///
    /// # Panics
    /// With `Padding::Same` at a stride other than 1 (PyTorch refuses it too).
    pub fn with_padding(mut self, padding: Padding, mode: PadMode) -> Self {
        let w = self.window;
        let sides = match padding {
            Padding::Valid => [[0; 2]; 2],
            Padding::Uniform(p) => [[p; 2]; 2],
            Padding::Sides(sides) => sides,
            Padding::Same => {
                assert!(
                    w.stride == [1, 1],
                    "Conv2d::with_padding: padding \"same\" needs stride 1, the window has {:?}",
                    w.stride
                );
                let side = |d: usize| {
                    let total = w.dilation[d] * (w.kernel[d] - 1);
                    [total / 2, total - total / 2]
                };
                [side(0), side(1)]
            }
        };
        // Zeros alike on both sides within half the dilated kernel: the window pads
        // implicitly, without copying the input.
        let implicit = mode == PadMode::Zeros
            && (0..2).all(|d| sides[d][0] == sides[d][1] && 2 * sides[d][0] < w.dilation[d] * (w.kernel[d] - 1) + 2);
        if implicit {
            self.window.padding = [sides[0][0], sides[1][0]];
            self.border = [[0; 2]; 2];
        } else {
            self.window.padding = [0, 0];
            self.border = sides;
        }
        self.padding_mode = mode;
        self
    }
}

impl<T: Element> Module<T> for Conv2d<T> {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        if self.border == [[0; 2]; 2] {
            return x.conv2d(&self.weight, Some(&self.bias), &self.window, self.groups);
        }
        assert!(
            x.ndim() == 3 || x.ndim() == 4,
            "conv2d: needs an [N, C, H, W] or [C, H, W] input, got shape {:?}",
            x.shape()
        );
        x.pad2d(self.border, self.padding_mode).conv2d(&self.weight, Some(&self.bias), &self.window, self.groups)
    }
    fn describe(&self) -> String {
        let s = self.weight.shape();
        format!("conv {}→{} {}×{}", s[1] * self.groups, s[0], s[2], s[3])
    }
    crate::parameters!(T: weight, bias);
}

/// Max pooling: the largest value of each window (PyTorch's `MaxPool2d`; its `ceil_mode`
/// is the window's).
pub struct MaxPool2d(pub Window2d);

impl<T: Element> Module<T> for MaxPool2d {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        x.max_pool2d(&self.0)
    }
    fn describe(&self) -> String {
        format!("maxpool {}×{}", self.0.kernel[0], self.0.kernel[1])
    }
    fn visit<'a>(&'a self, _: &mut String, _: &mut dyn FnMut(&str, &'a Tensor<T>)) {}
    fn visit_mut(&mut self, _: &mut String, _: &mut dyn FnMut(&str, &mut Tensor<T>)) {}
}

/// Average pooling: the mean of each window (PyTorch's `AvgPool2d`, with its
/// `ceil_mode` in the window and `count_include_pad` and `divisor_override` in
/// `options`).
///
/// ```
/// use adjoint::nn::{AvgPool2d, Module};
/// use adjoint::{ops::{AvgPoolOptions, Window2d}, Tensor};
/// // PyTorch: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
/// let pool = AvgPool2d {
///     window: Window2d::new([3, 3]).stride(2).padding(1).ceil_mode(true),
///     options: AvgPoolOptions { count_include_pad: false, divisor_override: None },
/// };
/// let y: Tensor<f64> = pool.forward(&Tensor::ones(&[1, 2, 6, 6]));
/// assert_eq!(y.shape(), [1, 2, 4, 4]);
/// assert!(y.to_vec().iter().all(|&v| v == 1.0)); // only real pixels are counted
/// ```
pub struct AvgPool2d {
    /// Kernel, stride, padding, dilation and `ceil_mode`.
    pub window: Window2d,
    /// What each window's sum is divided by.
    pub options: AvgPoolOptions,
}

impl AvgPool2d {
    /// Pooling over `window` with PyTorch's default divisor (padding counted).
    pub fn new(window: Window2d) -> Self {
        AvgPool2d { window, options: AvgPoolOptions::default() }
    }
}

impl<T: Element> Module<T> for AvgPool2d {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        x.avg_pool2d_with(&self.window, self.options)
    }
    fn describe(&self) -> String {
        format!("avgpool {}×{}", self.window.kernel[0], self.window.kernel[1])
    }
    fn visit<'a>(&'a self, _: &mut String, _: &mut dyn FnMut(&str, &'a Tensor<T>)) {}
    fn visit_mut(&mut self, _: &mut String, _: &mut dyn FnMut(&str, &mut Tensor<T>)) {}
}

/// `[N, …]` → `[N, rest]`, between convolutional and fully connected layers.
pub struct Flatten;

impl<T: Element> Module<T> for Flatten {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        x.flatten()
    }
    fn describe(&self) -> String {
        "flatten".into()
    }
    fn visit<'a>(&'a self, _: &mut String, _: &mut dyn FnMut(&str, &'a Tensor<T>)) {}
    fn visit_mut(&mut self, _: &mut String, _: &mut dyn FnMut(&str, &mut Tensor<T>)) {}
}

/// Rows of flat features `[N, C·H·W]` as images `[N, C, H, W]` (PyTorch's
/// `nn.Unflatten(1, (C, H, W))`).
pub struct Unflatten(pub [usize; 3]);

impl<T: Element> Module<T> for Unflatten {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        let [c, h, w] = self.0;
        assert!(
            x.ndim() == 2 && x.shape()[1] == c * h * w,
            "unflatten: input of shape {:?} is not rows of {c}×{h}×{w} images",
            x.shape()
        );
        x.reshape(&[x.shape()[0], c, h, w])
    }
    fn describe(&self) -> String {
        let [c, h, w] = self.0;
        format!("image {c}×{h}×{w}")
    }
    fn visit<'a>(&'a self, _: &mut String, _: &mut dyn FnMut(&str, &'a Tensor<T>)) {}
    fn visit_mut(&mut self, _: &mut String, _: &mut dyn FnMut(&str, &mut Tensor<T>)) {}
}
