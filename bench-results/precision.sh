#!/usr/bin/env bash
# The reduced-precision measurements behind README's precision table and docs/performance.md:
#
#  1. synthetic GPT-2 small in f32 (seed 0), converted to f16, bf16 and q8_0 (gpt2-export --from);
#  2. one `compare` of every file on ndarray, simd, simd-kv and candle (128-token prompt, 32 new
#     tokens, 3 runs): decode and prefill tok/s per dtype and backend, bytes per token,
#     % roofline, and each file's agreement with f32 (saved as JSON);
#  3. ROUNDS rounds of simd-kv alone on the four files (128-token prompt, 128 new tokens), the
#     files interleaved within each round, so the dtype ratios are measured minutes apart on the
#     same machine; then the same with a `yes > /dev/null` beside it (a busy laptop's stand-in);
#  4. backends/examples/decode_vs_read on the four files, quiet and busy, after a 5-token and a
#     128-token prompt: every round runs a read pass and 8 simd-kv decode steps on each file in
#     turn, in one process, so each file's decode is set against the bandwidth of the same
#     moment and the dtype ratios are taken seconds apart (median of 30 rounds).
#
#   bash bench-results/precision.sh OUT_DIR [ROUNDS]
#
# KV_CACHE (default auto: the f16, bf16 and q8_0 files cache keys and values in f16, as llama.cpp
# does, and the f32 reference stays exact) is passed to every run as `--kv-cache`; KV_CACHE=f32
# measures gpt2-bench's default.
#
# Builds nothing: run `cargo build --release -p gpt2-harness -p gpt2-export` and
# `cargo build --release -p gpt2-backends --example decode_vs_read` first.
set -euo pipefail
out=${1:?usage: precision.sh OUT_DIR [ROUNDS]}
rounds=${2:-3}
kv=${KV_CACHE:-auto}
bin=target/release
w=${WEIGHTS:-weights}
mkdir -p "$out" "$w"
f32=$w/synthetic-gpt2-seed0.bin
[ -f "$f32" ] || "$bin/gpt2-export" --synthetic gpt2 --seed 0 --out "$f32" -q
files=("$f32")
for d in f16 bf16 q8_0; do
  f=$w/synthetic-gpt2-seed0-$d.bin
  "$bin/gpt2-export" --from "$f32" --dtype "$d" --out "$f" -q
  files+=("$f")
done
list=$(IFS=,; echo "${files[*]}")
{
  echo "# $(date -u +%FT%TZ) $(git rev-parse --short=12 HEAD) on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
  echo "\$ gpt2-bench compare --model $list --backends simd-kv,simd,candle,ndarray --prompt-tokens 128 --max-tokens 32 --runs 3 --kv-cache $kv"
} > "$out/precision-table.txt"
"$bin/gpt2-bench" compare --model "$list" --backends simd-kv,simd,candle,ndarray \
  --prompt-tokens 128 --max-tokens 32 --runs 3 --kv-cache "$kv" --wide -q >> "$out/precision-table.txt"
"$bin/gpt2-bench" compare --model "$list" --backends simd-kv,simd,candle,ndarray \
  --prompt-tokens 128 --max-tokens 32 --runs 3 --kv-cache "$kv" --format json -q > "$out/precision-table.json"

simd_kv_rounds() {
  local label=$1
  for r in $(seq 1 "$rounds"); do
    echo "## $label round $r"
    "$bin/gpt2-bench" compare --model "$list" --backends simd-kv --prompt-tokens 128 \
      --max-tokens 128 --runs 3 --kv-cache "$kv" -q | grep -E '^(simd-kv|synthetic|Roofline)'
  done
}
{
  echo "# $(date -u +%FT%TZ) $(git rev-parse --short=12 HEAD) on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
  echo "\$ gpt2-bench compare --model $list --backends simd-kv --prompt-tokens 128 --max-tokens 128 --runs 3 --kv-cache $kv   # x $rounds, quiet, then beside yes > /dev/null"
  simd_kv_rounds quiet
  yes > /dev/null &
  hog=$!
  trap 'kill $hog 2>/dev/null' EXIT
  simd_kv_rounds "busy (yes > /dev/null)"
  kill $hog
} > "$out/precision-simd-kv-rounds.txt"

interleaved() {
  local label=$1
  for p in 5 128; do
    echo "## $label, $p-token prompt"
    "$bin/examples/decode_vs_read" "$list" 2 30 "$p" "$kv"
  done
}
{
  echo "# $(date -u +%FT%TZ) $(git rev-parse --short=12 HEAD) on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
  echo "\$ target/release/examples/decode_vs_read $list 2 30 {5,128} $kv   # quiet, then beside yes > /dev/null"
  interleaved quiet
  yes > /dev/null &
  hog=$!
  trap 'kill $hog 2>/dev/null' EXIT
  interleaved "busy (yes > /dev/null)"
  kill $hog
} > "$out/precision-decode-vs-read.txt"
echo "wrote $out/precision-table.txt, precision-table.json, precision-simd-kv-rounds.txt, precision-decode-vs-read.txt"
