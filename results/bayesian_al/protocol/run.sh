#!/bin/sh
# Early-round protocol check (issue 20 item 5): Random acquisition, seed 369, 15 rounds, each
# round's test error measured MC-averaged (T = 100) and with one deterministic pass; the
# paper's CNN and the authors' Keras script's CNN. Run from the repository root with
# DDU_TF_DATA_DIR set; resumable (re-running continues each run).
for cnn in paper authors_code; do
  .venv/bin/python experiments/bayesian_al.py --experiment 1 --functions random --experiments 1 \
      --seed 369 --rounds 15 --test-eval both --cnn "$cnn" \
      --result_dir "results/bayesian_al/protocol/$cnn" \
      >> "results/bayesian_al/protocol/logs/random_seed369_$cnn.log" 2>&1
done
