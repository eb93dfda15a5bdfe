#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 300) each, two at a time, starting from the
# seeds the bounded tests use. Findings land in fuzz/artifacts/<target>/.
# Needs: cargo install cargo-fuzz; a nightly toolchain (rustup toolchain install nightly).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
seeds=crates/adjoint/tests/fixtures/fuzz-seeds
cargo +nightly fuzz build -O
run() {
    mkdir -p "fuzz/corpus/$1"
    cargo +nightly fuzz run -O "$1" "fuzz/corpus/$1" "$seeds/$1" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=16384 -print_final_stats=1 \
        >"fuzz/$1.log" 2>&1 || echo "$1: FOUND SOMETHING (see fuzz/$1.log)"
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "fuzz/$1.log" | sed "s/^/$1 /"
}
for pair in "idx csv" "expr image" "model checkpoint"; do
    set -- $pair
    run "$1" &
    run "$2" &
    wait
done
