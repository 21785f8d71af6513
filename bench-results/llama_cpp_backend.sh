#!/usr/bin/env bash
# The llama.cpp backend beside simd-kv and candle, in one gpt2-bench run per thread count (1,
# 2): synthetic GPT-2 small in f32, f16 and q8_0, a 128-token prompt and 64 new tokens, keys
# and values cached in f16 (`--kv-cache f16`: llama.cpp's default, and the only cache types
# llama-bench takes are reduced ones). Then llama-bench over the very
# library gpt2-bench links (the llama.cpp that llama-cpp-sys-2 built), on the GGUF copies the
# backend read (NAME.SOURCE.COPY.gguf; the saved record predates the COPY checksum in the name): pp128 and tg64 @ d128, the same cases, back to back.
#
#   RUSTFLAGS="-C target-cpu=native" CARGO_TARGET_DIR=target/llama cargo build --release -p gpt2-harness --features llama-cpp
#   LLAMA_BENCH=/path/to/llama-bench bash bench-results/llama_cpp_backend.sh [RUNS]
#
# LLAMA_BENCH: a llama-bench linked against that library. llama-cpp-sys-2 ships llama.cpp
# without its tools, so build one from llama-bench.cpp and main.cpp of a llama.cpp checkout
# against the static libraries under target/llama/release/build/llama-cpp-sys-2-*/out/build
# (g++ -O3 -DNDEBUG -march=native main.cpp llama-bench.cpp -I{include,ggml/include,common}
# -Wl,--start-group lib*.a -Wl,--end-group -fopenmp -lssl -lcrypto; the exact command is in the
# record this script's output was saved to).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
bin=${BIN:-target/llama/release/gpt2-bench}
dir=target/ci-weights
f32=$dir/synthetic-gpt2-seed0.bin
files="$f32,$dir/synthetic-gpt2-seed0-f16.bin,$dir/synthetic-gpt2-seed0-q8_0.bin"
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | xargs) model $(grep -m1 '^model' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) logical cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
# (One run per thread count: a run compares several files at one count.)
for t in 1 2; do
  echo "## gpt2-bench --compare --backends simd-kv,candle,llama.cpp --model $files --threads $t --prompt-tokens 128 --max-tokens 64 --runs $runs --warmup 1 --kv-cache f16 --wide"
  "$bin" --compare --backends simd-kv,candle,llama.cpp --model "$files" --threads "$t" \
    --prompt-tokens 128 --max-tokens 64 --runs "$runs" --warmup 1 --kv-cache f16 --wide -q 2>&1
done
if [ -n "${LLAMA_BENCH:-}" ]; then
  for d in "" -f16 -q8_0; do
    gguf=$(ls "$dir"/synthetic-gpt2-seed0$d.*.gguf 2>/dev/null | grep -E "seed0$d\.[0-9a-f]{16}\.[0-9a-f]{16}\.gguf$" | head -1)
    echo "## $LLAMA_BENCH -m $gguf -p 128 -n 0, then -p 0 -n 64 -d 128; -r $runs -t 1,2 (cache f16, flash attention auto: its defaults)"
    "$LLAMA_BENCH" -m "$gguf" -p 128 -n 0 -r "$runs" -t 1,2 2>&1 | grep -E "^\| (model|gpt2)"
    "$LLAMA_BENCH" -m "$gguf" -p 0 -n 64 -d 128 -r "$runs" -t 1,2 2>&1 | grep -E "^\| gpt2"
  done
fi
echo "# end $(date -u +%FT%TZ); load $(cut -d' ' -f1-3 /proc/loadavg)"
