"""Int8 matmuls for decoding: weights per output row, activations per row.

A decode step of a small model with a large vocabulary is mostly the
unembedding: Gemma 3 270M's [262144, 640] table is 671 MB in float32, 63%
of the bytes one step reads. Quantised to int8 it is a quarter of that.

    table = quantize_rows(embedding)          # QuantizedTable, once per call
    logits = int8_matmul_t(x, table)          # ~ x @ embedding.T

`quantize_rows` stores each row of W [N, D] as int8 values and one float32
scale (absmax / 127): W ~ values * scale[:, None]. `int8_matmul_t`
quantises each row of x [M, D] the same way on the fly and computes

    x @ W.T ~ (xq @ values.T)_int32 * x_scale[:, None] * scale[None, :]

an int8 x int8 matmul accumulated in int32 (exact), then one rescale. Why
both operands: on XLA:CPU a float32 x int8 product converts the whole
table to float32 every call (190 ms for 262144 x 640 at one row, 8x the
float32 matmul), while the int8 x int8 dot runs in the matmul library
(15 ms at 2..8 rows against float32's 25 ms at 1 row and 48-87 ms at 8).
At exactly one row XLA:CPU picks a slow matrix-vector path for int8 (196
ms): a single row is padded to two.

The error is that of two roundings to 1/254 of each row's largest
magnitude: on the logits it is small next to their spread, and greedy
decoding may still pick a different token where two logits nearly tie.
It is an inference option (`Sampler(unembed="int8")`); training and the
log-probs of the objectives keep float32.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class QuantizedTable(NamedTuple):
  """W [N, D] ~ values * scale[:, None]."""

  values: jax.Array  # [N, D] int8
  scale: jax.Array  # [N] float32


def _absmax_scale(x: jax.Array) -> jax.Array:
  """[..., D] -> [..., 1] float32 scale: absmax / 127 (1 for an all-zero row)."""
  m = jnp.max(jnp.abs(x.astype(jnp.float32)), axis=-1, keepdims=True)
  return jnp.where(m > 0, m / 127.0, 1.0)


def quantize_rows(w: jax.Array) -> QuantizedTable:
  """[N, D] float -> QuantizedTable: int8 values [N, D], scale [N]."""
  if w.ndim != 2:
    raise ValueError(f"quantize_rows takes a [N, D] matrix, got shape "
                     f"{w.shape}.")
  scale = _absmax_scale(w)
  values = jnp.clip(jnp.round(w.astype(jnp.float32) / scale), -127, 127)
  return QuantizedTable(values.astype(jnp.int8), scale[:, 0])


def int8_matmul_t(x: jax.Array, table: QuantizedTable) -> jax.Array:
  """x [..., D] float, table ~ W [N, D] -> [..., N] float32 ~ x @ W.T."""
  lead, d = x.shape[:-1], x.shape[-1]
  if table.values.shape[1] != d:
    raise ValueError(f"x has {d} features, the table "
                     f"{table.values.shape[1]}.")
  rows = x.reshape(-1, d).astype(jnp.float32)
  m = rows.shape[0]
  if m == 1:  # XLA:CPU's int8 matrix-vector path is ~13x slower
    rows = jnp.concatenate([rows, rows], axis=0)
  x_scale = _absmax_scale(rows)
  xq = jnp.clip(jnp.round(rows / x_scale), -127, 127).astype(jnp.int8)
  acc = jax.lax.dot_general(xq, table.values, (((1,), (1,)), ((), ())),
                            preferred_element_type=jnp.int32)
  out = acc.astype(jnp.float32) * x_scale * table.scale[None, :]
  return out[:m].reshape(lead + (table.values.shape[0],))
