#!/usr/bin/env bash
# Data-parallel training on 1, 2 and 4 ranks of this machine, for the lecture network, the
# big MLP and LeNet-5: time per step, bytes all-reduced per step and time in the all-reduce,
# read from each run's metrics.jsonl. Then the all-reduce alone (examples/allreduce.rs).
#
#   bash scripts/bench_distributed.sh            # needs Open MPI (see README.md)
#
# One thread per rank. With 2 cores, 4 ranks are oversubscribed: this checks the cost model,
# it is not a speedup measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p adjoint-cli --features mpi >/dev/null
cargo build --release --locked -p adjoint --features mpi --example allreduce >/dev/null
BIN=target/release/adjoint
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

row() { # name ranks flags...
  local name=$1 ranks=$2; shift 2
  local dir="$OUT/$name-$ranks"
  if [ "$ranks" = 1 ]; then
    $BIN train "$@" --threads 1 --epochs 1 --test-limit 100 --quiet --out "$dir" >/dev/null
  else
    mpirun --allow-run-as-root --oversubscribe -np "$ranks" \
      $BIN train --distributed "$@" --threads 1 --epochs 1 --test-limit 100 --quiet --out "$dir" >/dev/null
  fi
  python3 - "$dir/metrics.jsonl" "$name" "$ranks" "$@" <<'EOF'
import json, sys
m = json.loads(open(sys.argv[1]).read().splitlines()[-1])
name, ranks = sys.argv[2], int(sys.argv[3])
args = sys.argv[4:]
batch = int(args[args.index("--batch") + 1]); limit = int(args[args.index("--limit") + 1])
steps = -(-limit // batch)
c = m.get("communication") or {"bytes_per_step": 0, "seconds": 0.0}
step_ms = 1e3 * m["train_seconds"] / steps
reduce_ms = 1e3 * c["seconds"] / steps
print(f"| {name} | {ranks} | {step_ms:.2f} | {c['bytes_per_step']:,} | {reduce_ms:.2f} | {step_ms - reduce_ms:.2f} |")
EOF
}

echo "| network | ranks | ms per step | bytes all-reduced per step | ms in all-reduce per step | ms computing per step |"
echo "|---|---|---|---|---|---|"
for ranks in 1 2 4; do row "lecture 784-100-10 tanh, batch 500" $ranks --layers 784,100,10 --batch 500 --limit 20000; done
for ranks in 1 2 4; do row "big MLP 784-1024-1024-10 relu, batch 256" $ranks --layers 784,1024,1024,10 --activation relu --batch 256 --limit 5120; done
for ranks in 1 2 4; do row "LeNet-5, batch 64" $ranks --arch lenet --batch 64 --limit 3200; done

# The all-reduce alone, and PyTorch's (torch.distributed, gloo) in the same run when the
# reference venv is there (WITH_TORCH=1 bash ../shared/bench/setup.sh).
PY=${PY:-${XDG_CACHE_HOME:-$HOME/.cache}/adjoint-bench-venv/bin/python}
echo
for ranks in 2 4; do
  mpirun --allow-run-as-root --oversubscribe -np "$ranks" target/release/examples/allreduce
  echo
  if [ -x "$PY" ]; then
    "$PY" scripts/bench_allreduce_torch.py --ranks "$ranks" 2>&1 | grep -v -i warning
    echo
  fi
done
