#!/usr/bin/env bash
# CPU-scale DDU active learning on MNIST: all acquisition types, LeNet, 1 run each.
# Scale (vs the original): LeNet instead of ResNet-18, 4 epochs (not 20) of the 5056-draw
# sampler, acquisition batch 10 (not 5) up to 100 samples (not 300), a 10k-image pool
# (not 60k), 1 run (not 5). Resumable: re-run the same command after an interruption.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${DDU_TF_DATA_DIR:?set DDU_TF_DATA_DIR to the directory holding mnist/ (the IDX files)}"; export DDU_TF_DATA_DIR
COMMON="--seed 1 --model lenet -e 4 --acquisition-batch-size 10 --max-training-samples 100 \
  --pool-size 10000 --num-runs 1 --output-dir results/ddu_active_learning/mnist"
PY=.venv/bin/python
$PY experiments/ddu_active_learning.py $COMMON --al-type softmax
$PY experiments/ddu_active_learning.py $COMMON --al-type gmm
$PY experiments/ddu_active_learning.py $COMMON --al-type ensemble
$PY experiments/ddu_active_learning.py $COMMON --al-type ensemble -mi
