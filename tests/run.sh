#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, runs the tests on this
# machine, type-checks the Apple and Android targets, runs the kernel tests on aarch64 under
# qemu-user (both with and without the dotprod extension: the NEON and SDOT kernel tables), the
# static Linux binaries, and the mixed-platform checks (Windows under wine, an aarch64 agent
# under qemu-user in a ring with this x86_64 head).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*" >&2; }

# Steps that could not run here (not root, no apt, no rustup target): reported at the end, loudly,
# and under CI (which runs as root) they fail the run.
skipped=()
skip() { skipped+=("$1"); echo "warning: skipping $1" >&2; }

need_apt=()
command -v qemu-aarch64 >/dev/null || need_apt+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null || need_apt+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v file >/dev/null || need_apt+=(file)
command -v x86_64-w64-mingw32-gcc >/dev/null || need_apt+=(gcc-mingw-w64-x86-64)
command -v wine >/dev/null || [ -x /usr/lib/wine/wine64 ] || need_apt+=(wine64)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
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
for t in aarch64-unknown-linux-gnu aarch64-apple-darwin x86_64-apple-darwin aarch64-linux-android \
  x86_64-unknown-linux-musl aarch64-unknown-linux-musl x86_64-pc-windows-gnu; do
  rustup target list --installed 2>/dev/null | grep -qx "$t" || rustup target add "$t" >/dev/null 2>&1 ||
    echo "warning: rustup could not add $t" >&2
done

log "fetching the demo model (cached)"
cargo run -q -- fetch models >/dev/null

log "cargo test"
cargo test -q 2>&1

# Network namespaces (an unplugged cable: no FIN, no RST) need root and iproute2.
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then
  log "network-namespace test (root)"
  cargo test -q --test it -- --ignored netns 2>&1
else
  skip "the network-namespace test cluster::ring_across_network_namespaces_and_an_unplugged_cable_netns (needs root and iproute2)"
fi

log "prima serve: the API through the openai client, the web page in headless Chromium"
venv=target/serve-venv
# Created once; later runs reuse it (offline), pip only runs when openai is missing.
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import openai' 2>/dev/null || "$venv/bin/pip" install -q openai
cargo build -q
(cd tests/serve && "../../$venv/bin/python" test_api.py ../../target/debug/prima ../../models/SmolLM2-135M-Instruct.Q4_1.gguf)
# The same API from the head of a loopback ring of three (`prima up --serve`).
(cd tests/serve && PRIMA_SERVE_RING=1 "../../$venv/bin/python" test_api.py ../../target/debug/prima ../../models/SmolLM2-135M-Instruct.Q4_1.gguf)
if command -v chromium >/dev/null; then
  (cd tests/serve && "../../$venv/bin/python" test_web.py ../../target/debug/prima ../../models/SmolLM2-135M-Instruct.Q4_1.gguf ../../target/serve-web)
else
  skip "the web page test in headless Chromium (needs chromium)"
fi

# The GPU kernels and window against the CPU on lavapipe (a no-op rebuild once `gpu` is a
# default feature). XDG_RUNTIME_DIR: Mesa warns without one.
log "GPU tests (lavapipe)"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo test -q --features gpu --test it -- gpu:: 2>&1

have_target() { rustup target list --installed 2>/dev/null | grep -qx "$1"; }
for t in aarch64-apple-darwin x86_64-apple-darwin aarch64-linux-android; do
  if have_target "$t"; then
    log "cargo check --target $t"
    cargo check -q --target "$t" --lib --bins
  else
    skip "cargo check --target $t (rustup target missing)"
  fi
done

if have_target aarch64-unknown-linux-gnu && command -v qemu-aarch64 >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null; then
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
  for cpu in max cortex-a53; do
    log "aarch64 tests under qemu-user (QEMU_CPU=$cpu)"
    QEMU_CPU=$cpu cargo test -q --target aarch64-unknown-linux-gnu --test it -- kernels:: quant:: model:: --skip smollm2 --skip dequantized 2>&1
  done
else
  skip "the aarch64 kernel tests under qemu-user (needs the aarch64-unknown-linux-gnu target, qemu-aarch64 and aarch64-linux-gnu-gcc)"
fi

if have_target x86_64-unknown-linux-musl && have_target aarch64-unknown-linux-musl && command -v qemu-aarch64 >/dev/null; then
  log "static binaries (x86_64 and aarch64 musl)"
  tests/static-binaries.sh
else
  skip "the static-binary check (needs the x86_64/aarch64-unknown-linux-musl targets and qemu-aarch64)"
fi

if have_target x86_64-pc-windows-gnu && command -v x86_64-w64-mingw32-gcc >/dev/null &&
  { command -v wine >/dev/null || [ -x /usr/lib/wine/wine64 ]; }; then
  log "Windows under wine: prima run, and a Windows agent upgraded by and in a ring with a Linux head"
  tests/mixed-platforms.sh windows
else
  skip "the Windows checks under wine (needs the x86_64-pc-windows-gnu target, mingw-w64 and wine64)"
fi
if have_target aarch64-unknown-linux-musl && command -v qemu-aarch64 >/dev/null; then
  log "a ring of this x86_64 head and an aarch64 agent under qemu-user"
  tests/mixed-platforms.sh aarch64
else
  skip "the mixed-architecture ring (needs the aarch64-unknown-linux-musl target and qemu-aarch64)"
fi

if [ ${#skipped[@]} -gt 0 ]; then
  {
    printf '\n%s\n' "================================================================================"
    printf 'NOT ALL TESTS RAN: the tests that ran passed, but %d step(s) were SKIPPED:\n' "${#skipped[@]}"
    printf '  - %s\n' "${skipped[@]}"
    printf '%s\n' "Run tests/run.sh as root (it installs what is missing with apt-get) to run them."
    printf '%s\n' "================================================================================"
  } >&2
  if [ -n "${CI:-}" ]; then
    exit 1
  fi
  exit 0
fi
log "all tests passed (no step skipped)"
