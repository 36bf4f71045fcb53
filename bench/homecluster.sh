#!/usr/bin/env bash
# bench/homecluster.sh — emulate a heterogeneous home cluster on one Linux machine and compare
# `prima up` on it with llama.cpp alone on its biggest device. Run as root from the repo root:
#
#   MODEL=/path/model.gguf bench/homecluster.sh
#
# Each device is a network namespace (veth to a bridge; tbf rate limit like home Wi-Fi, and a
# delay on every packet it receives), a memory cgroup with its RAM limit, a CPU quota and a blkio
# read-bandwidth throttle, running `prima agent` with its own cache dir (its own copy of its
# layers: page caches are not shared). The first device is the head (`prima up` runs there,
# inside its namespace and cgroups).
#
# Device profiles: the prima.cpp paper's Table 1 (D1 Mac M1, D2 laptop, D3 desktop, D4 phone)
# scaled to this 2-core VM: available RAM ÷ 8 (GiB → ×128 MiB), disk read speed ÷ 8, cores ÷ 8
# of this machine (the ring computes one device at a time, so quotas need not sum to 2 cores),
# Wi-Fi rates as measured in the paper (320–610 Mbit/s). GPUs are not emulated (CPU only).
#   D3 desktop : 9.7 GiB → 1242 MiB, 3.0 GB/s → 375 MB/s, 16 cores → 2.0, 600 Mbit/s, 3 ms (head)
#   D1 Mac M1  : 2.4 GiB →  307 MiB, 0.7 GB/s →  88 MB/s,  8 cores → 1.0, 500 Mbit/s, 5 ms
#   D2 laptop  : 4.1 GiB →  525 MiB, 3.0 GB/s → 375 MB/s,  8 cores → 1.0, 400 Mbit/s, 5 ms
#   D4 phone   : 1.9 GiB →  243 MiB, 1.4 GB/s → 175 MB/s,  8 cores → 1.0, 320 Mbit/s, 7 ms
#
# Link latency: this kernel has no netem, so each device's namespace sends every packet it
# receives on eth0 to an NFQUEUE (iptables-legacy, installed with apt-get when missing) served
# by bench/nfqdelay.py, which accepts it `delay` ms later. A packet from device A to device B
# waits B's delay, so the round trip A–B is delay(A) + delay(B) (as with netem on every
# device's egress); `RUNS=links` measures it with `ping -U` and TCP throughput with
# bench/tcprate.py. Delaying outgoing packets instead collapses TCP (the kernel counts held
# packets against the sender), so the delay is on ingress.
#
# The benchmark model (README "Home-cluster benchmark"): Llama-3-8B's shape, 16 layers, Q4_K_M:
#   prima synth --shape llama3-8b --layers 16 --vocab-from tests/fixtures/vocab/smollm2-135m.vocab-only.gguf \
#       -o /work/models-shared/l3-8b-16L-q4km.gguf
#
# Environment (defaults in brackets):
#   MODEL      the GGUF to run [/work/models-shared/l3-8b-16L-q4km.gguf]
#   PRIMA      prima binary [target/release/prima]
#   LLAMA_BIN  llama.cpp bin dir [$HOME/.cache/prima-oracle/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin]
#   DEVICES    "name ram_mib disk_MBps cores mbit delay_ms [window];..." (head first; without
#              windows the Halda plan splits the layers) [the four above, Halda]
#   ROUNDS     k, rounds per token; empty: Halda chooses [2]   PREFETCH  auto|off|advise|touch [auto]
#   N_PREDICT  tokens generated [8]           CTX       context [256]
#   RUNS       what to run: prima, llama (llama.cpp), solo (prima alone on the head device),
#              links (RTT and TCP rate head → each device), cpucheck (each device's CPU time
#              under load against its quota), plan (`prima plan --search`: Halda's split and
#              the cost model's best few, written to $WORK/splits), naive (windows in
#              proportion to RAM, k = 1), splits (each split in SPLITS, or in $WORK/splits)
#              ["links prima llama"]
#   SPLITS     "k w:w:..;..." splits for RUNS=splits, a window per device (0: left out)
#   CPU_SHARES the devices' cpu.shares: far above the default 1024, so the quotas are met while
#              other jobs (builds) run on the machine [262144]
#   WORK       scratch dir (device caches persist here between runs) [/var/tmp/prima-homecluster]
set -euo pipefail
trap 'echo "homecluster: line $LINENO: \`$BASH_COMMAND\` failed" >&2' ERR

MODEL=${MODEL:-/work/models-shared/l3-8b-16L-q4km.gguf}
PRIMA=$(readlink -f "${PRIMA:-target/release/prima}")
LLAMA_BIN=${LLAMA_BIN:-$HOME/.cache/prima-oracle/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin}
DEVICES=${DEVICES:-"d3 1242 375 2.0 600 3; d1 307 88 1.0 500 5; d2 525 375 1.0 400 5; d4 243 175 1.0 320 7"}
ROUNDS=${ROUNDS-2}
SPLITS=${SPLITS:-}
CPU_SHARES=${CPU_SHARES:-262144}
PREFETCH=${PREFETCH:-auto}
N_PREDICT=${N_PREDICT:-8}
CTX=${CTX:-256}
RUNS=${RUNS:-"links prima llama"}
WORK=${WORK:-/var/tmp/prima-homecluster}
PROMPT="Once upon a time"
TAG=phc   # prefix of everything we create
BR=${TAG}br0
NET=10.77.0
PORT=7790
BENCH=$(dirname "$(readlink -f "$0")")

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ -x "$PRIMA" ] || { echo "no prima binary at $PRIMA (cargo build --release)" >&2; exit 1; }
[ -f "$MODEL" ] || { echo "no model at $MODEL" >&2; exit 1; }
MODEL=$(readlink -f "$MODEL")
command -v python3 >/dev/null || { echo "the link delay needs python3" >&2; exit 1; }
if ! command -v iptables-legacy >/dev/null; then
    echo "== installing iptables (the link delay's NFQUEUE rule)"
    apt-get install -y iptables >/dev/null || { echo "cannot install iptables" >&2; exit 1; }
fi
mkdir -p "$WORK"
# A private copy under another name: test suites on the same machine that clean up their own
# `prima agent`s by name must not kill ours.
cp "$PRIMA" "$WORK/phcd.new" && mv "$WORK/phcd.new" "$WORK/phcd"
PRIMA=$WORK/phcd

# cgroups v1: memory under our own memory cgroup (we may not own the root), cpu/blkio at root.
MEMCG=/sys/fs/cgroup/memory$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/self/cgroup)/$TAG
CPUCG=/sys/fs/cgroup/cpu/$TAG
ACCTCG=/sys/fs/cgroup/cpuacct/$TAG
BLKCG=/sys/fs/cgroup/blkio/$TAG
# (awk NR == 1, not head: with pipefail a SIGPIPE'd writer would end the script silently)
DISK=$(lsblk -no MAJ:MIN,TYPE "$(findmnt -no SOURCE -T "$WORK")" 2>/dev/null | awk 'NR == 1 {print $1}' || true)
DISK=${DISK:-$(findmnt -no MAJ:MIN -T "$WORK")}
DISK=${DISK%:*}:0   # throttle the whole disk

IFS=';' read -ra DEVS <<<"$DEVICES"
PIDS=()
LINK_PIDS=()   # the delay programs: stopped last, so agents' last packets still pass

cleanup() {
    set +e
    trap - ERR
    # Lift the disk throttles first: a process blocked on a throttled read cannot die until the
    # read completes, and its cgroup cannot be removed until it has.
    for d in "${DEVS[@]}"; do
        read -r name _ <<<"$d"
        [ -e "$BLKCG/$name/blkio.throttle.read_bps_device" ] && echo "$DISK 0" >"$BLKCG/$name/blkio.throttle.read_bps_device"
    done
    for p in "${PIDS[@]}" $(jobs -p); do kill "$p" 2>/dev/null; done
    sleep 0.3
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    for p in "${LINK_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        local alive=0
        for p in "${LINK_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for d in "${DEVS[@]}"; do
        read -r name _ <<<"$d"
        ip netns pids "$TAG-$name" 2>/dev/null | xargs -r kill -9
        ip netns del "$TAG-$name" 2>/dev/null
        ip link del "$TAG-$name" 2>/dev/null
        for cg in "$MEMCG/$name" "$CPUCG/$name" "$BLKCG/$name" "$ACCTCG/$name"; do
            [ -d "$cg" ] || continue
            for _ in $(seq 50); do
                [ -s "$cg/cgroup.procs" ] || break
                xargs -r kill -9 <"$cg/cgroup.procs" 2>/dev/null
                sleep 0.2
            done
            rmdir "$cg" || echo "homecluster: could not remove $cg" >&2
        done
    done
    ip link del "$BR" 2>/dev/null
    rmdir "$MEMCG" "$CPUCG" "$BLKCG" "$ACCTCG" 2>/dev/null
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cleanup

# ---------------------------------------------------------------- the devices
ip link add "$BR" type bridge && ip addr add "$NET.1/24" dev "$BR" && ip link set "$BR" up
mkdir -p "$MEMCG" "$CPUCG" "$BLKCG" "$ACCTCG"
# Our cpu cgroup competes with every other process at the root: give it (and each device)
# far more weight than theirs, so a device gets its quota while the machine is busy.
echo "$CPU_SHARES" >"$CPUCG/cpu.shares"
i=0
for d in "${DEVS[@]}"; do
    read -r name ram disk cores mbit delay _ <<<"$d"
    [[ "${delay:-}" =~ ^[0-9.]+$ ]] || { echo "device $name: no delay_ms in \"$d\" (name ram disk cores mbit delay_ms [window])" >&2; exit 1; }
    i=$((i + 1))
    ns=$TAG-$name
    ip netns add "$ns"
    ip link add "$TAG-$name" type veth peer name eth0 netns "$ns"
    ip link set "$TAG-$name" master "$BR" up
    ip -n "$ns" addr add "$NET.$((10 + i))/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    # Wi-Fi rate both ways: device egress in its namespace, ingress on the bridge port.
    tc -n "$ns" qdisc add dev eth0 root tbf rate "${mbit}mbit" burst 256kb latency 50ms
    tc qdisc add dev "$TAG-$name" root tbf rate "${mbit}mbit" burst 256kb latency 50ms
    # Link latency: hold what the device receives (see the header), not in the device's cgroups.
    nsenter --net="/run/netns/$ns" python3 "$BENCH/nfqdelay.py" "$delay" 0 2>"$WORK/$name.delay.log" &
    LINK_PIDS+=($!)
    for _ in $(seq 50); do grep -q '^nfqdelay: queue' "$WORK/$name.delay.log" && break; sleep 0.1; done
    grep -q '^nfqdelay: queue' "$WORK/$name.delay.log" || { cat "$WORK/$name.delay.log" >&2; exit 1; }
    nsenter --net="/run/netns/$ns" iptables-legacy -t mangle -A PREROUTING -i eth0 -j NFQUEUE --queue-num 0
    mkdir -p "$MEMCG/$name" "$CPUCG/$name" "$BLKCG/$name" "$ACCTCG/$name"
    echo "$CPU_SHARES" >"$CPUCG/$name/cpu.shares"
    echo $((ram << 20)) >"$MEMCG/$name/memory.limit_in_bytes"
    echo 100000 >"$CPUCG/$name/cpu.cfs_period_us"
    awk -v c="$cores" 'BEGIN {printf "%d\n", c * 100000}' >"$CPUCG/$name/cpu.cfs_quota_us"
    echo "$DISK $((disk * 1000000))" >"$BLKCG/$name/blkio.throttle.read_bps_device"
    mkdir -p "$WORK/$name"
done

# Run a command on device $1: join its cgroups, then enter its network namespace only
# (`ip netns exec` would also remount /sys and hide the cgroup files prima reads).
on() {
    local name=$1
    shift
    sh -c "echo \$\$ >$MEMCG/$name/cgroup.procs && echo \$\$ >$CPUCG/$name/cgroup.procs && \
        echo \$\$ >$BLKCG/$name/cgroup.procs && echo \$\$ >$ACCTCG/$name/cgroup.procs && exec nsenter --net=/run/netns/$TAG-$name \"\$@\"" sh "$@"
}

# Peak non-file memory of a device's cgroup (bytes above the reading at start), sampled in the
# background until $WORK/$1.stop exists: the seed's pressure metric (page cache excluded). With
# $2 = ring, peaks before the head logs "ring ready" (each device's profile, whose RAM probe
# allocates and frees up to a quarter of the device's memory, and the load) are kept apart as
# the start-up peak; the reported peak is that of running the model, against the same baseline.
sample() {
    local cg=$MEMCG/$1 base rbase peak=0 rpeak=0 speak=0 now r ready=1
    [ "${2:-}" = ring ] && ready=0
    # usage and memory.stat are two reads: a window's drop-behind can free hundreds of MB between
    # them, and usage read before with file pages read after looks like that much non-file
    # memory. So usage is read on both sides of memory.stat, and a pair that moved more than
    # 4 MiB is read again (up to 20 times; the last pair's smaller usage otherwise).
    anon() {
        local u1 u2 f i
        for i in $(seq 20); do
            u1=$(cat "$cg/memory.usage_in_bytes")
            f=$(awk '/^total_(in)?active_file /{f+=$2} END{print f}' "$cg/memory.stat")
            u2=$(cat "$cg/memory.usage_in_bytes")
            [ $((u1 > u2 ? u1 - u2 : u2 - u1)) -le 4194304 ] && break
        done
        echo $(((u1 < u2 ? u1 : u2) - f))
    }
    rss() { awk '/^total_rss /{print $2}' "$cg/memory.stat"; }
    base=$(anon)
    rbase=$(rss)
    while [ ! -e "$WORK/$1.stop" ]; do
        now=$(($(anon) - base))
        r=$(($(rss) - rbase))
        if [ $ready = 0 ]; then
            [ "$now" -gt "$speak" ] && speak=$now
            grep -q '^up: ring ready' "$WORK/prima.log" 2>/dev/null && ready=1
        else
            [ "$now" -gt "$peak" ] && peak=$now
            [ "$r" -gt "$rpeak" ] && rpeak=$r
        fi
        echo "$peak $rpeak $speak" >"$WORK/$1.peak"
        sleep 0.2
    done
}

drop_caches() { sync; echo 1 >/proc/sys/vm/drop_caches; }

# Run in the background and wait: bash runs its traps (^C cleanup) only between commands, and
# `wait` is one it can interrupt.
run_bg() {
    "$@" &
    local p=$!
    PIDS+=("$p")
    wait "$p"
}
oom_kills() { local n=0; for d in "${DEVS[@]}"; do read -r name _ <<<"$d"; n=$((n + $(awk '/oom_kill /{print $2}' "$MEMCG/$name/memory.oom_control" 2>/dev/null || echo 0))); done; echo $n; }

head -c 32 /dev/urandom | base64 >"$WORK/secret"
read -r HEAD HEAD_RAM _ <<<"${DEVS[0]}"

# --------------------------------------------------------------- prima on the ring
# write_config FILE [K WINDOWS]: the cluster file; with WINDOWS (w:w:.., one per device), those
# windows and K rounds, devices with window 0 left out; without, $ROUNDS (empty: Halda's k).
write_config() {
    local file=$1 k=${2:-$ROUNDS} windows=${3:-}
    local ws=()
    [ -n "$windows" ] && IFS=: read -ra ws <<<"$windows"
    {
        echo "model = \"$MODEL\""
        echo "secret_file = \"$WORK/secret\""
        [ -n "$k" ] && echo "rounds = $k"
        echo "ctx_size = $CTX"
        echo "batch_size = 64"
        echo "timeout_secs = 120"
        local j=0
        for d in "${DEVS[@]}"; do
            read -r name _ _ _ _ _ window <<<"$d"
            j=$((j + 1))
            [ -n "$windows" ] && window=${ws[$((j - 1))]}
            [ "${window:-}" = 0 ] && continue
            echo "[[device]]"
            echo "name = \"$name\""
            echo "addr = \"$NET.$((10 + j)):$PORT\""
            [ -n "${window:-}" ] && echo "window = $window"
        done
    } >"$file"
}

AGENTS_UP=0
start_agents() {
    [ $AGENTS_UP = 1 ] && return
    local j=0
    for d in "${DEVS[@]:1}"; do
        read -r name _ <<<"$d"
        j=$((j + 1))
        on "$name" "$PRIMA" agent --listen "$NET.$((11 + j)):$PORT" --secret-file "$WORK/secret" \
            --cache-dir "$WORK/$name/cache" --timeout-secs 120 --prefetch "$PREFETCH" 2>>"$WORK/$name.agent.log" &
        PIDS+=($!)
    done
    sleep 1
    AGENTS_UP=1
}

# The ms/token of the last `prima up` ($WORK/prima.log), FAILED where it printed none.
up_ms() { sed -n 's/.*generation: [0-9]* tokens, \([0-9.]*\) ms\/token.*/\1/p' "$WORK/prima.log" | grep . || echo FAILED; }

# Per device, the plan's prediction ($1: `prima plan` output) against what the last run measured
# (computing + sending per decode token, from `prima up`'s per-device lines).
compare_devices() {
    local plan=$1
    awk -v tol=20 '
        FNR == NR {
            if ($0 ~ /^device +os +case/) { t = 1; next }
            if (t && $0 ~ /^predicted:/) t = 0
            if (t && NF >= 13) pred[$1] = $13
            next
        }
        /per token:/ && ($1 in pred) {
            for (i = 1; i <= NF; i++) {
                if ($(i + 1) == "ms" && $(i + 2) == "computing") c = $i
                if ($(i + 1) == "ms" && $(i + 2) == "sending;") s = $i
            }
            m = c + s; p = pred[$1]
            err = m > 0 ? 100 * (p / m - 1) : 0
            printf "  DEVICE %-6s predicted %8.1f measured %8.1f ms/token (%+.0f%%)%s\n", $1, p, m, err, (err > tol || err < -tol ? "  OFF" : "")
        }' "$plan" "$WORK/prima.log"
}

# run_up LABEL [K WINDOWS]: one measured `prima up` (the split warmed once, caches dropped,
# memory sampled outside), then its per-device prediction against the measurement.
run_up() {
    local label=$1 k=${2:-} windows=${3:-}
    start_agents
    write_config "$WORK/cluster.toml" "$k" "$windows"
    write_config "$WORK/plan.toml"
    local key
    key=$WORK/warm-$(basename "$MODEL")-$(cat "$WORK/cluster.toml" "$WORK/plan.toml" | md5sum | cut -c1-8)
    # Fill the layer caches once (not measured): the first run streams each device its layers.
    if [ ! -e "$key" ]; then
        echo "== warming device caches for $label (streams layers to the agents once)"
        run_bg on "$HEAD" "$PRIMA" up "$WORK/cluster.toml" -p "$PROMPT" -n 1 --temp 0 >/dev/null 2>"$WORK/warm.log" || {
            tail -20 "$WORK/warm.log"
            echo "RESULT $label FAILED (warm-up)"
            return 0
        }
        touch "$key"
    fi
    drop_caches
    rm -f "$WORK/prima.log"
    for d in "${DEVS[@]}"; do read -r name _ <<<"$d"; rm -f "$WORK/$name.stop"; sample "$name" ring & done
    local before
    before=$(oom_kills)
    echo "== prima up ($label): k=${k:-${ROUNDS:-Halda}} windows=${windows:-Halda} prefetch=$PREFETCH, $N_PREDICT tokens"
    run_bg on "$HEAD" "$PRIMA" up "$WORK/cluster.toml" -p "$PROMPT" -n "$N_PREDICT" --temp 0 --ignore-eos --prefetch "$PREFETCH" \
        >"$WORK/prima.out" 2>"$WORK/prima.log" || { tail -30 "$WORK/prima.log"; }
    for d in "${DEVS[@]}"; do read -r name _ <<<"$d"; touch "$WORK/$name.stop"; done
    wait_samplers
    grep -E '^(up: prompt|up: [0-9]+ tokens|up: .*layers, .*round|  |memory:)' "$WORK/prima.log" || true
    for d in "${DEVS[@]:1}"; do read -r name _ <<<"$d"; grep '^memory:' "$WORK/$name.agent.log" | sed "s/^/  $name /" | tail -1; done
    if [ -n "$windows" ]; then
        run_bg on "$HEAD" "$PRIMA" plan "$WORK/plan.toml" --windows "$windows" -k "$k" >"$WORK/$label.plan" 2>/dev/null || true
        compare_devices "$WORK/$label.plan"
    else
        # Halda's plan: `prima up`'s own predicted-vs-measured lines.
        awk '$2 == "predicted" && $4 == "measured" && $1 != "total" && $1 != "up:" {
            err = $5 > 0 ? 100 * ($3 / $5 - 1) : 0
            printf "  DEVICE %-6s predicted %8.1f measured %8.1f ms/token (%+.0f%%)%s\n", $1, $3, $5, err, (err > 20 || err < -20 ? "  OFF" : "")
        }' "$WORK/prima.log"
    fi
    echo "RESULT prima $label k=${k:-${ROUNDS:-Halda}} windows=${windows:-Halda} ms/token=$(up_ms) oom_kills=$(($(oom_kills) - before))"
    report_pressure
}

run_prima() { run_up default; }

# Halda's plan and the cost model's best splits (brute force), from the devices' profiles.
run_plan() {
    start_agents
    write_config "$WORK/plan.toml"
    run_bg on "$HEAD" "$PRIMA" plan "$WORK/plan.toml" --search "${SEARCH:-4}" --save-profiles "$WORK/profiles" \
        >"$WORK/plan.out" 2>"$WORK/plan.log" || { tail -5 "$WORK/plan.log"; return 0; }
    cat "$WORK/plan.out"
    sed -n 's/^split k=\([0-9]*\) windows=\([0-9:]*\) .*/\1 \2/p' "$WORK/plan.out" >"$WORK/splits"
}

# Windows in proportion to each device's RAM limit, k = 1, every device at least one layer.
run_naive() {
    local n_layer
    n_layer=$("$PRIMA" inspect "$MODEL" 2>/dev/null | sed -n 's/.*block_count[^0-9]*\([0-9]*\).*/\1/p' | awk 'NR == 1')
    [ -n "$n_layer" ] || n_layer=$(awk -F= '/^N_LAYER=/{print $2}' "$WORK/model.info" 2>/dev/null)
    local windows
    windows=$(for d in "${DEVS[@]}"; do read -r _ ram _ <<<"$d"; echo "$ram"; done | awk -v L="$n_layer" '
        { r[NR] = $1; t += $1 }
        END {
            for (i = 1; i <= NR; i++) { w[i] = int(L * r[i] / t); if (w[i] < 1) w[i] = 1; s += w[i]; f[i] = L * r[i] / t - w[i] }
            while (s < L) { b = 1; for (i = 2; i <= NR; i++) if (f[i] > f[b]) b = i; w[b]++; f[b] -= 1; s++ }
            while (s > L) { b = 0; for (i = 1; i <= NR; i++) if (w[i] > 1 && (b == 0 || f[i] < f[b])) b = i; w[b]--; f[b] += 1; s-- }
            for (i = 1; i <= NR; i++) printf "%s%d", (i > 1 ? ":" : ""), w[i]; print ""
        }')
    run_up naive 1 "$windows"
}

run_splits() {
    local list=$SPLITS
    [ -z "$list" ] && [ -s "$WORK/splits" ] && list=$(paste -sd';' "$WORK/splits")
    [ -n "$list" ] || { echo "RESULT splits SKIPPED: no SPLITS and no $WORK/splits (RUNS=plan first)"; return; }
    local i=0
    IFS=';' read -ra sp <<<"$list"
    for x in "${sp[@]}"; do
        read -r k windows <<<"$x"
        i=$((i + 1))
        run_up "split$i" "$k" "$windows"
    done
}

# Each device's CPU under load: ceil(quota) busy processes for 2 s in its cgroups, against the
# quota (the emulated cores are only real when the machine's other work leaves them free).
run_cpucheck() {
    for d in "${DEVS[@]}"; do
        read -r name _ _ cores _ <<<"$d"
        local n u0 u1
        n=$(awk -v c="$cores" 'BEGIN {n = int(c); if (n < c) n++; print (n < 1 ? 1 : n)}')
        u0=$(cat "$ACCTCG/$name/cpuacct.usage")
        on "$name" sh -c "for i in \$(seq $n); do timeout 2 sh -c 'while :; do :; done' & done; wait"
        u1=$(cat "$ACCTCG/$name/cpuacct.usage")
        awk -v u=$((u1 - u0)) -v q="$cores" -v n="$name" 'BEGIN {g = u / 2e9; \
            printf "RESULT cpucheck %-6s %.2f CPUs of quota %.2f (%.0f%%)%s\n", n, g, q, 100 * g / q, (g < 0.9 * q ? "  NOT MET" : "")}'
    done
}

wait_samplers() { sleep 0.5; }

report_pressure() {
    for d in "${DEVS[@]}"; do
        read -r name ram _ <<<"$d"
        read -r p a sp <"$WORK/$name.peak" || true
        awk -v p="${p:-0}" -v a="${a:-0}" -v sp="${sp:-0}" -v r="$ram" -v n="$name" 'BEGIN {printf \
            "  %-4s memory pressure (cgroup, measured outside): %.1f%% of %d MiB (anonymous memory %+.1f%%)%s\n", \
            n, 100 * p / (r * 1048576), r, 100 * a / (r * 1048576), \
            (sp > 0 ? sprintf("; start-up (profile, load) %.1f%%", 100 * sp / (r * 1048576)) : "")}'
    done
}

# -------------------------------------------- the emulated links, measured from the head
run_links() {
    local j=0
    for d in "${DEVS[@]:1}"; do
        read -r name _ _ _ mbit delay _ <<<"$d"
        j=$((j + 1))
        local addr=$NET.$((11 + j))
        local rtt
        rtt=$(on "$HEAD" ping -U -q -c 20 -i 0.05 "$addr" | sed -n 's/^rtt .* = \([0-9.]*\)\/\([0-9.]*\)\/\([0-9.]*\)\/.*/min \1 avg \2 max \3/p')
        on "$name" python3 "$BENCH/tcprate.py" serve "$addr" $((PORT + 1)) >"$WORK/$name.tcp" &
        local srv=$!
        PIDS+=("$srv")
        run_bg on "$HEAD" python3 "$BENCH/tcprate.py" send "$addr" $((PORT + 1)) 48
        wait "$srv"
        echo "RESULT link $HEAD -> $name: rtt (ping -U) ms ${rtt:-FAILED}; $(cat "$WORK/$name.tcp") (tbf ${mbit} Mbit/s, delays $(awk '{print $6}' <<<"${DEVS[0]}") + $delay ms)"
    done
}

# ----------------------------------------------------- the same model on one device
run_llama() {
    local bench=$LLAMA_BIN/llama-bench
    if [ ! -x "$bench" ]; then
        echo "RESULT llama.cpp SKIPPED: no $bench (the oracle build has not finished)"
        return
    fi
    drop_caches
    rm -f "$WORK/$HEAD.stop"
    sample "$HEAD" &
    local before
    before=$(oom_kills)
    echo "== llama.cpp alone on $HEAD ($HEAD_RAM MiB), --repack 0, $N_PREDICT tokens"
    local cores
    cores=$(awk '{printf "%d", ($4 < 1 ? 1 : $4)}' <<<"${DEVS[0]}")
    run_bg on "$HEAD" "$bench" -m "$MODEL" -t "$cores" -p 0 -n "$N_PREDICT" -r 1 --repack 0 -o csv \
        >"$WORK/llama.csv" 2>"$WORK/llama.log" || tail -5 "$WORK/llama.log"
    touch "$WORK/$HEAD.stop"
    local tps
    tps=$(awk -F, 'NR == 1 {for (i = 1; i <= NF; i++) if ($i ~ /avg_ts/) c = i} NR > 1 && c {gsub(/"/, "", $c); print $c}' "$WORK/llama.csv" | tail -1)
    echo "RESULT llama.cpp ms/token=$(awk -v t="${tps:-0}" 'BEGIN {print (t > 0 ? 1000 / t : "FAILED")}') oom_kills=$(($(oom_kills) - before))"
    sleep 0.5
    report_pressure | awk 'NR == 1'
}

# ------------------------------------------- prima alone on the head device (same limits)
run_solo() {
    drop_caches
    rm -f "$WORK/$HEAD.stop"
    sample "$HEAD" &
    local cores
    cores=$(awk '{printf "%d", ($4 < 1 ? 1 : $4)}' <<<"${DEVS[0]}")
    echo "== prima run alone on $HEAD ($HEAD_RAM MiB), $N_PREDICT tokens"
    run_bg on "$HEAD" "$PRIMA" run -m "$MODEL" -p "$PROMPT" -n "$N_PREDICT" -c "$CTX" -t "$cores" --temp 0 \
        >"$WORK/solo.out" 2>"$WORK/solo.log" || tail -5 "$WORK/solo.log"
    touch "$WORK/$HEAD.stop"
    local ms
    ms=$(sed -n 's/.*generation: [0-9]* tokens, \([0-9.]*\) ms\/token.*/\1/p' "$WORK/solo.log")
    echo "RESULT prima-solo ms/token=${ms:-FAILED}"
    sleep 0.5
    report_pressure | awk 'NR == 1'
}

echo "model $(basename "$MODEL"): $(($(stat -c %s "$MODEL") >> 20)) MiB; disk $DISK; devices: $DEVICES"
for r in $RUNS; do "run_$r"; done
