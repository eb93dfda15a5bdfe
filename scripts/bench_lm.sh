#!/usr/bin/env bash
# The character language model of `adjoint train --text` (default --arch: 2 pre-norm causal
# transformer blocks, width 128, 4 heads, context 128, AdamW 1e-3, batch 32) against the same
# model in PyTorch (scripts/lm_torch.py), on the same text, for several seeds: held-out loss
# after the same number of epochs (the same steps) and seconds per epoch.
#   bash scripts/bench_lm.sh FILE [EPOCHS] [SEEDS...]
# Needs the reference venv: WITH_TORCH=1 bash ../shared/bench/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-${XDG_CACHE_HOME:-$HOME/.cache}/adjoint-bench-venv/bin/python}
FILE=$1; EPOCHS=${2:-3}; shift; shift || true
SEEDS=("${@:-1 2 3}"); SEEDS=(${SEEDS[*]})
cargo build -q --release -p adjoint-cli
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
printf '%-6s %-8s %12s %12s\n' seed who test_loss s_per_epoch
for seed in "${SEEDS[@]}"; do
  ./target/release/adjoint train --text "$FILE" --epochs "$EPOCHS" --seed "$seed" --threads 2 --quiet --out "$OUT/run$seed" >/dev/null
  tail -1 "$OUT/run$seed/metrics.jsonl" | $PY -c 'import json,sys; m=json.load(sys.stdin); print("%-6s %-8s %12.4f %12.2f" % (sys.argv[1], "adjoint", m["test_loss"], m["train_seconds"]))' "$seed"
  $PY scripts/lm_torch.py "$FILE" --epochs "$EPOCHS" --seed "$seed" --threads 2 | tail -1 | $PY -c 'import json,sys; m=json.load(sys.stdin); print("%-6s %-8s %12.4f %12.2f" % (sys.argv[1], "torch", m["test_loss"], m["train_seconds"]))' "$seed"
done
