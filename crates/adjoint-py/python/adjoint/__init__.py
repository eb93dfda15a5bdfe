"""adjoint: automatic differentiation and neural networks, from Python.

The Rust library adjoint, as a Python package:

- ``adjoint.Tensor`` / ``adjoint.tensor``: float32/float64 arrays that record the operations
  applied to them; ``.backward()`` fills ``.grad`` of leaves made with ``requires_grad=True``.
- Function transforms as JAX spells them: ``grad``, ``value_and_grad``, ``jvp``, ``vjp``,
  ``jacobian`` (``jacrev``, ``jacfwd``), ``hessian``, ``hvp``, ``check_grads``; they nest
  (``grad(grad(f))``).
- ``adjoint.Network``: networks from the CLI's ``--arch`` language or layer widths, trained on
  NumPy arrays or the bundled MNIST, saved as the CLI's safetensors files.
- The teaching pages, inline in Jupyter: ``adjoint.trace``, ``adjoint.backprop``,
  ``adjoint.inspect``.

The lectures' example::

    >>> import adjoint
    >>> f = lambda x, y: (x * y + adjoint.sin(x) + 4) * (3 * y**2 + 6)
    >>> dx, dy = adjoint.grad(f, argnums=(0, 1))(2.0, 8.0)
    >>> round(dy.item(), 4)
    1399.6463
"""

from . import _adjoint, layers
from ._adjoint import (
    Network,
    NoGrad,
    Optimizer,
    Page,
    Tensor,
    __version__,
    amax,
    backprop,
    check_grads,
    clip,
    concatenate,
    cross_entropy,
    grad,
    hessian,
    hvp,
    inspect,
    is_grad_enabled,
    jacfwd,
    jacobian,
    jacrev,
    jvp,
    leaky_relu,
    log_softmax,
    logsumexp,
    matmul,
    maximum,
    mean,
    minimum,
    mnist,
    mse,
    prod,
    reshape,
    scaled_dot_product_attention,
    softmax,
    stack,
    sum,
    tensor,
    trace,
    transpose,
    value_and_grad,
    vjp,
)
from ._adjoint import pow  # noqa: A004  (numpy spells it so too)
from ._adjoint import where

_UNARY = tuple(_adjoint._UNARY)
for _name in _UNARY:
    globals()[_name] = getattr(_adjoint, _name)


def no_grad():
    """A context in which operations are not recorded (results are constants)::

        with adjoint.no_grad():
            y = net(x)
    """
    return NoGrad()


def _method(function, name):
    def method(self, *args, **kwargs):
        return function(self, *args, **kwargs)

    method.__name__ = name
    method.__qualname__ = "Tensor." + name
    method.__doc__ = function.__doc__
    return method


# The functions are methods too (x.sin(), x.sum(axis=0)), as in PyTorch.
for _name in _UNARY + ("sum", "mean", "amax", "prod", "softmax", "log_softmax", "logsumexp", "clip"):
    setattr(Tensor, _name, _method(getattr(_adjoint, _name), _name))
Tensor.max = _method(amax, "max")
Tensor.transpose = _method(transpose, "transpose")

__all__ = [
    "Network",
    "Optimizer",
    "Page",
    "Tensor",
    "__version__",
    "amax",
    "backprop",
    "check_grads",
    "clip",
    "concatenate",
    "cross_entropy",
    "grad",
    "hessian",
    "hvp",
    "inspect",
    "layers",
    "is_grad_enabled",
    "jacfwd",
    "jacobian",
    "jacrev",
    "jvp",
    "leaky_relu",
    "log_softmax",
    "logsumexp",
    "matmul",
    "maximum",
    "mean",
    "minimum",
    "mnist",
    "mse",
    "no_grad",
    "pow",
    "prod",
    "reshape",
    "scaled_dot_product_attention",
    "softmax",
    "stack",
    "sum",
    "tensor",
    "trace",
    "transpose",
    "value_and_grad",
    "vjp",
    "where",
    *_UNARY,
]
