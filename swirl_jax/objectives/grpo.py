"""GRPO: clipped group-relative policy optimisation (R3's RL step).

For row i (one sampled sequence) with advantage A_i and action tokens t
(m_it = 1; for R3 only the reflection tokens), with the log-probs of the
current policy logp, of the sampler at sampling time old_logp and of the frozen
reference ref_logp:

    r_it   = exp(logp_it - old_logp_it)
    pg_it  = -min(r_it * A_i, clip(r_it, 1 - eps_low, 1 + eps_high) * A_i)
    kl_it  = exp(ref_it - logp_it) - (ref_it - logp_it) - 1        (k3)
    loss   = agg_{i,t}(pg_it + beta * kl_it)

k3 (the default, as in GRPO / DeepSeekMath) estimates KL(pi || pi_ref) by its
value, but as a loss its expected gradient is grad KL(pi_ref || pi), the
reverse KL. `kl_estimator` 'k1' (kl_it = sg(logp - ref) * r_it: the penalty
folded into the advantage under stop-gradient, importance-weighted by the
unclipped ratio) follows grad KL(pi || pi_ref) also in the inner updates on
old samples; 'k2' ((logp - ref)^2 / 2) follows it on-policy; 'exact' is the
full KL over the vocabulary (batch['ref_logits']). See
`swirl_jax.objectives.kl.kl_penalty`.

agg is 'sequence' (the GRPO paper: mean over each row's action tokens, then
over rows; the default) or 'token' (DAPO / Dr. GRPO: sum over all action
tokens of the batch / their number); see
`swirl_jax.objectives.advantages.aggregate`. eps_high > eps_low is DAPO's
"clip-higher". The advantages come from the batch ('advantages') or are
computed from 'rewards' and 'group_ids' as (r - mean_group) / std_group
(R3: A_i = (r_i - mean(r)) / std(r); groups whose rewards are all equal get
A = 0).

Defaults: eps = 0.2 (PPO/GRPO), beta = 0.001 (the R3 paper reports a KL
coefficient of about 0.001, as DeepSeek-R1 used). Tunix's GRPOConfig defaults
to beta = 0.04, as TRL's GRPOConfig did before it moved to 0.0 (no KL, no
reference model). Without 'old_logprobs' in the batch the update is
on-policy (old_logp = stop_gradient(logp), r = 1, the gradient is the
policy gradient A * grad logp).

Tokens outside the action mask contribute exactly nothing: their log-probs,
old log-probs and reference log-probs are replaced by 0 before any exp, so
even NaN/inf there (e.g. padding) leaves the loss and the gradient unchanged.
"""

from __future__ import annotations

from typing import Optional

import gin
import jax
import jax.numpy as jnp

from swirl_jax.objectives import advantages as adv_lib
from swirl_jax.objectives.registry import register_objective
from swirl_jax.objectives.common import policy_logprobs
from swirl_jax.objectives.kl import add_kl_term, check_kl_estimator


def check_clip(objective: str, clip_epsilon: float,
               clip_epsilon_high: Optional[float]) -> float:
  """Validates the clip range; returns eps_high."""
  if not 0.0 <= clip_epsilon < 1.0:
    raise ValueError(f"{objective}: clip_epsilon must be in [0, 1), got "
                     f"{clip_epsilon!r}.")
  high = clip_epsilon if clip_epsilon_high is None else clip_epsilon_high
  if not high >= 0.0:
    raise ValueError(f"{objective}: clip_epsilon_high must be >= 0, got "
                     f"{clip_epsilon_high!r}.")
  return high


def grpo_token_loss(logp, old_logp, ref_logp, advantages, mask, *,
                    clip_epsilon: float = 0.2,
                    clip_epsilon_high: Optional[float] = None,
                    beta: float = 0.001, kl_estimator: str = "k3",
                    aggregation: str = "sequence", logits=None,
                    ref_logits=None):
  """The GRPO loss on arrays (see the module docstring).

  Args:
    logp: [B, L] current policy log-probs of the targets.
    old_logp: [B, L] sampling-time log-probs, or None (on-policy).
    ref_logp: [B, L] reference log-probs, or None (then beta must be 0,
      unless kl_estimator is 'exact').
    advantages: [B] per-row advantages.
    mask: [B, L] action tokens (1 = carries loss).
    clip_epsilon: eps_low (and eps_high unless given).
    clip_epsilon_high: eps_high, or None for eps_low.
    beta: KL coefficient (>= 0; 0 drops the term).
    kl_estimator: 'k3' (default), 'k1', 'k2' or 'exact'.
    aggregation: 'sequence' or 'token'.
    logits, ref_logits: [B, L, V] policy / reference logits ('exact' only).
  Returns:
    (loss, metrics): 'pg_loss', 'kl' (if ref_logp), 'clip_fraction' (share
    of action tokens whose clipped term is active, i.e. with zero gradient),
    'ratio_mean' (mean r over action tokens), 'weight'.
  """
  name = "grpo"
  eps_high = check_clip(name, clip_epsilon, clip_epsilon_high)
  adv_lib.check_nonnegative(name, beta=beta)
  check_kl_estimator(name, kl_estimator)
  adv_lib.check_aggregation(aggregation)
  mask = jnp.asarray(mask) > 0
  logp = jnp.asarray(logp, jnp.float32)  # exp(ratio) needs f32, not bf16
  if old_logp is None:
    old_logp = jax.lax.stop_gradient(logp)
  logp_m = jnp.where(mask, logp, 0.0)
  old_m = jnp.where(mask, jnp.asarray(old_logp, jnp.float32), 0.0)
  adv = jnp.asarray(advantages, jnp.float32)[:, None]
  ratio = jnp.exp(logp_m - old_m)
  clipped_ratio = jnp.clip(ratio, 1.0 - clip_epsilon, 1.0 + eps_high)
  pg_tok = -jnp.minimum(ratio * adv, clipped_ratio * adv)
  pg_loss, weight = adv_lib.aggregate(pg_tok, mask, aggregation)
  metrics = {"pg_loss": pg_loss}
  loss = add_kl_term(pg_loss, metrics, logp, ref_logp, mask, coef=beta,
                     kind=kl_estimator, aggregation=aggregation, who=name,
                     old_logp=old_m, logits=logits, ref_logits=ref_logits)
  clipped = (((ratio < 1.0 - clip_epsilon) & (adv < 0)) |
             ((ratio > 1.0 + eps_high) & (adv > 0)))
  ratio_sg = jax.lax.stop_gradient(ratio)
  metrics.update(
      clip_fraction=adv_lib.aggregate(clipped.astype(jnp.float32), mask,
                                      "token")[0],
      ratio_mean=adv_lib.aggregate(ratio_sg, mask, "token")[0],
      weight=weight)
  return loss, metrics


@register_objective("grpo", needs_reference=True)
@gin.configurable(denylist=["params", "batch", "rng", "model"])
def grpo_loss(params, batch, rng, model, *,
              clip_epsilon: float = 0.2,
              clip_epsilon_high: Optional[float] = None,
              beta: float = 0.001,
              kl_estimator: str = "k3",
              aggregation: str = "sequence",
              normalize_std: bool = True):
  """GRPO objective (see the module docstring).

  Args:
    params: policy parameters.
    batch: 'inputs', 'targets', 'positions', 'segment_ids' [B, L];
      'action_mask' [B, L] (falls back to 'loss_mask'); 'advantages' [B] or
      'rewards' [B] + 'group_ids' [B]; optional 'old_logprobs' [B, L];
      'ref_logprobs' [B, L] (added by the train step); 'ref_logits'
      [B, L, V] for kl_estimator='exact' only.
    rng: unused.
    model: the Transformer module.
    clip_epsilon: eps_low of the ratio clip (and eps_high unless given).
    clip_epsilon_high: eps_high (DAPO clip-higher), None = clip_epsilon.
    beta: KL coefficient to the reference (0 disables).
    kl_estimator: 'k3' (default; gradient of KL(pi_ref||pi)), 'k1', 'k2'
      (gradient of KL(pi||pi_ref)) or 'exact'; see the module docstring.
    aggregation: 'sequence' (GRPO) or 'token' (DAPO).
    normalize_std: divide by the group std when computing advantages from
      'rewards' (ignored when the batch has 'advantages').
  Returns:
    (loss, metrics): 'loss', 'pg_loss', 'kl', 'clip_fraction', 'ratio_mean',
    'mean_advantage', 'mean_reward' (if 'rewards'), 'weight'.
  """
  del rng
  name = "grpo"
  check_clip(name, clip_epsilon, clip_epsilon_high)
  mask = adv_lib.mask_from_batch(batch, "action_mask", name, "loss_mask")
  rows = jnp.any(mask, axis=-1)
  advantages = adv_lib.advantages_from_batch(batch, rows, name, normalize_std)
  check_kl_estimator(name, kl_estimator)
  logp, logits, ref_logits = policy_logprobs(model, params, batch,
                                             kl_estimator)
  loss, metrics = grpo_token_loss(
      logp, batch.get("old_logprobs"), batch.get("ref_logprobs"), advantages,
      mask, clip_epsilon=clip_epsilon, clip_epsilon_high=clip_epsilon_high,
      beta=beta, kl_estimator=kl_estimator, aggregation=aggregation,
      logits=logits, ref_logits=ref_logits)
  metrics = dict(metrics, loss=loss,
                 mean_advantage=adv_lib.row_mean(advantages, rows))
  if "rewards" in batch:
    metrics["mean_reward"] = adv_lib.row_mean(batch["rewards"], rows)
  return loss, metrics
