"""Shared pure functions of the objectives: masks, per-token log-probs of
the policy, the on-policy sampling check (the KL terms are in kl.py).

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


def policy_logprobs(model, params, batch, kind: str):
  """(logp [B, L], logits [B, L, V] or None, ref_logits or None).

  The logits come back only for the 'exact' estimator on a batch with
  'ref_logits' (without them, `add_kl_term` refuses a KL coefficient > 0).
  """
  if kind != "exact" or "ref_logits" not in batch:
    return target_logprobs(model, params, batch), None, None
  logp, logits = target_logprobs(model, params, batch, return_logits=True)
  return logp, logits, batch["ref_logits"]


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
