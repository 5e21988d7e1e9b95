"""Shared pure functions of the objectives: masks, per-token log-probs and
the KL-to-reference terms (`kl_penalty`, `exact_kl`, `token_kl`).

Batches follow the data pipeline's format (all [B, L]): 'inputs', 'targets',
'loss_mask', 'positions', 'segment_ids' (0 = padding, 1.. = packed sequence).
"""

from __future__ import annotations

from typing import Optional

import gin
import jax
import jax.numpy as jnp

from swirl_jax.objectives import shared_prefix


def segment_attention_mask(segment_ids: jax.Array) -> jax.Array:
  """[B, L] segment ids -> [B, L, L] causal mask within each packed sequence."""
  length = segment_ids.shape[-1]
  causal = jnp.tril(jnp.ones((length, length), bool))
  same = segment_ids[:, :, None] == segment_ids[:, None, :]
  real = (segment_ids > 0)[:, None, :]
  return causal[None] & same & real


# exp(x) of float32 stays finite below ~88: with |logits| <= this bound the
# softmax needs no max subtraction (its sum over 1M tokens is < 1e37).
_NO_SHIFT_BOUND = 60.0


def selected_log_softmax(logits: jax.Array, targets: jax.Array,
                         bound: Optional[float] = None) -> jax.Array:
  """log_softmax(logits)[..., target]: [..., V] float32, [...] int -> [...].

  Bit-identical to selecting from `jax.nn.log_softmax` (the same
  `shifted - log(sum(exp(shifted)))`, shifted = logits - max), but the
  [..., V] log-probs are never formed: only the target's shifted logit is
  picked. Its gradient (one-hot - softmax) is then a single fused pass over
  the logits instead of several, about a third less time on XLA:CPU.
  The pick is a select-and-sum, not take_along_axis: the same values, but
  its gradient is an elementwise select that fuses, where take_along_axis's
  is a scatter (about a third of a tiny model's backward pass on XLA:CPU).

  `bound`: a known bound on |logits| (Gemma 2/3's final soft-cap, 30).
  When it is at most 60, exp cannot overflow in float32 and the max
  subtraction (a full pass over the [..., V] logits) is skipped; the
  result is the same up to float32 round-off.
  """
  if bound is not None and bound <= _NO_SHIFT_BOUND:
    shifted = logits
  else:
    shifted = logits - jax.lax.stop_gradient(
        jnp.max(logits, axis=-1, keepdims=True))
  log_norm = jnp.log(jnp.sum(jnp.exp(shifted), axis=-1))
  hit = jnp.arange(logits.shape[-1]) == targets[..., None]
  return jnp.sum(jnp.where(hit, shifted, 0.0), axis=-1) - log_norm


@gin.configurable(allowlist=["chunk_tokens"])
def target_logprobs(model, params, batch, return_logits: bool = False,
                    chunk_tokens: Optional[int] = None,
                    return_hits: bool = False):
  """log pi(targets[t] | inputs[:t+1]) for every position: [B, L] float32.

  A batch with 'prefix_inputs' computes each group's shared prefix once
  (`swirl_jax.objectives.shared_prefix`); the result is the same.

  chunk_tokens (gin: `target_logprobs.chunk_tokens`): compute the logits
  `chunk_tokens` positions at a time, rematerialised in the backward pass
  (`chunked_target_logprobs`), so that no [B, L, V] array exists: for a
  262k vocabulary, 8 x 512 rows hold 4.3 GB of float32 logits (and as much
  again for their gradient), 8 x 64 hold 0.5 GB. Same values and gradients;
  the unembedding is then computed twice in a training step. None: all at
  once (what small vocabularies want). Not used with `return_logits` or a
  shared-prefix batch.

  return_hits: also return [B, L] float32, 1.0 where argmax(logits) is the
  target (an accuracy metric), computed chunk by chunk when chunking.
  """
  mask = segment_attention_mask(batch["segment_ids"])
  if chunk_tokens and not return_logits and (
      shared_prefix.PREFIX_KEY not in batch) and hasattr(model,
                                                         "hidden_states"):
    return chunked_target_logprobs(model, params, batch, mask, chunk_tokens,
                                   with_hits=return_hits)
  # Any module with `__call__(inputs, positions, mask)` works (tests use
  # small stand-ins); a Transformer's soft-cap bounds its logits.
  bound = getattr(getattr(model, "config", None), "final_logit_soft_cap",
                  None)
  if shared_prefix.PREFIX_KEY in batch and not return_logits:
    return shared_prefix.shared_prefix_logprobs(
        model, params, batch, mask, bound=bound, with_hits=return_hits)
  if shared_prefix.PREFIX_KEY in batch:
    logits = shared_prefix.shared_prefix_logits(model, params, batch, mask)
  else:
    logits = model.apply({"params": params}, batch["inputs"],
                         batch["positions"], mask)
  out = selected_log_softmax(logits, batch["targets"], bound=bound)
  if return_logits:
    return out, logits
  if return_hits:
    return out, jax.lax.stop_gradient(
        (jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32))
  return out


def chunked_target_logprobs(model, params, batch, mask, chunk_tokens: int,
                            with_hits: bool = False):
  """`target_logprobs` with the logits formed `chunk_tokens` at a time.

  The final hidden states [B, L, D] are computed once; the unembedding and
  log-softmax run over chunks of positions in a `lax.map` whose body is
  rematerialised (`jax.checkpoint`), so the backward pass recomputes each
  chunk's [B, C, V] logits instead of keeping all of them. Returns [B, L];
  with `with_hits`, also [B, L] float32 1.0 where argmax(logits) == target.
  """
  if not isinstance(chunk_tokens, int) or chunk_tokens <= 0:
    raise ValueError(f"target_logprobs.chunk_tokens must be a positive int, "
                     f"got {chunk_tokens!r}.")
  x = model.apply({"params": params}, batch["inputs"], batch["positions"],
                  mask, method="hidden_states")
  b, length, d = x.shape
  chunk = min(chunk_tokens, length)
  count = -(-length // chunk)
  pad = count * chunk - length
  targets = jnp.pad(batch["targets"], ((0, 0), (0, pad)))
  x = jnp.pad(x, ((0, 0), (0, pad), (0, 0)))
  xs = x.reshape(b, count, chunk, d).swapaxes(0, 1)
  ts = targets.reshape(b, count, chunk).swapaxes(0, 1)
  table_t = jax.lax.optimization_barrier(params["embedding"].T)
  bound = model.config.final_logit_soft_cap

  @jax.checkpoint
  def one(x_chunk, t_chunk, table):
    logits = model.apply({"params": params}, x_chunk, table, method="unembed")
    logp = selected_log_softmax(logits, t_chunk, bound=bound)
    if not with_hits:  # no argmax pass over the [B, C, V] logits
      return logp, jnp.zeros((), jnp.float32)
    return logp, jax.lax.stop_gradient(
        (jnp.argmax(logits, -1) == t_chunk).astype(jnp.float32))

  out, hits = jax.lax.map(lambda a: one(a[0], a[1], table_t), (xs, ts))
  unchunk = lambda y: y.swapaxes(0, 1).reshape(b, count * chunk)[:, :length]  # noqa: E731
  if with_hits:
    return unchunk(out), unchunk(hits)
  return unchunk(out)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of x over mask (0 when the mask is empty)."""
  mask = mask.astype(jnp.float32)
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


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


def check_on_policy_sampling(who: str, temperature: float = 1.0,
                             top_k: Optional[int] = None,
                             top_p: Optional[float] = None) -> None:
  """Refuses sampling settings that make on-policy samples off-policy.

  The RL losses take the samples as drawn from pi (the model's softmax at
  temperature 1) and use log pi as pi_old: a temperature != 1 (0 = greedy
  included), a top-k or a top-p filter draws them from another
  distribution, which biases the policy gradient and the KL estimates.

  Args:
    who: the builder, for the message.
    temperature: must be 1.0.
    top_k: must be None or 0 (no filter).
    top_p: must be None or 1.0 (no filter).
  Raises:
    ValueError naming the setting and its value.
  """
  why = ("the on-policy RL loss assumes samples from the model's own "
         "distribution (temperature 1, no top-k / top-p), whose log-probs "
         "it uses as pi_old")
  if float(temperature) != 1.0:
    raise ValueError(f"{who}: temperature={temperature!r} is not 1.0; {why}.")
  if top_k not in (None, 0):
    raise ValueError(f"{who}: top_k={top_k!r} filters the samples; {why} "
                     "(use top_k=None).")
  if top_p is not None and float(top_p) != 1.0:
    raise ValueError(f"{who}: top_p={top_p!r} filters the samples; {why} "
                     "(use top_p=None).")
