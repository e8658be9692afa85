#!/usr/bin/env bash
# The seed tour: installs what is missing, builds, and runs the C++ version of every cell of
# the seed notebook in order, with a heading per cell. Pass --quick to shorten the sleeps.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset default -DMP_BUILD_TESTS=OFF -DMP_BUILD_BENCH=OFF -DMP_BUILD_FUZZ=OFF >/dev/null
cmake --build build/default -j"$(nproc)" >/dev/null
for exe in build/default/seed/seed_*; do
  name=$(basename "$exe")
  name=${name#seed_}
  echo
  src=$(ls examples/seed/"${name}".cpp examples/*/"${name}".cpp 2>/dev/null | head -n 1 || true)
  echo "=== Celda ${name%%_*}: ${name#*_} (${src}) ==="
  # Cells that need mpirun are run through it.
  if [[ "$name" == *mpi* ]]; then
    mpirun --allow-run-as-root --oversubscribe -np 3 "$exe" "$@"
  else
    "$exe" "$@"
  fi
done
