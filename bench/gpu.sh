#!/usr/bin/env bash
# prima's GPU offload vs llama.cpp's Vulkan build on the same GGUF files and the same GPU.
#
#   bench/gpu.sh [MODEL.gguf ...]
#
# Builds (once, cached) llama.cpp from the same sources as ../shared/oracle (the llama.cpp
# vendored in llama-cpp-python 0.3.36) with -DGGML_VULKAN=ON into its own build directory, and
# prima with `--features gpu`; then ROUNDS times in turn: `llama-bench -ngl 99` and
# `prima bench -ngl 99`, both `-p 512 -n 128 -r $REPS`, JSON output. Prints per model the
# median pp/tg tok/s of both, the ratio prima/llama.cpp (> 1: prima is faster) and prima's
# decode as a share of the GPU's memory bandwidth (GPU_BW_GBS, the card's datasheet figure:
# file size × tg t/s ÷ bandwidth, an upper bound on the bytes read per token). Without arguments: SmolLM2-135M Q4_K_M and an
# 8B-shaped Q4_K_M with random weights (`prima synth`, 4.6 GB), the issue's target.
#
# Needs a real GPU with a Vulkan driver, the Vulkan headers and glslc for llama.cpp's build
# (Debian: libvulkan-dev glslc). On Mesa's lavapipe the numbers mean nothing (CPU driver).
#
# Environment: REPS (3), ROUNDS (3), GPU_BW_GBS (unset: no bandwidth share), THREADS (for the
# CPU side; default: physical cores), PRIMA_ORACLE_DIR (as ../shared/oracle), OUT (raw JSON,
# default target/gpu-bench), VK_BUILD (llama.cpp Vulkan build dir, default inside the oracle's
# sources: build-vulkan).
set -euo pipefail
cd "$(dirname "$0")/.."

. ../shared/oracle/oracle_env.sh 2>/dev/null || {
  echo "need ../shared/oracle (the llama.cpp reference sources): run ../shared/oracle/build_oracle.sh once" >&2
  exit 1
}
REPS=${REPS:-3}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-target/gpu-bench}
VK_BUILD=${VK_BUILD:-$ORACLE_SRC/build-vulkan}
THREADS=${THREADS:-$(nproc)}
PRIMA=./target/release/prima
mkdir -p "$OUT" models

[ -d "$ORACLE_SRC" ] || { echo "missing $ORACLE_SRC: run ../shared/oracle/build_oracle.sh first" >&2; exit 1; }
command -v glslc >/dev/null || { echo "llama.cpp's Vulkan build needs glslc (Debian: apt-get install glslc libvulkan-dev)" >&2; exit 1; }
if [ ! -x "$VK_BUILD/bin/llama-bench" ]; then
  echo "building llama.cpp with -DGGML_VULKAN=ON in $VK_BUILD (once)" >&2
  cmake -S "$ORACLE_SRC" -B "$VK_BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_VULKAN=ON -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=ON >"$OUT/cmake.log" 2>&1
  cmake --build "$VK_BUILD" -j "$(nproc)" --target llama-bench llama-quantize >"$OUT/build.log" 2>&1
fi
export LD_LIBRARY_PATH="$VK_BUILD/bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cargo build --release --features gpu -q

if [ $# -gt 0 ]; then
  models=("$@")
else
  src=models/SmolLM2-135M-Instruct.Q4_1.gguf
  [ -f "$src" ] || "$PRIMA" fetch models >/dev/null
  small=models/SmolLM2-135M-Instruct.Q4_K_M.gguf
  [ -f "$small" ] || "$VK_BUILD/bin/llama-quantize" --allow-requantize "$src" "$small" Q4_K_M >"$OUT/quantize.log" 2>&1
  big=models/synth-llama3-8b.Q4_K_M.gguf
  [ -f "$big" ] || "$PRIMA" synth --shape llama3-8b --mix q4_k_m --vocab-from "$src" -o "$big"
  models=("$small" "$big")
fi

for round in $(seq 1 "$ROUNDS"); do
  for m in "${models[@]}"; do
    stem=$(basename "$m" .gguf)
    echo "round $round/$ROUNDS: $stem" >&2
    "$VK_BUILD/bin/llama-bench" -m "$m" -ngl 99 -p 512 -n 128 -t "$THREADS" -r "$REPS" -o json \
      >"$OUT/$stem.llama.$round.json" 2>"$OUT/$stem.llama.$round.log"
    "$PRIMA" bench -m "$m" -ngl 99 -p 512 -n 128 -t "$THREADS" -r "$REPS" --json \
      >"$OUT/$stem.prima.$round.json" 2>"$OUT/$stem.prima.$round.log"
  done
done
grep -h "^GPU:" "$OUT"/*.prima.1.log | sort -u >&2 || true

python3 - "$OUT" "$ROUNDS" "${GPU_BW_GBS:-}" "${models[@]}" <<'PY'
import json, os, statistics, sys
out, rounds, bw, models = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
def load(path):
    with open(path) as f:
        return {(r["n_prompt"], r["n_gen"]): r for r in json.load(f)}
print("| model | test | llama.cpp Vulkan t/s | prima t/s | prima / llama.cpp | prima tg share of GPU bandwidth |")
print("| --- | --- | ---: | ---: | ---: | ---: |")
for m in models:
    stem = os.path.basename(m)[:-5]
    runs = {w: [load(f"{out}/{stem}.{w}.{r}.json") for r in range(1, rounds + 1)] for w in ("llama", "prima")}
    size = os.path.getsize(m)
    for key, name in [((512, 0), "pp512"), ((0, 128), "tg128")]:
        l = statistics.median(x[key]["avg_ts"] for x in runs["llama"])
        p = statistics.median(x[key]["avg_ts"] for x in runs["prima"])
        share = ""
        if name.startswith("tg") and bw:
            share = f"{100 * size * p / (float(bw) * 1e9):.0f}%"
        print(f"| {stem} | {name} | {l:.2f} | {p:.2f} | {p / l:.2f} | {share} |")
PY
