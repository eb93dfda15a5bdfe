#!/usr/bin/env bash
# Runs adjoint's benchmarks and the reference frameworks' in one session, for the ratios in
# BENCHMARKS.md. Needs the reference venv: WITH_TORCH=1 bash ../shared/bench/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-${XDG_CACHE_HOME:-$HOME/.cache}/adjoint-bench-venv/bin/python}
REF=${REF:-../shared/bench/bench_mlp.py}
cargo build -q --release -p adjoint-cli && cargo build -q --release -p adjoint --example bench_mlp
for threads in 2 1; do
  echo "== $threads thread(s)"
  for fw in torch jax; do
    echo "-- $fw small"; $PY "$REF" --framework $fw --net small --threads $threads --wait-quiet 10 | grep -E '^(step_ms_median|fwd_ms_median|train_s|test_accuracy)='
  done
  echo "-- adjoint small"; ./target/release/examples/bench_mlp --net small --threads $threads | grep -E '^(step_ms_median|fwd_ms_median|train_s|test_accuracy)='
  echo "-- torch big"; $PY "$REF" --framework torch --net big --threads $threads --epochs 0 --wait-quiet 10 | grep -E '^(step_ms_median|train_gflops)='
  echo "-- torch gemm"; $PY scripts/bench_gemm_torch.py --threads $threads
  echo "-- adjoint bench"; ./target/release/adjoint bench --threads $threads
done
