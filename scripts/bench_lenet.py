"""PyTorch's CPU time for one LeNet training step, the same work as `adjoint bench --rows lenet`:
conv(1→20, 5×5), ReLU, max-pool 2, conv(20→50, 5×5), ReLU, max-pool 2, flatten, fc 800→500,
ReLU, fc 500→10; softmax cross-entropy; batch 64 of synthetic 28×28 images; SGD 0.1.

    python scripts/bench_lenet.py --threads 2     # prints name=value lines
"""
import argparse
import statistics
import time

import torch
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--repeats", type=int, default=7)
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

net = nn.Sequential(
    nn.Unflatten(1, (1, 28, 28)),
    nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(20, 50, 5), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10),
)
opt = torch.optim.SGD(net.parameters(), lr=0.1)
x = torch.rand(64, 784)
y = torch.arange(64) % 10


def step():
    opt.zero_grad(set_to_none=False)
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()


def forward():
    with torch.no_grad():
        nn.functional.cross_entropy(net(x), y).item()


def median_ms(f, per_block=10):
    for _ in range(3):
        f()
    blocks = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        for _ in range(per_block):
            f()
        blocks.append((time.perf_counter() - t) / per_block)
    return statistics.median(blocks) * 1e3


macs = (20 * 25 * 24 * 24 + 50 * 500 * 8 * 8 + 800 * 500 + 500 * 10) * 64
step_ms = median_ms(step)
print(f"framework=torch {torch.__version__}")
print(f"threads={args.threads}")
print(f"step_ms_median={step_ms:.3f}")
print(f"forward_ms_median={median_ms(forward):.3f}")
print(f"gflops={6 * macs / step_ms / 1e6:.1f}")
