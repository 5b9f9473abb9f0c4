#!/usr/bin/env bash
# CPU-scale Dirty-MNIST (generated Ambiguous-MNIST) run of DDU: LeNet vs ResNet-18+SN+mod.
# Usage: bash results/dirty_mnist_ddu/run.sh [train|train_resnet|train_lenet|eval|figure|all]   (from the repo root)
# Models go to $RUNS (not committed); JSON, logs and the figure to results/dirty_mnist_ddu/.
# Paths are relative to the repository root; override DDU_TF_DATA_DIR, TFDS_DATA_DIR, RUNS.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${DDU_TF_DATA_DIR:?set DDU_TF_DATA_DIR to the directory holding mnist/ and fashion_mnist/ (IDX files)}"; export DDU_TF_DATA_DIR
export TFDS_DATA_DIR=${TFDS_DATA_DIR:-runs/tfds}              # built ambiguous_mnist/generated, dirty_mnist/generated
export TF_CPP_MIN_LOG_LEVEL=2
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/dirty_mnist_ddu}
OUT=results/dirty_mnist_ddu
LENET_N=114000; LENET_E=10     # LeNet: all of Dirty-MNIST train (54k MNIST + 60k ambiguous), 10 epochs
RESNET_N=6000; RESNET_E=2      # ResNet-18+SN+mod: 6k-example subset, 2 epochs (~28 img/s on CPU)
mkdir -p "$RUNS" "$OUT/logs"
stage=${1:-all}

if [[ $stage == train || $stage == train_resnet || $stage == all ]]; then
  $PY experiments/train.py --jit --seed 1 --dataset dirty_mnist_generated --model resnet18 -sn -mod \
    --coeff 3.0 -e $RESNET_E --opt adam --lr 1e-3 -b 128 --max-train-samples $RESNET_N \
    --max-val-samples 1000 --save-interval 100 --save-path "$RUNS" --verbose 2 \
    2>&1 | tee "$OUT/logs/train_resnet18_sn_mod.log"
  cp "$RUNS"/resnet18_sn_3.0_mod_1_history.json "$OUT/"
fi
if [[ $stage == train || $stage == train_lenet || $stage == all ]]; then
  $PY experiments/train.py --jit --seed 1 --dataset dirty_mnist_generated --model lenet \
    -e $LENET_E --opt adam --lr 1e-3 -b 128 --max-train-samples $LENET_N \
    --save-interval 100 --save-path "$RUNS" --verbose 2 \
    2>&1 | tee "$OUT/logs/train_lenet.log"
  cp "$RUNS"/lenet_1_history.json "$OUT/"
fi

if [[ $stage == eval || $stage == all ]]; then
  # iD = MNIST test (10k), OoD = Fashion-MNIST test (10k); temperature on the 6k MNIST validation
  # images; the GMM is fitted on the seeded subset of MNIST train of the same size as the
  # training subset (evaluate.py --max-train-samples; MNIST part only, see README).
  $PY experiments/evaluate.py --seed 1 --dataset mnist --ood_dataset fashion_mnist \
    --model lenet --model-type softmax --runs 1 -e $LENET_E --load-path "$RUNS" \
    --output-dir "$OUT" 2>&1 | tee "$OUT/logs/eval_lenet_softmax.log"
  $PY experiments/evaluate.py --seed 1 --dataset mnist --ood_dataset fashion_mnist \
    --model resnet18 -sn -mod --coeff 3.0 --model-type gmm --runs 1 -e $RESNET_E \
    --max-train-samples $RESNET_N -b 256 --load-path "$RUNS" --output-dir "$OUT" \
    2>&1 | tee "$OUT/logs/eval_resnet18_sn_mod_gmm.log"
  $PY experiments/evaluate.py --seed 1 --dataset mnist --ood_dataset fashion_mnist \
    --model resnet18 -sn -mod --coeff 3.0 --model-type softmax --runs 1 -e $RESNET_E \
    -b 256 --load-path "$RUNS" --output-dir "$OUT" \
    2>&1 | tee "$OUT/logs/eval_resnet18_sn_mod_softmax.log"
fi

if [[ $stage == figure || $stage == all ]]; then
  # Fig. 1/2 + pair AUROCs from saved scores: the Dirty-MNIST protocol (GMM on each model's own
  # seeded Dirty-MNIST training subset; 5000 images per set, the same fixed noise on every set),
  # then plot_uncertainty.py --scores. The committed figure and pair_aurocs.json came from the
  # since-removed experiments/uncertainty_pairs.py (README), so a rerun differs slightly.
  $PY experiments/evaluate.py --seed 1 --dataset dirty_mnist_generated --ood_dataset fashion_mnist \
    --model lenet --model-type softmax --runs 1 -e $LENET_E --max-train-samples $LENET_N \
    --protocol dirty_mnist --ood-sets fashion_mnist --max-eval-samples 5000 \
    --load-path "$RUNS" --output-dir "$RUNS/protocol" 2>&1 | tee "$OUT/logs/protocol_lenet.log"
  $PY experiments/evaluate.py --seed 1 --dataset dirty_mnist_generated --ood_dataset fashion_mnist \
    --model resnet18 -sn -mod --coeff 3.0 --model-type softmax --runs 1 -e $RESNET_E \
    --max-train-samples $RESNET_N -b 256 --protocol dirty_mnist --ood-sets fashion_mnist \
    --max-eval-samples 5000 --load-path "$RUNS" --output-dir "$RUNS/protocol" \
    2>&1 | tee "$OUT/logs/protocol_resnet18_sn_mod.log"
  $PY experiments/plot_uncertainty.py \
    --scores "$RUNS/protocol/scores_lenet_1_${LENET_E}_softmax.npz" \
    "$RUNS/protocol/scores_resnet18_sn_3.0_mod_1_${RESNET_E}_softmax.npz" \
    --names "LeNet" "ResNet-18+SN+mod" --output $OUT/dirty_mnist_uncertainty.png \
    --pairs-json $OUT/pair_aurocs.json 2>&1 | tee "$OUT/logs/plot_uncertainty.log"
fi
