#!/usr/bin/env bash
# Runs every benchmark program in one go (Release build), then writes docs/benchmarks.md
# (the table and the command that made it) and docs/benchmarks.png (the ratios, by gnuplot).
# Usage: bash bench/run.sh [bench_name ...]   (default: all of build/release/bench/bench_*)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset release >/dev/null
progs=("$@")
if [ ${#progs[@]} -eq 0 ]; then
  for f in bench/bench_*.cpp bench/mpi/bench_*.cpp; do progs+=("$(basename "$f" .cpp)"); done
fi
cmake --build build/release -j"$(nproc)" --target "${progs[@]}" >/dev/null
out=$(mktemp)
for p in "${progs[@]}"; do
  echo "running $p" >&2
  # Each program prints "name value unit" lines; prefix them with the program's name.
  "build/release/bench/$p" | sed "s/^/$p /" | tee -a "$out" >&2
done
python3 bench/report.py "$out" docs/benchmarks.md docs/benchmarks.png "bash bench/run.sh $*"
rm -f "$out"
