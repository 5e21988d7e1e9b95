"""Forward passes that compute a group's shared prompt once.

RL batches are groups of G rows that start with the same tokens: GRPO's G
samples of one prompt, R3's G reflections on one failed attempt, SCoRe's
and SWiRL's G actions in one state. A plain forward computes that prefix G
times. Here it is computed once per group, its keys and values are
repeated to the G rows, and only the rows' own suffixes run through the
model against them (the same `forward_with_cache` the sampler uses):

    batch = with_shared_prefix(batch, group_size=4)   # host, numpy
    logp = target_logprobs(model, params, batch)      # == plain forward

The batch then carries 'prefix_inputs' [B / G, P]: the P shared input ids
of each group (rows group-major). Its shape is the static information the
jitted forward needs (G = B / (B / G), P), so no extra argument reaches the
train step, and `target_logprobs` (every objective, the reference forward
of the train step, the batch builders' log-prob passes) takes this path
whenever the key is present. Microbatching splits 'prefix_inputs' with the
rows (a microbatch holds whole groups as long as B / G is divisible by the
number of microbatches; `split_microbatches` checks that).

Cost: for prompts of P tokens and rows of L, the matmul work is
(P / G + L - P) / L of the plain forward: 0.75 for the GRPO benchmark's
8 groups of 4 rows with P = 32 of L = 95. The results equal the plain
forward's up to float32 round-off (tests/test_shared_prefix.py), gradients
included: the prefix's keys and values are repeated, so their gradient is
the sum over the group's rows.
"""

from __future__ import annotations

from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from swirl_jax import sharding

PREFIX_KEY = "prefix_inputs"


def shared_prefix_length(batch: Mapping[str, np.ndarray], group_size: int
                         ) -> int:
  """Longest P such that, within every group, the rows agree on
  'inputs', 'positions' and 'segment_ids' at every position < P (their
  keys, values and prefix attention are then identical)."""
  inputs = np.asarray(batch["inputs"])
  b, length = inputs.shape
  if group_size < 1 or b % group_size:
    raise ValueError(f"group_size={group_size} must be >= 1 and divide the "
                     f"batch size {b}.")
  same = np.ones((b // group_size, length), bool)
  for key in ("inputs", "positions", "segment_ids"):
    x = np.asarray(batch[key]).reshape(b // group_size, group_size, length)
    same &= np.all(x == x[:, :1], axis=1)
  # Per group: the first position where rows differ; P is the minimum.
  first_diff = np.where(same.all(axis=1), length, np.argmin(same, axis=1))
  return int(first_diff.min()) if first_diff.size else 0


def bucketed_prefix_length(batch: Mapping[str, np.ndarray], group_size: int,
                           bucket: int = 16) -> int:
  """`shared_prefix_length` rounded down to a multiple of `bucket` (so the
  train step compiles once per bucket, not per prompt length) and kept
  below the row length (every row keeps a suffix); 0 for group_size 1."""
  if group_size == 1:
    return 0
  length = np.asarray(batch["inputs"]).shape[1]
  p = min(shared_prefix_length(batch, group_size), length - 1)
  return max(0, p - p % max(1, int(bucket)))


def with_shared_prefix(batch: Mapping[str, np.ndarray], group_size: int,
                       bucket: int = 16, length: Optional[int] = None
                       ) -> dict:
  """Adds 'prefix_inputs' [B / G, P] to a group-major host batch.

  P is `bucketed_prefix_length(batch, group_size, bucket)`, or `length`
  when given (e.g. the minimum over hosts, which must all use one P; it
  must not exceed this batch's own). With P = 0 the batch is returned
  unchanged (a plain forward).

  Args:
    batch: numpy arrays 'inputs', 'positions', 'segment_ids' [B, L] (and
      anything else, passed through); rows of a group adjacent.
    group_size: G, rows per group.
    bucket: P is a multiple of this.
    length: P to use instead of this batch's own.
  Returns:
    A new dict: the batch, plus 'prefix_inputs' when P > 0.
  Raises:
    ValueError: `length` is longer than the rows' shared prefix.
  """
  out = {k: v for k, v in batch.items() if k != PREFIX_KEY}
  own = bucketed_prefix_length(batch, group_size, bucket)
  p = own if length is None else int(length)
  if p > own:
    raise ValueError(f"A shared prefix of length {p} was asked for, but the "
                     f"rows' groups share only {own} tokens (bucket "
                     f"{bucket}).")
  if p <= 0:
    return out
  out[PREFIX_KEY] = np.ascontiguousarray(
      np.asarray(batch["inputs"])[::group_size, :p]).astype(np.int32)
  return out


def with_agreed_shared_prefix(batch: Mapping[str, np.ndarray],
                              group_size: int, bucket: int = 16) -> dict:
  """`with_shared_prefix` with one P on every process: the smallest of the
  processes' own (`sharding.agreed_minimum`, a collective on several
  processes: every process calls it at the same point), so that the jitted
  step sees one 'prefix_inputs' shape across hosts."""
  p = sharding.agreed_minimum(bucketed_prefix_length(batch, group_size,
                                                     bucket))
  return with_shared_prefix(batch, group_size, bucket, length=p)


def shared_prefix_logits(model, params, batch: Mapping[str, jax.Array],
                         attention_mask: jax.Array) -> jax.Array:
  """Logits of every row, the shared prefix computed once per group.

  Args:
    model: the Transformer module.
    params: its parameters.
    batch: 'inputs', 'positions' [B, L] and 'prefix_inputs' [B / G, P].
    attention_mask: [B, L, L] bool, the rows' own mask (causal and
      segments), as the plain forward would get it.
  Returns:
    [B, L, V] float32 logits, equal to
    `model.apply({'params': params}, inputs, positions, attention_mask)`.
  """
  from swirl_jax.models.transformer import init_cache  # pylint: disable=g-import-not-at-top
  prefix = batch[PREFIX_KEY]
  inputs, positions = batch["inputs"], batch["positions"]
  b, length = inputs.shape
  groups, p = prefix.shape
  if groups == 0 or b % groups or not 0 < p < length:
    raise ValueError(f"'{PREFIX_KEY}' has shape {prefix.shape} for a batch "
                     f"of {b} rows of {length} tokens: it must be "
                     "[B / G, P] with 0 < P < L.")
  g = b // groups
  variables = {"params": params}
  cache = init_cache(model.config, groups, length)
  logits_p, cache = model.apply(
      variables, prefix, positions[::g, :p], attention_mask[::g, :p],
      cache, jnp.int32(0), method="forward_with_cache")
  cache = jax.tree.map(lambda c: jnp.repeat(c, g, axis=0), cache)
  logits_s, _ = model.apply(
      variables, inputs[:, p:], positions[:, p:], attention_mask[:, p:],
      cache, jnp.int32(p), method="forward_with_cache")
  return jnp.concatenate([jnp.repeat(logits_p, g, axis=0), logits_s], axis=1)
