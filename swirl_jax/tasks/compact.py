"""CPU-scale forms of the R3 tasks: compact prompts, fast Countdown instances.

R3 trains on function calling (APIGen / xLAM format) and Countdown. Both are
registered tasks (`swirl_jax.tasks`); this module adds what a run of them
on a tiny model needs (R3's recipe and any other on these tasks):

* `make_task(name, prompt_style, **kwargs)`: `get_task` with a check that
  the task has a reflection instruction; `prompt_style='compact'` wraps it
  in `CompactPromptTask`, which writes the same instance in a few lines
  (tool signatures instead of JSON specifications), so that episodes fit a
  tiny model on a CPU (the full function-calling prompt is ~370 tokens of
  the 1k-piece tokenizer, the compact one ~100). Everything else (ids,
  parsing, verification, the reflection instruction) is the task's own.
* `generate_countdown(task, n, seed, split)`: Countdown instances made the
  way reasoning-gym's generator (which `CountdownTask.generate` calls) makes
  them, without sympy: k numbers in [min_value, max_value] chained left to
  right with random operators (a division only where it is exact, with a
  divisor taken from the numbers not used yet, else a subtraction), targets
  kept in [min_target, max_target]. Exact fractions instead of sympy make it
  far faster (reasoning-gym spent ~25 ms per instance here, the slowest
  stage of the CPU default). reasoning-gym overwrites the number with the
  divisor it picks (the numbers may then repeat); we swap it into place, so
  the drawn numbers are kept. With reasoning-gym's `shuffle=False` the
  numbers are shown in the order the solution uses them (an easier
  variant: the model chooses the operators, not the order). The instances are
  built by the task itself (`CountdownTask` entries), so ids, splits (a hash
  of the numbers and target) and the verifier are those of the task.
* `generate_examples(task, n, seed, split)`: the fast generator for
  Countdown, `task.generate` for every other task.
"""

from __future__ import annotations

import fractions
import json
import random
from typing import Any, Sequence

from swirl_jax.tasks import base
from swirl_jax.tasks import get_task
from swirl_jax.tasks import prompts

Fraction = fractions.Fraction

COUNTDOWN = "countdown"
FUNCTION_CALLING = "function_calling"
R3_TASKS = (COUNTDOWN, FUNCTION_CALLING)

# reasoning-gym's CountdownConfig defaults (used when the task has no value).
_COUNTDOWN_DEFAULTS = {"min_numbers": 4, "max_numbers": 6, "min_value": 1,
                       "max_value": 100, "min_target": 100, "max_target": 999,
                       "operators": ("+", "-", "*", "/"), "shuffle": True}
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


PROMPT_STYLES = ("full", "compact")
_SHORT_TYPES = {"string": "str", "integer": "int", "number": "float",
                "boolean": "bool", "array": "list", "object": "dict"}

COMPACT_COUNTDOWN_PROMPT = (
    "Numbers: {numbers}. Target: {target}.\nWrite an expression that uses "
    "each number exactly once, with + - * / and parentheses, inside "
    "<answer> </answer>.")
COMPACT_FUNCTION_CALLING_PROMPT = (
    "Functions:\n{signatures}\nRequest: {query}\nCall the functions as a "
    "JSON list of {{\"name\", \"arguments\"}} objects inside <tool_call> "
    "</tool_call>.")


def function_signature(spec) -> str:
  """'name(arg: type, opt: type = default)' of a `FunctionSpec`."""
  parts = []
  for arg, schema in spec.properties.items():
    kind = schema.get("type") if isinstance(schema, dict) else None
    text = f"{arg}: {_SHORT_TYPES.get(kind, kind or 'any')}"
    if arg not in spec.required and "default" in schema:
      text += f" = {json.dumps(schema['default'])}"
    parts.append(text)
  return f"{spec.name}({', '.join(parts)})"


class CompactPromptTask(base.TaskWrapper):
  """A task with a short prompt; everything else is the wrapped task's.

  Countdown: the numbers, the target and the rules in three lines.
  Function calling: one signature per available function, the request and
  the call format. Attributes the wrapper does not define (numbers_and_target,
  gold_calls, specs, config, ...) are the wrapped task's.

  Args:
    task: a Countdown or function-calling task.
  """

  def __init__(self, task: base.Task):
    if task.name not in R3_TASKS:
      raise ValueError(f"No compact prompt for task {task.name!r}; compact "
                       f"prompts exist for {list(R3_TASKS)}.")
    super().__init__(task)

  def prompt(self, example: base.Example) -> str:
    if self.name == COUNTDOWN:
      numbers, target = self.inner.numbers_and_target(example)
      return COMPACT_COUNTDOWN_PROMPT.format(
          numbers=" ".join(str(n) for n in numbers), target=target)
    signatures = "\n".join(function_signature(s)
                           for s in self.inner.specs(example).values())
    return COMPACT_FUNCTION_CALLING_PROMPT.format(signatures=signatures,
                                                  query=example.question)


def make_task(name: str, prompt_style: str = "full", **kwargs) -> base.Task:
  """The registered task `name`, checked to have a reflection instruction.

  Args:
    name: a task registry name ('countdown', 'function_calling', ...).
    prompt_style: 'full' (the task's own prompt) or 'compact'
      (`CompactPromptTask`).
    **kwargs: the task's constructor arguments (e.g. Countdown's
      reasoning-gym config: min_numbers=3, max_numbers=3, max_value=10).
  Returns:
    The task.
  Raises:
    ValueError: unknown task or prompt style, or a task without
      `reflection_instruction`.
  """
  if prompt_style not in PROMPT_STYLES:
    raise ValueError(f"Unknown prompt_style {prompt_style!r}; choose one of "
                     f"{list(PROMPT_STYLES)}.")
  task = get_task(name, **kwargs)
  if not task.reflection_instruction:
    raise ValueError(f"Task {name!r} has no reflection_instruction, so R3 "
                     f"cannot run on it; R3 tasks: {list(R3_TASKS)}.")
  return CompactPromptTask(task) if prompt_style == "compact" else task


def countdown_config(task: base.Task) -> dict[str, Any]:
  """The Countdown generator settings of `task` (reasoning-gym names)."""
  config = dict(_COUNTDOWN_DEFAULTS)
  config.update(getattr(task, "config", {}) or {})
  config["operators"] = tuple(config["operators"])
  return config


def format_chain(numbers: Sequence[int], ops: Sequence[str]) -> str:
  """The left-to-right chain ((n0 op0 n1) op1 n2) ... with minimal brackets.

  '+' and '-' are written with spaces, '*' and '/' without (as reasoning-gym
  prints its solutions): [6, 7, 4], ['-', '*'] -> '(6 - 7)*4'.

  Args:
    numbers: k numbers.
    ops: k - 1 operators from '+', '-', '*', '/'.
  Returns:
    The expression text.
  """
  if len(ops) != len(numbers) - 1:
    raise ValueError(f"{len(numbers)} numbers need {len(numbers) - 1} "
                     f"operators, got {list(ops)}.")
  text, prec = str(numbers[0]), 3
  for op, num in zip(ops, numbers[1:]):
    if _PRECEDENCE[op] > prec:  # a sum inside a product: bracket it
      text = f"({text})"
    text = f"{text} {op} {num}" if _PRECEDENCE[op] == 1 else f"{text}{op}{num}"
    prec = _PRECEDENCE[op]
  return text


def _apply(op: str, a: Fraction, b: int) -> Fraction:
  if op == "+":
    return a + b
  if op == "-":
    return a - b
  if op == "*":
    return a * b
  return a / b


def _chain(rng: random.Random, config: dict[str, Any]
           ) -> tuple[list[int], list[str], Fraction]:
  """One random left-to-right chain: (numbers, operators, value)."""
  k = rng.randint(config["min_numbers"], config["max_numbers"])
  numbers = [rng.randint(config["min_value"], config["max_value"])
             for _ in range(k)]
  value, ops = Fraction(numbers[0]), []
  for i in range(1, k):
    op = rng.choice(config["operators"])
    if op == "/":
      # Exact division only: pick a divisor among the numbers not used yet.
      rest = numbers[i:]
      rng.shuffle(rest)
      divisor = next((d for d in rest if d and value % d == 0), None)
      if divisor is None:
        op = "-"
      else:
        j = numbers.index(divisor, i)
        numbers[i], numbers[j] = numbers[j], numbers[i]
    value = _apply(op, value, numbers[i])
    ops.append(op)
  return numbers, ops, value


def generate_countdown(task: base.Task, n: int, seed: int = 0,
                       split: str = "train") -> list[base.Example]:
  """`n` distinct Countdown instances of `split`, deterministic for `seed`.

  Args:
    task: a `CountdownTask` (its config gives the numbers and targets).
    n: how many.
    seed: the generator's seed.
    split: 'train', 'validation' or 'test' (by a hash of numbers and
      target, as `CountdownTask.generate` assigns them).
  Returns:
    list[Example] with metadata 'numbers', 'target' and 'split'; the answer
    is one solution.
  Raises:
    ValueError: the configured instance space has too few instances of
      `split` for `n`.
  """
  base.check_split(split)
  config = countdown_config(task)
  rng = random.Random(base.seed_for(seed, "r3-countdown", split))

  def candidates():
    while True:
      numbers, ops, value = _chain(rng, config)
      if value.denominator != 1 or not (
          config["min_target"] <= value <= config["max_target"]):
        continue
      expression = format_chain(numbers, ops)
      shown = list(numbers)
      if config["shuffle"]:  # else shown in the solution's order
        rng.shuffle(shown)
      target = int(value)
      entry = {"question": prompts.countdown_prompt(shown, target),
               "answer": expression,
               "metadata": {"numbers": shown, "target": target,
                            "expression": expression}}
      key = f"{sorted(shown)}->{target}"
      # The task builds the example, so ids and metadata are its own.
      # pylint: disable-next=protected-access
      yield key, task._entry_example(entry, split)

  return base.take_split(candidates(), n, split, 400 * n + 1000, task.name)


def generate_examples(task: base.Task, n: int, seed: int = 0,
                      split: str = "train") -> list[base.Example]:
  """`n` instances of `split`: the fast generator for Countdown, else
  `task.generate`."""
  if getattr(task, "name", "") == COUNTDOWN:
    return generate_countdown(task, n, seed, split)
  return task.generate(n, seed=seed, split=split)
