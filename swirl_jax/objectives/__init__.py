"""Training objectives (pure loss functions) and their registry."""

from swirl_jax.objectives.common import masked_mean, segment_attention_mask, target_logprobs
from swirl_jax.objectives.kl import exact_kl, kl_penalty
from swirl_jax.objectives.registry import Objective, get_objective, objective_names, register_objective
