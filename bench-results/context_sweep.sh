#!/usr/bin/env bash
# Decode speed against context length: one `gpt2-bench --compare` per length, 8 new tokens each,
# so decode runs at contexts (L - 8)..L. Appends the full JSON reports to a .jsonl file, then
# prints a Markdown table of decode tok/s with the ratios simd/ndarray and simd-kv/simd.
#
#   cargo build --release -p gpt2-harness
#   bash bench-results/context_sweep.sh weights/synthetic-gpt2-seed0.bin bench-results/NAME.jsonl
set -euo pipefail
model=${1:-weights/synthetic-gpt2-seed0.bin}
out=${2:-bench-results/context-sweep.jsonl}
bin=${GPT2_BENCH:-target/release/gpt2-bench}
backends=${BACKENDS:-ndarray,simd,simd-kv}
: > "$out"
for length in 16 32 64 128 256 512 1024; do
  "$bin" --compare --prompt-tokens $((length - 8)) --max-tokens 8 --backends "$backends" \
    --model "$model" --format jsonl --no-roofline -q >> "$out"
done
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
names = [r["backend"] for r in rows[0]["results"]]
print("| context | " + " | ".join(f"{n} decode tok/s" for n in names) + " | simd / ndarray | simd-kv / simd |")
print("|---" * (len(names) + 3) + "|")
for run in rows:
    rate = {r["backend"]: r["decode_tok_per_s"] for r in run["results"]}
    ok = all(r["tokens_match"] for r in run["results"])
    ctx = len(run["prompt_token_ids"]) + 8
    cells = " | ".join(f"{rate[n]:.2f}" for n in names)
    ratio = lambda a, b: f"{rate[a] / rate[b]:.1f}x" if a in rate and b in rate else "-"
    print(f"| {ctx} | {cells} | {ratio('simd', 'ndarray')} | {ratio('simd-kv', 'simd')} |" + ("" if ok else " TOKENS DIFFER"))
m = rows[0]["machine"]
print(f"\n{rows[0]['model']['name']}, {m['cpu']}, {m['logical_cores']} threads, {m['build_profile']} build, commit {m['git_commit']}")
PY
