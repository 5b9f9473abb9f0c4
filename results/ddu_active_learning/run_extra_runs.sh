#!/usr/bin/env bash
# Two more runs (seeds 2 and 3 for the networks; same pool, split and initial set) of the two
# single-network strategies, softmax entropy and DDU, on both data sets: --num-runs 3 resumes
# the finished run 0 and adds runs 1 and 2. (The ensembles stay at 1 run: 5x the cost.)
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${DDU_TF_DATA_DIR:?set DDU_TF_DATA_DIR to the directory holding mnist/ (the IDX files)}"; export DDU_TF_DATA_DIR
PY=.venv/bin/python
MNIST="--seed 1 --model lenet -e 4 --acquisition-batch-size 10 --max-training-samples 100 \
  --pool-size 10000 --num-runs 3 --output-dir results/ddu_active_learning/mnist"
TFDS_FLAG=""
if [ -n "${TFDS_AMB_DIR:-}" ]; then TFDS_FLAG="--tfds-data-dir $TFDS_AMB_DIR"; fi
DIRTY="--seed 1 --model lenet -e 4 --acquisition-batch-size 10 --max-training-samples 100 \
  -ambiguous --subsample 1000 --ambiguous-config generated $TFDS_FLAG \
  --ambiguous-images 2000 --trained-model lenet --pretrain-epochs 2 --num-runs 3 \
  --output-dir results/ddu_active_learning/dirty_mnist"
case "${1:-all}" in
  mnist|all)
    $PY experiments/ddu_active_learning.py $MNIST --al-type softmax
    $PY experiments/ddu_active_learning.py $MNIST --al-type gmm ;;
esac
case "${1:-all}" in
  dirty|all)
    $PY experiments/ddu_active_learning.py $DIRTY --al-type softmax
    $PY experiments/ddu_active_learning.py $DIRTY --al-type gmm ;;
esac
