#!/usr/bin/env bash
# f16 decode of simd-kv against llama.cpp with its flash attention off and on (issue 30 asked
# for f16 decode against a flash-attention-off llama.cpp), both in one gpt2-bench process per
# run (so each run's ratio meets one machine state), rounds alternating off/on, 1 and 2
# threads: synthetic GPT-2 small in f16, a 128-token prompt, 64 new tokens, keys and values in
# f16 (llama.cpp's cache type). Every run is saved into a results store per setting
# (`--save DIR`), and the ratios are read back from the stores with SQL.
#
#   RUSTFLAGS="-C target-cpu=native" CARGO_TARGET_DIR=target/llama cargo build --release -p gpt2-harness --features llama-cpp
#   BIN=target/llama/release/gpt2-bench bash bench-results/llama_cpp_fa_off.sh [ROUNDS] [RESULTS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
out=${2:-$(mktemp -d)}
bin=${BIN:-target/llama/release/gpt2-bench}
f16=target/ci-weights/synthetic-gpt2-seed0-f16.bin
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'); $("$bin" --version); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | xargs) model $(grep -m1 '^model' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) logical cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$rounds"); do
  for t in 1 2; do
    order="off on"; [ $((round % 2)) = 0 ] && order="on off"
    for fa in $order; do
      echo "## round $round: GPT2_BENCH_LLAMA_CPP_FLASH_ATTN=$fa $bin compare --backends simd-kv,llama.cpp --model $f16 --threads $t --prompt-tokens 128 --max-tokens 64 --runs 3 --warmup 1 --kv-cache f16 --no-roofline -q --format csv --save $out/fa-$fa"
      GPT2_BENCH_LLAMA_CPP_FLASH_ATTN=$fa "$bin" compare --backends simd-kv,llama.cpp --model "$f16" \
        --threads "$t" --prompt-tokens 128 --max-tokens 64 --runs 3 --warmup 1 --kv-cache f16 \
        --no-roofline -q --format csv --save "$out/fa-$fa" 2>/dev/null | cut -d, -f1,3,14-17
    done
  done
done
echo "## per run: simd-kv / llama.cpp (decode, prefill mean tok/s), read from each store with:"
query="SELECT a.threads, a.date_utc, round(a.decode_tok_per_s / b.decode_tok_per_s, 3),
  round(a.prefill_tok_per_s / b.prefill_tok_per_s, 3), round(a.decode_tok_per_s, 1),
  round(b.decode_tok_per_s, 1) FROM results a JOIN results b USING (run_key)
  WHERE a.backend = 'simd-kv' AND b.backend = 'llama.cpp' ORDER BY a.threads, a.date_utc"
echo "## $query"
for fa in off on; do
  echo "## flash attention $fa: threads|date|decode ratio|prefill ratio|simd-kv decode|llama.cpp decode"
  sqlite3 "$out/fa-$fa/results.sqlite" "$query"
  for t in 1 2; do
    sqlite3 "$out/fa-$fa/results.sqlite" "SELECT a.decode_tok_per_s / b.decode_tok_per_s,
      a.prefill_tok_per_s / b.prefill_tok_per_s FROM results a JOIN results b USING (run_key)
      WHERE a.backend = 'simd-kv' AND b.backend = 'llama.cpp' AND a.threads = $t" |
      python3 -c "import sys, statistics as s; r=[l.split('|') for l in sys.stdin]; print(f'   median of {len(r)} runs, $t thread(s): decode {s.median(float(x[0]) for x in r):.2f}x, prefill {s.median(float(x[1]) for x in r):.2f}x')"
  done
done
echo "# end $(date -u +%FT%TZ); load $(cut -d' ' -f1-3 /proc/loadavg)"
