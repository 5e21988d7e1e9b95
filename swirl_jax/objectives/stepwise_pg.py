"""SWiRL stage 2: step-wise policy gradient on (state, action) rows.

SWiRL maximises, over the states s of the filtered synthetic trajectories,

    J(theta) = E_{s ~ T, a ~ pi_theta(.|s)} [ R(a | s) ],

where R is a generative judge's score of the single action a in context s.
The paper publishes neither baseline, KL term nor hyperparameters; we choose:

* Group-relative baseline. G actions are sampled per state (rows sharing
  'group_ids'); A_i = R_i - mean_group(R) [/ std_group(R)]. The group mean is
  a critic-free baseline that removes the state's difficulty from the reward
  and so reduces variance; a state whose G actions all scored the same gets
  A = 0. Std normalisation (GRPO-style) is a gin option, on by default.
* KL to the frozen reference (the SFT model the judge-filtered data came
  from), per action token, by default with Schulman's k3 estimator
  k3 = exp(ref - logp) - (ref - logp) - 1: its value estimates
  KL(pi || pi_ref) (unbiased, >= 0), but as a loss its expected gradient is
  that of the reverse KL(pi_ref || pi). kl_estimator 'k1' (the penalty
  logp - ref folded into the reward under stop-gradient) and 'k2'
  ((logp - ref)^2 / 2) follow grad KL(pi || pi_ref); 'exact' sums the KL
  over the vocabulary (see `swirl_jax.objectives.kl.kl_penalty`). A
  small coefficient (default 0.01) keeps the policy near the distribution
  on which the judge was calibrated, limiting reward hacking of the judge.
* On-policy, one update per batch of samples: the gradient of log pi is taken
  at the sampling policy, so no importance ratio or clipping is needed (use
  the `grpo` objective for several inner updates on the same samples).

Loss, with m_it = 1 on the action tokens of row i ('action_mask'):

    loss = agg_{i,t}( -A_i * log pi(a_it | s_i, a_i,<t) )
           + kl_coef * agg_{i,t}( kl_it )          (kl_it: k3_it by default)

where agg is 'token' (sum over all action tokens of the batch / their number)
or 'sequence' (mean over each row's action tokens, then over rows); see
`swirl_jax.objectives.advantages.aggregate`. The default 'token' weighs every
token of a long action like the summed log-likelihood of REINFORCE does.

Batch: 'inputs', 'targets', 'positions', 'segment_ids' [B, L]; 'action_mask'
[B, L] (falls back to 'loss_mask'); 'advantages' [B], or 'rewards' [B] (judge
score in [0, 1]) and 'group_ids' [B]; 'ref_logprobs' [B, L] (added by the
train step); 'ref_logits' [B, L, V] for kl_estimator='exact' only (also
added by the train step, see `swirl_jax.training.train_step`).
"""

from __future__ import annotations

import gin
import jax.numpy as jnp

from swirl_jax.objectives import advantages as adv_lib
from swirl_jax.objectives.common import policy_logprobs
from swirl_jax.objectives.kl import add_kl_term, check_kl_estimator
from swirl_jax.objectives.registry import register_objective

def stepwise_pg_token_loss(logp, ref_logp, advantages, mask, *,
                           kl_coef: float = 0.01, kl_estimator: str = "k3",
                           aggregation: str = "token", logits=None,
                           ref_logits=None):
  """The SWiRL loss on arrays.

  Args:
    logp: [B, L] log pi(targets) under the policy.
    ref_logp: [B, L] under the reference, or None (then kl_coef must be 0,
      unless kl_estimator is 'exact').
    advantages: [B].
    mask: [B, L] action tokens.
    kl_coef: KL coefficient (>= 0).
    kl_estimator: 'k1', 'k2', 'k3' or 'exact' (see `kl.kl_penalty`).
    aggregation: 'token' or 'sequence'.
    logits, ref_logits: [B, L, V] policy / reference logits ('exact' only).
  Returns:
    (loss, metrics with 'pg_loss', 'kl', 'weight').
  """
  mask = jnp.asarray(mask) > 0
  logp = jnp.asarray(logp, jnp.float32)
  logp_m = jnp.where(mask, logp, 0.0)
  pg_tok = -jnp.asarray(advantages, jnp.float32)[:, None] * logp_m
  pg_loss, weight = adv_lib.aggregate(pg_tok, mask, aggregation)
  metrics = {"pg_loss": pg_loss}
  loss = add_kl_term(pg_loss, metrics, logp, ref_logp, mask, coef=kl_coef,
                     kind=kl_estimator, aggregation=aggregation,
                     who="stepwise_pg", logits=logits, ref_logits=ref_logits)
  metrics["weight"] = weight
  return loss, metrics


@register_objective("stepwise_pg", needs_reference=True)
@gin.configurable(denylist=["params", "batch", "rng", "model"])
def stepwise_pg_loss(params, batch, rng, model, *,
                     kl_coef: float = 0.01,
                     kl_estimator: str = "k3",
                     normalize_std: bool = True,
                     aggregation: str = "token"):
  """SWiRL step-wise policy-gradient loss (see the module docstring).

  Args:
    params: policy parameters.
    batch: see the module docstring.
    rng: unused.
    model: the Transformer module.
    kl_coef: weight of the KL to the reference (>= 0; 0 disables it).
    kl_estimator: 'k3' (default; its gradient follows KL(pi_ref||pi)), 'k1'
      (folded into the reward) or 'k2' (both follow KL(pi||pi_ref)), or
      'exact' (needs batch['ref_logits'] [B, L, V]); see
      `swirl_jax.objectives.kl.kl_penalty`.
    normalize_std: divide group-centred rewards by the group std (only when
      the batch has no precomputed 'advantages').
    aggregation: 'token' or 'sequence'.
  Returns:
    (loss, metrics): 'loss', 'pg_loss', 'kl', 'mean_reward' (if the batch has
    'rewards'), 'mean_advantage' (over rows with action tokens), 'weight'.
  """
  del rng
  name = "stepwise_pg"
  adv_lib.check_nonnegative(name, kl_coef=kl_coef)
  check_kl_estimator(name, kl_estimator)
  adv_lib.check_aggregation(aggregation)
  mask = adv_lib.mask_from_batch(batch, "action_mask", name, "loss_mask")
  rows = jnp.any(mask, axis=-1)
  advantages = adv_lib.advantages_from_batch(batch, rows, name, normalize_std)
  logp, logits, ref_logits = policy_logprobs(model, params, batch,
                                             kl_estimator)
  loss, metrics = stepwise_pg_token_loss(
      logp, batch.get("ref_logprobs"), advantages, mask, kl_coef=kl_coef,
      kl_estimator=kl_estimator, aggregation=aggregation, logits=logits,
      ref_logits=ref_logits)
  metrics = dict(metrics, loss=loss,
                 mean_advantage=adv_lib.row_mean(advantages, rows))
  if "rewards" in batch:
    metrics["mean_reward"] = adv_lib.row_mean(batch["rewards"], rows)
  return loss, metrics
