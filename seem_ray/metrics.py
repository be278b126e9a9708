"""Metric key names: the one vocabulary shared by the loop, the stopper, MLflow, Tune and Optuna.

Every number a run reports goes out under one of these names, so a rename happens here only.
Values are always plain Python floats (Tune and MLflow reject tensors).
"""

from __future__ import annotations

# Progress
STEP = "step"
STEPS_PER_S = "steps_per_s"

# Losses (from Algorithm.update)
CRITIC_LOSS = "critic_loss"
ACTOR_LOSS = "actor_loss"
BC_LOSS = "bc_loss"
VALUE_LOSS = "value_loss"
CQL_LOSS = "cql_loss"
ALPHA = "alpha"

# Q statistics on the training batch
BATCH_Q_MEAN = "batch_q_mean"
BATCH_Q_MAX = "batch_q_max"

# Q statistics on the fixed probe batch (read by the divergence predictors)
Q_MEAN = "q_mean"
Q_MAX = "q_max"
Q_ABS_MAX = "q_abs_max"
Q_STD = "q_std"

# Norms
CRITIC_WEIGHT_NORM = "critic_weight_norm"
ACTOR_WEIGHT_NORM = "actor_weight_norm"
CRITIC_GRAD_NORM = "critic_grad_norm"
WEIGHT_NORM_LAYER_PREFIX = "critic_weight_norm_l"  # + layer index

# SEEM probe (seem_ray.seem)
SEEM = "seem"
SEEM_MAX_EIG = "seem_max_eig"
SEEM_FROB = "seem_frob"
SEEM_SECONDS = "seem_seconds"

# Evaluation
RETURN_MEAN = "return_mean"
NORMALIZED_SCORE = "normalized_score"

# Divergence verdicts (seem_ray.divergence, seem_ray.stopper)
DIVERGED = "diverged"
STOP_REASON = "stop_reason"
DIVERGED_SINCE = "diverged_since"
PREDICTED_DIVERGENCE_STEP = "predicted_divergence_step"

# Stop reasons (tag values)
REASON_SEEM = "seem"
REASON_Q_BOUND = "q_bound"
REASON_NAN = "nan"
REASON_GROWTH = "growth"
REASON_BUDGET = "budget"
STOP_REASONS = (REASON_SEEM, REASON_Q_BOUND, REASON_NAN, REASON_GROWTH, REASON_BUDGET)

__all__ = [name for name in dir() if name.isupper()]
