#!/usr/bin/env bash
# DDU's inductive bias at CPU scale: softmax entropy vs DDU on MNIST with a small residual
# network with soft spectral normalisation (coeff 3) and the -mod changes (LeakyReLU, avg-pool
# shortcuts): 3x3 stem + one BasicBlock per stage (16/32/64 channels), 64-d features
# (experiments/ddu_active_learning.py: small_resnet). Otherwise the scale of run_mnist.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${DDU_TF_DATA_DIR:?set DDU_TF_DATA_DIR to the directory holding mnist/ (the IDX files)}"; export DDU_TF_DATA_DIR
COMMON="--seed 1 --model small_resnet -sn -mod --coeff 3.0 -e 4 --acquisition-batch-size 10 \
  --max-training-samples 100 --pool-size 10000 --num-runs 1 \
  --output-dir results/ddu_active_learning/mnist_sn_resnet"
PY=.venv/bin/python
$PY experiments/ddu_active_learning.py $COMMON --al-type gmm
$PY experiments/ddu_active_learning.py $COMMON --al-type softmax
