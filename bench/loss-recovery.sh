#!/usr/bin/env bash
# Time from losing a device to the next token, on loopback: a ring of four (the head and three
# agents on this machine, schedule "even") generates greedily on SmolLM2; one agent is killed
# (SIGKILL) or frozen (SIGSTOP) mid-generation; the head's own report of the recovery
# (`up: ring formed again …`, `up: resumed …`) is printed per run, and the text is checked
# against `prima run`. Usage: bench/loss-recovery.sh [kill|stop] [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
how=${1:-kill}
runs=${2:-3}
bin=target/release/prima
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -x "$bin" ] || cargo build --release
[ -f "$model" ] || "$bin" fetch
dir=$(mktemp -d)
pids=()
trap 'kill -9 "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT
prompt="The history of the city begins"
want=$("$bin" run -m "$model" -p "$prompt" -n 64 --temp 0 -t 1 -c 512 2>/dev/null)
head -c 32 /dev/urandom | base64 > "$dir/secret"
ports=(7811 7812 7813)
for i in 0 1 2; do
  "$bin" agent --listen "127.0.0.1:${ports[$i]}" --secret-file "$dir/secret" --cache-dir "$dir/a$i" \
    --timeout-secs 3 2>"$dir/a$i.log" &
  pids[$i]=$!
done
sleep 1
cat > "$dir/c.toml" <<TOML
model = "$PWD/$model"
secret_file = "$dir/secret"
ctx_size = 512
timeout_secs = 3
schedule = "even"
[[device]]
name = "head"
addr = "127.0.0.1:1"
threads = 1
TOML
for i in 0 1 2; do
  printf '[[device]]\nname = "a%d"\naddr = "127.0.0.1:%d"\nthreads = 1\n' "$i" "${ports[$i]}" >> "$dir/c.toml"
done
for r in $(seq "$runs"); do
  XDG_CACHE_HOME="$dir/head" "$bin" up "$dir/c.toml" -p "$prompt" -n 64 --temp 0 >"$dir/out" 2>"$dir/err" &
  up=$!
  while [ "$(wc -c <"$dir/out")" -lt 12 ]; do sleep 0.01; done
  victim=$(( (r - 1) % 3 ))
  if [ "$how" = stop ]; then kill -STOP "${pids[$victim]}"; else kill -9 "${pids[$victim]}"; fi
  wait "$up" || echo "run $r: prima up failed"
  grep -E "^up: (lost|ring formed again|rebuilt|resumed)" "$dir/err" | cut -c1-220 || true
  if [ "$(cat "$dir/out")" = "$want" ]; then echo "run $r: text identical to prima run"; else echo "run $r: TEXT DIFFERS"; fi
  # Bring the victim back for the next run.
  kill -9 "${pids[$victim]}" 2>/dev/null || true
  wait "${pids[$victim]}" 2>/dev/null || true
  "$bin" agent --listen "127.0.0.1:${ports[$victim]}" --secret-file "$dir/secret" --cache-dir "$dir/a$victim" \
    --timeout-secs 3 2>>"$dir/a$victim.log" &
  pids[$victim]=$!
  sleep 1
done
