//! Layers for images (NCHW batches): [`Conv2d`], [`MaxPool2d`], [`AvgPool2d`], and the
//! reshapes between flat feature rows and images, [`Unflatten`] and [`Flatten`].
//!
//! Parameter names and layouts are PyTorch's (`weight` `[out, in/groups, kh, kw]`, `bias`
//! `[out]`), so state dicts load into the equivalent `nn.Sequential`.

use rand::Rng;

use super::{Init, Module};
use crate::ops::Window2d;
use crate::tensor::{Element, Tensor};

/// A 2-D convolution layer: `[N, C, H, W]` → `[N, O, OH, OW]`.
pub struct Conv2d<T: Element> {
    /// `[out, in/groups, kh, kw]`
    pub weight: Tensor<T>,
    /// `[out]`
    pub bias: Tensor<T>,
    /// Kernel, stride, padding and dilation.
    pub window: Window2d,
    /// Channel groups (1: every output sees every input channel).
    pub groups: usize,
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
        }
    }
}

impl<T: Element> Module<T> for Conv2d<T> {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        x.conv2d(&self.weight, Some(&self.bias), &self.window, self.groups)
    }
    fn describe(&self) -> String {
        let s = self.weight.shape();
        format!("conv {}→{} {}×{}", s[1] * self.groups, s[0], s[2], s[3])
    }
    crate::parameters!(T: weight, bias);
}

/// Max pooling: the largest value of each window (PyTorch's `MaxPool2d`).
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

/// Average pooling: the mean of each window (PyTorch's `AvgPool2d`).
pub struct AvgPool2d(pub Window2d);

impl<T: Element> Module<T> for AvgPool2d {
    fn forward(&self, x: &Tensor<T>) -> Tensor<T> {
        x.avg_pool2d(&self.0)
    }
    fn describe(&self) -> String {
        format!("avgpool {}×{}", self.0.kernel[0], self.0.kernel[1])
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
