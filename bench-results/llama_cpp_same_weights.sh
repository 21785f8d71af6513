#!/usr/bin/env bash
# gpt2-bench and llama.cpp on identical weights: each gpt2-bench file (f32, f16, q8_0) is written
# as GGUF by gpt2-export, then
#   1. llama.cpp's llama-simple (greedy) and gpt2-bench's simd-kv generate from the same prompt,
#      and the texts are compared;
#   2. llama-bench (pp128 from an empty context; tg64 from empty and after 128 tokens, `-d 0,128`)
#      and `gpt2-bench compare` (a 128-token prompt, then 64 new tokens: its decode is the
#      "tg64 @ d128" case) measure speed, in ROUNDS alternating rounds at each thread count, so
#      that ratios are taken side by side on a machine whose speed drifts;
#   3. a summary: per dtype and thread count, simd-kv / llama.cpp for prefill (pp128) and decode
#      (tg64 @ d128), the ratio of each round and their median.
#
# Usage: LLAMA_CPP_BIN=/path/to/llama.cpp/build/bin bash bench-results/llama_cpp_same_weights.sh
#   (build llama.cpp with: cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF
#    -DGGML_NATIVE=ON && cmake --build build -j --target llama-simple llama-bench. On a Xeon
#    with AMX, llama.cpp 0c1e570's AMX q8_0 product crashed on GPT-2's shapes (SIGSEGV in
#    ggml_backend_amx_mul_mat); build it there with -DGGML_NATIVE=OFF and the CPU's AVX-512
#    flags instead: -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON
#    -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON.
#    The source: llama.cpp's own repository, or the copy vendored in llama-cpp-python's sdist
#    on PyPI (0.3.36 vendors 0c1e570).)
# Env: MODEL (default weights/synthetic-gpt2-seed0; gpt2-export makes what is missing; for
#      GPT-2 medium make weights/synthetic-gpt2-medium-seed0.bin with `gpt2-export --synthetic
#      gpt2-medium` and set MODEL to it), DTYPES (default "f32 f16 q8_0"), ROUNDS (default 2),
#      THREADS (thread counts, each measured in every round; default "1 <all cores>"),
#      PROMPT, N_GEN (tokens compared, default 32), KV_CACHE (gpt2-bench's --kv-cache, default
#      f32; auto caches keys and values in f16 for the reduced files, as llama.cpp does for all).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LLAMA_CPP_BIN:?set LLAMA_CPP_BIN to the build/bin directory of llama.cpp}"
MODEL=${MODEL:-weights/synthetic-gpt2-seed0}
DTYPES=${DTYPES:-f32 f16 q8_0}
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-$( [ "$(nproc)" -gt 1 ] && echo "1 $(nproc)" || echo 1)}
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
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | xargs) model $(grep -m1 '^model' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) logical cores; threads: $THREADS; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "cpu flags: $(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512(f|bw|vl|_vnni|_bf16|_fp16)|amx_int8)$' | tr '\n' ' ')"
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
        --ignore-eos --threads "${THREADS%% *}" --kv-cache "$KV_CACHE" -q 2>/dev/null | head -c ${#llama})
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

echo "## 2. Speed, $ROUNDS alternating rounds at threads: $THREADS"
models=$(IFS=,; echo "${bins[*]}")
margs=()
for g in "${ggufs[@]}"; do margs+=(-m "$g"); done
for round in $(seq 1 "$ROUNDS"); do
    for threads in $THREADS; do
        echo "### round $round, $threads threads: gpt2-bench compare --backends simd-kv --model $models --prompt-tokens 128 --max-tokens 64 --runs 3 --threads $threads --kv-cache $KV_CACHE --format csv"
        "$BENCH" compare --backends simd-kv --model "$models" --prompt-tokens 128 --max-tokens 64 \
            --runs 3 --threads "$threads" --kv-cache "$KV_CACHE" --format csv -q 2>&1 |
            tee "$TMP/ours-$round-$threads.csv"
        echo
        echo "### round $round, $threads threads: llama-bench -p 128 -n 64 -d 0,128 -r 3 -t $threads -o csv"
        "$LLAMA_CPP_BIN/llama-bench" "${margs[@]}" -p 128 -n 64 -d 0,128 -r 3 -t "$threads" -o csv \
            2>/dev/null | tee "$TMP/llama-$round-$threads.csv"
        echo
    done
done

echo "## 3. simd-kv / llama.cpp, per round and median"
python3 - "$TMP" "$ROUNDS" "$THREADS" "$DTYPES" <<'PY'
import csv, statistics, sys
tmp, rounds, threads, dtypes = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
def rows(path):
    with open(path) as f:
        return [r for r in csv.DictReader(line for line in f if "," in line)]
print("| dtype | threads | case | simd-kv kernels | simd-kv tok/s | llama.cpp tok/s | ratio per round | median ratio |")
print("|---|---|---|---|---|---|---|---|")
for dtype in dtypes:
    for t in threads:
        for case in ("prefill pp128", "decode tg64 @ d128"):
            ratios, ours_v, theirs_v, isas = [], [], [], set()
            for rnd in range(1, rounds + 1):
                ours = [r for r in rows(f"{tmp}/ours-{rnd}-{t}.csv") if r["dtype"] == dtype]
                theirs = [r for r in rows(f"{tmp}/llama-{rnd}-{t}.csv")
                          if r["model_filename"].endswith(f"-{dtype}.gguf")]
                if case.startswith("prefill"):
                    a = float(ours[0]["prefill_tok_per_s_mean"])
                    b = [float(r["avg_ts"]) for r in theirs
                         if r["n_prompt"] == "128" and r["n_gen"] == "0" and r["n_depth"] == "0"][0]
                else:
                    a = float(ours[0]["decode_tok_per_s_mean"])
                    b = [float(r["avg_ts"]) for r in theirs
                         if r["n_prompt"] == "0" and r["n_gen"] == "64" and r["n_depth"] == "128"][0]
                ours_v.append(a); theirs_v.append(b); ratios.append(a / b)
                isas.add(ours[0]["isa"])
            print(f"| {dtype} | {t} | {case} | {','.join(sorted(isas))} | {statistics.median(ours_v):.0f} | "
                  f"{statistics.median(theirs_v):.0f} | {' '.join(f'{r:.2f}' for r in ratios)} | "
                  f"**{statistics.median(ratios):.2f}x** |")
PY
