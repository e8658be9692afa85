#!/usr/bin/env bash
# Every test: installs what is missing, builds the AddressSanitizer+UBSan configuration and
# runs the whole suite (fast and stress) through ctest. MP_TSAN=1 also builds and runs the
# ThreadSanitizer configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs=$(nproc)
cmake --preset asan >/dev/null
cmake --build build/asan -j"$jobs"
ctest --preset asan -j"$jobs"
if [ "${MP_TSAN:-0}" = "1" ]; then
  cmake --preset tsan >/dev/null
  cmake --build build/tsan -j"$jobs"
  ctest --preset tsan -j"$jobs"
fi
