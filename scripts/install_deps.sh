#!/usr/bin/env bash
# Installs what `make test` and `make bench` need and this machine lacks: Debian packages
# through apt-get. Safe to run again: it installs nothing that is already there.
set -euo pipefail

debian_packages=(
  cmake ninja-build g++ ccache   # build
  libgtest-dev                   # C++ tests
  nlohmann-json3-dev             # JSON parser for the CLI tests (bench --format json)
  libhwy-dev                     # Highway: portable SIMD with runtime dispatch (fast CPU backend)
)

missing=()
for pkg in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
