#!/usr/bin/env bash
# Does the regression gate cry wolf, and does it catch a real slowdown? On this machine, as it is
# (shared, noisy), in one sitting:
#   1. a baseline of simd-kv and candle;
#   2. RERUNS (default 20) reruns of the same binary against it, as they come: every one should
#      pass (no false alarm);
#   3. a baseline of test-slowed alone (simd-kv through a wrapper that adds no time; alone,
#      because a backend measured right after candle in the same process runs slower: candle's
#      worker threads keep spinning for a while), then RERUNS runs of test-slowed with GPT2_BENCH_TEST_SLOWDOWN=SLOWDOWN (default 0.15: each call
#      then keeps the core busy 15% longer, which measured about 20% slower decode here, since
#      the pool's threads also wake more slowly after the pause; each line shows the raw tok/s)
#      against the same baseline: every one should fail with exit 2.
# Prints one line per run (exit status and the gate's lines) and a count; writes them to OUT.
#
#   bash bench-results/gate_check.sh OUT.txt [MODEL]
set -uo pipefail
out=${1:?usage: gate_check.sh OUT.txt [MODEL]}
model=${2:-weights/synthetic-gpt2-seed0.bin}
reruns=${RERUNS:-20}
bin=target/release/gpt2-bench
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
[ -f "$model" ] || target/release/gpt2-export --synthetic gpt2 --seed 0 --out "$model" --quiet
args=(compare --prompt-tokens 128 --max-tokens 32 --runs 5 --model "$model" -q --format json)
export GPT2_BENCH_TEST_ENGINES=1
{
  echo "# $(date -u +%FT%TZ) gate_check.sh, commit $(git rev-parse --short=12 HEAD)"
  echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) logical cores"
  echo "# baseline A: gpt2-bench ${args[*]} --backends simd-kv,candle; then the same --baseline A (max slowdown 10%)"
  echo "# baseline B: the same with --backends test-slowed; then GPT2_BENCH_TEST_SLOWDOWN=${SLOWDOWN:-0.15} ... --backends test-slowed --baseline B"
} | tee "$out"
"$bin" "${args[@]}" --backends simd-kv,candle >"$tmp/base.json" || exit 1
false_alarms=0
for i in $(seq 1 "$reruns"); do
  "$bin" "${args[@]}" --backends simd-kv,candle --baseline "$tmp/base.json" \
    >"$tmp/run.json" 2>"$tmp/err.txt"
  rc=$?
  [ "$rc" -eq 0 ] || false_alarms=$((false_alarms + 1))
  echo "unchanged $i: exit $rc; $(grep -E 'decode|prefill' "$tmp/err.txt" | sed 's/^ *//' | tr '\n' ';')" | tee -a "$out"
done
"$bin" "${args[@]}" --backends test-slowed >"$tmp/base-slowed.json" || exit 1
caught=0
for i in $(seq 1 "$reruns"); do
  GPT2_BENCH_TEST_SLOWDOWN=${SLOWDOWN:-0.15} "$bin" "${args[@]}" --backends test-slowed \
    --baseline "$tmp/base-slowed.json" >"$tmp/run.json" 2>"$tmp/err.txt"
  rc=$?
  [ "$rc" -eq 2 ] && caught=$((caught + 1))
  echo "slowed $i: exit $rc; $(grep -E 'decode|prefill' "$tmp/err.txt" | sed 's/^ *//' | tr '\n' ';')" | tee -a "$out"
done
echo "# unchanged binary: $false_alarms false alarm(s) in $reruns reruns; slowed: caught $caught of $reruns" | tee -a "$out"
