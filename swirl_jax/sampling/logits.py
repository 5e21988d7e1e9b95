"""Pure functions that turn next-token logits into sampled tokens.

All functions take logits [B, V] float32 and are jit-friendly.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

NEG_INF = -1e30


def first_argmax(x: jax.Array) -> jax.Array:
  """argmax over the last axis (first index on ties), as int32.

  Same result as jnp.argmax, written as max + compare + min because XLA's
  CPU argmax reduction is several times slower on [B, V] rows.
  """
  iota = jnp.arange(x.shape[-1], dtype=jnp.int32)
  is_max = x == jnp.max(x, axis=-1, keepdims=True)
  return jnp.min(jnp.where(is_max, iota, x.shape[-1]), axis=-1)


def apply_top_k(logits: jax.Array, k: int) -> jax.Array:
  """Keeps the k largest logits per row (ties at the k-th value kept)."""
  if k <= 0 or k >= logits.shape[-1]:
    return logits
  kth = jax.lax.top_k(logits, k)[0][:, -1:]
  return jnp.where(logits < kth, NEG_INF, logits)


def apply_top_p(logits: jax.Array, p: jax.Array) -> jax.Array:
  """Nucleus filter: keeps the smallest set of tokens with mass >= p.

  Args:
    logits: [B, V] (already temperature-scaled).
    p: scalar or [B] in (0, 1]; 1 keeps everything.
  """
  p = jnp.broadcast_to(jnp.asarray(p, jnp.float32), logits.shape[:1])
  sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  keep = mass_before < p[:, None]
  keep = keep.at[:, 0].set(True)
  # The smallest kept logit is the threshold.
  threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1,
                      keepdims=True)
  return jnp.where(logits < threshold, NEG_INF, logits)


def sample_tokens(logits: jax.Array, rng: Optional[jax.Array], *,
                  greedy: bool, temperature: jax.Array,
                  top_k: Optional[int] = None,
                  top_p: Optional[jax.Array] = None,
                  uniform: Optional[jax.Array] = None) -> jax.Array:
  """Draws one token per row.

  Args:
    logits: [B, V] float32.
    rng: PRNG key (unused when `uniform` is given or when greedy).
    greedy: static; argmax when True (temperature, top-k, top-p ignored).
    temperature: scalar > 0 when not greedy.
    top_k: static int or None.
    top_p: scalar / [B] or None.
    uniform: optional [B] U[0, 1) numbers that decide the draws (see
      `inverse_cdf_sample`); a decode loop draws all of them up front.
  Returns:
    [B] int32 tokens.
  """
  if greedy:
    return first_argmax(logits)
  scaled = logits / jnp.asarray(temperature, jnp.float32)
  if top_k:
    scaled = apply_top_k(scaled, top_k)
  if top_p is not None:
    scaled = apply_top_p(scaled, top_p)
  return inverse_cdf_sample(scaled, rng, uniform=uniform)


def _inclusive_cumsum(x: jax.Array) -> jax.Array:
  """Prefix sums over the last axis of [..., n] as one matmul x @ triu(1).

  XLA:CPU lowers `jnp.cumsum` to a reduce-window, O(n^2) per row; for the
  short rows used here a triangular matmul is much faster.
  """
  n = x.shape[-1]
  upper = (jnp.arange(n)[:, None] <= jnp.arange(n)[None, :]).astype(x.dtype)
  return jnp.matmul(x, upper, precision=jax.lax.Precision.HIGHEST)


def inverse_cdf_sample(logits: jax.Array, rng: Optional[jax.Array],
                       block: int = 32,
                       uniform: Optional[jax.Array] = None) -> jax.Array:
  """One draw per row from softmax(logits), by inverse CDF: [B, V] -> [B].

  Draws u ~ U[0, 1) per row and returns the first token whose cumulative
  (unnormalised) probability exceeds u * total. The same distribution as
  Gumbel-max (`jax.random.categorical`), but with B random numbers instead
  of B * V: on XLA:CPU the threefry bits and two logs of Gumbel noise for a
  [32, 1024] row block cost ~10x more than this whole function, a sixth of
  a decode step of the tiny model. The cumulative sum is taken in two
  levels (over blocks of `block` tokens, then within the chosen block), so
  it is O(V) work in a few small ops. Tokens of zero probability (masked by
  top-k / top-p to NEG_INF) are never drawn: the index is clamped to the
  last token of non-zero probability against float round-off.

  Args:
    logits: [B, V] float32 (temperature and filters already applied).
    rng: PRNG key (ignored when `uniform` is given).
    block: tokens per first-level block.
    uniform: optional [B] float32 U[0, 1) numbers to use instead of
      drawing them from `rng`.
  Returns:
    [B] int32 token ids.
  """
  b, v = logits.shape
  probs = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
  probs = jnp.pad(probs, ((0, 0), (0, (-v) % block))).reshape(b, -1, block)
  sums = jnp.sum(probs, axis=-1)  # [B, NB]
  cum = _inclusive_cumsum(sums)  # [B, NB]
  if uniform is None:
    uniform = jax.random.uniform(rng, (b,), jnp.float32)
  target = uniform * cum[:, -1]
  blocks = jnp.arange(sums.shape[1], dtype=jnp.int32)
  j = jnp.sum((cum <= target[:, None]).astype(jnp.int32), axis=-1)
  j = jnp.minimum(j, jnp.max(jnp.where(sums > 0, blocks, 0), axis=-1))
  before = jnp.take_along_axis(cum - sums, j[:, None], axis=-1)[:, 0]
  inner = jnp.take_along_axis(probs, j[:, None, None], axis=1)[:, 0]
  inner_cum = _inclusive_cumsum(inner)  # [B, block]
  slots = jnp.arange(block, dtype=jnp.int32)
  i = jnp.sum((inner_cum <= (target - before)[:, None]).astype(jnp.int32),
              axis=-1)
  i = jnp.minimum(i, jnp.max(jnp.where(inner > 0, slots, 0), axis=-1))
  return j * block + i


def token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """log softmax(logits)[token]: [..., V], [...] -> [...] float32."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
