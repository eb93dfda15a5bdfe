"""The all-reduce of examples/allreduce.rs, done by PyTorch's torch.distributed (gloo, the CPU
backend DistributedDataParallel uses), for a reference measured in the same session.

    PY=~/.cache/adjoint-bench-venv/bin/python
    $PY scripts/bench_allreduce_torch.py --ranks 2

Per size: 5 warm-up and 50 timed all-reduces of a float32 tensor, each after a barrier; the
median of the slowest rank, as the Rust example reports it.
"""
import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SIZES = [
    ("tiny (latency)", 2),
    ("lecture net 784-100-10", 79_510 + 2),
    ("LeNet-5 (conv 20, 50; fc 500)", 431_080 + 2),
    ("big MLP 784-1024-1024-10", 1_863_690 + 2),
]


def run(rank, ranks, port):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=ranks)
    if rank == 0:
        print(f"{ranks} ranks over torch.distributed gloo (torch {torch.__version__})")
        print(f"{'buffer':<32} {'bytes':>12} {'median time':>14} {'bus bandwidth':>16}")
    for name, length in SIZES:
        buffer = torch.ones(length, dtype=torch.float32)
        times = []
        for round in range(55):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(buffer)
            if round >= 5:
                times.append(time.perf_counter() - start)
            buffer.fill_(1.0)
        medians = torch.zeros(ranks, dtype=torch.float64)
        medians[rank] = statistics.median(times)
        dist.all_reduce(medians)
        slowest = float(medians.max())
        if rank == 0:
            moved = 2 * (ranks - 1) / ranks * 4 * length
            print(f"{name:<32} {4 * length:>12} {slowest * 1e6:>11.1f} µs {moved / slowest / 1e9:>11.2f} GB/s")
    dist.destroy_process_group()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--port", type=int, default=29533)
    args = parser.parse_args()
    mp.spawn(run, args=(args.ranks, args.port), nprocs=args.ranks)
