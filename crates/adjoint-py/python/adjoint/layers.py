"""Layer objects with PyTorch's names and arguments, for building a ``Network`` as one would
an ``nn.Sequential``::

    from adjoint import layers as L
    net = adjoint.Network([L.Linear(784, 100), L.Tanh(), L.Linear(100, 10)])
    lenet = adjoint.Network([L.Conv2d(1, 20, 5), L.ReLU(), L.MaxPool2d(2), L.Conv2d(20, 50, 5), L.ReLU(),
                             L.MaxPool2d(2), L.Flatten(), L.Linear(800, 500), L.ReLU(), L.Linear(500, 10)],
                            input_shape=(1, 28, 28))

Each layer is one element of the CLI's ``--arch`` language (``layer.spec``), so a network
built from objects is the same network as the string, saved in the same files. The input
widths PyTorch's constructors take (``in_features``, ``in_channels``, ``input_size``) are
checked against the layer before them when the network is built.
"""

from __future__ import annotations


class Layer:
    """One layer: ``spec`` is its element of the ``--arch`` language."""

    spec: str = ""
    #: The input width this layer expects (PyTorch's first argument), if it has one.
    expects: int | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


class Linear(Layer):
    """A fully connected layer ``in_features → out_features`` (``fc:N``)."""

    def __init__(self, in_features: int, out_features: int):
        self.expects, self.spec = in_features, f"fc:{int(out_features)}"


class Conv2d(Layer):
    """A 2-D convolution (``conv:C:K[:S[:P]]``), square kernels."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
        self.expects = in_channels
        self.spec = f"conv:{int(out_channels)}:{int(kernel_size)}"
        if stride != 1 or padding != 0:
            self.spec += f":{int(stride)}"
        if padding != 0:
            self.spec += f":{int(padding)}"


class MaxPool2d(Layer):
    """Max pooling (``maxpool:K[:S]``); the stride defaults to the kernel size."""

    def __init__(self, kernel_size: int, stride: int | None = None):
        self.spec = f"maxpool:{int(kernel_size)}" + ("" if stride in (None, kernel_size) else f":{int(stride)}")


class AvgPool2d(Layer):
    """Average pooling (``avgpool:K[:S]``); the stride defaults to the kernel size."""

    def __init__(self, kernel_size: int, stride: int | None = None):
        self.spec = f"avgpool:{int(kernel_size)}" + ("" if stride in (None, kernel_size) else f":{int(stride)}")


class Flatten(Layer):
    """Flattens each example to a row (``flatten``)."""

    spec = "flatten"


class Dropout(Layer):
    """Inverted dropout with probability ``p`` in training (``dropout:P``)."""

    def __init__(self, p: float = 0.5):
        self.spec = f"dropout:{float(p)}"


class BatchNorm1d(Layer):
    """Batch norm over the features of ``[N, C]`` (``batchnorm``)."""

    def __init__(self, num_features: int):
        self.expects, self.spec = num_features, "batchnorm"


class BatchNorm2d(BatchNorm1d):
    """Batch norm over the channels of ``[N, C, H, W]`` (``batchnorm``)."""


class LayerNorm(Layer):
    """Layer norm over the last axis (``layernorm``)."""

    def __init__(self, normalized_shape: int):
        self.expects, self.spec = normalized_shape, "layernorm"


class _Recurrent(Layer):
    cell = ""

    def __init__(self, input_size: int, hidden_size: int):
        self.expects, self.spec = input_size, f"{self.cell}:{int(hidden_size)}"


class LSTM(_Recurrent):
    """An LSTM over a sequence of rows, giving its last hidden state (``lstm:H``)."""

    cell = "lstm"


class GRU(_Recurrent):
    """A GRU over a sequence of rows, giving its last hidden state (``gru:H``)."""

    cell = "gru"


class RNN(_Recurrent):
    """An Elman RNN with tanh (``rnn:H``)."""

    cell = "rnn"


def _activation(name: str, doc: str) -> type:
    return type(name, (Layer,), {"spec": name.lower(), "__doc__": doc})


ReLU = _activation("ReLU", "max(x, 0) (``relu``).")
Tanh = _activation("Tanh", "tanh (``tanh``).")
Sigmoid = _activation("Sigmoid", "the logistic function (``sigmoid``).")
GELU = _activation("GELU", "x·Φ(x) (``gelu``).")
SiLU = _activation("SiLU", "x·sigmoid(x) (``silu``).")
Softplus = _activation("Softplus", "log(1 + eˣ) (``softplus``).")


class LeakyReLU(Layer):
    """max(x, αx) (``leaky-relu:α``)."""

    def __init__(self, negative_slope: float = 0.01):
        self.spec = f"leaky-relu:{float(negative_slope)}"


class ELU(Layer):
    """x, or α(eˣ − 1) below 0 (``elu:α``)."""

    def __init__(self, alpha: float = 1.0):
        self.spec = f"elu:{float(alpha)}"


class PReLU(Layer):
    """Leaky ReLU with a learned slope (``prelu:α``)."""

    def __init__(self, init: float = 0.25):
        self.spec = f"prelu:{float(init)}"


def spec_of(layers) -> str:
    """The ``--arch`` string of a list of layer objects."""
    return ",".join(layer.spec for layer in layers)
