#!/usr/bin/env python3
"""PyTorch's time for the products of `adjoint bench --rows gemm`, in the same layouts.

Usage: python scripts/bench_gemm_torch.py [--threads N] [--repeats 7]
(the reference venv: WITH_TORCH=1 bash ../shared/bench/setup.sh). Each figure is the median
of `repeats` blocks of calls after a warm-up, as adjoint bench measures; the output buffer is
given (torch.mm(out=...)), since adjoint's products allocate theirs from a warm heap.
"""
import argparse
import time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--repeats", type=int, default=7)
args = ap.parse_args()
torch.set_num_threads(args.threads)

ROWS = [
    # name, a, b (transposed operands are views, as adjoint passes strides)
    ("gemm 1024³", lambda: torch.ones(1024, 1024), lambda: torch.ones(1024, 1024)),
    ("gemm 500×784×100", lambda: torch.ones(500, 784), lambda: torch.ones(784, 100)),
    ("gemm x·Wᵀ 500×784×100 (lecture forward)", lambda: torch.ones(500, 784), lambda: torch.ones(100, 784).t()),
    ("gemm δᵀ·x 100×500×784 (lecture ∂W)", lambda: torch.ones(500, 100).t(), lambda: torch.ones(500, 784)),
]

print(f"torch {torch.__version__}, {args.threads} thread(s)")
for name, make_a, make_b in ROWS:
    a, b = make_a(), make_b()
    m, k, n = a.shape[0], a.shape[1], b.shape[1]
    out = torch.empty(m, n)
    per_block = 3 if m * k * n > 1 << 28 else 20
    for _ in range(min(per_block, 5)):
        torch.mm(a, b, out=out)
    blocks = []
    for _ in range(max(args.repeats, 1)):
        t = time.perf_counter()
        for _ in range(per_block):
            torch.mm(a, b, out=out)
        blocks.append((time.perf_counter() - t) / per_block)
    s = sorted(blocks)[len(blocks) // 2]
    print(f"  {name:<50} {s * 1e3:9.3f} ms {2 * m * k * n / s / 1e9:8.1f} GFLOP/s")
