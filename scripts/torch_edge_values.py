"""PyTorch float64 reference numbers for adjoint's edge-value tests.

Writes crates/adjoint/tests/fixtures/torch_edges.json, read by tests/edges.rs. Run with a
Python that has torch (e.g. the reference venv: WITH_TORCH=1 bash ../shared/bench/setup.sh):

    ~/.cache/adjoint-bench-venv/bin/python scripts/torch_edge_values.py
"""
import json
import math
import os

import torch

torch.set_default_dtype(torch.float64)


def num(x):
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def grads(f, *values):
    xs = [torch.tensor(v, requires_grad=True) for v in values]
    y = f(*xs)
    gs = torch.autograd.grad(y, xs, allow_unused=True)
    return {"inputs": [num(v) for v in values], "value": num(y.detach()),
            "grads": [num(0.0 if g is None else g) for g in gs]}


nan, inf = float("nan"), float("inf")
cases = {}
cases["pow"] = [grads(lambda a, b: a ** b, a, b)
                for a, b in [(0.0, 2.0), (0.0, 0.0), (0.0, -1.0), (0.0, 0.5), (2.0, 3.0), (2.0, 0.0), (-2.0, 2.0)]]
cases["maximum"] = [grads(torch.maximum, a, b)
                    for a, b in [(nan, 1.0), (1.0, nan), (nan, nan), (1.0, 1.0), (inf, inf), (2.0, 1.0), (-inf, 3.0)]]
cases["minimum"] = [grads(torch.minimum, a, b)
                    for a, b in [(nan, 1.0), (1.0, nan), (1.0, 1.0), (-inf, -inf), (2.0, 1.0)]]
cases["clamp"] = [grads(lambda x: x.clamp(-1.0, 1.0), x) for x in [-1.0, 1.0, 0.5, 2.0, -3.0]]

# Cholesky: f(A) = Σ W∘chol(A); Hessian-vector product in a non-symmetric direction V.
A = torch.tensor([[4.0, 1.2, -0.4], [1.2, 3.0, 0.7], [-0.4, 0.7, 2.5]])
W = torch.tensor([[0.3, -1.0, 0.5], [1.1, 0.2, -0.7], [0.4, 0.9, -0.6]])
V = torch.tensor([[0.5, -0.2, 0.1], [0.7, 0.3, -0.4], [-0.3, 0.8, 0.6]])
f_chol = lambda a: (torch.linalg.cholesky(a) * W).sum()
_, hv = torch.autograd.functional.hvp(f_chol, A, V)
g = torch.func.grad(f_chol)(A)
_, jv = torch.func.jvp(f_chol, (A,), (V,))
cases["cholesky"] = {"a": A.flatten().tolist(), "w": W.flatten().tolist(), "v": V.flatten().tolist(),
                     "grad": g.flatten().tolist(), "jvp": float(jv), "hvp": hv.flatten().tolist()}

# det at singular matrices: value, gradient, and the Hessian-vector product.
def det_case(a, v):
    a = torch.tensor(a)
    v = torch.tensor(v)
    x = a.clone().requires_grad_(True)
    d = torch.linalg.det(x)
    (g,) = torch.autograd.grad(d, x, create_graph=True)
    (hv,) = torch.autograd.grad((g * v).sum(), x)
    return {"a": a.flatten().tolist(), "v": v.flatten().tolist(), "n": a.shape[0], "value": num(d.detach()),
            "grad": [num(x) for x in g.detach().flatten().tolist()], "hvp": [num(x) for x in hv.flatten().tolist()]}

cases["det"] = [
    det_case([[0.0, 0.0], [0.0, 0.0]], [[1.0, 0.5], [-0.3, 2.0]]),
    det_case([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], [[0.5, -0.2, 0.1], [0.7, 0.3, -0.4], [-0.3, 0.8, 0.6]]),
    det_case([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0]], [[0.2, 0.1, -0.3], [0.4, -0.5, 0.6], [0.9, 0.1, 0.2]]),
    det_case([[2.0, 0.5, -1.0], [0.3, 1.5, 0.2], [-0.7, 0.4, 3.0]], [[0.5, -0.2, 0.1], [0.7, 0.3, -0.4], [-0.3, 0.8, 0.6]]),
]

# Max pooling: where the gradient of a window with NaNs goes.
x = torch.tensor([[nan, 1.0, 2.0, 0.0], [nan, 0.0, 2.0, 5.0], [3.0, 3.0, nan, 1.0], [1.0, 0.0, 1.0, nan]])
xr = x.clone().requires_grad_(True)
y = torch.nn.functional.max_pool2d(xr[None, None], 2)
(gx,) = torch.autograd.grad(y.sum(), xr)
cases["max_pool2d"] = {"x": [num(v) for v in x.flatten().tolist()], "value": [num(v) for v in y.flatten().tolist()],
                       "grad": gx.flatten().tolist()}

out = os.path.join(os.path.dirname(__file__), "..", "crates", "adjoint", "tests", "fixtures", "torch_edges.json")
with open(out, "w") as fh:
    json.dump({"torch": torch.__version__.split("+")[0], "cases": cases}, fh, indent=1)
print("wrote", os.path.normpath(out))
