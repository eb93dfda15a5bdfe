"""The Python package's speed goals, measured in one run with PyTorch's figures beside them.

    python crates/adjoint-py/bench/bench.py [--torch-python PATH] [--cli PATH] [--rounds N]

1. The overhead of one small operation called from Python: `x * y` on 0-d tensors that
   require gradients (recorded), for adjoint, PyTorch (run by --torch-python, a Python with
   torch installed; the shared benchmarks' venv by default) and micrograd's pure-Python
   `Value` (written out below, the lower anchor).
2. Training the lecture network (784-100-10 tanh, the CLI's defaults) for 5 epochs from Python
   against `adjoint train --epochs 5` (the CLI's own time, same data and settings).

Rounds alternate between the contenders (the machine is shared and noisy); medians are reported.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import adjoint

ROOT = Path(__file__).resolve().parents[3]


class Value:
    """micrograd's scalar (Karpathy), as published: each operation makes a node with a closure."""

    def __init__(self, data, _children=(), _op=""):
        self.data = data
        self.grad = 0
        self._backward = lambda: None
        self._prev = set(_children)
        self._op = _op

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other), "*")

        def _backward():
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out


def per_op_ns(stmt, setup, number=200_000, repeat=7):
    times = timeit.repeat(stmt, setup, number=number, repeat=repeat, globals=globals())
    return min(times) / number * 1e9


TORCH_OVERHEAD = """
import timeit, torch
torch.set_num_threads(1)
x = torch.tensor(2.0, requires_grad=True); y = torch.tensor(8.0, requires_grad=True)
print(min(timeit.repeat("x * y", globals=globals(), number=200000, repeat=7)) / 200000 * 1e9)
"""


def overhead(torch_python):
    adjoint_ns = per_op_ns(
        "x * y", "x = adjoint.tensor(2.0, requires_grad=True); y = adjoint.tensor(8.0, requires_grad=True)"
    )
    micrograd_ns = per_op_ns("x * y", "x = Value(2.0); y = Value(8.0)")
    torch_ns = None
    if torch_python:
        out = subprocess.run([torch_python, "-c", TORCH_OVERHEAD], capture_output=True, text=True)
        if out.returncode == 0:
            torch_ns = float(out.stdout.strip())
        else:
            print("torch run failed:", out.stderr[-500:], file=sys.stderr)
    return adjoint_ns, torch_ns, micrograd_ns


def train_python():
    net = adjoint.Network([784, 100, 10], activation="tanh", seed=1)
    start = time.perf_counter()
    net.fit("mnist", epochs=5, progress=False)
    return time.perf_counter() - start, net.history[-1]["test_accuracy"]


def train_cli(cli):
    with tempfile.TemporaryDirectory() as d:
        start = time.perf_counter()
        out = subprocess.run([cli, "train", "--epochs", "5", "--out", str(Path(d) / "run"), "--quiet"], capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        metrics = [json.loads(l) for l in (Path(d) / "run" / "metrics.jsonl").read_text().splitlines() if l.strip()]
        return elapsed, metrics[-1].get("test_accuracy")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--torch-python", default=str(Path.home() / ".cache/adjoint-bench-venv/bin/python"))
    parser.add_argument("--cli", default=str(ROOT / "target/release/adjoint"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch_python = args.torch_python if Path(args.torch_python).is_file() else None

    rows = []
    for _ in range(args.rounds):
        rows.append(overhead(torch_python))
    a = statistics.median(r[0] for r in rows)
    m = statistics.median(r[2] for r in rows)
    t = statistics.median(r[1] for r in rows) if torch_python else None
    print("one recorded 0-d `x * y` from Python (ns per operation, best of 7 × 200k, median of rounds):")
    print(f"  adjoint {a:.0f} ns, PyTorch {t:.0f} ns, micrograd {m:.0f} ns" if t else f"  adjoint {a:.0f} ns, micrograd {m:.0f} ns")
    if t:
        print(f"  ratio adjoint / PyTorch = {a / t:.2f} (goal ≤ 1.00)")

    python_times, cli_times = [], []
    for _ in range(args.rounds):
        python_times.append(train_python())
        if Path(args.cli).is_file():
            cli_times.append(train_cli(args.cli))
    p = statistics.median(x[0] for x in python_times)
    print("lecture network, 5 epochs on the bundled MNIST (seconds, median of rounds, training included loading):")
    if cli_times:
        c = statistics.median(x[0] for x in cli_times)
        print(f"  Python {p:.2f} s (accuracy {python_times[-1][1]:.4f}), CLI {c:.2f} s (accuracy {cli_times[-1][1]})")
        print(f"  ratio Python / CLI = {p / c:.2f} (goal ≤ 1.10)")
    else:
        print(f"  Python {p:.2f} s; no CLI binary at {args.cli}")


if __name__ == "__main__":
    main()
