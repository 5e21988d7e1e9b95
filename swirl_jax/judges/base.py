"""The judge interface: requests, GOOD/BAD results and the judge registry.

SWiRL's process filter asks a judge to label every step of a trajectory
GOOD or BAD given the context it was taken in; stage 2 uses the same judge
as the reward model R(a | s). A judge sees one `JudgeRequest` per step (the
context turns before the action, and the action) and returns one
`JudgeResult` per request, in order. `judge_steps` takes the whole batch so
that a model judge can make one batched sampler call.

Judges are registered by name (`register_judge`) and built by name
(`get_judge`), which gin can bind:

    swirl_jax.judges.get_judge.name = 'rules'
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar

import gin

from swirl_jax import registries

GOOD = "GOOD"
BAD = "BAD"
LABELS = (GOOD, BAD)

Turn = tuple[str, str]
T = TypeVar("T", bound=type)


@dataclasses.dataclass(frozen=True)
class JudgeRequest:
  """One step to judge.

  Attributes:
    task_name: the task's registry name (e.g. 'gsm8k'); judges use it to pick
      their rules or prompt guidance.
    question: the example's question (no prompt scaffolding).
    context_turns: the chat before the action, list of (role, text):
      context_turns[0] is the task prompt, then alternating model actions
      and user turns with the tool results (`QUERY -> RESULT`).
    action_text: the action to judge (the model turn's text).
    step_index: position of the action in its trajectory (0-based).
    example_metadata: the example's metadata (may be empty).
    gold: the gold answer (process judges should not need it; kept for
      judges that grade outcomes).
  """

  task_name: str
  question: str
  context_turns: Sequence[Turn]
  action_text: str
  step_index: int = 0
  example_metadata: Mapping[str, Any] = dataclasses.field(
      default_factory=dict)
  gold: str = ""

  def __post_init__(self):
    for i, turn in enumerate(self.context_turns):
      if isinstance(turn, (str, bytes)) or len(turn) != 2:
        raise ValueError(f"context_turns[{i}] must be a (role, text) pair, "
                         f"got {turn!r}.")
    if not isinstance(self.action_text, str):
      raise TypeError(f"action_text must be a str, got "
                      f"{type(self.action_text).__name__}.")


@dataclasses.dataclass(frozen=True)
class JudgeResult:
  """A judge's verdict on one step.

  Attributes:
    label: 'GOOD' or 'BAD'.
    reward: in [0, 1]; 1.0 for GOOD and 0.0 for BAD with the built-in judges.
    explanation: why (the rule that decided, or the model's reasoning).
    parsed: False when the judge could not read a verdict (a model reply
      with neither GOOD nor BAD) and `label` is its default.
  """

  label: str
  reward: float
  explanation: str = ""
  parsed: bool = True

  def __post_init__(self):
    if self.label not in LABELS:
      raise ValueError(f"Judge label must be one of {list(LABELS)}, got "
                       f"{self.label!r}.")
    reward = float(self.reward)
    if not 0.0 <= reward <= 1.0:
      raise ValueError(f"Judge reward must be in [0, 1], got {self.reward!r}.")
    object.__setattr__(self, "reward", reward)

  @property
  def good(self) -> bool:
    return self.label == GOOD

  @classmethod
  def of(cls, good: bool, explanation: str, parsed: bool = True
         ) -> "JudgeResult":
    """GOOD with reward 1.0, or BAD with reward 0.0."""
    return cls(GOOD if good else BAD, 1.0 if good else 0.0, explanation,
               parsed)

  def to_dict(self) -> dict[str, Any]:
    return {"label": self.label, "reward": self.reward,
            "explanation": self.explanation, "parsed": self.parsed}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "JudgeResult":
    missing = [k for k in ("label", "reward") if k not in d]
    if missing:
      raise ValueError(f"JudgeResult dict lacks keys {missing}; has "
                       f"{sorted(d)}.")
    return cls(label=str(d["label"]), reward=float(d["reward"]),
               explanation=str(d.get("explanation", "")),
               parsed=bool(d.get("parsed", True)))


class Judge(abc.ABC):
  """Labels steps GOOD or BAD. Subclasses implement `judge_steps`."""

  name: str = ""

  @abc.abstractmethod
  def judge_steps(self, requests: Sequence[JudgeRequest]
                  ) -> list[JudgeResult]:
    """Judges every request; returns one result per request, in order."""

  def judge_step(self, request: JudgeRequest) -> JudgeResult:
    """Judges a single request."""
    return self.judge_steps([request])[0]

  def __repr__(self) -> str:
    return f"{type(self).__name__}(name={self.name!r})"


def check_results(results: Sequence[JudgeResult], num_requests: int,
                  judge: Any) -> list[JudgeResult]:
  """Checks a judge's output: one JudgeResult per request."""
  results = list(results)
  if len(results) != num_requests:
    raise ValueError(f"Judge {judge!r} returned {len(results)} results for "
                     f"{num_requests} requests; it must return one each.")
  for i, r in enumerate(results):
    if not isinstance(r, JudgeResult):
      raise TypeError(f"Judge {judge!r} returned a {type(r).__name__} for "
                      f"request {i}, not a JudgeResult.")
  return results


# ----------------------------------------------------------------------------
# Registry.


def _check_judge(name: str, cls: Any) -> None:
  if not (isinstance(cls, type) and issubclass(cls, Judge)):
    raise TypeError(
        f"@register_judge({name!r}) needs a Judge subclass, got {cls!r}.")


def _import_builtin() -> None:
  # Importing the package registers the built-in judges.
  import swirl_jax.judges  # pylint: disable=g-import-not-at-top,unused-import  # noqa: F401


JUDGES: registries.Registry[type[Judge]] = registries.Registry(
    "judge", importer=_import_builtin, check=_check_judge)


def register_judge(name: str) -> Callable[[T], T]:
  """Class decorator: registers a `Judge` subclass under `name`.

  Sets `cls.name = name`. Registering a different class under a taken name
  is an error (re-registering the same class, e.g. on reload, is allowed).
  """
  add = JUDGES.register(name)

  def decorator(cls: T) -> T:
    add(cls)
    cls.name = name
    return cls

  return decorator


def judge_names() -> list[str]:
  """Sorted names of the registered judges."""
  return JUDGES.names()


def get_judge_class(name: str) -> type[Judge]:
  """The class registered as `name`; ValueError naming the closest names."""
  return JUDGES.get(name)


@gin.configurable(module="swirl_jax.judges")
def get_judge(name: str = gin.REQUIRED, **kwargs) -> Judge:
  """Builds the judge registered as `name` with constructor `kwargs`."""
  return get_judge_class(name)(**kwargs)


def labels_summary(results: Sequence[JudgeResult]
                   ) -> dict[str, Optional[float]]:
  """{'num', 'good', 'good_rate', 'unparsed'} of a list of results."""
  n = len(results)
  good = sum(r.good for r in results)
  return {"num": n, "good": good, "good_rate": good / n if n else None,
          "unparsed": sum(not r.parsed for r in results)}
