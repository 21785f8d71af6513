#!/usr/bin/env bash
# The instruction sets against each other and against a baseline build, on synthetic GPT-2 small
# in f32, f16 and q8_0: `gpt2-bench ab` (interleaved rounds, best-of-rounds and median ratios)
# of simd-kv prefill (128-token prompt) and decode (16 tokens after it), for each dtype and
# thread count:
#   1. the baseline build (AVX2 kernels) against this build with GPT2_BENCH_ISA=avx2: the
#      generic kernels must not be slower than the hand-written AVX2 ones they replace;
#   2. the same baseline against this build's default (AVX-512 where the CPU has it).
#
#   git worktree add /tmp/base BASE_COMMIT
#   (cd /tmp/base && CARGO_TARGET_DIR=/tmp/base-target cargo build --release -p gpt2-harness --no-default-features)
#   bash bench-results/isa_ab.sh /tmp/base-target/release/gpt2-bench [ROUNDS] [THREADS...]
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: isa_ab.sh BASELINE_BIN [ROUNDS] [THREADS...]}
rounds=${2:-6}
shift $(( $# >= 2 ? 2 : 1 ))
threads=("$@")
[ ${#threads[@]} -gt 0 ] || threads=(1 2)
bin=target/release/gpt2-bench
dir=target/ci-weights
f32=$dir/synthetic-gpt2-seed0.bin
mkdir -p "$dir"
[ -f "$f32" ] || target/release/gpt2-export --synthetic gpt2 --seed 0 --out "$f32" --quiet
for d in f16 q8_0; do
  [ -f "$dir/synthetic-gpt2-seed0-$d.bin" ] ||
    target/release/gpt2-export --from "$f32" --dtype "$d" --out "$dir/synthetic-gpt2-seed0-$d.bin" --quiet
done
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | xargs) model $(grep -m1 '^model' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) logical cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# AVX-512 flags: $(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^avx512(f|bw|vl|_vnni)$' | tr '\n' ' ')"
echo "# baseline: $base; candidate: $bin"
for t in "${threads[@]}"; do
  for d in f32 f16 q8_0; do
    model=$f32
    [ "$d" = f32 ] || model=$dir/synthetic-gpt2-seed0-$d.bin
    for isa in avx2 best; do
      echo "## $d, $t thread(s), candidate GPT2_BENCH_ISA=$isa"
      env_isa=()
      [ "$isa" = best ] || env_isa=(GPT2_BENCH_ISA="$isa")
      env "${env_isa[@]}" "$bin" ab --baseline-bin "$base" --rounds "$rounds" --max-slowdown 50% -- \
        --model "$model" --backends simd-kv --prompt-tokens 128 --max-tokens 16 \
        --runs 1 --warmup 0 --threads "$t" 2>&1 | grep -v '^round ' || true
    done
  done
done
