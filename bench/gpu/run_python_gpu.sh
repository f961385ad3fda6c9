#!/usr/bin/env bash
# The Python package built with CUDA on a GPU machine, then its whole pytest suite (the GPU
# tests, and the NCCL sequence-parallel test when the machine has 2 GPUs). The machine has no
# network: the build requirements come as wheels in .whl (pip download nanobind
# scikit-build-core pathspec packaging --only-binary=:all: --python-version 3.12 --no-deps -d .whl),
# the C++ dependencies in .deps (scripts/pack_gpu_deps.sh). Logs under $OUT.
# Usage: bench/gpu/run_python_gpu.sh [install] [test]   (none = both)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
stages="$*"
[[ -z $stages ]] && stages="install test"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export CMAKE_PREFIX_PATH="$PWD/.deps" PYTHONUNBUFFERED=1
# The extension links the packed Highway; the loader finds it here.
export LD_LIBRARY_PATH="$PWD/.deps/lib/x86_64-linux-gnu:$PWD/.deps/lib:${LD_LIBRARY_PATH:-}"
SITE=${SITE:-/tmp/pysite}
for stage in $stages; do
  case $stage in
    install)
      start=$(date +%s)
      python3 -m pip install -q --no-index --no-deps --target /tmp/buildsite .whl/*.whl \
        >"$OUT/py_wheels.log" 2>&1 || { tail -20 "$OUT/py_wheels.log"; exit 1; }
      PYTHONPATH=/tmp/buildsite DILATED_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        CMAKE_ARGS="-DDILATED_CUDA_ARCHS=${DILATED_CUDA_ARCHS:-90-real}" \
        python3 -m pip install --no-build-isolation --no-deps --target "$SITE" . \
        >"$OUT/py_install.log" 2>&1 || { tail -30 "$OUT/py_install.log"; exit 1; }
      echo "python install: $(( $(date +%s) - start )) s"
      ;;
    test)
      PYTHONPATH="$SITE" python3 -m pytest tests/python -q -p no:cacheprovider -rs \
        >"$OUT/py_pytest.log" 2>&1
      tail -25 "$OUT/py_pytest.log"
      ;;
    *) echo "unknown stage $stage (install, test)"; exit 2 ;;
  esac
done
