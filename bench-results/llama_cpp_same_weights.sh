#!/usr/bin/env bash
# gpt2-bench and llama.cpp on identical weights: each gpt2-bench file (f32, f16, q8_0) is written
# as GGUF by gpt2-export, then
#   1. llama.cpp's llama-simple (greedy) and gpt2-bench's simd-kv generate from the same prompt,
#      and the texts are compared;
#   2. llama-bench (pp128 from an empty context; tg64 from empty and after 128 tokens, `-d 0,128`)
#      and `gpt2-bench compare` (a 128-token prompt, then 64 new tokens: its decode is the
#      "tg64 @ d128" case) measure speed, in ROUNDS alternating rounds, so that ratios are taken
#      side by side on a machine whose speed drifts.
#
# Usage: LLAMA_CPP_BIN=/path/to/llama.cpp/build/bin bash bench-results/llama_cpp_same_weights.sh
#   (build llama.cpp with: cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF &&
#    cmake --build build -j --target llama-simple llama-bench)
# Env: MODEL (default weights/synthetic-gpt2-seed0; gpt2-export makes what is missing),
#      DTYPES (default "f32 f16 q8_0"), ROUNDS (default 2), THREADS (default: all cores),
#      PROMPT, N_GEN (tokens compared, default 32), KV_CACHE (gpt2-bench's --kv-cache, default
#      f32; auto caches keys and values in f16 for the reduced files, as llama.cpp does for all).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LLAMA_CPP_BIN:?set LLAMA_CPP_BIN to the build/bin directory of llama.cpp}"
MODEL=${MODEL:-weights/synthetic-gpt2-seed0}
DTYPES=${DTYPES:-f32 f16 q8_0}
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-$(nproc)}
PROMPT=${PROMPT:-"The quick brown fox jumps over the lazy dog. Once upon a time"}
N_GEN=${N_GEN:-32}
KV_CACHE=${KV_CACHE:-f32}
EXPORT=target/release/gpt2-export
BENCH=target/release/gpt2-bench
cargo build --release -q -p gpt2-harness -p gpt2-export
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "# gpt2-bench and llama.cpp on the same weights"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "gpt2-bench commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
echo "llama.cpp: $("$LLAMA_CPP_BIN/llama-bench" --version 2>&1 | head -1 || true)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) logical cores; threads: $THREADS"
echo "gpt2-bench --kv-cache: $KV_CACHE"
echo "model: $MODEL; prompt for the text check: \"$PROMPT\", $N_GEN tokens"
echo

bins=()
ggufs=()
for dtype in $DTYPES; do
    if [ "$dtype" = f32 ]; then bin=$MODEL.bin; else bin=$MODEL-$dtype.bin; fi
    if [ ! -f "$bin" ]; then
        if [ "$dtype" = f32 ]; then
            echo "error: $bin is missing; create it with $EXPORT --synthetic gpt2 (or --from a checkpoint)" >&2
            exit 3
        fi
        "$EXPORT" --from "$MODEL.bin" --dtype "$dtype" --out "$bin" -q
    fi
    gguf=$TMP/$(basename "$MODEL")-$dtype.gguf
    "$EXPORT" --from "$bin" --out "$gguf" -q
    bins+=("$bin")
    ggufs+=("$gguf")
done

echo "## 1. Same text (greedy, $N_GEN tokens)"
nl=$'\n'
for i in "${!bins[@]}"; do
    bin=${bins[$i]}
    gguf=${ggufs[$i]}
    llama=$("$LLAMA_CPP_BIN/llama-simple" -m "$gguf" -n "$N_GEN" "$PROMPT" 2>/dev/null)
    ours=$("$BENCH" run --backend simd-kv --model "$bin" --prompt "$PROMPT" --max-tokens "$N_GEN" \
        --ignore-eos --threads "$THREADS" --kv-cache "$KV_CACHE" -q 2>/dev/null | head -c ${#llama})
    if [ "$llama" = "$ours" ]; then
        verdict="same text"
    else
        common=0
        while [ "${llama:$common:1}" = "${ours:$common:1}" ]; do common=$((common + 1)); done
        verdict="DIFFERENT after $common characters"
    fi
    echo "- $(basename "$bin"): $verdict"
    echo "    llama.cpp:  ${llama//$nl/\\n}"
    echo "    gpt2-bench: ${ours//$nl/\\n}"
done
echo

echo "## 2. Speed, $ROUNDS alternating rounds"
models=$(IFS=,; echo "${bins[*]}")
for round in $(seq 1 "$ROUNDS"); do
    echo "### round $round: gpt2-bench compare --backends simd-kv --model $models --prompt-tokens 128 --max-tokens 64 --runs 3 --threads $THREADS --kv-cache $KV_CACHE"
    "$BENCH" compare --backends simd-kv --model "$models" --prompt-tokens 128 --max-tokens 64 \
        --runs 3 --threads "$THREADS" --kv-cache "$KV_CACHE" -q 2>&1
    echo
    echo "### round $round: llama-bench -p 128 -n 64 -d 0,128 -r 3 -t $THREADS"
    margs=()
    for g in "${ggufs[@]}"; do margs+=(-m "$g"); done
    "$LLAMA_CPP_BIN/llama-bench" "${margs[@]}" -p 128 -n 64 -d 0,128 -r 3 -t "$THREADS" -o md 2>/dev/null
    echo
done
