#!/usr/bin/env bash
# Installs what `make test` and `make bench` need and this machine lacks: Debian packages
# through apt-get, and the Python side's packages from PyPI into a virtual environment kept
# outside the clone ($DILATED_PY_VENV), so later runs on the same machine reuse it.
# Safe to run again: it installs nothing that is already there.
set -euo pipefail

debian_packages=(
  cmake ninja-build g++ ccache   # build
  libgtest-dev                   # C++ tests
  nlohmann-json3-dev             # JSON parser for the CLI tests (bench --format json)
  libhwy-dev                     # Highway: portable SIMD with runtime dispatch (fast CPU backend)
  libopenmpi-dev openmpi-bin     # MPI communicator for sequence parallelism, mpirun for its tests
  python3-dev python3-venv       # Python extension headers and venv where python3 is Debian's
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

# Python: torch, nanobind, scikit-build-core, pytest, numpy, matplotlib (python/requirements-dev.txt).
py_venv="${DILATED_PY_VENV:-${HOME:-/root}/.cache/dilated-attention/venv}"
requirements="$(dirname "$0")/../python/requirements-dev.txt"
if ! "$py_venv/bin/python" -c "import torch, nanobind, scikit_build_core, pytest, numpy, matplotlib" 2>/dev/null; then
  echo "installing Python packages into $py_venv"
  python3 -m venv "$py_venv"
  "$py_venv/bin/python" -m pip install --quiet -r "$requirements"
fi
