"""Int8 matmuls for decoding: weights per output row, activations per row.

A decode step of a small model with a large vocabulary is mostly the
unembedding: Gemma 3 270M's [262144, 640] table is 671 MB in float32, 63%
of the bytes one step reads. Quantised to int8 it is a quarter of that.

    table = quantize_rows(embedding)          # QuantizedTable, once per update
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
The blocks' dense kernels W [*I, *O] the same way, one scale per output
(`quantize_kernel`, `int8_dense`; `quantize_dense_kernels` replaces every
attention and MLP kernel of a parameter tree, and `xla_cpu.dense` takes a
`QuantizedKernel` where it takes a float kernel). On Gemma 3 270M (this
2-core CPU) a batch-1 decode step is 46 ms in float32, 29 ms with the int8
table and kernels (body 22.6 -> 14.5 ms, table 22.8 -> 14.6 ms).

Both are inference options (`Sampler(unembed="int8", body="int8")`);
training and the log-probs of the objectives keep float32.
"""

from __future__ import annotations

import math
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


def _int8_rows_dot(x: jax.Array, values: jax.Array, w_axis: int) -> jax.Array:
  """x [M, K] float, values int8 [K, N] (w_axis 0) or [N, K] (w_axis 1) ->
  [M, N] float32 ~ x @ values (or @ values.T), x quantised per row and its
  scale applied; the weights' scale is the caller's."""
  m = x.shape[0]
  rows = x.astype(jnp.float32)
  if m == 1:  # XLA:CPU's int8 matrix-vector path is ~13x slower
    rows = jnp.concatenate([rows, rows], axis=0)
  x_scale = _absmax_scale(rows)
  xq = jnp.clip(jnp.round(rows / x_scale), -127, 127).astype(jnp.int8)
  acc = jax.lax.dot_general(xq, values, (((1,), (w_axis,)), ((), ())),
                            preferred_element_type=jnp.int32)
  return (acc.astype(jnp.float32) * x_scale)[:m]


def int8_matmul_t(x: jax.Array, table: QuantizedTable) -> jax.Array:
  """x [..., D] float, table ~ W [N, D] -> [..., N] float32 ~ x @ W.T."""
  lead, d = x.shape[:-1], x.shape[-1]
  if table.values.shape[1] != d:
    raise ValueError(f"x has {d} features, the table "
                     f"{table.values.shape[1]}.")
  out = _int8_rows_dot(x.reshape(-1, d), table.values, 1)
  out = out * table.scale[None, :]
  return out.reshape(lead + (table.values.shape[0],))


class QuantizedKernel(NamedTuple):
  """A dense kernel W [*I, *O] ~ values * scale, one scale per output.

  `values` keeps the kernel's shape, so a model reads it where it reads
  the float kernel (Flax checks a parameter's first leaf's shape).
  """

  values: jax.Array  # [*I, *O] int8
  scale: jax.Array  # [*O] float32


def quantize_kernel(w: jax.Array, n_in: int = 1) -> QuantizedKernel:
  """[*I, *O] float kernel (the first `n_in` axes contracted) ->
  QuantizedKernel: each output's column of W scaled by its absmax / 127."""
  if not 0 < n_in < w.ndim:
    raise ValueError(f"n_in={n_in} for a kernel of shape {w.shape}: need "
                     f"0 < n_in < {w.ndim}.")
  in_shape, out_shape = w.shape[:n_in], w.shape[n_in:]
  w2 = w.reshape(math.prod(in_shape), -1).astype(jnp.float32)
  scale = _absmax_scale(w2.T)[:, 0]  # [prod(O)]
  values = jnp.clip(jnp.round(w2 / scale[None, :]), -127, 127)
  return QuantizedKernel(values.astype(jnp.int8).reshape(w.shape),
                         scale.reshape(out_shape))


def int8_dense(x: jax.Array, kernel: QuantizedKernel,
               n_in: int = 1) -> jax.Array:
  """x [..., *I] float, kernel ~ W [*I, *O] -> [..., *O] float32 ~ the
  einsum "...i,io->...o" (the last `n_in` axes of x contracted)."""
  in_shape = kernel.values.shape[:n_in]
  out_shape = kernel.values.shape[n_in:]
  if tuple(x.shape[x.ndim - n_in:]) != tuple(in_shape):
    raise ValueError(f"x of shape {x.shape} does not end in the kernel's "
                     f"input shape {in_shape}.")
  size_in = math.prod(in_shape)
  lead = x.shape[:x.ndim - n_in]
  out = _int8_rows_dot(x.reshape(-1, size_in),
                       kernel.values.reshape(size_in, -1), 0)
  out = out * kernel.scale.reshape(1, -1)
  return out.reshape(lead + out_shape)


# Which kernels of a Transformer's parameters `quantize_dense_kernels`
# replaces, by (module, parameter) name, with their number of input axes.
DENSE_KERNELS = {("attn", "q"): 1, ("attn", "k"): 1, ("attn", "v"): 1,
                 ("attn", "o"): 2, ("mlp", "gate"): 1, ("mlp", "up"): 1,
                 ("mlp", "down"): 1}


def quantize_dense_kernels(params: dict) -> dict:
  """The parameter tree with every block's attention and MLP kernel (the
  body's matmuls, `DENSE_KERNELS`) a QuantizedKernel; norms and the
  embedding unchanged."""
  def walk(tree, parent):
    out = {}
    for name, value in tree.items():
      if isinstance(value, dict):
        out[name] = walk(value, name)
      elif (parent, name) in DENSE_KERNELS:
        out[name] = quantize_kernel(value, DENSE_KERNELS[(parent, name)])
      else:
        out[name] = value
    return out
  return walk(params, None)
