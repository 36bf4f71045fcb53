#!/usr/bin/env bash
# The one-binary check (called by tests/run.sh): static release builds for x86_64 and aarch64 Linux
# (musl, linker settings in .cargo/config.toml), each must be statically linked and give the same
# greedy text as the host build on the demo model; the aarch64 one runs under qemu-user, both with
# and without the dotprod extension (the Termux/arm64 binary, both NEON kernel tables).
set -euo pipefail
cd "$(dirname "$0")/.."
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
prompt="The capital of France is"
run() { "$@" run -m "$model" -p "$prompt" -n 12 --temp 0 -c 256 2>/dev/null; }

cargo build -q --release
want=$(run target/release/prima)
[ -n "$want" ] || { echo "static-binaries: the host build printed no text" >&2; exit 1; }

check() { # name, binary, runner...
  local name=$1 bin=$2
  shift 2
  file -b "$bin" | grep -q "statically linked\|static-pie linked" ||
    { echo "static-binaries: $bin is not statically linked: $(file -b "$bin")" >&2; exit 1; }
  local got
  got=$(run "$@" "$bin")
  if [ "$got" != "$want" ]; then
    printf 'static-binaries: %s gave different text\n--- host:\n%s\n--- %s:\n%s\n' "$name" "$want" "$name" "$got" >&2
    exit 1
  fi
  echo "static-binaries: $name: static, same text as the host build"
}

cargo build -q --release --target x86_64-unknown-linux-musl
check x86_64-musl target/x86_64-unknown-linux-musl/release/prima

cargo build -q --release --target aarch64-unknown-linux-musl
QEMU_CPU=max check "aarch64-musl (qemu, dotprod)" target/aarch64-unknown-linux-musl/release/prima qemu-aarch64
QEMU_CPU=cortex-a53 check "aarch64-musl (qemu, cortex-a53)" target/aarch64-unknown-linux-musl/release/prima qemu-aarch64
