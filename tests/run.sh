#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, runs the tests on this
# machine, type-checks the Apple and Android targets, and runs the kernel tests on aarch64
# under qemu-user (both with and without the dotprod extension: the NEON and SDOT kernel tables).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*" >&2; }

need_apt=()
command -v qemu-aarch64 >/dev/null || need_apt+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null || need_apt+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v ip >/dev/null || need_apt+=(iproute2)
# Mesa's CPU Vulkan driver (lavapipe): the GPU tests run their kernels on it (correctness only).
ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    log "installing ${need_apt[*]}"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null 2>&1 ||
      echo "warning: could not install ${need_apt[*]}; the steps needing them are skipped" >&2
  else
    echo "warning: not root, cannot install ${need_apt[*]}; the steps needing them are skipped" >&2
  fi
fi
for t in aarch64-unknown-linux-gnu aarch64-apple-darwin aarch64-linux-android; do
  rustup target list --installed 2>/dev/null | grep -qx "$t" || rustup target add "$t" >/dev/null 2>&1 ||
    echo "warning: rustup could not add $t" >&2
done

log "fetching the demo model (cached)"
cargo run -q -- fetch models >/dev/null

log "cargo test"
cargo test -q 2>&1

# The GPU kernels and window against the CPU on lavapipe (a no-op rebuild once `gpu` is a
# default feature). XDG_RUNTIME_DIR: Mesa warns without one.
log "GPU tests (lavapipe)"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo test -q --features gpu --test it -- gpu:: 2>&1

have_target() { rustup target list --installed 2>/dev/null | grep -qx "$1"; }
for t in aarch64-apple-darwin aarch64-linux-android; do
  if have_target "$t"; then
    log "cargo check --target $t"
    cargo check -q --target "$t" --lib --bins
  fi
done

if have_target aarch64-unknown-linux-gnu && command -v qemu-aarch64 >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null; then
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
  for cpu in max cortex-a53; do
    log "aarch64 tests under qemu-user (QEMU_CPU=$cpu)"
    QEMU_CPU=$cpu cargo test -q --target aarch64-unknown-linux-gnu --test it -- kernels:: quant:: model:: --skip smollm2 --skip dequantized 2>&1
  done
fi
log "all tests passed"
