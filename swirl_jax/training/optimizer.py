"""AdamW with warmup and cosine / linear decay, global-norm clipping, and
frozen parameters."""

from __future__ import annotations

import re
from typing import Sequence

import gin
import jax
import optax

SCHEDULES = ("cosine", "linear", "constant")


@gin.configurable
def learning_rate_schedule(peak_learning_rate: float = 1e-3,
                           warmup_steps: int = 0,
                           total_steps: int = 1000,
                           decay: str = "cosine",
                           end_learning_rate_fraction: float = 0.1
                           ) -> optax.Schedule:
  """Linear warmup from 0 to the peak, then `decay` to peak * fraction."""
  if decay not in SCHEDULES:
    raise ValueError(f"Unknown decay {decay!r}; choose one of {SCHEDULES}.")
  if warmup_steps < 0 or total_steps <= 0:
    raise ValueError(f"Need warmup_steps >= 0 and total_steps > 0, got "
                     f"{warmup_steps} and {total_steps}.")
  end = peak_learning_rate * end_learning_rate_fraction
  decay_steps = max(total_steps - warmup_steps, 1)
  if decay == "cosine":
    after = optax.cosine_decay_schedule(
        peak_learning_rate, decay_steps, alpha=end_learning_rate_fraction)
  elif decay == "linear":
    after = optax.linear_schedule(peak_learning_rate, end, decay_steps)
  else:
    after = optax.constant_schedule(peak_learning_rate)
  if warmup_steps == 0:
    return after
  warmup = optax.linear_schedule(0.0, peak_learning_rate, warmup_steps)
  return optax.join_schedules([warmup, after], [warmup_steps])


@gin.configurable
def make_optimizer(schedule: optax.Schedule,
                   weight_decay: float = 0.0,
                   b1: float = 0.9, b2: float = 0.95, eps: float = 1e-8,
                   max_grad_norm: float | None = 1.0,
                   frozen: Sequence[str] = ()
                   ) -> optax.GradientTransformation:
  r"""AdamW (decoupled weight decay on matrices only) after gradient clipping.

  Norm scales and other 1-D params get no weight decay.

  frozen: regular expressions over '/'-joined parameter paths ('embedding',
    r'layer_\d+/attn/.*'); the parameters they match (re.fullmatch) never
    change, hold no Adam moments, and are left out of the clipping norm.
    Their gradients are unused, so XLA drops the computation of those inside
    the jitted step. Freezing the 262k x 640 embedding of gemma3-270m saves
    its two moments (1.3 GB in float32) and its gradient (the [V, D] product
    of the unembedding's backward pass). A pattern that matches no parameter
    is an error at the first `init`.
  """
  decay_mask = lambda params: jax.tree.map(  # noqa: E731
      lambda p: p.ndim > 1, params)
  parts = []
  if max_grad_norm:
    parts.append(optax.clip_by_global_norm(max_grad_norm))
  parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps,
                           weight_decay=weight_decay, mask=decay_mask))
  tx = optax.chain(*parts)
  if not frozen:
    return tx
  patterns = tuple(frozen)
  for pattern in patterns:
    try:
      re.compile(pattern)
    except re.error as e:
      raise ValueError(f"make_optimizer.frozen: {pattern!r} is not a regular "
                       f"expression: {e}") from e
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                               lambda params: frozen_labels(params, patterns))


def _path_name(path) -> str:
  """'layer_0/attn/q' for a key path (the '.value' of a flax logical-axis
  box, as the trainer's boxed params have, is not part of the name)."""
  parts = []
  for k in path:
    if isinstance(k, jax.tree_util.GetAttrKey):
      continue
    parts.append(str(getattr(k, "key", getattr(k, "idx", k))))
  return "/".join(parts)


def frozen_labels(params, patterns: Sequence[str]):
  """'frozen' / 'train' per leaf of `params` (see `make_optimizer`)."""
  compiled = [re.compile(p) for p in patterns]
  used = set()

  def label(path, _):
    name = _path_name(path)
    hits = [p.pattern for p in compiled if p.fullmatch(name)]
    used.update(hits)
    return "frozen" if hits else "train"

  labels = jax.tree_util.tree_map_with_path(label, params)
  unused = [p for p in patterns if p not in used]
  if unused:
    names = [_path_name(p) for p, _ in
             jax.tree_util.tree_flatten_with_path(params)[0]][:6]
    raise ValueError(f"make_optimizer.frozen: {unused} match no parameter "
                     f"(paths look like {names}).")
  return labels
