#!/usr/bin/env bash
# The runs behind results/bayesian_al/bf16_seed369 (one seed, 369; mixed_bfloat16 on the previous
# development machine, an Intel Xeon with AVX512-BF16; the `rounds` key was then part of each
# run's config, so these runs resume only with the code of that time, commit 921c3f8). Every command is resumable: re-running
# this script continues each run from its last finished round. Usage (from the repo root):
#   DDU_TF_DATA_DIR=/path/to/mnist bash results/bayesian_al/bf16_seed369/run.sh [lane]
# lane "timed" is Experiment 1's BALD run alone on the idle machine (2 TF threads); lanes
# "a" and "b" ran side by side afterwards, one TF thread each.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=results/bayesian_al/bf16_seed369
mkdir -p "$OUT/logs"
# Paper setting: T = 100, 2000-point pool subset, 10 per round, 100 rounds, full 10k MC test.
PAPER=(--experiments 1 --rounds 100 --mixed-precision --result_dir "$OUT")

exp() {  # exp <experiment> <function> [extra flags]
  local e=$1 f=$2; shift 2
  "$PY" experiments/bayesian_al.py --experiment "$e" --functions "$f" "${PAPER[@]}" "$@" \
    >> "$OUT/logs/exp${e}_${f}.log" 2>&1
}

case "${1:-all}" in
  timed) exp 1 bald ;;
  a) export TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
     exp 1 random; exp 1 var_ratios; exp 2 bald; exp 2 var_ratios ;;
  b) export TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
     exp 1 mean_std; exp 1 max_entropy
     exp 3 bald --rounds 30; exp 3 var_ratios --rounds 30; exp 3 max_entropy --rounds 30
     exp 3 random --rounds 30; exp 2 max_entropy ;;
  all) "$0" timed; "$0" a & "$0" b; wait ;;
esac
for e in 1 2 3; do
  [ -d "$OUT/exp$e" ] && "$PY" experiments/bayesian_al.py --experiment "$e" --summary-only \
    --result_dir "$OUT" > /dev/null
done
