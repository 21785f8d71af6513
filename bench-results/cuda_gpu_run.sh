#!/usr/bin/env bash
# The CUDA checks and measurements of the candle backend, as run on a GPU machine: the backend
# test binaries built with the `cuda` feature (every equivalence, golden and long-context case
# runs on the GPU as well as the CPU; backends/tests/common/mod.rs, `targets`), the golden
# check on the GPU, a --compare of candle on the GPU
# against simd-kv on the same machine's CPU at three context lengths, and a per-operation
# profile of candle on the GPU. Writes everything into OUT_DIR.
#
#   cargo build --release -p gpt2-harness -p gpt2-export --features gpt2-harness/cuda  # or .ci/build-cuda.sh
#   cargo test --release -p gpt2-backends --features cuda --tests --no-run  # prints the test binaries
#   BIN=target/release CUDA_TESTS="target/release/deps/equivalence-HASH ..." \
#     bash bench-results/cuda_gpu_run.sh OUT_DIR
#
# Needs an NVIDIA driver and the CUDA runtime libraries (cuBLAS, cuRAND, NVRTC, cudart) on the
# library path; LD_LIBRARY_PATH is extended with the usual toolkit locations below.
set -euo pipefail
out=${1:?usage: cuda_gpu_run.sh OUT_DIR}
bin=${BIN:-target/release}
mkdir -p "$out"
# The toolkit's usual places, then the CUDA libraries that pip installs beside PyTorch.
pip_cuda=$(python3 -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13", "lib"))' 2>/dev/null || true)
for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/nvidia/lib64 $pip_cuda; do
  if [ -d "$dir" ]; then export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$dir"; fi
done
model=weights/synthetic-gpt2-seed0.bin

{
  echo "# $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) logical cores"
  echo "# libraries the binary loads:"
  ldd "$bin/gpt2-bench" | grep -E 'cuda|cublas|curand|nvrtc' || true
} 2>&1 | tee "$out/machine.txt"

if [ -n "${CUDA_TESTS:-}" ]; then
  echo "\$ cargo test --release -p gpt2-backends --features cuda --tests" | tee "$out/cuda-tests.txt"
  for tests in $CUDA_TESTS; do
    "$tests" --test-threads 1 2>&1 | tee -a "$out/cuda-tests.txt"
  done
fi

[ -f "$model" ] || "$bin/gpt2-export" --synthetic gpt2 --out "$model"

run() {
  echo "\$ gpt2-bench $*"
  "$bin/gpt2-bench" "$@"
}
run check --golden backends/tests/fixtures/golden.json --backends candle --device cuda 2>&1 |
  tee "$out/check-golden-cuda.txt"
run --compare --backends simd-kv,candle --device cuda --model "$model" \
  --prompt-tokens 16,128,512 --max-tokens 64 --save "$out" -q 2>&1 | tee "$out/compare-cuda.txt"
run --backend candle --device cuda --model "$model" --prompt-tokens 128 --max-tokens 64 \
  --ignore-eos --profile -q 2>&1 | tee "$out/profile-cuda.txt"
