#!/usr/bin/env bash
# Runs every row of issue 22's goal table, adjoint's and PyTorch's in one session, and prints
# the ratios (scripts/bench_vs_references.py says how). Needs the reference venv:
# WITH_TORCH=1 bash ../shared/bench/setup.sh. Arguments go to the Python driver, e.g.
# `scripts/bench_vs_references.sh --threads 2 --rounds 3 --rows lenet,lstm`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-${XDG_CACHE_HOME:-$HOME/.cache}/adjoint-bench-venv/bin/python}
cargo build -q --release -p adjoint-cli
cargo build -q --release -p adjoint --example bench_mlp
exec "$PY" scripts/bench_vs_references.py "$@"
