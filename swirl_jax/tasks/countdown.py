"""Countdown: combine given numbers with + - * / to hit a target (R3).

Instances come from reasoning-gym's `countdown` generator (through
`ReasoningGymTask`), or from files in the TinyZero / R3 format (json or jsonl
records with "nums" or "numbers" and "target").

The verifier parses the equation with a small exact parser of its own
(numbers, + - * /, parentheses; no unary minus, no other operators; model
text is never evaluated by Python) and reports one of:

* `invalid_equation`: not a well-formed expression (or division by zero);
* `wrong_numbers`: the numbers written are not exactly the given multiset;
* `missed_target`: well formed, right numbers, wrong value;
* `correct`.
"""

from __future__ import annotations

import collections
import dataclasses
import fractions
import os
import re
from typing import Any, Mapping, Optional, Sequence

from swirl_jax.tasks import answers as answers_lib
from swirl_jax.tasks import base
from swirl_jax.tasks import prompts
from swirl_jax.tasks import reasoning_gym_task

Fraction = fractions.Fraction

INVALID_EQUATION = "invalid_equation"
WRONG_NUMBERS = "wrong_numbers"
MISSED_TARGET = "missed_target"

MAX_EQUATION_CHARS = 300
MAX_DEPTH = 40

_SUBSTITUTIONS = {"\u00d7": "*", "\u00f7": "/", "\u2212": "-", "\u2013": "-",
                  "\\times": "*", "\\cdot": "*", "\\div": "/", "x": "*",
                  "X": "*"}
_TOKEN_RE = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|([-+*/()]))")


class EquationError(ValueError):
  """A Countdown equation that is not well formed."""


def _tokenize(expr: str) -> list[str]:
  tokens, pos = [], 0
  expr = expr.rstrip()
  while pos < len(expr):
    m = _TOKEN_RE.match(expr, pos)
    if not m:
      raise EquationError(
          f"unexpected character {expr[pos:].lstrip()[:1]!r} at position "
          f"{pos}")
    tokens.append(m.group(1) or m.group(2))
    pos = m.end()
  return tokens


class _Parser:
  """expr := term (('+'|'-') term)*; term := atom (('*'|'/') atom)*;
  atom := NUMBER | '(' expr ')'. Collects the numbers it reads."""

  def __init__(self, tokens: Sequence[str]):
    self.tokens = list(tokens)
    self.i = 0
    self.numbers: list[Fraction] = []

  def _peek(self) -> Optional[str]:
    return self.tokens[self.i] if self.i < len(self.tokens) else None

  def parse(self) -> Fraction:
    if not self.tokens:
      raise EquationError("empty equation")
    value = self._expr(0)
    if self.i != len(self.tokens):
      raise EquationError(f"unexpected {self.tokens[self.i]!r} after a "
                          "complete expression")
    return value

  def _expr(self, depth: int) -> Fraction:
    value = self._term(depth)
    while self._peek() in ("+", "-"):
      op = self.tokens[self.i]
      self.i += 1
      rhs = self._term(depth)
      value = value + rhs if op == "+" else value - rhs
    return value

  def _term(self, depth: int) -> Fraction:
    value = self._atom(depth)
    while self._peek() in ("*", "/"):
      op = self.tokens[self.i]
      self.i += 1
      rhs = self._atom(depth)
      if op == "*":
        value = value * rhs
      else:
        if rhs == 0:
          raise EquationError("division by zero")
        value = value / rhs
    return value

  def _atom(self, depth: int) -> Fraction:
    if depth > MAX_DEPTH:
      raise EquationError("parentheses nested too deeply")
    tok = self._peek()
    if tok is None:
      raise EquationError("the expression ends early")
    self.i += 1
    if tok == "(":
      value = self._expr(depth + 1)
      if self._peek() != ")":
        raise EquationError("unbalanced parentheses")
      self.i += 1
      return value
    if tok in ("+", "-", "*", "/", ")"):
      raise EquationError(f"operator {tok!r} where a number was expected "
                          "(unary signs are not allowed)")
    value = Fraction(tok)
    self.numbers.append(value)
    return value


def evaluate_equation(text: str) -> tuple[Fraction, list[Fraction]]:
  """Exact value and the numbers used of a Countdown expression.

  A trailing '= <number>' is ignored (the left side is graded). Accepts
  '×', '÷', '−', '\\times', '\\div' and 'x' for the operators.

  Raises:
    EquationError: the text is not a well-formed expression.
  """
  if not isinstance(text, str):
    raise EquationError(f"expected text, got {type(text).__name__}")
  expr = text.strip().strip("$").strip()
  if len(expr) > MAX_EQUATION_CHARS:
    raise EquationError(f"equation too long ({len(expr)} characters)")
  for old, new in _SUBSTITUTIONS.items():
    expr = expr.replace(old, new)
  if expr.count("=") > 1:
    raise EquationError("more than one '='")
  if "=" in expr:
    lhs, rhs = expr.split("=")
    if not re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", rhs):
      raise EquationError(f"the right side of '=' is not a number: "
                          f"{rhs.strip()!r}")
    expr = lhs
  parser = _Parser(_tokenize(expr))
  value = parser.parse()
  return value, parser.numbers


def _fmt(v: Fraction) -> str:
  return answers_lib.format_number(v)


def verify_equation(numbers: Sequence[int], target: int,
                    answer: Optional[str]) -> base.Verdict:
  """Grades a Countdown equation against its numbers and target."""
  if answer is None or not answer.strip():
    return base.Verdict(False, base.NO_ANSWER, "no equation given")
  try:
    value, used = evaluate_equation(answer)
  except EquationError as e:
    return base.Verdict(False, INVALID_EQUATION, str(e))
  want = collections.Counter(Fraction(n) for n in numbers)
  got = collections.Counter(used)
  if got != want:
    extra = sorted(_fmt(v) for v in (got - want).elements())
    missing = sorted(_fmt(v) for v in (want - got).elements())
    parts = []
    if extra:
      parts.append(f"uses {extra} not given (or too often)")
    if missing:
      parts.append(f"does not use {missing}")
    return base.Verdict(False, WRONG_NUMBERS, "; ".join(parts))
  if value != Fraction(target):
    return base.Verdict(False, MISSED_TARGET,
                        f"value {_fmt(value)} != target {target}")
  return base.Verdict(True, base.CORRECT, f"= {target}")


def _countdown_key(entry: Mapping[str, Any]) -> str:
  md = entry["metadata"]
  return f"{sorted(int(n) for n in md['numbers'])}->{int(md['target'])}"


_EXPRESSION_LINE_RE = re.compile(r"^[\d\s()+\-*/×÷−.=xX]+$")


@base.register_task("countdown")
class CountdownTask(reasoning_gym_task.ReasoningGymTask):
  """Countdown with our verifier and R3's reflection instruction.

  Args:
    **config: reasoning-gym CountdownConfig fields, e.g. min_numbers=3,
      max_numbers=4, min_target=10, max_target=100.
  """

  reflection_instruction = prompts.COUNTDOWN_REFLECTION_INSTRUCTION

  def __init__(self, **config):
    super().__init__("countdown", split_key=_countdown_key, **config)
    self.name = "countdown"

  def load(self, path: str, split: str = "test") -> list[base.Example]:
    """Reads json / jsonl records with "nums" (or "numbers") and "target"."""
    records = base.read_records(path, "records")
    out = []
    for where, rec in records:
      if not isinstance(rec, dict):
        raise base.DataFormatError(f"{where}: expected a JSON object")
      key = "nums" if "nums" in rec else "numbers"
      nums = base.require(rec, key, list, where)
      target = base.require(rec, "target", int, where)
      if not nums or not all(isinstance(n, int) and not isinstance(n, bool)
                             for n in nums):
        raise base.DataFormatError(
            f"{where}: {key!r} must be a non-empty list of integers, got "
            f"{nums!r}")
      entry = {"question": prompts.countdown_prompt(nums, target),
               "answer": rec.get("solution", rec.get("answer")),
               "metadata": {"numbers": list(nums), "target": target}}
      out.append(self._entry_example(entry, split))
    return out

  def _entry_example(self, entry: Mapping[str, Any],
                     split: str) -> base.Example:
    ex = super()._entry_example(entry, split)
    md = dict(ex.metadata)
    md["numbers"] = [int(n) for n in entry["metadata"]["numbers"]]
    md["target"] = int(entry["metadata"]["target"])
    return dataclasses.replace(ex, metadata=md)

  def numbers_and_target(self, example: base.Example) -> tuple[list[int], int]:
    md = example.metadata
    if "numbers" not in md or "target" not in md:
      raise ValueError(f"Example {example.id} has no Countdown numbers / "
                       f"target in its metadata: {sorted(md)}")
    return [int(n) for n in md["numbers"]], int(md["target"])

  def prompt(self, example: base.Example) -> str:
    numbers, target = self.numbers_and_target(example)
    return prompts.countdown_prompt(numbers, target)

  def parse_answer(self, text: str) -> Optional[str]:
    tagged = answers_lib.extract_tagged(text, prompts.ANSWER_TAG)
    if tagged is not None or not text:
      return tagged
    for line in reversed(text.strip().splitlines()):
      line = line.strip().strip("`$").strip()
      if line and _EXPRESSION_LINE_RE.match(line) and re.search(r"\d", line):
        return line
    return None

  def verify(self, example: base.Example,
             answer: Optional[str]) -> base.Verdict:
    numbers, target = self.numbers_and_target(example)
    return verify_equation(numbers, target, answer)
