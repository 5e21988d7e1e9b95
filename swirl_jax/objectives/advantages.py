"""Advantages, baselines and token aggregation shared by the RL objectives.

All functions are pure jnp (no numpy, no Python control flow on values), so
they run inside `jax.jit`. Notation: B rows (one sampled sequence each), L
tokens per row, r [B] rewards, g [B] integer group ids (rows sampled from the
same state / prompt share a group id).

Group-relative advantage (GRPO, R3; our SWiRL baseline):

    A_i = r_i - mean_{j: g_j = g_i} r_j                  (normalize_std=False)
    A_i = (r_i - mean_g r) / std_g r                     (normalize_std=True)

with the population std (ddof 0). A group whose rewards are all equal
(std_g <= eps, including groups of one row) gets A_i = 0 exactly: it carries no
learning signal, and dividing by its zero std must not give NaN.

Leave-one-out baseline (RLOO; our SCoRe baseline):

    b_i = (sum_{j in g_i} r_j - r_i) / (n_{g_i} - 1),    b_i = 0 if n_{g_i} = 1

is independent of r_i, so r_i - b_i is an unbiased advantage.

Aggregation of a per-token loss x [B, L] over the action tokens `mask`:

    'token':    sum_{i,t} x_it m_it / sum_{i,t} m_it        weight = #tokens
    'sequence': mean_{i active} (sum_t x_it m_it / sum_t m_it)  weight = #rows

('token' is DAPO's / Dr. GRPO's token-level sum; 'sequence' is the GRPO
paper's mean per sequence, then over sequences.) The returned weight is what
the train step weights microbatches by, so that gradients accumulated over
microbatches equal the full-batch gradient. With several disjoint masks (the
two attempts of a SCoRe episode), 'token' divides by the tokens of all masks
and 'sequence' sums the per-mask row means of a row.

Batch statistics computed inside a loss (group means, batch baselines) see one
microbatch: keep a group inside one microbatch (rows of a group contiguous and
the microbatch size a multiple of the group size), or precompute
'advantages' / baselines for the whole batch before the train step.

`ADVANTAGE_ESTIMATORS` names the estimators a batch builder can precompute
('advantages' of `RLBatchBuilder(advantage=NAME)`):

    ADVANTAGE_ESTIMATORS.get("grpo")    # group_advantages
    ADVANTAGE_ESTIMATORS.get("grpoo")   # ValueError: Unknown advantage
                                        # estimator 'grpoo'. Did you mean ...
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from swirl_jax import registries

AGGREGATIONS = ("token", "sequence")
BASELINES = ("leave_one_out", "mean", "none")


def _group_sums(values: jax.Array, group_ids: jax.Array,
                num_groups: Optional[int]) -> jax.Array:
  """[B] -> [B]: the sum of `values` over each row's group."""
  if num_groups is None:
    # Any integer ids: pairwise equality. Elementwise product + reduce (not a
    # matmul, whose default TPU precision would round rewards to bf16).
    same = (group_ids[:, None] == group_ids[None, :]).astype(jnp.float32)
    return jnp.sum(same * values[None, :], axis=1)
  totals = jax.ops.segment_sum(values, group_ids, num_segments=num_groups)
  return totals[group_ids]


def group_advantages(rewards: jax.Array, group_ids: jax.Array,
                     num_groups: Optional[int] = None,
                     normalize_std: bool = True, eps: float = 1e-6,
                     mask: Optional[jax.Array] = None) -> jax.Array:
  """Group-relative advantages (reward minus its group's mean [/ std]).

  Args:
    rewards: [B] float rewards.
    group_ids: [B] int group ids. With `num_groups` they must lie in
      [0, num_groups); without it any integers work (O(B^2) comparison).
    num_groups: static number of groups, or None.
    normalize_std: divide by the group's (population) std.
    eps: a group with std <= eps gets advantage 0 (never NaN).
    mask: optional [B] row validity (1 = real row). Rows with mask 0 (e.g.
      padding rows) are left out of the group statistics and get 0.
  Returns:
    [B] float32 advantages.
  """
  rewards = jnp.asarray(rewards, jnp.float32)
  group_ids = jnp.asarray(group_ids, jnp.int32)
  valid = (jnp.ones_like(rewards) if mask is None
           else (jnp.asarray(mask) > 0).astype(jnp.float32))
  count = jnp.maximum(_group_sums(valid, group_ids, num_groups), 1.0)
  mean = _group_sums(rewards * valid, group_ids, num_groups) / count
  centred = rewards - mean
  var = _group_sums(jnp.square(centred) * valid, group_ids, num_groups) / count
  std = jnp.sqrt(var)
  flat = std <= eps
  if normalize_std:
    adv = centred / jnp.where(flat, 1.0, std)
  else:
    adv = centred
  return jnp.where(flat | (valid == 0), 0.0, adv)


# An estimator is called as fn(rewards [N] float32, group_ids [N] int32 in
# [0, num_groups), num_groups=G (static), mask=[N] row validity) inside
# `jax.jit` and returns [N] float32 advantages (0 for rows with mask 0).
ADVANTAGE_ESTIMATORS: registries.Registry[Callable[..., jax.Array]] = (
    registries.Registry("advantage estimator"))
ADVANTAGE_ESTIMATORS.add("grpo", group_advantages)


def grouped_advantages(rewards: jax.Array, group_size: int,
                       normalize_std: bool = True,
                       eps: float = 1e-6) -> jax.Array:
  """`group_advantages` for a fixed group size and example-major rows.

  Rows [k * n, (k + 1) * n) form group k (the layout of
  `RolloutEngine.run(..., num_samples=n)`): rewards are reshaped to [G, n].

  Args:
    rewards: [G * n] rewards.
    group_size: n, the samples per group.
    normalize_std: divide by the group's (population) std.
    eps: a group with std <= eps gets advantage 0.
  Returns:
    [G * n] float32 advantages.
  """
  rewards = jnp.asarray(rewards, jnp.float32)
  if group_size < 1 or rewards.shape[0] % group_size:
    raise ValueError(f"{rewards.shape[0]} rewards do not split into groups "
                     f"of group_size={group_size}.")
  r = rewards.reshape(-1, group_size)
  centred = r - jnp.mean(r, axis=1, keepdims=True)
  std = jnp.sqrt(jnp.mean(jnp.square(centred), axis=1, keepdims=True))
  flat = std <= eps
  adv = centred / jnp.where(flat, 1.0, std) if normalize_std else centred
  return jnp.where(flat, 0.0, adv).reshape(-1)


def reinforce_baseline(rewards: jax.Array,
                       group_ids: Optional[jax.Array] = None,
                       kind: str = "leave_one_out",
                       mask: Optional[jax.Array] = None) -> jax.Array:
  """A REINFORCE baseline per row: [B] -> [B].

  Args:
    rewards: [B] rewards.
    group_ids: optional [B] int ids; statistics are taken within groups
      (default: the whole batch is one group).
    kind: 'leave_one_out' (mean of the other rows of the group; 0 for a row
      alone), 'mean' (mean of the group including the row itself) or 'none'
      (0).
    mask: optional [B] row validity; rows with 0 neither contribute to nor
      receive a baseline (their baseline is 0).
  Returns:
    [B] float32 baselines.
  """
  if kind not in BASELINES:
    raise ValueError(f"Unknown baseline {kind!r}; use one of {BASELINES}.")
  rewards = jnp.asarray(rewards, jnp.float32)
  if kind == "none":
    return jnp.zeros_like(rewards)
  valid = (jnp.ones_like(rewards) if mask is None
           else (jnp.asarray(mask) > 0).astype(jnp.float32))
  if group_ids is None:
    group_ids = jnp.zeros(rewards.shape, jnp.int32)
  group_ids = jnp.asarray(group_ids, jnp.int32)
  total = _group_sums(rewards * valid, group_ids, None)
  count = _group_sums(valid, group_ids, None)
  if kind == "mean":
    base = total / jnp.maximum(count, 1.0)
  else:
    others = count - valid
    base = jnp.where(others > 0, (total - rewards * valid) /
                     jnp.maximum(others, 1.0), 0.0)
  return jnp.where(valid > 0, base, 0.0)


def check_aggregation(aggregation: str) -> None:
  if aggregation not in AGGREGATIONS:
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got "
                     f"{aggregation!r}.")


def aggregate(per_token: jax.Array,
              masks: Union[jax.Array, Sequence[jax.Array]],
              aggregation: str) -> tuple[jax.Array, jax.Array]:
  """Reduces a per-token loss over action tokens (see the module docstring).

  Args:
    per_token: [B, L] values; entries outside the masks are ignored (even if
      not finite).
    masks: one [B, L] mask or a sequence of disjoint [B, L] masks.
    aggregation: 'token' or 'sequence'.
  Returns:
    (scalar, weight): weight = #masked tokens ('token') or #rows with at least
    one masked token ('sequence'), float32.
  """
  check_aggregation(aggregation)
  if not isinstance(masks, (list, tuple)):
    masks = (masks,)
  masks = [(jnp.asarray(m) > 0) for m in masks]
  if aggregation == "token":
    total, count = 0.0, 0.0
    for m in masks:
      total = total + jnp.sum(jnp.where(m, per_token, 0.0))
      count = count + jnp.sum(m.astype(jnp.float32))
    count = jnp.asarray(count, jnp.float32)
    return total / jnp.maximum(count, 1.0), count
  row_value, active = 0.0, False
  for m in masks:
    n = jnp.sum(m.astype(jnp.float32), axis=-1)
    row_value = row_value + (jnp.sum(jnp.where(m, per_token, 0.0), axis=-1) /
                             jnp.maximum(n, 1.0))
    active = active | (n > 0)
  rows = jnp.sum(jnp.asarray(active, jnp.float32))
  return jnp.sum(row_value) / jnp.maximum(rows, 1.0), rows


def row_mean(values: jax.Array, row_mask: jax.Array) -> jax.Array:
  """Mean of [B] `values` over rows with row_mask > 0 (0 when none)."""
  m = (jnp.asarray(row_mask) > 0).astype(jnp.float32)
  return jnp.sum(jnp.asarray(values, jnp.float32) * m) / jnp.maximum(
      jnp.sum(m), 1.0)


def mask_from_batch(batch: dict, key: str, objective: str,
                    fallback: Optional[str] = None) -> jax.Array:
  """batch[key] (or batch[fallback]) as a bool [B, L] mask, or a clear error."""
  for k in (key, fallback):
    if k is not None and k in batch:
      mask = jnp.asarray(batch[k]) > 0
      if mask.shape != batch["targets"].shape:
        raise ValueError(f"{objective}: batch[{k!r}] has shape {mask.shape}, "
                         f"expected the targets' shape "
                         f"{batch['targets'].shape}.")
      return mask
  wanted = repr(key) + (f" (or {fallback!r})" if fallback else "")
  raise KeyError(f"{objective}: the batch has no {wanted} mask; it has "
                 f"{sorted(batch)}.")


def advantages_from_batch(batch: dict, row_mask: jax.Array, objective: str,
                          normalize_std: bool, eps: float = 1e-6
                          ) -> jax.Array:
  """batch['advantages'] if present, else group advantages of 'rewards'.

  Args:
    batch: with 'advantages' [B], or 'rewards' [B] and 'group_ids' [B].
    row_mask: [B] rows that carry action tokens (others are left out of the
      group statistics).
    objective: name for error messages.
    normalize_std: passed to `group_advantages`.
    eps: passed to `group_advantages`.
  Returns:
    [B] float32 advantages.
  """
  if "advantages" in batch:
    return jnp.asarray(batch["advantages"], jnp.float32)
  missing = [k for k in ("rewards", "group_ids") if k not in batch]
  if missing:
    raise KeyError(f"{objective}: the batch needs 'advantages' [B], or "
                   f"'rewards' [B] and 'group_ids' [B]; missing {missing} "
                   f"(it has {sorted(batch)}).")
  return group_advantages(batch["rewards"], batch["group_ids"],
                          normalize_std=normalize_std, eps=eps, mask=row_mask)


def check_nonnegative(objective: str, **values: float) -> None:
  for name, value in values.items():
    if not value >= 0:  # also catches NaN
      raise ValueError(f"{objective}: {name} must be >= 0, got {value!r}.")
