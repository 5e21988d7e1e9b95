"""Supervised next-token loss on the masked (target / action) tokens."""

from __future__ import annotations

import jax.numpy as jnp

from swirl_jax.objectives.common import masked_mean, target_logprobs
from swirl_jax.objectives.registry import register_objective


@register_objective("sft")
def sft_loss(params, batch, rng, model):
  """Mean negative log-likelihood of targets where loss_mask is 1.

  Args:
    params: model parameters.
    batch: dict with 'inputs', 'targets', 'loss_mask', 'positions',
      'segment_ids', each [B, L].
    rng: unused (deterministic loss).
    model: the Transformer module.
  Returns:
    (loss scalar, metrics with 'nll', 'accuracy', 'weight' = #target tokens).
  """
  del rng
  logp, correct = target_logprobs(model, params, batch, return_hits=True)
  mask = batch["loss_mask"]
  loss = masked_mean(-logp, mask)
  return loss, {"nll": loss, "accuracy": masked_mean(correct, mask),
                "weight": jnp.sum(mask)}
