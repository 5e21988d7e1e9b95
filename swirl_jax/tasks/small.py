"""Small procedural MATH-style problems for SCoRe on a CPU ('math_small').

The `math` task's generator (multi-digit products, fraction sums, polynomial
values) is far beyond what a ~1M-parameter model learns in minutes, so its
first-attempt accuracy would be zero and RL would have no signal. This task
keeps everything of `math` (SCoRe's prompt, 'Final Answer: ...' parsing,
MATH normalisation and verification, loaders, the correction instruction)
and only replaces the generator with problems a tiny model gets right some
of the time: a two-digit number a in [10, max_value] and a digit d in
[1, max_digit],

  add:     Compute $a + d$.
  sub:     Compute $a - d$.
  linear:  Solve for $x$: $x + d = a$.

metadata['working'] holds the one-line computation ('$54 + 5 = {}$', the
result left out), which the warm-start demonstrations write before the
final answer.

A held-out problem is new as a whole, but its hard part (the digit sum or
difference, and the carry) recurs in training problems with other tens, so
held-out accuracy measures something a small model can learn.

Each instance carries a worked, boxed solution in metadata['solution'] like
the `math` generator's. Train / validation / test instances never coincide
(`base.split_of` on the problem text).

`SmallCodeTask` ('code_small') is the synthetic `code` task with a short
prompt (the problem and the answer format, without the test asserts, as in
HumanEval), so that two-attempt episodes stay short on a CPU; programs are
still graded by all tests in the sandbox.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Iterator

from swirl_jax.tasks import base
from swirl_jax.tasks import code as code_task
from swirl_jax.tasks import math as math_task

FAMILIES = ("add", "sub", "linear")


def _problem(family: str, rng: random.Random, max_value: int,
             max_digit: int):
  """(question, solution, answer, working) of one instance of `family`.

  `working` is the one-line computation with '{}' where the result goes.
  """
  a, d = rng.randint(10, max_value), rng.randint(1, max_digit)
  if family == "add":
    q, ans, work = f"Compute ${a} + {d}$.", a + d, f"${a} + {d} = {{}}$"
  elif family == "sub":
    q, ans, work = f"Compute ${a} - {d}$.", a - d, f"${a} - {d} = {{}}$"
  elif family == "linear":
    q, ans = f"Solve for $x$: $x + {d} = {a}$.", a - d
    work = f"$x = {a} - {d} = {{}}$"
  else:
    raise ValueError(f"Unknown math_small family {family!r}; choose from "
                     f"{FAMILIES}.")
  sol = f"{work.format(ans)}, so the answer is $\\boxed{{{ans}}}$."
  return q, sol, str(ans), work


class SmallMathTask(math_task.MathTask):
  """MATH-format arithmetic small enough for the tiny CPU model.

  Args:
    max_value: largest two-digit operand a (10..99).
    max_digit: largest digit operand d (1..9).
    families: which problem families to draw from (uniformly).
  """

  name = "math_small"

  def __init__(self, max_value: int = 99, max_digit: int = 9,
               families: tuple[str, ...] = FAMILIES):
    if not 10 <= int(max_value) <= 99:
      raise ValueError(f"max_value must be in [10, 99], got {max_value}.")
    if not 1 <= int(max_digit) <= 9:
      raise ValueError(f"max_digit must be in [1, 9], got {max_digit}.")
    families = tuple(families)
    bad = [f for f in families if f not in FAMILIES]
    if not families or bad:
      raise ValueError(f"families must be a non-empty subset of {FAMILIES}, "
                       f"got {families}.")
    self.max_value = int(max_value)
    self.max_digit = int(max_digit)
    self.families = families

  def generate(self, n: int, seed: int = 0,
               split: str = "train") -> list[base.Example]:
    base.check_split(split)
    rng = random.Random(base.seed_for(seed, self.name, split))

    def candidates() -> Iterator[tuple[str, base.Example]]:
      while True:
        family = rng.choice(self.families)
        q, sol, ans, work = _problem(family, rng, self.max_value,
                                     self.max_digit)
        yield q, base.Example(
            id=base.content_id("math-small", q), question=q, answer=ans,
            metadata={"solution": sol, "working": work, "type": family,
                      "level": "Level 1"})

    return base.take_split(candidates(), n, split, 50 * n + 100, self.name)


CODE_SMALL_PROMPT = "{question}\nWrite the program in one ```python code block."


class SmallCodeTask(code_task.CodeTask):
  """The synthetic code task with a short prompt (no test asserts shown)."""

  def __init__(self, **kwargs):
    super().__init__(dataset="synthetic", **kwargs)
    self.name = "code_small"

  def prompt(self, example: base.Example) -> str:
    return CODE_SMALL_PROMPT.format(question=example.question)

  def generate(self, n: int, seed: int = 0,
               split: str = "train") -> list[base.Example]:
    return [dataclasses.replace(ex, id=ex.id.replace("code-gen",
                                                     "code-small", 1))
            for ex in super().generate(n, seed=seed, split=split)]


@base.register_task("math_small")
def _math_small(**kwargs) -> SmallMathTask:
  return SmallMathTask(**kwargs)


@base.register_task("code_small")
def _code_small(**kwargs) -> SmallCodeTask:
  return SmallCodeTask(**kwargs)
