#!/usr/bin/env bash
# A long training run (default 6 epochs of the bundled MNIST at batch 32: 11,250 steps)
# with its resident memory sampled every half second: memory must level off after the
# first steps, not grow with them.
#
#   scripts/soak.sh [EPOCHS] [ADJOINT]     (defaults: 6, target/release/adjoint)
set -euo pipefail
epochs=${1:-6}
adjoint=${2:-target/release/adjoint}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$adjoint" train --out "$work/run" --epochs "$epochs" --batch 32 --quiet >"$work/out" 2>&1 &
pid=$!
: >"$work/rss"
start=$(date +%s.%N)
while kill -0 "$pid" 2>/dev/null; do
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$rss" ] && echo "$(echo "$(date +%s.%N) - $start" | bc) $rss" >>"$work/rss"
    sleep 0.5
done
wait "$pid"
steps=$((epochs * 60000 / 32))
awk -v steps="$steps" '
    { t[NR] = $1; r[NR] = $2; if ($2 > peak) peak = $2 }
    END {
        n = NR; q = int(n / 4); if (q < 1) q = 1
        for (i = q; i <= n; i++) { if (min == "" || r[i] < min) min = r[i]; if (r[i] > max) max = r[i] }
        printf "%d steps in %.0f s; resident memory: peak %.1f MiB; from the first quarter on %.1f to %.1f MiB; last sample %.1f MiB (%d samples)\n",
            steps, t[n], peak / 1024, min / 1024, max / 1024, r[n] / 1024, n
    }' "$work/rss"
tail -n 2 "$work/out"
