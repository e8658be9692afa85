#!/usr/bin/env bash
# Every test: installs what is missing, builds the AddressSanitizer+UBSan configuration and
# runs the suite through ctest: every fast test (unit, Python interop, packaging, a short
# fuzz run) under every start method. The kill-at-any-instant stress tests (label "stress",
# hundreds of rounds each, about half an hour under ASan on 2 cores) run with MP_STRESS=1.
# MP_TSAN=1 also builds and runs the ThreadSanitizer configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs=$(nproc)
cmake --preset asan >/dev/null
cmake --build build/asan -j"$jobs"
labels=(-LE stress)
[ "${MP_STRESS:-0}" = "1" ] && labels=()
ctest --preset asan -j"$jobs" "${labels[@]}"
if [ "${MP_TSAN:-0}" = "1" ]; then
  cmake --preset tsan >/dev/null
  cmake --build build/tsan -j"$jobs"
  ctest --preset tsan -j"$jobs" "${labels[@]}"
fi
