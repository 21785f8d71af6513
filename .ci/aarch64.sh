#!/usr/bin/env bash
# The aarch64 (ARM64) build and tests of the backends, under emulation: the NEON kernels against
# the scalar ones, the threaded drivers and the decode team, and naive, ndarray, simd and simd-kv
# against each other and against the golden fixture, with the NEON kernels and again with the
# scalar fallback forced; then clippy for aarch64. Results, never speed: qemu emulates every
# instruction, so no timing from this run means anything.
#
# Everything comes from Debian's packages: `rustc-web` (a Rust new enough for edition 2024, with
# a multi-arch std), the aarch64 cross linker, and qemu's user-mode emulator. They are installed
# when missing (as root; idempotent, quiet when already there). The build leaves candle out
# (`--no-default-features`): it does not use the kernels, and candle-core and gemm are most of a
# cold build. A separate target directory keeps these build scripts, compiled by Debian's rustc,
# apart from the main build's.
#
#   bash .ci/aarch64.sh          # what .ci/run calls
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
packages=(rustc-web cargo-web rust-web-clippy libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu qemu-user)

installed() {
  [ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] && [ -x /usr/bin/cargo-clippy ] &&
    [ -d /usr/lib/rustlib/$target ] &&
    command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null &&
    # Debian 12's plain rustc is 1.63, too old for this workspace; rustc-web is recent.
    /usr/bin/rustc --version | awk '{ split($2, v, "."); exit !(v[1] > 1 || v[2] >= 85) }'
}

source .ci/ensure_packages.sh
ensure_packages "the aarch64 toolchain" installed "${packages[@]}"

# Debian's toolchain first on PATH: cargo runs `cargo-clippy` and `clippy-driver` from PATH, and
# rustup's (~/.cargo/bin) have no aarch64 standard library.
export PATH=/usr/bin:$PATH
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# Plain qemu-aarch64: with `-L /usr/aarch64-linux-gnu` qemu mixes two glibc builds and every
# test hangs in pthread_create.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64
export CARGO_TARGET_DIR=target/aarch64
cargo=(/usr/bin/cargo)
args=(--locked -p gpt2-backends --no-default-features --target "$target" --release)
tests=(--lib --test equivalence --test golden)
# Every dtype on every backend; it runs the NEON and the scalar kernels itself, so it is not
# repeated in the forced-scalar pass.
dtype_tests=(--test dtypes)

echo "== aarch64: $(/usr/bin/rustc --version), $(qemu-aarch64 --version | head -n 1)"
echo "== aarch64 clippy (backends, no candle)"
"${cargo[@]}" clippy "${args[@]}" --lib --tests -- -D warnings
echo "== aarch64 tests under qemu, NEON kernels"
"${cargo[@]}" test "${args[@]}" "${tests[@]}" "${dtype_tests[@]}"
echo "== aarch64 tests under qemu, scalar kernels forced"
GPT2_BENCH_FORCE_SCALAR=1 "${cargo[@]}" test "${args[@]}" "${tests[@]}"
