"""One registry of training objectives, chosen by name (e.g. from gin).

An objective is a pure function

    loss_fn(params, batch, rng, model) -> (loss, metrics)

where `model` is the `Transformer` module, `batch` a dict of arrays and
`metrics` a dict of scalars. If `metrics` holds 'weight' (e.g. the number of
supervised tokens), gradient accumulation weights microbatches by it, so that
accumulated gradients equal those of the whole batch. Objectives registered
with `needs_reference=True` find the frozen reference model's per-token
log-probabilities in `batch['ref_logprobs']` ([B, L], aligned with
`batch['targets']`), computed by the trainer outside the gradient.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable

import gin

LossFn = Callable[..., tuple[Any, dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class Objective:
  name: str
  loss_fn: LossFn
  needs_reference: bool = False


_OBJECTIVES: dict[str, Objective] = {}


def register_objective(name: str, needs_reference: bool = False):
  """Decorator registering `loss_fn` under `name`."""
  def wrap(fn: LossFn) -> LossFn:
    if name in _OBJECTIVES:
      raise ValueError(f"Objective {name!r} is already registered.")
    _OBJECTIVES[name] = Objective(name, fn, needs_reference)
    return fn
  return wrap


def objective_names() -> list[str]:
  _import_builtin()
  return sorted(_OBJECTIVES)


@gin.configurable
def get_objective(name: str) -> Objective:
  """The registered objective `name`, or a ValueError with the close names."""
  _import_builtin()
  if name not in _OBJECTIVES:
    close = difflib.get_close_matches(name, _OBJECTIVES, n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise ValueError(f"Unknown objective {name!r}.{hint} Registered: "
                     f"{sorted(_OBJECTIVES)}.")
  return _OBJECTIVES[name]


def _import_builtin():
  # Importing the modules registers their objectives.
  # pylint: disable=g-import-not-at-top,unused-import
  from swirl_jax.objectives import grpo, score, sft, stepwise_pg  # noqa: F401
