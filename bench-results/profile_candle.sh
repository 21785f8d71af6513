#!/usr/bin/env bash
# Where the candle backend spends its time: `perf record` of gpt2-bench running candle alone,
# once prefill-dominated (a 128-token prompt, one new token, 12 runs so that the one-time weight
# copy at start-up is a small share) and once decode-dominated (a 4-token prompt, 128 new
# tokens), then `perf report` per thread and symbol, written as text.
#
#   cargo build --release -p gpt2-harness
#   bash bench-results/profile_candle.sh weights/synthetic-gpt2-seed0.bin bench-results/NAME.txt
#
# Needs `perf` (linux-perf) and kernel.perf_event_paranoid <= 2.
set -euo pipefail
model=${1:-weights/synthetic-gpt2-seed0.bin}
out=${2:-bench-results/candle-profile.txt}
bin=${GPT2_BENCH:-target/release/gpt2-bench}
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
{
  echo "# candle profile: $(date -u +%FT%TZ), commit $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
  echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) logical cores"
  for phase in "prefill:--prompt-tokens 128 --max-tokens 1 --runs 12" \
               "decode:--prompt-tokens 4 --max-tokens 128 --runs 1"; do
    name=${phase%%:*}
    args=${phase#*:}
    cmd="$bin --compare --backends candle --no-roofline --format csv --model $model $args -q"
    echo
    echo "## $name: perf record -F 999 -g -- $cmd"
    # shellcheck disable=SC2086
    perf record -q -F 999 -g -o "$data/$name.data" -- $cmd 2>&1 | sed 's/^/# /'
    echo
    echo "### samples by thread"
    perf report -i "$data/$name.data" --no-children --sort comm --stdio -g none 2>/dev/null |
      awk '/%/ && n++ < 8'
    echo
    echo "### top symbols (thread, symbol)"
    perf report -i "$data/$name.data" --no-children --sort comm,dso,symbol --stdio -g none 2>/dev/null |
      awk '/%/ && n++ < 25'
  done
} > "$out"
echo "wrote $out"
