#!/usr/bin/env bash
# prima vs llama.cpp on the same GGUF files, same thread count, alternating runs.
#
#   bench/vs-llama.sh [MODEL.gguf ...]
#
# For each model, ROUNDS times in turn: llama-bench (the oracle build of ../shared/oracle) then
# `prima bench` (release), both `-p 64 -n 32 -t $THREADS -r $REPS`, JSON output. Prints per
# model and test the median tok/s of both over the rounds and the ratio prima/llama.cpp
# (> 1: prima is faster), as a markdown table. Without arguments it makes and runs the issue's
# set: SmolLM2-135M in Q4_K_M, Q4_0, Q8_0, Q6_K, IQ4_XS (llama-quantize --allow-requantize from
# the Q4_1 file that `prima fetch models` downloads) and a Llama-3-8B-shaped Q4_K_M model with
# random weights (`prima synth`, ~4.6 GB in models/).
#
# Environment: THREADS (2), REPS (5), REPS_BIG (2, for files over 1 GB), ROUNDS (3),
# PRIMA_ORACLE_DIR / ORACLE_BIN (as ../shared/oracle), OUT (raw JSON directory, default
# target/vs-llama).
set -euo pipefail
cd "$(dirname "$0")/.."

ORACLE_DIR=${PRIMA_ORACLE_DIR:-$HOME/.cache/prima-oracle}
ORACLE_BIN=${ORACLE_BIN:-$ORACLE_DIR/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin}
THREADS=${THREADS:-2}
REPS=${REPS:-5}
REPS_BIG=${REPS_BIG:-2}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-target/vs-llama}
PRIMA=./target/release/prima

for b in llama-bench llama-quantize; do
  [ -x "$ORACLE_BIN/$b" ] || { echo "missing $ORACLE_BIN/$b: run ../shared/oracle/build_oracle.sh" >&2; exit 1; }
done
export LD_LIBRARY_PATH="$ORACLE_BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

cargo build --release -q
mkdir -p models "$OUT"

if [ $# -gt 0 ]; then
  models=("$@")
else
  src=models/SmolLM2-135M-Instruct.Q4_1.gguf
  [ -f "$src" ] || "$PRIMA" fetch models >/dev/null
  models=()
  for q in Q4_K_M Q4_0 Q8_0 Q6_K IQ4_XS; do
    f=models/SmolLM2-135M-Instruct.$q.gguf
    [ -f "$f" ] || "$ORACLE_BIN/llama-quantize" --allow-requantize "$src" "$f" "$q" >"$OUT/quantize-$q.log" 2>&1
    models+=("$f")
  done
  big=models/synth-llama3-8b.Q4_K_M.gguf
  [ -f "$big" ] || "$PRIMA" synth --shape llama3-8b --mix q4_k_m --vocab-from "$src" -o "$big"
  models+=("$big")
fi

echo "prima kernels: $("$PRIMA" bench -m "${models[0]}" -p 0 -n 1 -r 1 -t "$THREADS" 2>&1 >/dev/null | sed -n 's/^kernels: //p')" >&2
for round in $(seq 1 "$ROUNDS"); do
  for m in "${models[@]}"; do
    reps=$REPS
    [ "$(stat -c %s "$m")" -gt 1000000000 ] && reps=$REPS_BIG
    stem=$(basename "$m" .gguf)
    echo "round $round/$ROUNDS: $stem (r=$reps)" >&2
    "$ORACLE_BIN/llama-bench" -m "$m" -p 64 -n 32 -t "$THREADS" -r "$reps" -o json \
      >"$OUT/$stem.llama.$round.json" 2>"$OUT/$stem.llama.$round.log"
    "$PRIMA" bench -m "$m" -p 64 -n 32 -t "$THREADS" -r "$reps" --json \
      >"$OUT/$stem.prima.$round.json" 2>"$OUT/$stem.prima.$round.log"
  done
done

python3 - "$OUT" "$ROUNDS" "${models[@]}" <<'PY'
import json, statistics, sys, os
out, rounds, models = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def load(path):
    with open(path) as f:
        return {(r["n_prompt"], r["n_gen"]): r["avg_ts"] for r in json.load(f)}
print("| model | test | llama.cpp t/s | prima t/s | prima / llama.cpp |")
print("| --- | --- | ---: | ---: | ---: |")
for m in models:
    stem = os.path.basename(m)[:-5]
    runs = {"llama": [], "prima": []}
    for who in runs:
        for r in range(1, rounds + 1):
            runs[who].append(load(f"{out}/{stem}.{who}.{r}.json"))
    for key, name in [((64, 0), "pp64"), ((0, 32), "tg32")]:
        l = statistics.median(x[key] for x in runs["llama"])
        p = statistics.median(x[key] for x in runs["prima"])
        print(f"| {stem} | {name} | {l:.2f} | {p:.2f} | {p / l:.2f} |")
for m in models:
    stem = os.path.basename(m)[:-5]
    with open(f"{out}/{stem}.prima.{rounds}.log") as f:
        for line in f:
            if line.startswith("tg32:"):
                print(f"\n{stem}: {line.strip()}")
PY
