#!/usr/bin/env bash
# Builds gpt2-bench with the `cuda` feature on a machine that has no CUDA toolkit and no GPU,
# to check that the CUDA path compiles and links, or to build binaries for a GPU machine that
# has the NVIDIA driver and CUDA libraries but no Rust toolchain (copy the binaries there).
#
#   bash .ci/build-cuda.sh [WORK_DIR]     # default WORK_DIR: ../cuda-build (outside the repo)
#
# What it does, in WORK_DIR:
# 1. downloads CUDA 13.0 from PyPI (nvcc, cicc, headers, CCCL, cudart, cuBLAS, cuRAND, NVRTC
#    wheels; ~800 MB) and lays them out as a toolkit tree;
# 2. writes a link-time stand-in for the driver library, libcuda.so (the real one comes with the
#    NVIDIA driver, which cannot be installed without a GPU): every cu* entry point that cudarc
#    declares, as an empty function. The binaries are only linked against it; at run time the
#    driver's own libcuda.so.1 is loaded. Never put this stand-in on a library path;
# 3. builds gpt2-bench, gpt2-export and the backend test binaries (equivalence, golden and
#    long-context cases, which with the `cuda` feature also run on the GPU) for
#    compute capability $CUDA_COMPUTE_CAP (default 90: H100/H200) into WORK_DIR/target.
#    candle-kernels compiles its kernels with nvcc here: ~20 minutes on 2 cores.
#
# CUDA 13.0 is chosen to match a 580-series driver: PTX from a newer nvcc does not load on an
# older driver. Pick the wheel versions to match the driver of the machine that will run it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mkdir -p "${1:-$repo/../cuda-build}" && cd "${1:-$repo/../cuda-build}" && pwd)
toolkit="$work/toolkit/nvidia/cu13"

if [ ! -x "$toolkit/bin/nvcc" ]; then
  mkdir -p "$work/wheels"
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$work/wheels" \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 \
    nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
  for wheel in "$work"/wheels/*.whl; do
    python3 -m zipfile -e "$wheel" "$work/toolkit"
  done
  chmod +x "$toolkit"/bin/* "$toolkit"/nvvm/bin/*
  # nvcc.profile looks for headers and libraries under targets/x86_64-linux.
  mkdir -p "$toolkit/targets/x86_64-linux"
  ln -sfn ../../include "$toolkit/targets/x86_64-linux/include"
  ln -sfn ../../lib "$toolkit/targets/x86_64-linux/lib"
  ln -sfn lib "$toolkit/lib64"
  (cd "$toolkit/lib" &&
    for lib in libcublas libcublasLt libcudart libnvrtc; do ln -sf "$lib.so.13" "$lib.so"; done &&
    ln -sf libcurand.so.10 libcurand.so)
fi

if [ ! -f "$toolkit/lib/libcuda.so" ]; then
  # The cudarc version in Cargo.lock, from cargo's source cache.
  version=$(grep -A1 '^name = "cudarc"$' "$repo/Cargo.lock" | sed -n 's/^version = "\(.*\)"$/\1/p')
  (cd "$repo" && cargo fetch --locked)
  cudarc=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 2 -name "cudarc-$version" | head -1)
  grep -ohP '^\s+fn \Kcu\w+(?=\()' "$cudarc/src/driver/sys/mod.rs" | sort -u |
    sed 's/.*/void &(void) {}/' >"$work/libcuda_stand_in.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$toolkit/lib/libcuda.so" "$work/libcuda_stand_in.c"
fi

export CUDA_HOME="$toolkit" CUDA_PATH="$toolkit" LIBRARY_PATH="$toolkit/lib"
export PATH="$toolkit/bin:$toolkit/nvvm/bin:$PATH"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR="$work/target"
cd "$repo"
cargo build --release --locked -p gpt2-harness -p gpt2-export --features gpt2-harness/cuda
cargo test --release --locked -p gpt2-backends --features cuda --tests --no-run
echo "built: $work/target/release/{gpt2-bench,gpt2-export} and the test binaries named above"
