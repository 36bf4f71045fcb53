#!/usr/bin/env bash
# bench/testbed.sh — a home cluster the plan has never seen: devices drawn at random (seeded)
# from the prima.cpp paper's ranges, a model shape made with `prima synth`, then
# bench/homecluster.sh measures Halda's default plan, a naive split, the cost model's best
# splits and llama.cpp on it. Run as root from the repo root:
#
#   bench/testbed.sh SEED            # e.g. bench/testbed.sh 7
#   SHOW=1 bench/testbed.sh SEED     # print the drawn testbed and the commands, run nothing
#
# Draws (the paper's ranges, README "Testbeds"): 3–4 devices; per device a kind (phone,
# laptop, Mac, desktop) with available RAM 1.9–9.7 GiB, disk 0.4–3.2 GB/s, 4–16 cores,
# Wi-Fi 300–600 Mbit/s with 3–7 ms. The head (device 1, where `prima up` runs) is the device
# with the most RAM, as a user would pick. Scaled to this machine as homecluster.sh does:
# RAM ÷ 4 (GiB → ×256 MiB) and disk ÷ 4, cores ÷ 8 (a CPU quota), links as drawn. (RAM ÷ 4, not
# homecluster.sh's ÷ 8: a 70B shape's 0.86 GB output matrix must fit on the head.)
# Model: a shape (llama3-70b with a few layers, qwen25-32b, llama3-8b) and a weight mix
# (q4_k_m, q4_0, q8_0), its layer count chosen so the model is 0.7–1.3× the cluster's memory.
# SHAPE, MIX, LAYERS, N_DEV override the draws; RUNS is passed on [cpucheck prima plan naive splits llama].
set -euo pipefail
SEED=${1:?usage: bench/testbed.sh SEED}
BENCH=$(dirname "$(readlink -f "$0")")
PRIMA=${PRIMA:-target/release/prima}
MODELS=${MODELS:-/var/tmp/prima-testbed-models}
VOCAB=${VOCAB:-tests/fixtures/vocab/smollm2-135m.vocab-only.gguf}

draw=$(python3 - "$SEED" "${SHAPE:-}" "${MIX:-}" "${LAYERS:-}" "${N_DEV:-}" <<'EOF'
import random, sys
seed, shape, mix, layers, n_dev = sys.argv[1:]
r = random.Random(int(seed))
kinds = {  # (RAM GiB, disk GB/s, cores): sub-ranges of the paper's, by kind of device
    "phone":   ((1.9, 4.0), (0.4, 1.5), (4, 8)),
    "laptop":  ((3.0, 8.0), (0.8, 3.2), (4, 12)),
    "mac":     ((2.0, 6.0), (0.6, 3.0), (8, 10)),
    "desktop": ((5.0, 9.7), (1.5, 3.2), (8, 16)),
}
n = int(n_dev) if n_dev else r.choice([3, 4, 4])
devs = []
for i in range(n):
    kind = r.choice(list(kinds))
    (r0, r1), (d0, d1), (c0, c1) = kinds[kind]
    ram, disk, cores = r.uniform(r0, r1), r.uniform(d0, d1), r.randint(c0, c1)
    mbit, delay = r.randint(300, 600), r.randint(3, 7)
    devs.append((kind, ram, disk, cores, mbit, delay))
devs.sort(key=lambda d: -d[1])  # the head: most RAM
# Per-layer and fixed (embedding + output) bytes of each shape at ~bits per weight.
shapes = {  # name: (layer params, embedding params, output params)
    "llama3-70b": (855.6e6, 1050.7e6, 1050.7e6),
    "qwen25-32b": (487.9e6, 778.6e6, 778.6e6),
    "llama3-8b": (218.1e6, 525.3e6, 525.3e6),
}
bpw = {"q4_k_m": (4.9, 4.5, 6.56), "q4_0": (4.5, 4.5, 4.5), "q8_0": (8.5, 8.5, 8.5)}
shape = shape or r.choice(["llama3-70b", "llama3-70b", "qwen25-32b", "llama3-8b"])
mix = mix or r.choice(["q4_k_m", "q4_k_m", "q4_0", "q8_0"])
mem = sum(d[1] / 4 * 2**30 for d in devs)
lp, ep, op = shapes[shape]
bl, be, bo = bpw[mix]
fixed = (ep * be + op * bo) / 8
per = lp * bl / 8
if layers:
    L = int(layers)
else:
    target = r.uniform(0.7, 1.3) * mem
    L = max(2, round((target - fixed) / per))
    if shape == "llama3-70b" and L > 10:
        L = 10
for k, v in [("SHAPE", shape), ("MIX", mix), ("N_LAYER", L), ("MODEL_GB", f"{(fixed + L * per) / 1e9:.2f}"),
             ("CLUSTER_GB", f"{mem / 1e9:.2f}")]:
    print(f"{k}={v}")
spec = []
for i, (kind, ram, disk, cores, mbit, delay) in enumerate(devs):
    name = f"{kind[0]}{i + 1}"
    spec.append(f"{name} {round(ram * 256)} {round(disk * 250)} {cores / 8:.3g} {mbit} {delay}")
    print(f"# {name}: {kind}, {ram:.1f} GiB, {disk:.2f} GB/s, {cores} cores, {mbit} Mbit/s, {delay} ms", file=sys.stderr)
print("DEVICES=" + "; ".join(spec))
EOF
)
eval "$(sed -n 's/^\([A-Z_]*\)=\(.*\)$/\1="\2"/p' <<<"$draw")"
echo "testbed $SEED: $SHAPE $MIX, $N_LAYER layers (~$MODEL_GB GB; cluster memory $CLUSTER_GB GB)"
echo "devices: $DEVICES"
MODEL=$MODELS/$SHAPE-${N_LAYER}L-$MIX.gguf
synth="$PRIMA synth --shape $SHAPE --layers $N_LAYER --mix $MIX --vocab-from $VOCAB -o $MODEL"
run="MODEL=$MODEL DEVICES=\"$DEVICES\" ROUNDS= RUNS=\"${RUNS:-cpucheck prima plan naive splits llama}\" WORK=/var/tmp/prima-testbed-$SEED bench/homecluster.sh"
if [ -n "${SHOW:-}" ]; then
    echo "$synth"
    echo "$run"
    exit 0
fi
mkdir -p "$MODELS"
[ -f "$MODEL" ] || $synth
eval "$run"
