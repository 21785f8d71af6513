#!/usr/bin/env bash
# Decode on a busy machine. The contention is one competing busy process, `yes > /dev/null`,
# started beside the benchmark (a fair stand-in for a user's browser or build on a laptop).
# In rounds that interleave every configuration, quiet and busy:
#   simd-kv at the default thread count (its team sized step by step), the same with the team
#   fixed at every thread (GPT2_BENCH_FIXED_TEAM=1, the behaviour before the sizer), simd-kv
#   --threads 1, candle at the default thread count, candle --threads 1.
# Prints one CSV row per run (decode and prefill tok/s as mean ± stddev over the run's 3 measured
# runs), then the mean decode tok/s per configuration over rounds and the ratios README quotes.
#
#   bash bench-results/contention.sh target/release/gpt2-bench weights/synthetic-gpt2-seed0.bin 3
set -euo pipefail
bin=${1:?usage: contention.sh BIN MODEL [ROUNDS]}
model=${2:?usage: contention.sh BIN MODEL [ROUNDS]}
rounds=${3:-3}

hog=
stop_hog() { if [ -n "$hog" ]; then kill "$hog" 2>/dev/null || true; wait "$hog" 2>/dev/null || true; hog=; fi; }
trap stop_hog EXIT

echo "# $(date -u +%FT%TZ), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) logical cores"
echo "# $bin: $("$bin" --version)"
echo "# each run: gpt2-bench --compare --backends B --prompt \"The meaning of life is\" --max-tokens 64 --runs 3 --warmup 1 --no-roofline --format csv -q --model $model [--threads 1]"
echo "# busy: the same with \`yes > /dev/null &\` running"
echo "condition,config,round,decode_tok_per_s,prefill_tok_per_s"

configs=(simd-kv simd-kv-fixed-team simd-kv-1thread candle candle-1thread)
run_one() { # condition config round
  local backend=simd-kv threads=() env=()
  case $2 in
    simd-kv-fixed-team) env=(GPT2_BENCH_FIXED_TEAM=1) ;;
    simd-kv-1thread) threads=(--threads 1) ;;
    candle) backend=candle ;;
    candle-1thread) backend=candle; threads=(--threads 1) ;;
  esac
  local row
  row=$(env "${env[@]}" "$bin" --compare --backends "$backend" --prompt "The meaning of life is" \
    --max-tokens 64 --runs 3 --warmup 1 --no-roofline --format csv -q --model "$model" \
    "${threads[@]}" 2>/dev/null | tail -n 1)
  # CSV columns: backend,threads,KV cache,prompt tok,new tok,TTFT ms,prefill tok/s,decode tok/s,...
  echo "$1,$2,$3,$(echo "$row" | cut -d, -f8),$(echo "$row" | cut -d, -f7)"
}

rows=$(mktemp)
for round in $(seq "$rounds"); do
  for condition in quiet busy; do
    if [ "$condition" = busy ]; then
      yes > /dev/null &
      hog=$!
      sleep 1
    fi
    order=("${configs[@]}")
    # Alternate the order between rounds so that slow drift does not favour one configuration.
    if [ $((round % 2)) = 0 ]; then
      order=(); for ((i=${#configs[@]}-1; i>=0; i--)); do order+=("${configs[$i]}"); done
    fi
    for config in "${order[@]}"; do
      run_one "$condition" "$config" "$round" | tee -a "$rows"
    done
    stop_hog
  done
done
awk -F, '
  /^(quiet|busy),/ { key = $1 "," $2; sum[key] += $4; n[key]++ }
  END {
    print ""
    print "mean decode tok/s over rounds:"
    split("simd-kv simd-kv-fixed-team simd-kv-1thread candle candle-1thread", cfg, " ")
    for (c = 1; c <= 5; c++) {
      q = sum["quiet," cfg[c]] / n["quiet," cfg[c]]; b = sum["busy," cfg[c]] / n["busy," cfg[c]]
      mean["quiet," cfg[c]] = q; mean["busy," cfg[c]] = b
      printf "  %-20s quiet %7.2f   busy %7.2f\n", cfg[c], q, b
    }
    print ""
    printf "busy:  simd-kv (default threads) / simd-kv --threads 1 = %.2f\n", mean["busy,simd-kv"] / mean["busy,simd-kv-1thread"]
    printf "busy:  simd-kv fixed team / simd-kv --threads 1        = %.2f\n", mean["busy,simd-kv-fixed-team"] / mean["busy,simd-kv-1thread"]
    printf "busy:  candle (default threads) / candle --threads 1   = %.2f\n", mean["busy,candle"] / mean["busy,candle-1thread"]
    printf "quiet: simd-kv (sized team) / simd-kv fixed team        = %.2f\n", mean["quiet,simd-kv"] / mean["quiet,simd-kv-fixed-team"]
  }' "$rows"
rm -f "$rows"
