#!/usr/bin/env bash
# Decode speed against context length: one `gpt2-bench --compare` over prompt lengths
# 8 ... 1016 (8 new tokens each, so decode runs at contexts up to 16 ... 1024), saved as one JSON
# report plus an SVG chart, then a Markdown table of decode tok/s with the ratios simd/ndarray
# and simd-kv/simd.
#
#   cargo build --release -p gpt2-harness
#   bash bench-results/context_sweep.sh weights/synthetic-gpt2-seed0.bin bench-results/NAME
#   (writes NAME.json and NAME.svg)
set -euo pipefail
model=${1:-weights/synthetic-gpt2-seed0.bin}
out=${2:-bench-results/context-sweep}
bin=${GPT2_BENCH:-target/release/gpt2-bench}
backends=${BACKENDS:-ndarray,simd,simd-kv,candle}
runs=${RUNS:-3}
"$bin" --compare --prompt-tokens 8,24,56,120,248,504,1016 --max-tokens 8 --runs "$runs" \
  --backends "$backends" --model "$model" --format json --no-roofline -q \
  --plot "$out.svg" > "$out.json"
python3 - "$out.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
names = list(dict.fromkeys(r["backend"] for r in report["results"]))
lengths = list(dict.fromkeys(r["prompt_tokens"] for r in report["results"]))
rate = {(r["backend"], r["prompt_tokens"]): r["decode_tok_per_s"] for r in report["results"]}
ok = all(r["tokens_match"] for r in report["results"])
print("| context | " + " | ".join(f"{n} decode tok/s" for n in names) + " | simd / ndarray | simd-kv / simd |")
print("|---" * (len(names) + 3) + "|")
for length in lengths:
    def ratio(a, b):
        if (a, length) in rate and (b, length) in rate:
            return f"{rate[(a, length)]['mean'] / rate[(b, length)]['mean']:.1f}x"
        return "-"
    cells = " | ".join(
        f"{rate[(n, length)]['mean']:.2f} ± {rate[(n, length)]['stddev']:.2f}" for n in names
    )
    print(f"| {length + 8} | {cells} | {ratio('simd', 'ndarray')} | {ratio('simd-kv', 'simd')} |")
if not ok:
    print("TOKENS DIFFER between backends: see the JSON report")
PY
