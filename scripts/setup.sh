#!/usr/bin/env bash
# Installs the Debian 12 packages the project needs, only those missing (as root, or through
# sudo). Safe to run again: it does nothing when everything is there.
set -euo pipefail
packages=(g++ cmake make python3 git
          googletest libgtest-dev libgmock-dev libbenchmark-dev
          libcereal-dev libboost1.81-dev libssl-dev
          clang libclang-rt-14-dev
          libopenmpi-dev openmpi-bin python3-mpi4py
          gnuplot-nox iproute2 procps)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "setup: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
