"""SCoRe: two-stage multi-turn RL for self-correction.

An episode is x -> y1 ~ pi(.|x) -> instruction p -> y2 ~ pi(.|x, y1, p), with
binary rewards r1 = r(y1, y*), r2 = r(y2, y*). Each batch row holds one whole
episode [x, y1, p, y2]; 'attempt1_mask' / 'attempt2_mask' [B, L] mark the
target tokens of y1 / y2. The algorithm is on-policy REINFORCE with discount
0: each attempt's tokens are pushed by that attempt's own (shaped) reward
minus a baseline, and held near the reference by a per-token KL term. The
paper writes KL(pi || pi_ref); the default estimator k3 estimates it by its
value, but its gradient as a loss is that of the reverse KL(pi_ref || pi).
`kl_estimator='k1'` (the penalty logp - ref folded into the reward under
stop-gradient) or 'k2' follow grad KL(pi || pi_ref); 'exact' sums it over
the vocabulary (needs batch['ref_logits']). See
`swirl_jax.objectives.kl.kl_penalty`.

Stage I  (`score_stage1`): max E[ r2 - beta2 KL(y1) - beta1 KL(y2) ]

    loss = agg( -(r2 - b2) * logp  on y2 tokens
                + beta1 * kl       on y2 tokens
                + beta2 * kl       on y1 tokens )

  The first attempt gets no reward gradient, only the strong KL that keeps
  it at the base model's first-attempt distribution (avoiding the collapse
  where both attempts become the same answer). beta2 (default 0.1; paper 0.1
  MATH, 0.25 MBPP) may be overridden per batch by 'beta2' ([B], the same
  value per row, or a scalar without microbatching): the trainer's adaptive
  beta2, if any, goes there.

Stage II (`score_stage2`): max E[ sum_i R_i - beta1 KL(y_i) ] with

    R1 = r1,   R2 = r2 + alpha * (r2 - r1)          (alpha default 10)
    loss = agg( -(R1 - b1) * logp + beta1 * kl  on y1 tokens
                -(R2 - b2) * logp + beta1 * kl  on y2 tokens )

  The shaping bonus rewards flipping a wrong first attempt to a right second
  one (+alpha) and punishes the reverse (-alpha). `reward_shaping=False`
  (alpha = 0) is the paper's ablation.

Baselines b1, b2 come from the batch ('baseline1', 'baseline2' [B]; b2 is
the baseline of the shaped R2 in Stage II) or are computed over the
(micro)batch, within 'group_ids' if present, by the gin choice `baseline`:
'leave_one_out' (default: unbiased, the mean of the other rows), 'mean'
(includes the row itself) or 'none'. Paper hyperparameters: beta1 0.01,
beta2 0.1 / 0.25, alpha 10.

agg is 'token' (default: all y1 and y2 tokens of the batch, one denominator)
or 'sequence' (per row: mean over y1 tokens + mean over y2 tokens; then mean
over rows); see `swirl_jax.objectives.advantages.aggregate`.
"""

from __future__ import annotations

import gin
import jax.numpy as jnp

from swirl_jax.objectives import advantages as adv_lib
from swirl_jax.objectives.registry import register_objective
from swirl_jax.objectives.common import policy_logprobs
from swirl_jax.objectives.kl import check_kl_estimator, reference_key, token_kl


def shaped_rewards(reward1, reward2, alpha: float):
  """Stage II rewards: (R1, R2) = (r1, r2 + alpha * (r2 - r1)), each [B]."""
  r1 = jnp.asarray(reward1, jnp.float32)
  r2 = jnp.asarray(reward2, jnp.float32)
  return r1, r2 + alpha * (r2 - r1)


def score_token_loss(logp, ref_logp, mask1, mask2, adv1, adv2, kl_coef1,
                     kl_coef2, *, kl_estimator: str = "k3",
                     aggregation: str = "token", logits=None,
                     ref_logits=None):
  """The SCoRe loss on arrays, shared by both stages.

  Per token: -adv1_i * logp + kl_coef1 * kl on y1 tokens, -adv2_i * logp +
  kl_coef2 * kl on y2 tokens; then aggregated over both masks.

  Args:
    logp, ref_logp: [B, L] policy / reference log-probs of the targets.
    mask1, mask2: [B, L] disjoint masks of y1 / y2 target tokens.
    adv1, adv2: [B] advantages of the two attempts.
    kl_coef1, kl_coef2: KL coefficients on y1 / y2 tokens: floats, or [B]
      per-row values (e.g. an adaptive beta2 from the batch).
    kl_estimator: 'k3', 'k1', 'k2' or 'exact' (see `kl.kl_penalty`).
    aggregation: 'token' or 'sequence'.
    logits, ref_logits: [B, L, V] policy / reference logits ('exact' only;
      ref_logp is then unused).
  Returns:
    (loss, metrics): 'pg_loss', 'kl_loss', 'kl1', 'kl2' (unscaled mean KL
    term over y1 / y2 tokens), 'weight'.
  """
  m1 = jnp.asarray(mask1) > 0
  m2 = jnp.asarray(mask2) > 0
  both = m1 | m2
  logp = jnp.asarray(logp, jnp.float32)
  logp_m = jnp.where(both, logp, 0.0)

  def col(v):  # scalar or [B] -> [B or 1, 1]
    return jnp.reshape(jnp.asarray(v, jnp.float32), (-1, 1))

  adv_tok = jnp.where(m1, col(adv1), 0.0) + jnp.where(m2, col(adv2), 0.0)
  pg_loss, weight = adv_lib.aggregate(-adv_tok * logp_m, (m1, m2),
                                      aggregation)
  kl_tok = token_kl(kl_estimator, logp, ref_logp, both, logits=logits,
                    ref_logits=ref_logits)
  coef_tok = (jnp.where(m1, col(kl_coef1), 0.0) +
              jnp.where(m2, col(kl_coef2), 0.0))
  kl_loss, _ = adv_lib.aggregate(coef_tok * kl_tok, (m1, m2), aggregation)
  metrics = {
      "pg_loss": pg_loss,
      "kl_loss": kl_loss,
      "kl1": adv_lib.aggregate(kl_tok, m1, "token")[0],
      "kl2": adv_lib.aggregate(kl_tok, m2, "token")[0],
      "weight": weight,
  }
  return pg_loss + kl_loss, metrics


def _baselines(batch, rewards, key, kind, rows):
  if key in batch:
    return jnp.asarray(batch[key], jnp.float32)
  return adv_lib.reinforce_baseline(rewards, batch.get("group_ids"), kind,
                                    mask=rows)


def _check(name, kl_estimator, aggregation, baseline, **coefs):
  adv_lib.check_nonnegative(name, **coefs)
  check_kl_estimator(name, kl_estimator)
  adv_lib.check_aggregation(aggregation)
  if baseline not in adv_lib.BASELINES:
    raise ValueError(f"{name}: baseline must be one of {adv_lib.BASELINES}, "
                     f"got {baseline!r}.")


def _masks_and_logps(batch, params, model, name, needed, kl_estimator):
  """(m1, m2, logp, logits, ref_logits); logits only for 'exact'."""
  needed = tuple(needed) + (reference_key(kl_estimator),)
  missing = [k for k in needed if k not in batch]
  if missing:
    hint = (" ('exact' needs the reference's logits [B, L, V]; the train "
            "step adds them when built with kl_estimator bound to 'exact' "
            "or with make_train_step(ref_logits=True))"
            if "ref_logits" in missing
            else "")
    raise KeyError(f"{name}: the batch is missing {missing}{hint} (it has "
                   f"{sorted(batch)}).")
  m1 = adv_lib.mask_from_batch(batch, "attempt1_mask", name)
  m2 = adv_lib.mask_from_batch(batch, "attempt2_mask", name)
  logp, logits, ref_logits = policy_logprobs(model, params, batch,
                                             kl_estimator)
  return m1, m2, logp, logits, ref_logits


@register_objective("score_stage1", needs_reference=True)
@gin.configurable(denylist=["params", "batch", "rng", "model"])
def score_stage1_loss(params, batch, rng, model, *,
                      beta1: float = 0.01,
                      beta2: float = 0.1,
                      baseline: str = "leave_one_out",
                      kl_estimator: str = "k3",
                      aggregation: str = "token"):
  """SCoRe Stage I: reward the second attempt, pin the first to the reference.

  Args:
    params: policy parameters.
    batch: 'inputs', 'targets', 'positions', 'segment_ids', 'attempt1_mask',
      'attempt2_mask' [B, L]; 'reward2' [B] ('reward1' [B] only for metrics);
      optional 'baseline2' [B], 'beta2' ([B] or scalar), 'group_ids' [B];
      'ref_logprobs' [B, L] (added by the train step); 'ref_logits'
      [B, L, V] for kl_estimator='exact' only.
    rng: unused.
    model: the Transformer module.
    beta1: KL coefficient on y2 tokens.
    beta2: KL coefficient on y1 tokens (batch['beta2'] overrides it).
    baseline: 'leave_one_out', 'mean' or 'none' (when no 'baseline2').
    kl_estimator: 'k3' (default), 'k1', 'k2' or 'exact'.
    aggregation: 'token' or 'sequence'.
  Returns:
    (loss, metrics): 'loss', 'pg_loss', 'kl_loss', 'kl1', 'kl2', 'beta2',
    'reward2', 'reward1' and 'delta' (= reward2 - reward1, if 'reward1'),
    'mean_advantage2', 'weight'.
  """
  del rng
  name = "score_stage1"
  _check(name, kl_estimator, aggregation, baseline, beta1=beta1, beta2=beta2)
  m1, m2, logp, logits, ref_logits = _masks_and_logps(
      batch, params, model, name, ("reward2",), kl_estimator)
  rows = jnp.any(m1 | m2, axis=-1)
  r2 = jnp.asarray(batch["reward2"], jnp.float32)
  adv2 = r2 - _baselines(batch, r2, "baseline2", baseline, rows)
  b2 = batch.get("beta2", beta2)
  b2 = jnp.broadcast_to(jnp.asarray(b2, jnp.float32), r2.shape)
  loss, metrics = score_token_loss(
      logp, batch.get("ref_logprobs"), m1, m2, jnp.zeros_like(r2), adv2, b2,
      beta1, kl_estimator=kl_estimator, aggregation=aggregation,
      logits=logits, ref_logits=ref_logits)
  metrics = dict(metrics, loss=loss, beta2=adv_lib.row_mean(b2, rows),
                 reward2=adv_lib.row_mean(r2, rows),
                 mean_advantage2=adv_lib.row_mean(adv2, rows))
  if "reward1" in batch:
    r1 = jnp.asarray(batch["reward1"], jnp.float32)
    metrics["reward1"] = adv_lib.row_mean(r1, rows)
    metrics["delta"] = adv_lib.row_mean(r2 - r1, rows)
  return loss, metrics


@register_objective("score_stage2", needs_reference=True)
@gin.configurable(denylist=["params", "batch", "rng", "model"])
def score_stage2_loss(params, batch, rng, model, *,
                      alpha: float = 10.0,
                      beta1: float = 0.01,
                      reward_shaping: bool = True,
                      baseline: str = "leave_one_out",
                      kl_estimator: str = "k3",
                      aggregation: str = "token"):
  """SCoRe Stage II: reward both attempts, shaped bonus on the second.

  Args:
    params: policy parameters.
    batch: 'inputs', 'targets', 'positions', 'segment_ids', 'attempt1_mask',
      'attempt2_mask' [B, L]; 'reward1', 'reward2' [B]; optional
      'baseline1', 'baseline2' [B] (baseline2 for the shaped R2),
      'group_ids' [B]; 'ref_logprobs' [B, L] (added by the train step);
      'ref_logits' [B, L, V] for kl_estimator='exact' only.
    rng: unused.
    model: the Transformer module.
    alpha: shaping bonus coefficient (>= 0).
    beta1: KL coefficient on the tokens of both attempts.
    reward_shaping: False sets alpha = 0 (the paper's ablation).
    baseline: 'leave_one_out', 'mean' or 'none' (for missing baselines).
    kl_estimator: 'k3' (default), 'k1', 'k2' or 'exact'.
    aggregation: 'token' or 'sequence'.
  Returns:
    (loss, metrics): 'loss', 'pg_loss', 'kl_loss', 'kl1', 'kl2', 'reward1',
    'reward2', 'shaped_reward2', 'delta', 'mean_advantage1',
    'mean_advantage2', 'weight'.
  """
  del rng
  name = "score_stage2"
  _check(name, kl_estimator, aggregation, baseline, alpha=alpha, beta1=beta1)
  m1, m2, logp, logits, ref_logits = _masks_and_logps(
      batch, params, model, name, ("reward1", "reward2"), kl_estimator)
  rows = jnp.any(m1 | m2, axis=-1)
  r1, shaped2 = shaped_rewards(batch["reward1"], batch["reward2"],
                               alpha if reward_shaping else 0.0)
  adv1 = r1 - _baselines(batch, r1, "baseline1", baseline, rows)
  adv2 = shaped2 - _baselines(batch, shaped2, "baseline2", baseline, rows)
  loss, metrics = score_token_loss(
      logp, batch.get("ref_logprobs"), m1, m2, adv1, adv2, beta1, beta1,
      kl_estimator=kl_estimator, aggregation=aggregation, logits=logits,
      ref_logits=ref_logits)
  r2 = jnp.asarray(batch["reward2"], jnp.float32)
  metrics = dict(metrics, loss=loss,
                 reward1=adv_lib.row_mean(r1, rows),
                 reward2=adv_lib.row_mean(r2, rows),
                 shaped_reward2=adv_lib.row_mean(shaped2, rows),
                 delta=adv_lib.row_mean(r2 - r1, rows),
                 mean_advantage1=adv_lib.row_mean(adv1, rows),
                 mean_advantage2=adv_lib.row_mean(adv2, rows))
  return loss, metrics
