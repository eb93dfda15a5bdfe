#!/usr/bin/env bash
# Kills `adjoint train` with SIGKILL at random moments (mid-step, mid-save, mid-rename) over
# and over, continuing the run each time, until it finishes; then checks the result is
# byte-identical to a run that was never interrupted. Every kill must leave a folder that
# `train --resume` (or, before the first save, a fresh `train --out`) continues.
#
#   scripts/kill_soak.sh [KILLS] [ADJOINT]     (defaults: 100, target/release/adjoint)
set -euo pipefail
kills_wanted=${1:-100}
adjoint=${2:-target/release/adjoint}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
epochs=${EPOCHS:-8000}
args=(--limit 1000 --test-limit 100 --layers 784,32,10 --batch 50 --threads 1 --seed 7 --quiet)

"$adjoint" train --out "$work/ref" "${args[@]}" --epochs "$epochs" >/dev/null
kills=0 attempts=0
while true; do
    attempts=$((attempts + 1))
    if [ -e "$work/run/checkpoint.safetensors" ]; then
        cmd=("$adjoint" train --resume "$work/run" --epochs "$epochs" --quiet)
    else
        cmd=("$adjoint" train --out "$work/run" "${args[@]}" --epochs "$epochs")
    fi
    "${cmd[@]}" >"$work/out" 2>"$work/err" &
    pid=$!
    if [ "$kills" -lt "$kills_wanted" ]; then
        # 0 to 400 ms: early kills land in start-up and the first save, later ones anywhere.
        sleep "0.$(printf '%03d' $((RANDOM % 400)))"
        if kill -9 "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null || true
            kills=$((kills + 1))
            continue
        fi
    fi
    if ! wait "$pid"; then
        echo "FAILED after $kills kills: ${cmd[*]}" >&2
        cat "$work/err" >&2
        exit 1
    fi
    break
done
if cmp -s "$work/ref/model.safetensors" "$work/run/model.safetensors"; then
    echo "survived $kills kills in $attempts starts; final model byte-identical to an uninterrupted run"
else
    echo "FAILED: after $kills kills the final model differs from an uninterrupted run" >&2
    exit 1
fi
