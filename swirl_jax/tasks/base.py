"""Examples, verdicts, the `Task` interface and the task registry.

A task family (GSM8K, HotPotQA, MATH, code, Countdown, function calling, ...)
is one `Task` subclass. It knows how to

* read the family's real published file format (`load`),
* make instances procedurally, deterministically for a seed (`generate`),
* write the user-turn prompt for an instance (`prompt`),
* pull the answer out of a model response (`parse_answer`), and
* grade that answer against the gold one (`verify`).

Train / validation / test instances made by `generate` never coincide: an
instance's split is a pure function of its content (`split_of`), so the same
instance lands in the same split whatever the seed that produced it.

Tasks are chosen by name from gin or the command line through `get_task`.
"""

from __future__ import annotations

import abc
import dataclasses
import gzip
import hashlib
import json
import os
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from swirl_jax import registries

SPLITS = ("train", "validation", "test")
# Fractions of the content-hash space per split (train, validation, test).
_SPLIT_BOUNDS = (("train", 0.7), ("validation", 0.8), ("test", 1.0))

CORRECT = "correct"
WRONG_ANSWER = "wrong_answer"
NO_ANSWER = "no_answer"


class DataFormatError(ValueError):
  """A data file does not follow the format its loader expects."""


@dataclasses.dataclass(frozen=True)
class Example:
  """One task instance.

  Attributes:
    id: stable identifier, derived from the content for generated instances
      and from the source id for loaded ones.
    question: the problem statement, without any prompt scaffolding.
    answer: the gold answer text, in the form `verify` compares against.
    metadata: task-specific extras (numbers and target, tests, tool specs,
      context articles, ...) and always 'split'. JSON-serialisable. Treat it
      as read-only.
  """

  id: str
  question: str
  answer: str
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __hash__(self) -> int:
    return hash((self.id, self.question, self.answer))

  @property
  def split(self) -> Optional[str]:
    return self.metadata.get("split")

  def to_dict(self) -> dict[str, Any]:
    """A JSON-serialisable dict (inverse of `from_dict`)."""
    return {"id": self.id, "question": self.question, "answer": self.answer,
            "metadata": dict(self.metadata)}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "Example":
    missing = [k for k in ("id", "question", "answer") if k not in d]
    if missing:
      raise ValueError(f"Example dict lacks keys {missing}: {sorted(d)}")
    return cls(id=str(d["id"]), question=str(d["question"]),
               answer=str(d["answer"]), metadata=dict(d.get("metadata", {})))


@dataclasses.dataclass(frozen=True)
class Verdict:
  """The grade of one answer.

  Attributes:
    correct: whether the answer counts as right (the binary reward).
    category: 'correct', 'wrong_answer', 'no_answer' or a task-specific error
      category (e.g. Countdown's 'wrong_numbers').
    detail: a short human-readable explanation.
    score: an optional graded score in [0, 1] (token F1, a reasoning-gym
      score, ...); None when the task has only the binary grade.
  """

  correct: bool
  category: str
  detail: str = ""
  score: Optional[float] = None

  @property
  def reward(self) -> float:
    return 1.0 if self.correct else 0.0


def content_id(prefix: str, *parts: Any) -> str:
  """A stable id '<prefix>-<16 hex>' from the content parts."""
  h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8"))
  return f"{prefix}-{h.hexdigest()[:16]}"


def split_of(key: str) -> str:
  """The split ('train' 70%, 'validation' 10%, 'test' 20%) a content key
  belongs to; a pure function of the key, so splits never share a key."""
  h = hashlib.sha256(("split\x1f" + key).encode("utf-8")).digest()
  u = int.from_bytes(h[:8], "big") / 2.0**64
  for name, bound in _SPLIT_BOUNDS:
    if u < bound:
      return name
  return _SPLIT_BOUNDS[-1][0]


def split_share(split: str) -> float:
  """The fraction of content keys `split_of` puts in `split` (e.g. 0.2)."""
  check_split(split)
  low = 0.0
  for name, bound in _SPLIT_BOUNDS:
    if name == split:
      return bound - low
    low = bound
  raise AssertionError(split)


def check_split(split: str) -> str:
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; choose one of {list(SPLITS)}.")
  return split


def seed_for(seed: int, *parts: Any) -> int:
  """A 63-bit seed derived from `seed` and labels, stable across runs."""
  h = hashlib.sha256(
      "\x1f".join([str(int(seed))] + [str(p) for p in parts]).encode("utf-8"))
  return int.from_bytes(h.digest()[:8], "big") >> 1


def take_split(candidates: Iterator[tuple[str, Example]], n: int, split: str,
               max_candidates: int, what: str) -> list[Example]:
  """Keeps the first `n` distinct candidates whose key hashes to `split`.

  Args:
    candidates: (split key, example) pairs; the example's metadata gets
      'split' set here.
    n: how many to return.
    split: the wanted split.
    max_candidates: give up (ValueError) after this many candidates.
    what: the task name, for the error message.
  """
  check_split(split)
  if n < 0:
    raise ValueError(f"n must be >= 0, got {n}")
  out, seen = [], set()
  for i, (key, ex) in enumerate(candidates):
    if len(out) >= n:
      break
    if i >= max_candidates:
      raise ValueError(
          f"{what}: found only {len(out)} of {n} distinct {split!r} instances "
          f"in {max_candidates} candidates; the generator's instance space is "
          "too small for this n (enlarge it or ask for fewer).")
    if key in seen or split_of(key) != split:
      continue
    seen.add(key)
    md = dict(ex.metadata)
    md["split"] = split
    out.append(dataclasses.replace(ex, metadata=md))
  if len(out) < n:
    raise ValueError(
        f"{what}: the generator ran out after {len(out)} of {n} distinct "
        f"{split!r} instances; ask for fewer.")
  return out


# ----------------------------------------------------------------------------
# File reading helpers with errors that name the file and line.


def _open_text(path: str):
  if str(path).endswith(".gz"):
    return gzip.open(path, "rt", encoding="utf-8")
  return open(path, "r", encoding="utf-8")


def read_jsonl(path: str) -> Iterator[tuple[int, Any]]:
  """Yields (1-based line number, parsed value) for non-blank lines.

  Raises:
    FileNotFoundError: no such file.
    DataFormatError: a line is not valid JSON (names file and line).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No such data file: {path}")
  with _open_text(path) as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        yield lineno, json.loads(line)
      except json.JSONDecodeError as e:
        raise DataFormatError(
            f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})"
        ) from None


def read_json(path: str) -> Any:
  """Parses one JSON document, naming file, line and column on errors."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No such data file: {path}")
  with _open_text(path) as f:
    text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise DataFormatError(
        f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})"
    ) from None



def read_records(path: str, what: str = "records"
                 ) -> list[tuple[str, Any]]:
  """(where, record) pairs from a jsonl file or a JSON list file.

  `where` names the file and line / index, for error messages.
  """
  path = os.fspath(path)
  if is_jsonl(path):
    return [(f"{path}:{lineno}", rec) for lineno, rec in read_jsonl(path)]
  data = read_json(path)
  if not isinstance(data, list):
    raise DataFormatError(f"{path}: expected a JSON list of {what}, got "
                          f"{type(data).__name__}")
  return [(f"{path}[record {i}]", rec) for i, rec in enumerate(data)]

def require(record: Any, key: str, types: Any, where: str) -> Any:
  """record[key], checked to exist and have one of `types`.

  Args:
    record: a parsed JSON object.
    key: the required field.
    types: a type or tuple of types the value must have.
    where: 'file:line' or 'file[record i]' for the error message.
  """
  if not isinstance(record, dict):
    raise DataFormatError(
        f"{where}: expected a JSON object, got {type(record).__name__}")
  if key not in record:
    raise DataFormatError(
        f"{where}: missing field {key!r} (has {sorted(record)})")
  value = record[key]
  if not isinstance(value, types):
    names = (types.__name__ if isinstance(types, type)
             else "/".join(t.__name__ for t in types))
    raise DataFormatError(
        f"{where}: field {key!r} should be {names}, got "
        f"{type(value).__name__} {str(value)[:60]!r}")
  return value


def is_jsonl(path: str) -> bool:
  p = os.fspath(path)
  return p.endswith(".jsonl") or p.endswith(".jsonl.gz")


# ----------------------------------------------------------------------------
# The Task interface.


class Task(abc.ABC):
  """One task family: loader, generator, prompt, answer parser, verifier.

  Class attributes:
    name: the registry name.
    tools: tool tags the model may use in this task (e.g. ('math_exp',)).
    max_steps: the step limit of a multi-step episode (10 math, 5 QA).
    correction_instruction: SCoRe's second-attempt instruction (None if the
      task has none).
    reflection_instruction: R3's self-reflection instruction (None if none).
  """

  name: str = ""
  tools: tuple[str, ...] = ()
  max_steps: int = 1
  correction_instruction: Optional[str] = None
  reflection_instruction: Optional[str] = None

  @abc.abstractmethod
  def load(self, path: str, split: str = "test") -> list[Example]:
    """Reads the family's published file format at `path`."""

  @abc.abstractmethod
  def generate(self, n: int, seed: int = 0,
               split: str = "train") -> list[Example]:
    """`n` procedural instances of `split`, deterministic for `seed`."""

  @abc.abstractmethod
  def prompt(self, example: Example) -> str:
    """The user-turn text for `example`."""

  @abc.abstractmethod
  def parse_answer(self, text: str) -> Optional[str]:
    """The final answer in a model response (None if there is none)."""

  @abc.abstractmethod
  def verify(self, example: Example, answer: Optional[str]) -> Verdict:
    """Grades a parsed answer against the example's gold answer."""

  def score(self, example: Example, response: str) -> Verdict:
    """`verify(example, parse_answer(response))`."""
    return self.verify(example, self.parse_answer(response))

  def verify_batch(self, examples: Sequence[Example],
                   answers: Sequence[Optional[str]]) -> list[Verdict]:
    """Grades many answers; tasks with slow verifiers override this."""
    if len(examples) != len(answers):
      raise ValueError(
          f"{len(examples)} examples but {len(answers)} answers")
    return [self.verify(e, a) for e, a in zip(examples, answers)]

  def __repr__(self) -> str:
    return f"{type(self).__name__}(name={self.name!r})"


class TaskWrapper(Task):
  """A task that is `inner` in everything a subclass does not override
  (class attributes copied; any other attribute looked up on `inner`).

  Args:
    task: the wrapped task.
  """

  def __init__(self, task: Task):
    self.inner = task
    self.name = task.name
    self.tools = task.tools
    self.max_steps = task.max_steps
    self.correction_instruction = task.correction_instruction
    self.reflection_instruction = task.reflection_instruction

  def __getattr__(self, attr: str) -> Any:
    if attr == "inner":  # not set yet (e.g. while unpickling)
      raise AttributeError(attr)
    return getattr(self.inner, attr)

  def load(self, path: str, split: str = "test") -> list[Example]:
    return self.inner.load(path, split)

  def generate(self, n: int, seed: int = 0,
               split: str = "train") -> list[Example]:
    return self.inner.generate(n, seed=seed, split=split)

  def prompt(self, example: Example) -> str:
    return self.inner.prompt(example)

  def parse_answer(self, text: str) -> Optional[str]:
    return self.inner.parse_answer(text)

  def verify(self, example: Example, answer: Optional[str]) -> Verdict:
    return self.inner.verify(example, answer)

  def verify_batch(self, examples: Sequence[Example],
                   answers: Sequence[Optional[str]]) -> list[Verdict]:
    return self.inner.verify_batch(examples, answers)

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.inner!r})"


# ----------------------------------------------------------------------------
# Registry.

def _import_task_modules() -> None:
  # Importing the package registers every task family.
  import swirl_jax.tasks  # pylint: disable=g-import-not-at-top,unused-import


TASKS: registries.Registry[Callable[..., Task]] = registries.Registry(
    "task", importer=_import_task_modules)


def register_task(name: str):
  """Class / factory decorator: makes `get_task(name, **kw)` build it."""
  return TASKS.register(name)


def register_task_prefix(prefix: str, factory: Callable[..., Task]) -> None:
  """Names '<prefix>/<rest>' build `factory(rest, **kw)` (e.g. 'rg/gcd')."""
  TASKS.add_prefix(prefix, factory)


def task_names() -> list[str]:
  """Registered task names (prefix families shown as '<prefix>/<name>')."""
  return TASKS.names()


def get_task(name: str, **kwargs) -> Task:
  """Builds the task registered as `name` with constructor `kwargs`."""
  return TASKS.build(name, **kwargs)

