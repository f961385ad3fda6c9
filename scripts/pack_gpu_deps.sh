#!/usr/bin/env bash
# The GPU machines cannot install packages: copy this machine's Highway, GoogleTest and
# nlohmann-json (headers, libraries, CMake package files) into .deps/ (git-ignored), to be
# carried with a device run and found through CMAKE_PREFIX_PATH. NCCL's header goes to
# .deps/nccl/include (src/dist/CMakeLists.txt looks there); its library (about 210 MB, more than
# a device run carries) only with PACK_NCCL_LIBRARY=1: the GPU image's CUDA toolkit or PyTorch's
# nvidia-nccl package provides one (bench/gpu/run_dist_gpu.sh finds it).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .deps && mkdir -p .deps/include .deps/lib/x86_64-linux-gnu/cmake
cp -r /usr/include/hwy /usr/include/gtest /usr/include/gmock /usr/include/nlohmann .deps/include/
cp -a /usr/lib/x86_64-linux-gnu/libhwy*.so* /usr/lib/x86_64-linux-gnu/libgtest*.a /usr/lib/x86_64-linux-gnu/libgmock*.a .deps/lib/x86_64-linux-gnu/
cp -r /usr/lib/x86_64-linux-gnu/cmake/hwy /usr/lib/x86_64-linux-gnu/cmake/GTest .deps/lib/x86_64-linux-gnu/cmake/
mkdir -p .deps/share/cmake && cp -r /usr/share/cmake/nlohmann_json .deps/share/cmake/
mkdir -p .deps/nccl/include .deps/nccl/lib
cp /usr/local/cuda/include/nccl.h .deps/nccl/include/
if [[ ${PACK_NCCL_LIBRARY:-0} == 1 ]]; then
  cp -a /usr/local/cuda/lib64/libnccl.so* .deps/nccl/lib/
fi
du -sh .deps
