"""One registry of training objectives, chosen by name (e.g. from gin).

An objective is a pure function

    loss_fn(params, batch, rng, model) -> (loss, metrics)

where `model` is the `Transformer` module, `batch` a dict of arrays and
`metrics` a dict of scalars. If `metrics` holds 'weight' (e.g. the number of
supervised tokens), gradient accumulation weights microbatches by it, so that
accumulated gradients equal those of the whole batch. Objectives registered
with `needs_reference=True` find the frozen reference model's per-token
log-probabilities in `batch['ref_logprobs']` ([B, L], aligned with
`batch['targets']`), computed by the trainer outside the gradient; those
whose `kl_estimator` is 'exact' (gin binding or default, see
`Objective.kl_estimator`) also find the reference's logits in
`batch['ref_logits']` ([B, L, V]), computed by the train step.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Optional

import gin

from swirl_jax import registries

LossFn = Callable[..., tuple[Any, dict[str, Any]]]


def configured_option(fn: Callable[..., Any], name: str,
                      default: Any = None) -> Any:
  """The value `fn` gets for keyword `name` when its caller passes none.

  In order: a `functools.partial`'s keywords, the gin binding of `fn` in
  the current gin scope (`gin.get_bindings`, so a stage's scoped binding
  counts), `fn`'s signature default; else `default` (e.g. a lambda
  without that keyword).
  """
  while isinstance(fn, functools.partial):
    if name in fn.keywords:
      return fn.keywords[name]
    fn = fn.func
  try:
    bindings = gin.get_bindings(fn)
  except Exception:  # pylint: disable=broad-except  # not a gin configurable
    bindings = {}
  if name in bindings:
    return bindings[name]
  try:
    param = inspect.signature(fn).parameters.get(name)
  except (TypeError, ValueError):
    param = None
  if param is None or param.default is inspect.Parameter.empty:
    return default
  return param.default


@dataclasses.dataclass(frozen=True)
class Objective:
  """A registered objective.

  Attributes:
    name: its registry name.
    loss_fn: `loss_fn(params, batch, rng, model) -> (loss, metrics)`.
    needs_reference: it reads `batch['ref_logprobs']` (filled in by the
      train step from the frozen reference unless the batch has them).
  """

  name: str
  loss_fn: LossFn
  needs_reference: bool = False

  @property
  def kl_estimator(self) -> Optional[str]:
    """The KL estimator `loss_fn` will use: its `kl_estimator` keyword as
    bound by gin in the current scope (or a partial), else its default;
    None for a loss without one. Read when the train step is built."""
    return configured_option(self.loss_fn, "kl_estimator")

  @property
  def needs_ref_logits(self) -> bool:
    """Whether the loss reads `batch['ref_logits']` [B, L, V]: the 'exact'
    KL over the vocabulary, which needs the reference's logits."""
    return self.needs_reference and self.kl_estimator == "exact"


def _import_builtin():
  # Importing the modules registers their objectives.
  # pylint: disable=g-import-not-at-top,unused-import
  from swirl_jax.objectives import grpo, score, sft, stepwise_pg  # noqa: F401


OBJECTIVES: registries.Registry[Objective] = registries.Registry(
    "objective", importer=_import_builtin)


def register_objective(name: str, needs_reference: bool = False):
  """Decorator registering `loss_fn` under `name`."""
  def wrap(fn: LossFn) -> LossFn:
    OBJECTIVES.add(name, Objective(name, fn, needs_reference))
    return fn
  return wrap


def objective_names() -> list[str]:
  return OBJECTIVES.names()


@gin.configurable
def get_objective(name: str) -> Objective:
  """The registered objective `name`, or a ValueError with the close names."""
  return OBJECTIVES.get(name)
