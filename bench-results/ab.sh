#!/usr/bin/env bash
# Interleaved A/B of two gpt2-bench builds on the same --compare arguments: A, B, A, B, ... so
# that both see the same drift in machine load. Prints each run's CSV rows, prefixed by its label.
#
#   git worktree add /tmp/before OLD_COMMIT && (cd /tmp/before && cargo build --release -p gpt2-harness)
#   bash bench-results/ab.sh /tmp/before/target/release/gpt2-bench target/release/gpt2-bench 3 \
#     --backends simd-kv --prompt-tokens 120,1016 --max-tokens 16 --model weights/synthetic-gpt2-seed0.bin
set -euo pipefail
a=${1:?usage: ab.sh BIN_A BIN_B ROUNDS COMPARE_ARGS...}
b=${2:?}
rounds=${3:?}
shift 3
echo "# $(date -u +%FT%TZ), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) logical cores"
echo "# A: $a: $("$a" --version)"
echo "# B: $b: $("$b" --version)"
echo "# each run: gpt2-bench --compare --no-roofline --format csv -q $*"
header=yes
for round in $(seq "$rounds"); do
  for label in A B; do
    bin=$a
    [ "$label" = B ] && bin=$b
    out=$("$bin" --compare --no-roofline --format csv -q "$@" 2>/dev/null)
    if [ -n "$header" ]; then
      echo "$out" | head -1 | sed 's/^/run,/'
      header=
    fi
    echo "$out" | tail -n +2 | sed "s/^/$label$round,/"
  done
done
