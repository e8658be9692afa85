#!/usr/bin/env bash
# Proves both ways of consuming the library: cmake --install + find_package(multiprocessing
# CONFIG REQUIRED), and add_subdirectory. Args: SOURCE_DIR BINARY_DIR EXTRA_CXX_FLAGS
set -euo pipefail
src=$1 bin=$2 flags=${3:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$bin" --prefix "$tmp/prefix" >/dev/null
cmake -S "$src/tests/packaging/consumer" -B "$tmp/fp" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" >/dev/null
cmake --build "$tmp/fp" -j2 >/dev/null
"$tmp/fp/consumer"
cmake -S "$src/tests/packaging/consumer" -B "$tmp/sub" -DMP_CONSUMER_MODE=subdirectory \
  -DMP_SOURCE_DIR="$src" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$tmp/sub" -j2 >/dev/null
"$tmp/sub/consumer"
# add_subdirectory must not build the library's own tests, examples or benchmarks.
if [ -d "$tmp/sub/multiprocessing/tests" ] || [ -d "$tmp/sub/multiprocessing/examples" ]; then
  echo "add_subdirectory built the library's tests or examples"; exit 1
fi
echo "packaging: find_package and add_subdirectory both work"
