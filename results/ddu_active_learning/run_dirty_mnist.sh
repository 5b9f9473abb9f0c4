#!/usr/bin/env bash
# CPU-scale DDU active learning on Dirty-MNIST (1000 clean MNIST + Ambiguous-MNIST train pairs),
# all acquisition types, LeNet, 1 run each. Uses the offline-regenerated Ambiguous-MNIST
# (TFDS ambiguous_mnist/generated; built on first use -- 10-25 min on 2 cores -- into the TFDS
# data dir, or read from $TFDS_AMB_DIR if it was built there already).
# Scale (vs the original): LeNet instead of ResNet-18; 4 epochs (not 20) of the 5056-draw
# sampler; acquisition batch 10 (not 5) up to 100 samples (not 300); the first 2000 of the
# 6000 Ambiguous-MNIST train images (20k pairs, not 60k); 1 run (not 5). The ambiguity
# threshold model is a LeNet trained here for 2 epochs on Dirty-MNIST train (not a
# ResNet-18+SN trained 50 epochs). Resumable: re-run the same command after an interruption.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${DDU_TF_DATA_DIR:?set DDU_TF_DATA_DIR to the directory holding mnist/ (the IDX files)}"; export DDU_TF_DATA_DIR
TFDS_FLAG=""
if [ -n "${TFDS_AMB_DIR:-}" ]; then TFDS_FLAG="--tfds-data-dir $TFDS_AMB_DIR"; fi
COMMON="--seed 1 --model lenet -e 4 --acquisition-batch-size 10 --max-training-samples 100 \
  -ambiguous --subsample 1000 --ambiguous-config generated $TFDS_FLAG \
  --ambiguous-images 2000 --trained-model lenet --pretrain-epochs 2 --num-runs 1 \
  --output-dir results/ddu_active_learning/dirty_mnist"
PY=.venv/bin/python
$PY experiments/ddu_active_learning.py $COMMON --al-type softmax
$PY experiments/ddu_active_learning.py $COMMON --al-type gmm
$PY experiments/ddu_active_learning.py $COMMON --al-type ensemble
$PY experiments/ddu_active_learning.py $COMMON --al-type ensemble -mi
