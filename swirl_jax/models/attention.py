"""Softmax attention as a pure function, and the logit soft-cap.

Shape letters as in `swirl_jax.models.layers`: B batch, T query length,
S key length, K kv heads, G = N / K query heads per kv head, H head_dim.
"""

from __future__ import annotations

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


def attention(qg: jax.Array, key: jax.Array, value: jax.Array,
              mask: jax.Array, cap: Optional[float]) -> jax.Array:
  """Soft-capped, masked softmax attention of grouped queries.

  Args:
    qg: [B, K, T*G, H] queries (scaled), time-major within each KV head.
    key, value: [B, K, S, H].
    mask: [B, T, S] bool, True where a query may see a key.
    cap: attention-logit soft-cap (None: off).
  Returns:
    [B, K, T*G, H] in qg.dtype.
  """
  b, k, m, _ = qg.shape
  t, s = mask.shape[1], key.shape[2]
  logits = jnp.einsum("bkmh,bksh->bkms", qg, key.astype(qg.dtype),
                      preferred_element_type=jnp.float32)
  logits = soft_cap(logits.reshape(b, k, t, m // t, s), cap)
  logits = jnp.where(mask[:, None, :, None, :], logits, MASK_VALUE)
  probs = jax.nn.softmax(logits, axis=-1).astype(qg.dtype)
  return jnp.einsum("bkms,bksh->bkmh", probs.reshape(b, k, m, s),
                    value.astype(qg.dtype))
