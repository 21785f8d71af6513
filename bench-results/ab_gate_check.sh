#!/usr/bin/env bash
# Does the interleaved gate (`gpt2-bench ab`) cry wolf, and does it catch a real slowdown? On this
# machine as it is (shared, noisy), in one sitting:
#   1. RERUNS (default 20) gate runs of the binary against a copy of itself, on simd-kv and
#      candle: every one should pass (exit 0);
#   2. RERUNS gate runs of the test-only backend `test-slowed` (simd-kv through a wrapper) against
#      the same binary with GPT2_BENCH_TEST_SLOWDOWN=SLOWDOWN (default 0.15: about 20% slower
#      decode, as each line's ratios show): every one should fail (exit 2).
# Each gate run: ROUNDS (default 12) rounds, each running both binaries once, alternating order,
# each child RUNS (default 1) measured runs.
# Prints one line per gate run (exit status and the verdict lines) and a count; writes them to OUT.
#
#   bash bench-results/ab_gate_check.sh OUT.txt [MODEL]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: ab_gate_check.sh OUT.txt [MODEL]}
model=${2:-weights/synthetic-gpt2-seed0.bin}
reruns=${RERUNS:-20}
rounds=${ROUNDS:-12}
runs=${RUNS:-1}
slowdown=${SLOWDOWN:-0.15}
bin=$PWD/target/release/gpt2-bench
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
[ -f "$model" ] || target/release/gpt2-export --synthetic gpt2 --seed 0 --out "$model" --quiet
cp "$bin" "$tmp/baseline-gpt2-bench"
printf '#!/bin/sh\nGPT2_BENCH_TEST_SLOWDOWN=%s exec %s "$@"\n' "$slowdown" "$bin" >"$tmp/slowed"
chmod +x "$tmp/slowed"
compare=(--model "$model" --prompt-tokens 128 --max-tokens 16 --runs "$runs" --warmup 0)
export GPT2_BENCH_TEST_ENGINES=1
{
  echo "# $(date -u +%FT%TZ) ab_gate_check.sh, commit $(git rev-parse --short=12 HEAD)"
  echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) logical cores"
  echo "# unchanged: gpt2-bench ab --baseline-bin <copy of itself> --rounds $rounds -- ${compare[*]} --backends simd-kv,candle"
  echo "# slowed:    gpt2-bench ab --baseline-bin <itself> --candidate-bin <itself with GPT2_BENCH_TEST_SLOWDOWN=$slowdown> --rounds $rounds -- ${compare[*]} --backends test-slowed"
} | tee "$out"
verdicts() { grep -E '(prefill|decode) +best' "$1" | sed 's/^ *//; s/  */ /g' | tr '\n' ';'; }
false_alarms=0
for i in $(seq 1 "$reruns"); do
  "$bin" ab --baseline-bin "$tmp/baseline-gpt2-bench" --rounds "$rounds" -- "${compare[@]}" \
    --backends simd-kv,candle >"$tmp/run.txt" 2>"$tmp/err.txt"
  rc=$?
  [ "$rc" -eq 0 ] || false_alarms=$((false_alarms + 1))
  echo "unchanged $i: exit $rc; $(verdicts "$tmp/run.txt") $(grep -v '^round' "$tmp/err.txt" | head -2 | tr '\n' ' ')" | tee -a "$out"
done
caught=0
for i in $(seq 1 "$reruns"); do
  "$bin" ab --baseline-bin "$bin" --candidate-bin "$tmp/slowed" --rounds "$rounds" -- \
    "${compare[@]}" --backends test-slowed >"$tmp/run.txt" 2>"$tmp/err.txt"
  rc=$?
  [ "$rc" -eq 2 ] && caught=$((caught + 1))
  echo "slowed $i: exit $rc; $(verdicts "$tmp/run.txt") $(grep -v '^round' "$tmp/err.txt" | head -2 | tr '\n' ' ')" | tee -a "$out"
done
echo "# unchanged binary: $false_alarms false alarm(s) in $reruns gate runs; slowed: caught $caught of $reruns" | tee -a "$out"
