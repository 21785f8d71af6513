#!/usr/bin/env bash
# The llama.cpp backend (cargo feature `llama-cpp`): builds gpt2-bench with llama.cpp (the
# sources vendored in the pinned llama-cpp-sys-2, compiled with cmake) for this CPU, lints the
# feature's code, and runs the 64-token equivalence on synthetic GPT-2 small with llama.cpp among
# the backends: in f32 and f16 its tokens equal naive's on this prompt, in q8_0 (llama.cpp
# rounds the inputs of q8_0 products to 8-bit blocks) it is judged by its agreement; a
# `different rule` row must not fail the run.
#
# Its build needs cmake, a C++ compiler and libclang (bindgen): installed from Debian's packages
# when missing (as root, as .ci/aarch64.sh does). RUSTFLAGS="-C target-cpu=native": llama.cpp's
# CPU kernels are compiled for the build's target CPU, and the backend refuses to run a
# llama.cpp built for less than the CPU has. candle is left out (`--no-default-features`): it is
# not needed here and is most of a cold build. A separate target directory keeps these
# native-CPU artifacts apart from the main build's.
#
#   bash .ci/llama_cpp.sh          # what .ci/run calls
set -euo pipefail
cd "$(dirname "$0")/.."

source .ci/ensure_packages.sh
installed() {
  command -v cmake >/dev/null && command -v c++ >/dev/null &&
    compgen -G "/usr/lib/llvm-*/lib/libclang.so*" >/dev/null
}
ensure_packages "llama.cpp's build tools" installed cmake g++ libclang-dev

export CARGO_TARGET_DIR=target/llama-cpp
export RUSTFLAGS="-C target-cpu=native"
start=$(date +%s)
echo "== clippy with the llama-cpp feature"
cargo clippy --release --locked -p gpt2-backends -p gpt2-harness --no-default-features \
  --features gpt2-harness/llama-cpp --all-targets -- -D warnings
echo "== build (llama.cpp compiled for this CPU)"
cargo build --release --locked -p gpt2-harness --no-default-features --features llama-cpp
bin=$CARGO_TARGET_DIR/release/gpt2-bench
echo "== the backends' tests with llama.cpp among them (every shape and dtype of the equivalence"
echo "   cases, the golden fixture, its own: GGUF cache, contract, logits against naive)"
cargo test --release --locked -p gpt2-backends --no-default-features --features llama-cpp

model=target/ci-weights/synthetic-gpt2-seed0.bin
f16=target/ci-weights/synthetic-gpt2-seed0-f16.bin
q8=target/ci-weights/synthetic-gpt2-seed0-q8_0.bin
mkdir -p target/ci-weights
[ -f "$model" ] || target/release/gpt2-export --synthetic gpt2 --seed 0 --out "$model" --quiet
[ -f "$f16" ] || target/release/gpt2-export --from "$model" --dtype f16 --out "$f16" --quiet
[ -f "$q8" ] || target/release/gpt2-export --from "$model" --dtype q8_0 --out "$q8" --quiet
# Every row of a run's JSON report: the exact backends match; llama.cpp (judged by its agreement,
# since it rounds its own way: GELU from an f16 table) is checked here on this prompt, where
# its f32 and f16 tokens equal the reference's, and its q8_0 (another rule) by its agreement.
check() {
  python3 - "$1" "$2" <<'PY'
import json, sys
report, want = json.loads(sys.argv[1]), sys.argv[2]
for r in report["results"]:
    if r["backend"] != "llama.cpp":
        assert r["rule"] == "exact" and r["tokens_match"], (r["label"], r["divergence"])
        continue
    a = r["agreement"]
    print(f"  {r['label']}: tokens match {r['tokens_match']}, top-1 {a['top1_agreement']:.1%}, "
          f"mean KL {a['mean_kl']:.2e}, first greedy difference {a['first_greedy_difference']}")
    assert r["rule"] == "different rule" and r["runs_agree"], r["label"]
    if want == "exact" and r["dtype"] in ("f32", "f16"):
        assert r["tokens_match"], f"{r['label']}: {r['divergence']}"
    # A broken backend agrees on almost nothing; q8_0's 8-bit inputs cost 2-15 positions in 100.
    assert a["top1_agreement"] >= 0.7, f"{r['label']} agrees on {a['top1_agreement']:.0%}"
PY
}
run() {
  "$bin" --compare --prompt "The meaning of life is" --max-tokens 64 --runs 1 --warmup 0 \
    --no-roofline --quiet --format json --backends naive,simd-kv,llama.cpp "$@"
}
echo "== equivalence with llama.cpp, 64 tokens: f32 and f16 its tokens equal naive's (cache f32, f16)"
for kv in f32 f16; do
  out=$(run --model "$model,$f16" --kv-cache "$kv") # (a failing run stops the script here)
  check "$out" exact
done
echo "== q8_0: llama.cpp by its agreement (another rule), naive and simd-kv exact"
out=$(run --model "$q8")
check "$out" agreement
echo "== llama.cpp step: $(( $(date +%s) - start )) s"
