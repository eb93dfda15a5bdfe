#!/usr/bin/env python3
"""Every row of issue 22's goal table, adjoint and PyTorch in the same run, with the ratios.

Run through `scripts/bench_vs_references.sh` (it builds the binaries first), or directly with
the reference venv's Python once `target/release/adjoint` and the `bench_mlp` example are built:

    python scripts/bench_vs_references.py [--threads 2,1] [--rounds 1] [--rows lecture,big,...]

Each round runs PyTorch's figure and then adjoint's for one row before moving on, so that both
sides of a ratio see the same load from other tenants. Figures are the benchmarks' own medians;
the table prints every round's ratio and their median. Nothing here is a test: the machine is
shared, so read the ratios, not the absolute times.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("REF_DIR", os.path.join(ROOT, "..", "shared", "bench"))
ADJOINT = os.path.join(ROOT, "target", "release", "adjoint")
BENCH_MLP = os.path.join(ROOT, "target", "release", "examples", "bench_mlp")

# row: (what is compared, goal on the ratio adjoint / PyTorch, thread counts the goal names)
GOALS = {
    "lecture": ("lecture net 784-100-10, 5 epochs (s)", 0.67, {1, 2}),
    "big": ("big net 784-1024-1024-10, step (ms)", 0.90, {1, 2}),
    "big-gemm": ("big net step's GFLOP/s over adjoint's 1024³ GEMM rate", None, {1, 2}),
    "gemm": ("f32 GEMM 1024³ (GFLOP/s, adjoint over PyTorch)", None, set()),
    "lenet": ("LeNet step, batch 64 (ms)", 0.80, {2}),
    "lstm": ("LSTM(128) step over MNIST rows, batch 64, Adam (ms)", 1.0, {2}),
    "gru": ("GRU(128) step, the same (ms)", 1.0, {2}),
    "plain": ("big net step from plain main over adjoint bench's (ms)", 1.10, {1, 2}),
    "scalar": ("scalar tape, ns per operation (adjoint alone)", None, set()),
}


def run(cmd, env=None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    out = subprocess.run(cmd, capture_output=True, text=True, env=full_env)
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr}")
    return out.stdout


def keyvalues(text):
    pairs = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(" "):
            key, _, value = line.partition("=")
            try:
                pairs[key.strip()] = float(value)
            except ValueError:
                pass
    return pairs


def torch_gemm_1024(threads):
    out = run([sys.executable, os.path.join(ROOT, "scripts", "bench_gemm_torch.py"), "--threads", str(threads)])
    for line in out.splitlines():
        if "gemm 1024" in line:
            return float(line.split()[-2])
    sys.exit("bench_gemm_torch.py printed no 1024³ row")


def adjoint_bench(rows, threads):
    out = run([ADJOINT, "bench", "--rows", rows, "--threads", str(threads), "--json"])
    report = json.loads(out)
    return report


def row_named(report, prefix):
    for row in report["rows"]:
        if row["name"].startswith(prefix):
            return row
    sys.exit(f"adjoint bench printed no row starting {prefix!r}")


def measure(row, threads, wait):
    """One round of one row: (PyTorch figure, adjoint figure, ratio adjoint / PyTorch)."""
    py = [sys.executable]
    quiet = ["--wait-quiet", str(wait)]
    t = ["--threads", str(threads)]
    if row == "lecture":
        ref = keyvalues(run(py + [os.path.join(SHARED, "bench_mlp.py"), "--framework", "torch", "--net", "small"] + t + quiet))
        ours = keyvalues(run([BENCH_MLP, "--net", "small", "--threads", str(threads)]))
        return ref["train_s"], ours["train_s"]
    if row == "big":
        ref = keyvalues(run(py + [os.path.join(SHARED, "bench_mlp.py"), "--framework", "torch", "--net", "big", "--epochs", "0"] + t + quiet))
        ours = row_named(adjoint_bench("big", threads), "big")
        return ref["step_ms_median"], ours["ms"]
    if row == "big-gemm":
        report = adjoint_bench("big,gemm", threads)
        big = row_named(report, "big")
        gemm = row_named(report, "gemm 1024")
        # Reported as adjoint's rate share (the goal is ≥ 0.85), not a ratio to PyTorch.
        return gemm["gflops"], big["gflops"]
    if row == "gemm":
        ours = row_named(adjoint_bench("gemm", threads), "gemm 1024")
        return torch_gemm_1024(threads), ours["gflops"]
    if row == "lenet":
        ref = keyvalues(run(py + [os.path.join(SHARED, "bench_lenet.py")] + t + quiet))
        ours = row_named(adjoint_bench("lenet", threads), "LeNet")
        return ref["step_ms"], ours["ms"]
    if row in ("lstm", "gru"):
        ref = keyvalues(run(py + [os.path.join(SHARED, "bench_rnn.py"), "--cell", row] + t + quiet))
        ours = row_named(adjoint_bench(row, threads), row.upper())
        return ref["step_ms"], ours["ms"]
    if row == "plain":
        plain = keyvalues(run([BENCH_MLP, "--net", "big", "--plain"], env={"RAYON_NUM_THREADS": str(threads)}))
        ours = row_named(adjoint_bench("big", threads), "big")
        return ours["ms"], plain["step_ms_median"]
    if row == "scalar":
        ours = row_named(adjoint_bench("scalar", threads), "scalar")
        return None, ours["scalar_tape_ns_per_op"]
    sys.exit(f"unknown row {row!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="2,1", help="comma-separated thread counts")
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds per row")
    ap.add_argument("--rows", default=",".join(GOALS), help="comma-separated: " + ", ".join(GOALS))
    ap.add_argument("--wait-quiet", type=float, default=10.0, help="the references' wait for a quiet machine")
    args = ap.parse_args()
    for exe in (ADJOINT, BENCH_MLP):
        if not os.path.exists(exe):
            sys.exit(f"{exe} is missing: run scripts/bench_vs_references.sh, which builds it")
    cpu = adjoint_bench("gemm", 1)
    print(f"cpu: {cpu['cpu']}; adjoint kernels: {cpu['kernels']}, gemm kernels: {cpu['gemm_kernels']}")
    print(f"{'row':<58} {'thr':>3} {'reference':>10} {'adjoint':>10} {'ratio':>6}  goal")
    for threads in [int(x) for x in args.threads.split(",")]:
        for row in args.rows.split(","):
            what, goal, goal_threads = GOALS[row]
            ratios = []
            for _ in range(args.rounds):
                ref, ours = measure(row, threads, args.wait_quiet)
                ratio = ours / ref if ref else None
                if ratio is not None:
                    ratios.append(ratio)
                ref_text = f"{ref:10.3f}" if ref is not None else f"{'':>10}"
                ratio_text = f"{ratio:6.2f}" if ratio is not None else f"{'':>6}"
                print(f"{what:<58} {threads:>3} {ref_text} {ours:10.3f} {ratio_text}", flush=True)
            if ratios:
                median = statistics.median(ratios)
                if row == "big-gemm":
                    verdict = "met" if median >= 0.85 else "not met"
                    goal_text = f"≥ 0.85 of the GEMM rate: {verdict}"
                elif goal is not None and threads in goal_threads:
                    goal_text = f"≤ {goal}: {'met' if median <= goal else 'not met'}"
                else:
                    goal_text = ""
                print(f"{'  median':<58} {threads:>3} {'':>10} {'':>10} {median:6.2f}  {goal_text}", flush=True)
            elif row == "scalar":
                print(f"{'  goal':<58} {threads:>3} {'':>10} {'':>10} {'':>6}  ≤ 15 ns: {'met' if ours <= 15 else 'not met'}", flush=True)


if __name__ == "__main__":
    main()
