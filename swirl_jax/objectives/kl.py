"""The KL terms of the RL objectives: estimators, the exact KL, the loss term.

`kl_penalty` (the sampled-token estimators k1, k2, k3, and which KL each
one's gradient follows), `exact_kl` (over the vocabulary, from logits),
`token_kl` (either, masked, per token) and `add_kl_term` (the term an
objective adds to its loss, with the error a missing reference gets).
Used by `stepwise_pg`, `grpo` and the SCoRe objectives alike.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from swirl_jax.objectives import advantages as adv_lib

KL_ESTIMATORS = ("k1", "k2", "k3", "exact")


def kl_penalty(logp: jax.Array, ref_logp: jax.Array, kind: str = "k3",
               old_logp: Optional[jax.Array] = None) -> jax.Array:
  """Per-token KL loss term from sampled-token log-probs: [...] -> [...].

  With a ~ pi (the sampled token), r = pi_ref(a) / pi(a) and "grad" the
  gradient of the term as a loss (its expectation over a ~ pi):

    kind  value (per token)                expected value   expected gradient
    'k1'  sg(logp - ref) * w               KL(pi||pi_ref)   grad KL(pi||pi_ref)
    'k2'  (logp - ref)^2 / 2               ~KL(pi||pi_ref)  grad KL(pi||pi_ref)
    'k3'  r - log r - 1                    KL(pi||pi_ref)   grad KL(pi_ref||pi)

  (sg = stop_gradient.) Why:
  * 'k1': `logp - ref` itself as a loss has gradient grad logp, whose mean
    under a ~ pi is 0: it adds noise and no pull to the reference. Here the
    penalty is folded into the reward instead: the term is a
    policy-gradient term whose per-token "reward" is -(logp - ref) under
    stop-gradient, w = exp(logp - sg(old)) = pi / pi_old (1 with gradient
    grad logp when `old_logp` is None, i.e. on-policy), so its gradient is
    (logp - ref) * w * grad logp, and
    E_{a~pi_old}[w (logp - ref) grad logp] = sum_a grad pi(a) (log pi(a) -
    log pi_ref(a)) = grad KL(pi||pi_ref) (the missing sum_a grad pi = 0).
    Its value is (logp - ref) * w, the (importance-weighted) unbiased
    estimate of KL(pi||pi_ref).
  * 'k2': its gradient (logp - ref) * grad logp is pointwise the on-policy
    'k1' gradient, so the same expectation, grad KL(pi||pi_ref); its value
    is a biased (second-order, >= 0, low-variance) estimate of the KL.
    Unlike 'k1' it is not importance-weighted: with samples from pi_old !=
    pi (GRPO's later inner updates) the claim holds only approximately.
  * 'k3' (Schulman's estimator, GRPO / DeepSeekMath, the default): its value
    is an unbiased, >= 0, low-variance estimate of KL(pi||pi_ref), but its
    gradient (1 - r) * grad logp has expectation
    sum_a (pi(a) - pi_ref(a)) grad log pi(a) = -sum_a pi_ref(a) grad log
    pi(a) = grad KL(pi_ref||pi): as a loss it follows the *reverse* KL
    (mass-covering), not KL(pi||pi_ref). Both vanish at pi = pi_ref and
    agree to first order near it.

  These hold per token for the distribution pi(.|s_t) at each visited
  context s_t (the gradient of sum_t KL(pi(.|s_t)||pi_ref(.|s_t)) with the
  contexts held fixed), as in GRPO; they do not propagate a token's effect
  on the later tokens' KL (no KL reward-to-go). 'exact' (the full KL over
  the vocabulary) needs the logits: see `exact_kl` and `token_kl`.

  Args:
    logp: [...] log pi(a) of the sampled tokens (differentiated).
    ref_logp: [...] log pi_ref(a) (constants).
    kind: 'k1', 'k2' or 'k3'.
    old_logp: [...] log pi_old(a) of the sampling policy, or None (samples
      from the current policy); only 'k1' uses it.
  Returns:
    [...] float32 per-token loss terms.
  """
  logp = jnp.asarray(logp, jnp.float32)
  ref_logp = jnp.asarray(ref_logp, jnp.float32)
  if kind == "k1":
    anchor = logp if old_logp is None else jnp.asarray(old_logp, jnp.float32)
    weight = jnp.exp(logp - jax.lax.stop_gradient(anchor))
    return jax.lax.stop_gradient(logp - ref_logp) * weight
  if kind == "k2":
    return 0.5 * jnp.square(logp - ref_logp)
  if kind == "k3":
    delta = ref_logp - logp
    return jnp.exp(delta) - delta - 1.0
  if kind == "exact":
    raise ValueError("kl_penalty: kind 'exact' needs the logits of the "
                     "policy and of the reference; use exact_kl / token_kl.")
  raise ValueError(f"Unknown KL estimator {kind!r}; use one of "
                   f"{KL_ESTIMATORS}.")


def exact_kl(logits: jax.Array, ref_logits: jax.Array,
             mask: Optional[jax.Array] = None) -> jax.Array:
  """KL(pi(.|s_t) || pi_ref(.|s_t)) over the whole vocabulary, per token.

  sum_v pi(v) (log pi(v) - log pi_ref(v)) with pi = softmax(logits),
  pi_ref = softmax(ref_logits): no sampling, so no variance; its gradient
  (through `logits`; `ref_logits` are constants) is exactly
  grad KL(pi||pi_ref) at each context, the contexts held fixed (as for
  `kl_penalty`).

  Memory: one [B, L, V] float32 array is B * L * V * 4 bytes. The batch's
  reference logits are one; the KL and its gradient add about three more
  (the policy's log-softmax, its softmax, the logits' gradient) beside the
  policy logits every loss has: peak ~5 * B * L * V * 4 bytes for one
  (micro)batch. With Gemma's V = 256,128 that is ~5 GiB per 1,024 tokens of
  B * L (padding included), so with the model's own memory left over keep
  a microbatch to about 2k / 10k / 20k tokens on 16 / 80 / 141 GiB
  accelerators; the tiny test models (V in the hundreds) fit at any batch.

  Args:
    logits: [..., V] policy logits (float32 or bfloat16; computed in f32).
    ref_logits: [..., V] reference logits.
    mask: optional [...] tokens to keep; elsewhere the result is 0 with a
      zero gradient, whatever the logits hold there (even NaN / inf).
  Returns:
    [...] float32 per-token KL (>= 0).
  """
  logits = jnp.asarray(logits, jnp.float32)
  ref_logits = jnp.asarray(ref_logits, jnp.float32)
  if mask is not None:
    keep = (jnp.asarray(mask) > 0)[..., None]
    logits = jnp.where(keep, logits, 0.0)
    ref_logits = jnp.where(keep, ref_logits, 0.0)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  log_ref = jax.nn.log_softmax(jax.lax.stop_gradient(ref_logits), axis=-1)
  kl = jnp.sum(jnp.exp(log_p) * (log_p - log_ref), axis=-1)
  if mask is not None:
    kl = jnp.where(jnp.asarray(mask) > 0, kl, 0.0)
  return kl


def token_kl(kind: str, logp: Optional[jax.Array],
             ref_logp: Optional[jax.Array], mask: jax.Array, *,
             old_logp: Optional[jax.Array] = None,
             logits: Optional[jax.Array] = None,
             ref_logits: Optional[jax.Array] = None) -> jax.Array:
  """Per-token KL loss term of `kind`, 0 (zero gradient) outside `mask`.

  Args:
    kind: 'k1', 'k2', 'k3' (`kl_penalty`, from logp / ref_logp / old_logp,
      all [B, L]) or 'exact' (`exact_kl`, from logits / ref_logits
      [B, L, V]).
    logp, ref_logp: [B, L] sampled-token log-probs (unused by 'exact').
    mask: [B, L] tokens that carry the term.
    old_logp: [B, L] sampling-policy log-probs or None ('k1' only).
    logits, ref_logits: [B, L, V] ('exact' only).
  Returns:
    [B, L] float32.
  """
  mask = jnp.asarray(mask) > 0
  if kind == "exact":
    if logits is None or ref_logits is None:
      raise ValueError("kl_estimator 'exact' needs the policy logits and "
                       "the reference logits [B, L, V].")
    return exact_kl(logits, ref_logits, mask)

  def masked(x):
    return None if x is None else jnp.where(mask, jnp.asarray(x, jnp.float32),
                                            0.0)
  return jnp.where(mask, kl_penalty(masked(logp), masked(ref_logp), kind,
                                    old_logp=masked(old_logp)), 0.0)


def check_kl_estimator(objective: str, kl_estimator: str) -> None:
  if kl_estimator not in KL_ESTIMATORS:
    raise ValueError(f"{objective}: kl_estimator must be one of "
                     f"{KL_ESTIMATORS}, got {kl_estimator!r}.")


def has_reference(kind: str, ref_logp, ref_logits) -> bool:
  """Whether the reference input that `kind` needs is there."""
  return (ref_logits if kind == "exact" else ref_logp) is not None


def reference_key(kind: str) -> str:
  """The batch key holding what estimator `kind` needs of the reference."""
  return "ref_logits" if kind == "exact" else "ref_logprobs"


def add_kl_term(loss, metrics: dict, logp, ref_logp, mask, *, coef: float,
                kind: str, aggregation: str, who: str, old_logp=None,
                logits=None, ref_logits=None):
  """loss + coef * (KL term of `kind`) aggregated over `mask`; sets
  metrics['kl'] (the term's value: see `kl_penalty`).

  Args:
    loss: scalar.
    metrics: updated in place.
    logp, ref_logp, old_logp: [B, L] ('k1' / 'k2' / 'k3'; old_logp only
      weighs 'k1').
    mask: [B, L] tokens carrying the term.
    coef: KL coefficient.
    kind: 'k1', 'k2', 'k3' or 'exact'.
    aggregation: 'token' or 'sequence'.
    who: the objective, for messages.
    logits, ref_logits: [B, L, V] ('exact' only).
  Raises:
    KeyError when coef > 0 and the reference input of `kind` is missing.
  """
  if has_reference(kind, ref_logp, ref_logits):
    kl, _ = adv_lib.aggregate(
        token_kl(kind, logp, ref_logp, mask, old_logp=old_logp,
                 logits=logits, ref_logits=ref_logits), mask, aggregation)
    metrics["kl"] = kl
    if coef:
      loss = loss + coef * kl
  elif coef:
    hint = (" [B, L, V], the reference's logits (the train step adds them "
            "when it is built with this loss's kl_estimator bound to "
            "'exact', or with make_train_step(ref_logits=True))"
            if kind == "exact" else "")
    raise KeyError(f"{who}: a KL coefficient > 0 with kl_estimator="
                   f"{kind!r} needs batch[{reference_key(kind)!r}]{hint}.")
  return loss
