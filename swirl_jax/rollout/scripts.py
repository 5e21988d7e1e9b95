"""Episode scripts: the turns of an episode as data.

An episode script is a tuple of steps that `RolloutEngine.play` runs over a
batch of rows (one conversation each), each step for every live row at once:

  Fork(n)          each row becomes n consecutive rows (a group)
  Say(text)        a user turn: the text, or PROMPT for task.prompt(x)
  Sample(name)     a model turn of every row, in ONE sampler call
  Given(name)      a model turn the caller supplies (one per example)
  Grade(names)     parse and verify those turns' answers (one batched call)
  KeepFailed(name) keep only the rows whose graded turn `name` is wrong

The recipes' scripts are below; a new recipe declares its own. SWiRL's
multi-step tool loop is `RolloutEngine.run`, not a script.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

from swirl_jax.rollout import trajectory as traj
from swirl_jax.tasks import base as task_base
from swirl_jax.tasks import prompts

PROMPT = object()  # Say(PROMPT): the task's prompt of the row's example.


@dataclasses.dataclass(frozen=True)
class Fork:
  """Each row becomes `n` consecutive rows, branch 0 .. n - 1 (a group)."""
  n: int


@dataclasses.dataclass(frozen=True)
class Say:
  """A user turn: `text`, or PROMPT (`task.prompt(example)`)."""
  text: Any


@dataclasses.dataclass(frozen=True)
class Sample:
  """The model's next turn of every live row, in one sampler call.

  Attributes:
    name: the key of the turn in `ScriptRow.turns`.
    seed: labels of the call's sampler seed (`seed_of`).
    group: the rows come in the groups of the last `Fork` with one context:
      each context is prefilled once for its group.
    shared_prefix: with `group`, the group's rows need only begin alike:
      their common prefix is prefilled once.
    temperature: this turn's temperature (None: the engine's).
  """
  name: str
  seed: Optional[tuple] = None
  group: bool = False
  shared_prefix: bool = False
  temperature: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class Given:
  """A model turn from the caller: `given[name][example_index]`, a str, a
  `ModelTurn`, or an already graded `GradedTurn` (its grade is kept)."""
  name: str


@dataclasses.dataclass(frozen=True)
class Grade:
  """Parses and verifies the answers of the turns `names` in one call."""
  names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class KeepFailed:
  """Keeps the rows whose graded turn `name` is not correct."""
  name: str


Step = Any  # One of Fork, Say, Sample, Given, Grade, KeepFailed.


@dataclasses.dataclass
class ScriptRow:
  """One episode being played (`RolloutEngine.play`).

  Attributes:
    example: the task example.
    example_index: its index in the examples given to `play`.
    conv: the conversation so far (an engine `Conversation`).
    parent: the row's index in the rows before the last Fork.
    branch: its index among that Fork's copies.
    turns / answers / verdicts: by turn name.
  """
  example: task_base.Example
  example_index: int
  conv: Any
  parent: int = 0
  branch: int = 0
  turns: dict[str, traj.ModelTurn] = dataclasses.field(default_factory=dict)
  answers: dict[str, Optional[str]] = dataclasses.field(default_factory=dict)
  verdicts: dict[str, task_base.Verdict] = dataclasses.field(
      default_factory=dict)

  def fork(self, parent: int, branch: int) -> "ScriptRow":
    return ScriptRow(self.example, self.example_index, self.conv.copy(),
                     parent, branch, dict(self.turns), dict(self.answers),
                     dict(self.verdicts))


def check_script(script: Sequence[Step]) -> tuple[Step, ...]:
  """The script as a tuple, each step checked (a clear error otherwise)."""
  script = tuple(script)
  named = set()
  for i, step in enumerate(script):
    if isinstance(step, Fork):
      if int(step.n) < 1:
        raise ValueError(f"Step {i}: Fork(n={step.n}) needs n >= 1.")
    elif isinstance(step, (Sample, Given)):
      named.add(step.name)
    elif isinstance(step, (Grade, KeepFailed)):
      names = step.names if isinstance(step, Grade) else (step.name,)
      missing = [n for n in names if n not in named]
      if missing:
        raise ValueError(f"Step {i}: {type(step).__name__} of the turn "
                         f"{missing[0]!r}, which no earlier Sample or Given "
                         f"makes (turns so far: {sorted(named)}).")
    elif not isinstance(step, Say):
      raise TypeError(f"Step {i} of the script is a {type(step).__name__}; "
                      "steps are Fork, Say, Sample, Given, Grade and "
                      "KeepFailed (swirl_jax.rollout.scripts).")
  return script


def seed_of(seed: int, labels: Optional[tuple]) -> int:
  """The sampler seed of a `Sample` with `labels` in a call with `seed`.

  `task_base.seed_for(seed, *labels) % 2**31`, or `seed` if labels is None.
  """
  if labels is None:
    return int(seed)
  return task_base.seed_for(seed, *labels) % (1 << 31)


def rollout_seed(index: int) -> tuple:
  """The seed labels of the engine's sampler call `index` (SWiRL's step)."""
  return ("rollout", index)


# -- the recipes' scripts ----------------------------------------------------


def single_attempt(num_samples: int = 1, seed: Optional[tuple] = None,
                   name: str = "y") -> tuple[Step, ...]:
  """[user: x, model: y], y graded; `num_samples` per example, unshared."""
  return (Fork(num_samples), Say(PROMPT), Sample(name, seed), Grade((name,)))


def two_attempts(instruction: str, num_samples: int = 1
                 ) -> tuple[Step, ...]:
  """SCoRe: [x, y1, instruction, y2], both graded in one call.

  An example's `num_samples` rows share its prompt (prefilled once); their
  second contexts share only the prompt, so y2 is sampled unshared.
  """
  return (Fork(num_samples), Say(PROMPT),
          Sample("y1", rollout_seed(0), group=True), Say(instruction),
          Sample("y2", rollout_seed(1)), Grade(("y1", "y2")))


def second_attempt(instruction: str, seed: tuple) -> tuple[Step, ...]:
  """[x, given y1, instruction, y2], y2 graded (y1's grade is given)."""
  return (Say(PROMPT), Given("y1"), Say(instruction), Sample("y2", seed),
          Grade(("y2",)))


def self_refine(feedback_instruction: str, instruction: str,
                seeds: Sequence[tuple]) -> tuple[Step, ...]:
  """Self-Refine: [x, y1, feedback_instruction, feedback, instruction, y2]."""
  first, feedback, refine = seeds
  return (Say(PROMPT), Sample("y1", first), Grade(("y1",)),
          Say(feedback_instruction), Sample("feedback", feedback),
          Say(instruction), Sample("y2", refine), Grade(("y2",)))


def reflect_retry(reflection_instruction: str, group_size: int,
                  given_first: bool = False,
                  retry_instruction: str = prompts.RETRY_INSTRUCTION,
                  retry_temperature: Optional[float] = None
                  ) -> tuple[Step, ...]:
  """R3: [x, first], graded; each failure: G x [reflection, retry], graded.

  The G reflections of a failure share its context (prefilled once); its G
  retries share that context too (their common prefix, prefilled once).
  """
  first = Given("first") if given_first else Sample("first", rollout_seed(0))
  return (Say(PROMPT), first, Grade(("first",)), KeepFailed("first"),
          Say(reflection_instruction), Fork(group_size),
          Sample("reflection", rollout_seed(1), group=True),
          Say(retry_instruction),
          Sample("retry", rollout_seed(2), group=True, shared_prefix=True,
                 temperature=retry_temperature),
          Grade(("retry",)))
