"""Softmax attention as a pure function, and the logit soft-cap.

Shape letters as in `swirl_jax.models.layers`: B batch, T query length,
S key length, K kv heads, G = N / K query heads per kv head, H head_dim,
M = T * G query rows per kv head.

`attention` has a hand-written gradient that keeps no [B, K, M, S] array
from the forward pass (module note below); `attention_reference` is the
same maths left to autodiff, which the tests compare it against.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

# A large finite negative number: masked logits become exactly 0 after softmax
# without producing NaN for rows that are fully masked (left padding).
MASK_VALUE = -2.3819763e38


def soft_cap(x: jax.Array, cap: Optional[float]) -> jax.Array:
  """cap * tanh(x / cap); identity when cap is None."""
  if cap is None:
    return x
  return jnp.tanh(x / cap) * cap


def _capped_masked_logits(qg, key, mask, cap):
  """softcap(qg key^T) where mask, MASK_VALUE elsewhere: [B, K, T, G, S] f32."""
  b, k, m, _ = qg.shape
  t, s = mask.shape[1], key.shape[2]
  logits = jnp.einsum("bkmh,bksh->bkms", qg, key.astype(qg.dtype),
                      preferred_element_type=jnp.float32)
  logits = soft_cap(logits.reshape(b, k, t, m // t, s), cap)
  return jnp.where(mask[:, None, :, None, :], logits, MASK_VALUE)


def attention_reference(qg: jax.Array, key: jax.Array, value: jax.Array,
                        mask: jax.Array, cap: Optional[float]) -> jax.Array:
  """`attention` with its gradient left to autodiff (the plain form)."""
  b, k, m, _ = qg.shape
  logits = _capped_masked_logits(qg, key, mask, cap)
  probs = jax.nn.softmax(logits, axis=-1).astype(qg.dtype)
  return jnp.einsum("bkms,bksh->bkmh", probs.reshape(b, k, m, -1),
                    value.astype(qg.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def attention(qg: jax.Array, key: jax.Array, value: jax.Array,
              mask: jax.Array, cap: Optional[float]) -> jax.Array:
  """Soft-capped, masked softmax attention of grouped queries.

  out = softmax(where(mask, cap tanh(qg key^T / cap), -inf)) value.

  Args:
    qg: [B, K, T*G, H] queries (scaled), time-major within each KV head.
    key, value: [B, K, S, H].
    mask: [B, T, S] bool, True where a query may see a key.
    cap: attention-logit soft-cap (None: off).
  Returns:
    [B, K, T*G, H] in qg.dtype.

  The gradient (`_attention_bwd`) recomputes the probabilities from qg and
  key and the softmax's row max and row sum (two [B, K, T, G] arrays) kept
  from the forward pass, the memory-efficient backward of FlashAttention
  (Dao et al., 2022) without its tiling. Why: left to autodiff, the
  forward pass keeps three or four [B, K, M, S] float32 arrays per layer
  (the logits, the tanh of the cap, the probabilities) until the backward
  pass reads them: the tiny model's train step on 32 rows of 496 tokens
  needed 3.2 GiB of temporaries, which the CPU's allocator maps and the
  kernel zeroes afresh on every step. Recomputing costs one more
  qg key^T matmul per layer in the backward pass.
  """
  return _attention_fwd(qg, key, value, mask, cap)[0]


def _attention_fwd(qg, key, value, mask, cap):
  b, k, m, _ = qg.shape
  logits = _capped_masked_logits(qg, key, mask, cap)
  row_max = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  unnormalised = jnp.exp(logits - row_max)
  row_sum = jnp.sum(unnormalised, axis=-1, keepdims=True)
  probs = (unnormalised / row_sum).astype(qg.dtype)
  out = jnp.einsum("bkms,bksh->bkmh", probs.reshape(b, k, m, -1),
                   value.astype(qg.dtype))
  return out, (qg, key, value, mask, row_max, row_sum, out)


def _attention_bwd(cap, residuals, d_out):
  """With P the probabilities, Z the capped logits and dO the output's
  cotangent: dV = P^T dO; dP = dO V^T; dZ = P (dP - rowsum(dO * O)) (the
  softmax's Jacobian, rowsum(P dP) = rowsum(dO O)); the cap's tanh gives
  dlogits = dZ (1 - (Z / cap)^2); dq = dlogits key, dkey = dlogits^T q.
  Masked entries get no gradient (as through the forward's where())."""
  qg, key, value, mask, row_max, row_sum, out = residuals
  b, k, m, h = qg.shape
  dtype = qg.dtype
  logits = _capped_masked_logits(qg, key, mask, cap)
  probs = jnp.exp(logits - row_max) / row_sum  # [B, K, T, G, S] f32
  d_out32 = d_out.astype(jnp.float32)
  delta = jnp.sum(d_out32 * out.astype(jnp.float32), axis=-1)  # [B, K, M]
  d_value = jnp.einsum("bkms,bkmh->bksh",
                       probs.reshape(b, k, m, -1).astype(dtype),
                       d_out.astype(dtype),
                       preferred_element_type=jnp.float32)
  d_probs = jnp.einsum("bkmh,bksh->bkms", d_out.astype(dtype),
                       value.astype(dtype),
                       preferred_element_type=jnp.float32)
  d_logits = probs * (d_probs - delta[..., None]).reshape(probs.shape)
  if cap is not None:
    d_logits = d_logits * (1.0 - jnp.square(logits / cap))
  # A fully masked row (left padding) has uniform P over MASK_VALUE logits:
  # the where() of the forward pass stops its gradient, so must this.
  d_logits = jnp.where(mask[:, None, :, None, :], d_logits, 0.0)
  d_logits = d_logits.reshape(b, k, m, -1).astype(dtype)
  d_qg = jnp.einsum("bkms,bksh->bkmh", d_logits, key.astype(dtype),
                    preferred_element_type=jnp.float32)
  d_key = jnp.einsum("bkms,bkmh->bksh", d_logits, qg,
                     preferred_element_type=jnp.float32)
  return (d_qg.astype(qg.dtype), d_key.astype(key.dtype),
          d_value.astype(value.dtype), None)


attention.defvjp(_attention_fwd, _attention_bwd)


# Query tokens per block of `blocked_attention` (see there). Measured on
# the tiny model's train step (benchmarks/train_step_mfu.py, 2 cores,
# 2026-12-07): on SWiRL's update shape (64 rows of 496 tokens in groups of
# 4 sharing 448, --group_size 4 --prefix 448) blocks of 64 and 128 tie
# (1.80 / 1.82 s), one block 2.17 s; 128 keeps the matmuls larger.
QUERY_BLOCK = 128


def blocked_attention(qg: jax.Array, key: jax.Array, value: jax.Array,
                      mask: jax.Array, cap: Optional[float], *,
                      query_start: Optional[int],
                      window: Optional[int] = None,
                      block: Optional[int] = None) -> jax.Array:
  """`attention` one block of `block` query tokens at a time, each block
  against only the key slots its queries can see.

  The caller promises what the mask already says: query token i sits at
  key slot query_start + i and sees no key slot after its own (causal in
  slots) and, with `window`, none `window` or more slots before it. The
  result then equals `attention` over all S keys (the skipped logits are
  masked there: probability 0). What it saves: a causal prompt of T tokens
  needs about half of the T x S logits, a local layer of window W about
  W + block per query instead of S, in the forward pass and in the
  gradient; and the largest temporary is [B, K, block * G, S] instead of
  [B, K, T * G, S]. A query that sees no key at all (left padding) gets
  the mean of its block's values instead of all values' (either is
  meaningless; such rows carry no loss and no later query sees them).

  Args:
    qg: [B, K, T*G, H]; key, value: [B, K, S, H]; mask: [B, T, S] bool;
      cap: as `attention`.
    query_start: static int, the slot of the first query token; None when
      it is not known statically: then `attention` over all keys.
    window: static int or None, the sliding window in slots.
    block: static int, query tokens per block (default `QUERY_BLOCK`).
  Returns:
    [B, K, T*G, H], as `attention`.
  """
  if query_start is None:
    return attention(qg, key, value, mask, cap)
  block = block or QUERY_BLOCK
  t, s = mask.shape[1], key.shape[2]
  g = qg.shape[2] // t
  outs = []
  for t0 in range(0, t, block):
    t1 = min(t, t0 + block)
    hi = min(s, query_start + t1)
    lo = max(0, query_start + t0 - window + 1) if window else 0
    outs.append(attention(qg[:, :, t0 * g:t1 * g], key[:, :, lo:hi],
                          value[:, :, lo:hi], mask[:, t0:t1, lo:hi], cap))
  return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=2)
