"""Active learning: acquisition functions, MC-dropout scoring, pool state and a resumable loop.

Bayesian deep active learning (Gal, Islam & Ghahramani 2017) and the DDU active-learning
experiments share this one acquisition path.
"""
from ddu_tf.active_learning.acquisition import (ACQUISITION_FUNCTIONS, bald,
                                                class_mass_normalized,
                                                entropy_from_log_probs, get_acquisition,
                                                harmonic_solution, log_mean_prob,
                                                max_entropy, mbr_expected_risk, mean_std,
                                                random_scores, rbf_graph, select_top_k,
                                                variation_ratios)
from ddu_tf.active_learning.loop import ActiveLearningLoop, load_results
from ddu_tf.active_learning.mc_dropout import (MCDropoutPredictor, model_flops,
                                               split_at_first_stochastic)
from ddu_tf.active_learning.pool import PoolState, atomic_write_text, initial_state
from ddu_tf.active_learning.trainer import CompiledTrainer

__all__ = [
    "ACQUISITION_FUNCTIONS", "ActiveLearningLoop", "class_mass_normalized", "CompiledTrainer", "MCDropoutPredictor",
    "PoolState", "atomic_write_text", "bald", "entropy_from_log_probs", "get_acquisition",
    "harmonic_solution", "initial_state", "load_results", "log_mean_prob", "max_entropy",
    "mbr_expected_risk", "mean_std", "model_flops", "random_scores", "rbf_graph",
    "select_top_k", "split_at_first_stochastic", "variation_ratios",
]
