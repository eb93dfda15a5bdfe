"""adjoint and PyTorch exchange models through safetensors, both ways, unchanged.

A model file written by `adjoint train` (or `Network::save`) holds the state dict under
PyTorch's names and layout (`0.weight` is [out, in]), so an equivalent `nn.Sequential`
loads it with `load_state_dict`; and a state dict saved by PyTorch with
`safetensors.torch.save_file` loads into adjoint (`Module::load`, `load_state_dict`).

    PY=~/.cache/adjoint-bench-venv/bin/python      # WITH_TORCH=1 bash ../shared/bench/setup.sh
    $PY scripts/pytorch_interop.py from-adjoint RUN_FOLDER
        # loads RUN_FOLDER/model.safetensors into nn.Sequential and compares its
        # predictions on MNIST test images with `adjoint eval`'s accuracy
    $PY scripts/pytorch_interop.py to-adjoint OUT_FOLDER
        # writes a PyTorch 4-5-3 tanh MLP's state dict and its outputs on fixed inputs
        # (crates/adjoint/tests/fixtures/torch_mlp.* were made this way; a test loads them)
"""
import json
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def mlp(widths, activation):
    layers = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i + 2 < len(widths):
            layers.append(activation())
    return torch.nn.Sequential(*layers)


ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid, "gelu": torch.nn.GELU}


def from_adjoint(run):
    path = f"{run}/model.safetensors"
    state = load_file(path)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(n))["__metadata__"]
    arch = json.loads(meta["architecture"])
    widths = [l["inputs"] for l in arch["layers"] if l["kind"] == "linear"][:1] + [
        l["outputs"] for l in arch["layers"] if l["kind"] == "linear"
    ]
    act = next(l["function"]["kind"] for l in arch["layers"] if l["kind"] == "activation")
    model = mlp(widths, ACTIVATIONS[act])
    norm = {k: state.pop(k) for k in ["input.mean", "input.std"] if k in state}
    model.load_state_dict(state)  # names and shapes match exactly: no renaming, no transposes
    print(f"loaded {path} into {model}")
    if widths[0] == 784:
        x = torch.tensor(idx(MNIST + "t10k-images-idx3-ubyte.gz"), dtype=torch.float32).reshape(-1, 784) / 255.0
        y = idx(MNIST + "t10k-labels-idx1-ubyte.gz")
        if norm:
            x = (x - norm["input.mean"]) / norm["input.std"]
        with torch.no_grad():
            acc = (model(x).argmax(1).numpy() == y).mean()
        print(f"PyTorch's test accuracy with adjoint's weights: {100 * acc:.2f}%")


MNIST = "crates/adjoint-cli/data/mnist/"


def idx(path):
    """An unsigned-byte IDX file (gzipped) as a numpy array."""
    import gzip

    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def to_adjoint(out):
    torch.manual_seed(0)
    model = mlp([4, 5, 3], torch.nn.Tanh).double()
    save_file(model.state_dict(), f"{out}/torch_mlp.safetensors")
    x = torch.linspace(-1, 1, 8, dtype=torch.float64).reshape(2, 4)
    with torch.no_grad():
        y = model(x)
    with open(f"{out}/torch_mlp.json", "w") as f:
        json.dump({"input": x.tolist(), "output": y.tolist()}, f, indent=1)
    print(f"wrote {out}/torch_mlp.safetensors and torch_mlp.json")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("from-adjoint", "to-adjoint"):
        sys.exit(__doc__)
    (from_adjoint if sys.argv[1] == "from-adjoint" else to_adjoint)(sys.argv[2])
