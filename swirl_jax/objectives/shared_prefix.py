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


def _group_prefix_lengths(batch: Mapping[str, np.ndarray], group_size: int,
                          lengths: np.ndarray) -> np.ndarray:
  """[B / G] p_g: the longest prefix whose inputs, targets, positions and
  segment ids the rows of group g all agree on, that carries no loss, and
  that leaves every row of the group at least one token of its own."""
  inputs = np.asarray(batch["inputs"])
  b, length = inputs.shape
  groups = b // group_size
  same = np.ones((groups, length), bool)
  for key in ("inputs", "targets", "positions", "segment_ids"):
    x = np.asarray(batch[key]).reshape(groups, group_size, length)
    same &= np.all(x == x[:, :1], axis=1)
  loss = (np.asarray(batch["loss_mask"]) > 0).reshape(groups, group_size,
                                                      length)
  same &= ~loss.any(axis=1)
  first_diff = np.where(same.all(axis=1), length, np.argmin(same, axis=1))
  shortest = lengths.reshape(groups, group_size).min(axis=1)
  return np.maximum(0, np.minimum(first_diff, shortest - 1))


def align_shared_prefixes(batch: Mapping[str, np.ndarray], group_size: int,
                          bucket: int = 64, suffix_bucket: int = 16) -> dict:
  """Re-lays a group-major batch so that every group's own shared context
  ends at one slot P, and adds 'prefix_inputs' [B / G, P].

  `with_shared_prefix` uses one prefix length for the whole batch, the
  shortest group's, so groups of mixed context lengths (SWiRL's states)
  run most of their contexts through every row. Here group g's shared
  prefix (p_g tokens, `_group_prefix_lengths`: agreed inputs, targets,
  positions and segment ids, no loss) is moved right by P - p_g slots, the
  freed slots padding (segment 0, every array 0), and each row's remaining
  tokens follow from slot P on:

      row of group g:  [pad x (P - p_g) | shared p_g | own suffix | pad]
                        <------------- P -----------> <------ S ------>

  P is the largest p_g rounded up to `bucket`, S the longest suffix rounded
  up to `suffix_bucket`; on several processes both are the largest over
  the processes (one collective each: every process calls this at the same
  point). Every row keeps its tokens contiguous, with their positions, so
  the result is a valid plain batch with the same per-token values (a
  plain forward gives the same log-probs at the moved tokens, sliding
  windows included: slot distances within the row are unchanged), and its
  groups share their first P slots, which the train step's forwards then
  compute once per group (`shared_prefix_logits`).

  Args:
    batch: numpy arrays, rows group-major; 'inputs', 'targets',
      'positions', 'segment_ids', 'loss_mask' [B, L], each row one
      sequence from slot 0 (segment id 1, then padding 0). Every other
      [B, L] array moves with the rows; other arrays pass through.
    group_size: G.
    bucket / suffix_bucket: P and S are multiples of these.
  Returns:
    A new dict: every [B, L] array as [B, P + S], plus 'prefix_inputs'
    [B / G, P]; the batch unchanged (less any old 'prefix_inputs') when no
    group shares a token.
  Raises:
    ValueError: G does not divide B, a bucket is < 1, or a row is not one
      sequence from slot 0.
  """
  inputs = np.asarray(batch["inputs"])
  b, length = inputs.shape
  if group_size < 1 or b % group_size:
    raise ValueError(f"group_size={group_size} must be >= 1 and divide the "
                     f"batch size {b}.")
  if int(bucket) < 1 or int(suffix_bucket) < 1:
    raise ValueError(f"bucket={bucket} and suffix_bucket={suffix_bucket} "
                     "must be >= 1.")
  segments = np.asarray(batch["segment_ids"])
  lengths = (segments > 0).sum(axis=1)
  one_run = segments == (np.arange(length)[None] < lengths[:, None])
  if not one_run.all():
    row = int(np.argmin(one_run.all(axis=1)))
    raise ValueError(f"align_shared_prefixes needs each row to be one "
                     f"sequence from slot 0 (segment ids 1 then 0); row "
                     f"{row} has segment ids {segments[row].tolist()}.")
  out = {k: v for k, v in batch.items() if k != PREFIX_KEY}
  own = _group_prefix_lengths(batch, group_size, lengths)
  if group_size == 1:
    return out
  p = sharding.agreed_maximum(_round_up(int(own.max(initial=0)),
                                        int(bucket)))
  if p == 0:
    return out
  row_own = np.repeat(own, group_size)
  s = sharding.agreed_maximum(_round_up(
      int((lengths - row_own).max()), int(suffix_bucket)))
  shift = p - row_own                                     # [B]
  source = np.arange(p + s)[None] - shift[:, None]        # [B, P + S]
  inside = (source >= 0) & (source < lengths[:, None])
  source = np.clip(source, 0, length - 1)
  for key, value in batch.items():
    value = np.asarray(value)
    if key == PREFIX_KEY or value.shape[:2] != (b, length):
      continue
    moved = np.take_along_axis(value, source.reshape(
        source.shape + (1,) * (value.ndim - 2)), axis=1)
    out[key] = np.where(inside.reshape(inside.shape + (1,) * (
        value.ndim - 2)), moved, np.zeros((), value.dtype)).astype(value.dtype)
  out[PREFIX_KEY] = np.ascontiguousarray(
      out["inputs"][::group_size, :p]).astype(np.int32)
  return out


def _round_up(value: int, multiple: int) -> int:
  return -(-value // multiple) * multiple


def _prefix_and_suffix_logits(model, params, batch, attention_mask):
  """(logits of each group's prefix [B / G, P, V], of the rows' suffixes
  [B, L - P, V], G): the prefix run once per group, its keys and values
  repeated to the G rows that the suffixes attend to."""
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
      cache, 0, method="forward_with_cache")
  cache = jax.tree.map(lambda c: jnp.repeat(c, g, axis=0), cache)
  logits_s, _ = model.apply(
      variables, inputs[:, p:], positions[:, p:], attention_mask[:, p:],
      cache, p, method="forward_with_cache")
  return logits_p, logits_s, g


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
  logits_p, logits_s, g = _prefix_and_suffix_logits(model, params, batch,
                                                    attention_mask)
  return jnp.concatenate([jnp.repeat(logits_p, g, axis=0), logits_s], axis=1)


def shared_prefix_logprobs(model, params, batch: Mapping[str, jax.Array],
                           attention_mask: jax.Array,
                           bound: Optional[float] = None,
                           with_hits: bool = False):
  """log pi(targets) of every row, the shared prefix computed once per group.

  As `shared_prefix_logits` followed by `selected_log_softmax`, but the
  prefix's [B / G, P, V] logits are reduced to log-probs before they are
  repeated to the G rows, so the prefix's softmax runs once per group. A
  group's rows agree on the targets of the prefix's first P - 1 positions
  (targets[t] is inputs[t + 1] in every batch here); the last position's
  logits are repeated and scored against each row's own target.

  Args:
    model / params / batch / attention_mask: as `shared_prefix_logits`;
      the batch also has 'targets' [B, L].
    bound: a bound on |logits| (`selected_log_softmax`).
    with_hits: also return [B, L] float32, 1.0 where argmax == target.
  Returns:
    [B, L] float32 log-probs (and the hits with `with_hits`).
  """
  from swirl_jax.objectives.common import selected_log_softmax  # pylint: disable=g-import-not-at-top
  logits_p, logits_s, g = _prefix_and_suffix_logits(model, params, batch,
                                                    attention_mask)
  targets, p = batch["targets"], logits_p.shape[1]
  parts = [(logits_p[:, :-1], targets[::g, :p - 1], g),
           (jnp.concatenate([jnp.repeat(logits_p[:, -1:], g, axis=0),
                             logits_s], axis=1), targets[:, p - 1:], 1)]
  logp = jnp.concatenate([
      jnp.repeat(selected_log_softmax(x, t, bound=bound), r, axis=0)
      for x, t, r in parts], axis=1)
  if not with_hits:
    return logp
  hits = jnp.concatenate([
      jnp.repeat((jnp.argmax(x, -1) == t).astype(jnp.float32), r, axis=0)
      for x, t, r in parts], axis=1)
  return logp, jax.lax.stop_gradient(hits)
