"""Active learning: acquisition functions, the one compiled trainer, pool state and a
resumable loop.

Bayesian deep active learning (Gal, Islam & Ghahramani 2017) and the DDU active-learning
experiments share this one acquisition path; batch acquisition (BatchBALD, stochastic
power / softmax / soft-rank sampling) is in :mod:`ddu_tf.active_learning.batch_acquisition`.
MC-dropout scoring lives in :mod:`ddu_tf.inference` (``MCDropoutPredictor``, re-exported
here) and the entropy maths in :mod:`ddu_tf.uncertainty` (``entropy_from_log_probs`` and
``log_mean_prob`` re-exported).
"""
from ddu_tf.active_learning.acquisition import (ACQUISITION_FUNCTIONS, bald,
                                                class_mass_normalized,
                                                entropy_from_log_probs, get_acquisition,
                                                get_batch_acquisition,
                                                harmonic_solution, harmonic_update,
                                                log_mean_prob,
                                                max_entropy, mbr_expected_risk, mean_std,
                                                random_scores, rbf_graph, select_top_k,
                                                variation_ratios)
from ddu_tf.active_learning.batch_acquisition import (BATCH_ACQUISITION_FUNCTIONS,
                                                      batchbald, joint_entropy,
                                                      selection_scores, stochastic_batch,
                                                      stochastic_probabilities)
from ddu_tf.active_learning.curves import first_reaching, mean_std_over_runs
from ddu_tf.active_learning.loop import (ActiveLearningLoop, check_acquisition_plan,
                                         collect_results, load_results)
from ddu_tf.active_learning.pool import PoolState, atomic_write_text, initial_state
from ddu_tf.active_learning.trainer import (CompiledTrainer, FixedLengthSampler,
                                            PermutationSampler, fit_best_on_validation,
                                            fixed_length_indices)
from ddu_tf.inference import MCDropoutPredictor, model_flops, split_at_first_stochastic

__all__ = [
    "ACQUISITION_FUNCTIONS", "ActiveLearningLoop", "BATCH_ACQUISITION_FUNCTIONS",
    "CompiledTrainer", "FixedLengthSampler", "MCDropoutPredictor", "PermutationSampler",
    "PoolState", "atomic_write_text", "bald", "batchbald", "check_acquisition_plan",
    "class_mass_normalized", "collect_results",
    "entropy_from_log_probs", "first_reaching", "fit_best_on_validation", "fixed_length_indices",
    "get_acquisition", "get_batch_acquisition", "harmonic_solution", "harmonic_update",
    "initial_state",
    "joint_entropy", "load_results", "log_mean_prob", "max_entropy", "mbr_expected_risk",
    "mean_std", "mean_std_over_runs", "model_flops", "random_scores", "rbf_graph", "select_top_k",
    "selection_scores", "split_at_first_stochastic", "stochastic_batch",
    "stochastic_probabilities", "variation_ratios",
]
