#!/usr/bin/env bash
# Mixed platforms (called by tests/run.sh after tests/static-binaries.sh, whose release builds it
# reuses; one more release build, for Windows). Every check gives the greedy text of the host
# build's `prima run` on the demo model, or fails:
#   windows: `prima.exe run` under wine;
#   windows-ring: a Linux head and a Windows agent (under wine) in a loopback ring; the agent
#     first reports another build, so the head ships it prima-windows-x86_64.exe from the
#     cluster's `binaries` folder and the agent installs it and restarts (Windows has no exec);
#   aarch64-ring: a Linux x86_64 head and an aarch64 agent under qemu-user (NEON kernels against
#     AVX2 ones), the agent's build found in `binaries` (nothing shipped);
#   missing-build: an agent on another platform whose build is not in `binaries` gets an error
#     naming the file and the command that builds it.
# Usage: tests/mixed-platforms.sh [windows] [aarch64]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
parts=("${@:-windows aarch64}")
parts=" ${parts[*]} "
model=$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf
gen=(-p "The capital of France is" -n 12 --temp 0)
host=$PWD/target/release/prima

cargo build -q --release
want=$("$host" run -m "$model" "${gen[@]}" -c 256 2>/dev/null)
[ -n "$want" ] || { echo "mixed-platforms: the host build printed no text" >&2; exit 1; }

work=$(mktemp -d "$PWD/target/mixed.XXXXXX")
export WINEPREFIX=$PWD/target/wine-prefix WINEDEBUG=-all
wine=$(command -v wine || command -v wine64 || echo /usr/lib/wine/wine64)
wineserver=$(command -v wineserver || echo /usr/lib/wine/wineserver)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # A Windows agent that restarted itself is a new process of our own wine prefix.
  [[ $parts != *" windows "* ]] || "$wineserver" -k 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "mixed-platforms: $*" >&2
  for f in "$work"/*.log; do printf -- '--- %s\n' "$f" >&2; tail -n 30 "$f" >&2; done
  exit 1
}
same() { # name, text
  [ "$2" = "$want" ] || fail "$1 gave different text"$'\n'"--- one device (host build):"$'\n'"$want"$'\n'"--- $1:"$'\n'"$2"
  echo "mixed-platforms: $1: same text as one device"
}

echo "mixed-platforms-test-secret-0123456789" >"$work/cluster.secret"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_agent NAME CMD...: an agent on a free loopback port (its address in $agent_addr).
start_agent() {
  local name=$1 port
  shift
  port=$(free_port)
  agent_addr=127.0.0.1:$port
  "$@" agent --listen "$agent_addr" --secret-file "$work/cluster.secret" --cache-dir "$work/$name.cache" \
    --timeout-secs 30 >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 600); do # wine's first start in a fresh prefix takes a while
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.2
  done
  fail "agent $name never listened on $agent_addr"
}

# up NAME AGENT_NAME [TOML LINES]: a ring of the head and the agent at $agent_addr; stdout in $got.
up() {
  local name=$1 agent=$2 extra=${3:-}
  cat >"$work/$name.toml" <<EOF
model = "$model"
secret_file = "cluster.secret"
ctx_size = 256
schedule = "even"
timeout_secs = 30
$extra

[[device]]
name = "head"
addr = "127.0.0.1:1"

[[device]]
name = "$agent"
addr = "$agent_addr"
EOF
  got=$(XDG_CACHE_HOME="$work/head-cache" "$host" up "$work/$name.toml" "${gen[@]}" 2>"$work/$name.up.log")
}

mkdir -p "$work/bin" "$work/empty"

if [[ $parts == *" windows "* ]]; then
  cargo build -q --release --target x86_64-pc-windows-gnu
  # The prefix is made once (wine's first start is slow) and kept in target/.
  [ -f "$WINEPREFIX/system.reg" ] || "$wine" wineboot --init >/dev/null 2>&1 || true
  shim=$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll
  [ -f "$shim" ] || x86_64-w64-mingw32-gcc -O2 -shared -o "$shim" tests/wine/bcryptprimitives.c -ladvapi32
  exe=target/x86_64-pc-windows-gnu/release/prima.exe
  cp "$exe" "$work/bin/prima-windows-x86_64.exe"
  same "windows (wine)" "$("$wine" "$exe" run -m "$model" "${gen[@]}" -c 256 2>/dev/null | tr -d '\r')"

  # The agent runs a copy (the upgrade replaces it) and claims another build.
  mkdir -p "$work/win"
  cp "$exe" "$work/win/prima.exe"
  PRIMA_FAKE_BUILD_ID=old start_agent win "$wine" "$work/win/prima.exe"
  up windows-ring win 'binaries = "bin"' || fail "prima up with a Windows agent failed"
  grep -q "ship device \`win\`.*prima-windows-x86_64.exe" "$work/windows-ring.up.log" ||
    fail "the head did not ship prima-windows-x86_64.exe to the Windows agent"
  grep -q "upgraded" "$work/windows-ring.up.log" || fail "the Windows agent did not come back upgraded"
  same "windows-ring (Linux head, Windows agent under wine, upgraded from binaries/)" "$got"
fi

if [[ $parts == *" aarch64 "* ]]; then
  cargo build -q --release --target aarch64-unknown-linux-musl
  arm=target/aarch64-unknown-linux-musl/release/prima
  cp "$arm" "$work/bin/prima-linux-aarch64"
  start_agent arm qemu-aarch64 "$arm"
  up aarch64-ring arm 'binaries = "bin"' || fail "prima up with an aarch64 agent failed"
  if grep -q "ship device" "$work/aarch64-ring.up.log"; then
    fail "the head shipped a build to an agent already on the one in binaries/"
  fi
  same "aarch64-ring (x86_64 head, aarch64 agent under qemu-user)" "$got"

  # The same agent, claiming another build, and no build for it: a clear error.
  kill "${pids[-1]}"
  PRIMA_FAKE_BUILD_ID=old start_agent arm-old qemu-aarch64 "$arm"
  if up missing-build arm-old 'binaries = "empty"'; then
    fail "prima up accepted an agent on another build with no build to send it"
  fi
  grep -q "has no prima-linux-aarch64 to send it: build it with \`cargo build --release --target aarch64-unknown-linux-musl" \
    "$work/missing-build.up.log" || fail "no clear error for the missing build: $(cat "$work/missing-build.up.log")"
  echo "mixed-platforms: missing-build: the error names prima-linux-aarch64 and its build command"
fi
