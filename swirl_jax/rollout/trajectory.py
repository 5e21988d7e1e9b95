"""Records of generated episodes, their JSON form and JSONL files.

* `Step` / `Trajectory`: a SWiRL multi-step tool-use episode.
* `ModelTurn`: one sampled model turn and the context it was sampled from.
* `TwoAttemptEpisode` (SCoRe) and `ReflectionEpisode` (R3).

Every record has `to_dict` / `from_dict` (plain JSON types only); JSONL
files are written atomically by `save_jsonl` and read by `load_jsonl`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile
import typing
from typing import Any, Callable, Iterable, Mapping, Optional, Type, TypeVar

from swirl_jax.tasks.base import Verdict

USER = "user"
MODEL = "model"

# Why a multi-step episode ended.
FINISH_ANSWER = "answer"
FINISH_STEP_LIMIT = "step_limit"
FINISH_CONTEXT_LIMIT = "context_limit"
FINISH_MALFORMED_LIMIT = "malformed_limit"
FINISH_REASONS = (FINISH_ANSWER, FINISH_STEP_LIMIT, FINISH_CONTEXT_LIMIT,
                  FINISH_MALFORMED_LIMIT)

# How one sampled model turn ended.
TURN_STOP = "stop"            # with a stop token (end_of_turn or eos)
TURN_LENGTH = "length"        # ran out of max_new_tokens
TURN_CONTEXT_LIMIT = "context_limit"  # no room left: nothing was sampled
TURN_GIVEN = "given"          # supplied by the caller, not sampled
TURN_FINISHES = (TURN_STOP, TURN_LENGTH, TURN_CONTEXT_LIMIT, TURN_GIVEN)

Turn = tuple[str, str]
R = TypeVar("R")


def _verdict_to_dict(verdict: Optional[Verdict]) -> Optional[dict[str, Any]]:
  if verdict is None:
    return None
  return {"correct": bool(verdict.correct), "category": str(verdict.category),
          "detail": str(verdict.detail),
          "score": None if verdict.score is None else float(verdict.score)}


def _verdict_from_dict(d: Optional[Mapping[str, Any]]) -> Optional[Verdict]:
  if d is None:
    return None
  return Verdict(correct=bool(d["correct"]), category=str(d["category"]),
                 detail=str(d.get("detail", "")),
                 score=None if d.get("score") is None else float(d["score"]))


def _turns_from_json(turns: Iterable[Any]) -> list[Turn]:
  out = []
  for i, turn in enumerate(turns):
    if len(turn) != 2 or turn[0] not in (USER, MODEL):
      raise ValueError(f"Turn {i} must be [role, text] with role 'user' or "
                       f"'model', got {turn!r}.")
    out.append((str(turn[0]), str(turn[1])))
  return out


def _same(value: Any) -> Any:
  return value


def _each(fn: Callable[[Any], Any]) -> Callable[[Iterable[Any]], list[Any]]:
  return lambda values: [fn(v) for v in values]


# A field's type -> (to JSON, from JSON). A list of records goes through the
# records' own to_dict / from_dict, other types (Optional[str]) as they are.
_CODECS = {
    int: (int, int),
    bool: (bool, bool),
    str: (_same, str),
    list[int]: (_each(int), _each(int)),
    list[float]: (_each(float), _each(float)),
    list[Turn]: (lambda turns: [[str(r), str(t)] for r, t in turns],
                 _turns_from_json),
    Optional[Verdict]: (_verdict_to_dict, _verdict_from_dict),
}
# What `from_dict` gives a missing field without a default (else None).
_EMPTY = {str: "", int: 0}


def _codec(hint: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
  if hint in _CODECS:
    return _CODECS[hint]
  if typing.get_origin(hint) is list:
    to_json, from_json = _codec(typing.get_args(hint)[0])
    return _each(to_json), _each(from_json)
  if isinstance(hint, type) and issubclass(hint, _Record):
    return hint.to_dict, hint.from_dict
  return _same, _same


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, Any, Any, Any], ...]:
  """(name, to JSON, from JSON, value if missing) of each field of `cls`."""
  hints = typing.get_type_hints(cls)
  return tuple(
      (f.name, *_codec(hints[f.name]),
       _EMPTY.get(hints[f.name]) if f.default is dataclasses.MISSING
       else f.default)
      for f in dataclasses.fields(cls))


class _Record:
  """JSON form of a dataclass record, from its fields' types (`_CODECS`).

  `_REQUIRED` are the keys `from_dict` needs; `_DERIVED` the properties
  `to_dict` adds after the fields.
  """

  _REQUIRED: tuple[str, ...] = ()
  _DERIVED: tuple[str, ...] = ()

  def to_dict(self) -> dict[str, Any]:
    """The record as plain JSON types, one key per field."""
    d = {name: to_json(getattr(self, name))
         for name, to_json, _, _ in _fields(type(self))}
    d.update((name, getattr(self, name)) for name in self._DERIVED)
    return d

  @classmethod
  def from_dict(cls: Type[R], d: Mapping[str, Any]) -> R:
    """The record of a `to_dict` dict (other keys are ignored).

    Raises:
      ValueError: naming the required keys `d` lacks.
    """
    missing = [k for k in cls._REQUIRED if k not in d]
    if missing:
      raise ValueError(f"{cls.__name__} dict lacks keys {missing}; has "
                       f"{sorted(d)}.")
    return cls(**{name: from_json(d[name]) if name in d else default
                  for name, _, from_json, default in _fields(cls)})


def _reward(verdict: Optional[Verdict]) -> float:
  return 0.0 if verdict is None else verdict.reward


@dataclasses.dataclass
class Step(_Record):
  """One action of a multi-step episode and what came back.

  Attributes:
    index: position of the action in the episode (0-based).
    action: the model turn's text (the stop token excluded).
    action_tokens: the sampled ids, stop token included: list[int], [T].
    action_logprobs: log p of each sampled id under the model: list[float],
      [T].
    tool: the tool tag called, or None (answer or malformed action).
    tool_input: the call's content (the text between the tags), or None.
    tool_result: what the tool returned, or None.
    malformed: why the action was malformed, or None if it was valid.
    context_tokens: number of context ids the action was sampled from.
    truncated: True if the sampler ran out of max_new_tokens before a stop
      token.
  """

  _REQUIRED = ("index", "action", "action_tokens", "action_logprobs")

  index: int
  action: str
  action_tokens: list[int]
  action_logprobs: list[float]
  tool: Optional[str] = None
  tool_input: Optional[str] = None
  tool_result: Optional[str] = None
  malformed: Optional[str] = None
  context_tokens: int = 0
  truncated: bool = False

  @property
  def kind(self) -> str:
    """'tool', 'answer' or 'malformed'."""
    if self.malformed is not None:
      return "malformed"
    return "tool" if self.tool is not None else "answer"


@dataclasses.dataclass
class Trajectory(_Record):
  """A multi-step tool-use episode.

  Attributes:
    task: the task's registry name.
    example_id: `Example.id`.
    question: `Example.question`.
    gold: `Example.answer`, the gold answer text.
    sample_index: which of the example's samples this is (0-based).
    turns: the full chat, list of (role, text): turns[0] is the user prompt,
      turns[2*i + 1] action i and turns[2*i + 2] the user turn answering it
      (`QUERY -> RESULT`, or the feedback to a malformed action).
    steps: one `Step` per action.
    final_answer: the parsed answer, or None if the episode gave none.
    verdict: the task's grade of `final_answer` (None before verification).
    finish_reason: one of FINISH_REASONS.
  """

  _REQUIRED = ("task", "example_id", "turns", "steps", "finish_reason")

  task: str
  example_id: str
  question: str
  gold: str
  sample_index: int
  turns: list[Turn]
  steps: list[Step]
  final_answer: Optional[str]
  verdict: Optional[Verdict]
  finish_reason: str

  def __post_init__(self):
    if self.finish_reason not in FINISH_REASONS:
      raise ValueError(f"Unknown finish_reason {self.finish_reason!r}; "
                       f"expected one of {list(FINISH_REASONS)}.")

  @property
  def prompt(self) -> str:
    """The first user turn's text."""
    return self.turns[0][1] if self.turns else ""

  @property
  def correct(self) -> bool:
    return self.verdict is not None and self.verdict.correct

  @property
  def reward(self) -> float:
    """1.0 if the verdict is correct, else 0.0."""
    return _reward(self.verdict)

  @property
  def num_steps(self) -> int:
    return len(self.steps)

  def state(self, i: int) -> list[Turn]:
    """The context turns before action i: turns[:2*i + 1]."""
    if not 0 <= i < len(self.steps):
      raise IndexError(f"Step {i} out of range: the trajectory has "
                       f"{len(self.steps)} steps.")
    return list(self.turns[:2 * i + 1])

  def states_and_actions(self) -> list[tuple[list[Turn], str]]:
    """SWiRL's split: pair i is (turns[:2*i + 1], action i), one per action."""
    return [(self.state(i), self.turns[2 * i + 1][1])
            for i in range(len(self.steps))]


@dataclasses.dataclass
class ModelTurn(_Record):
  """One sampled model turn and the exact context it was sampled from.

  A trainer rebuilds the training sequence as `context_ids + tokens`, with
  the loss on `tokens` only.

  Attributes:
    text: the turn's text (stop token excluded).
    tokens: the sampled ids, stop token included: list[int], [T] (for a
      'given' turn: the encoding of `text`).
    logprobs: log p of each sampled id under the sampling model:
      list[float], [T] (empty for a 'given' turn).
    context_ids: the prompt ids, BOS first, ending with
      '<start_of_turn>model\\n': list[int], [C]; equal to
      `tokenizer.encode_chat(turns before this one)`.
    finish: how the turn ended, one of TURN_FINISHES.
  """

  _REQUIRED = ("text", "tokens", "logprobs", "context_ids")

  text: str
  tokens: list[int]
  logprobs: list[float]
  context_ids: list[int]
  finish: str = TURN_STOP

  def __post_init__(self):
    if self.finish not in TURN_FINISHES:
      raise ValueError(f"Unknown turn finish {self.finish!r}; expected one "
                       f"of {list(TURN_FINISHES)}.")


@dataclasses.dataclass
class TwoAttemptEpisode(_Record):
  """A SCoRe episode: [user: prompt, model: y1, user: instruction, model: y2].

  Attributes:
    task, example_id, question, gold, sample_index: as in `Trajectory`.
    prompt: the first user turn (the task prompt).
    instruction: the self-correction instruction (second user turn).
    y1, y2: the two attempts.
    answer1, answer2: the answers `task.parse_answer` found (or None).
    verdict1, verdict2: their grades.
  """

  _REQUIRED = ("task", "example_id", "prompt", "instruction", "y1", "y2")
  _DERIVED = ("reward1", "reward2")

  task: str
  example_id: str
  question: str
  gold: str
  sample_index: int
  prompt: str
  instruction: str
  y1: ModelTurn
  y2: ModelTurn
  answer1: Optional[str]
  answer2: Optional[str]
  verdict1: Optional[Verdict]
  verdict2: Optional[Verdict]

  @property
  def reward1(self) -> float:
    """r(y1, y*): 1.0 if the first attempt is correct, else 0.0."""
    return _reward(self.verdict1)

  @property
  def reward2(self) -> float:
    """r(y2, y*): 1.0 if the second attempt is correct, else 0.0."""
    return _reward(self.verdict2)

  @property
  def turns(self) -> list[Turn]:
    return [(USER, self.prompt), (MODEL, self.y1.text),
            (USER, self.instruction), (MODEL, self.y2.text)]


@dataclasses.dataclass
class ReflectionEpisode(_Record):
  """An R3 episode: a failed first attempt, a reflection, and a retry.

  The chat is [user: prompt, model: first, user: instruction, model:
  reflection, user: retry_instruction, model: retry]. For GRPO, the episodes
  sharing `group_index` form one group (the reflections on one failed
  attempt); only `reflection.tokens` carry the advantage.

  Attributes:
    task, example_id, question, gold: as in `Trajectory`.
    group_index: index of the failed first attempt this reflects on.
    reflection_index: which of its reflections this is (0-based).
    prompt: the first user turn (the task prompt).
    instruction: the reflection instruction (second user turn).
    retry_instruction: the third user turn, asking for the retry.
    first: the failed first attempt; first_answer / first_verdict its grade.
    reflection: the sampled reflection.
    retry: the retry; retry_answer / retry_verdict its grade.
  """

  _REQUIRED = ("task", "example_id", "prompt", "instruction",
               "retry_instruction", "first", "reflection", "retry")
  _DERIVED = ("reward",)

  task: str
  example_id: str
  question: str
  gold: str
  group_index: int
  reflection_index: int
  prompt: str
  instruction: str
  retry_instruction: str
  first: ModelTurn
  first_answer: Optional[str]
  first_verdict: Optional[Verdict]
  reflection: ModelTurn
  retry: ModelTurn
  retry_answer: Optional[str]
  retry_verdict: Optional[Verdict]

  @property
  def reward(self) -> float:
    """1.0 if the retry after this reflection is correct, else 0.0."""
    return _reward(self.retry_verdict)

  @property
  def turns(self) -> list[Turn]:
    return [(USER, self.prompt), (MODEL, self.first.text),
            (USER, self.instruction), (MODEL, self.reflection.text),
            (USER, self.retry_instruction), (MODEL, self.retry.text)]


def save_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> str:
  """Writes one JSON object per line, atomically.

  Readers see the old file or the whole new one, never a partial write (a
  temporary file in the same directory, fsynced, is renamed over `path`).

  Args:
    path: output file (parent directories are created).
    records: objects with `to_dict()` (Trajectory, TwoAttemptEpisode, ...)
      or plain dicts.

  Returns:
    str: `path`.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".jsonl")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      for record in records:
        d = record.to_dict() if hasattr(record, "to_dict") else record
        f.write(json.dumps(d, ensure_ascii=False) + "\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def load_jsonl(path: str | os.PathLike,
               record_type: Type[R] = Trajectory) -> list[R]:
  """Reads records written by `save_jsonl`.

  Args:
    path: the JSONL file.
    record_type: class with `from_dict` (Trajectory by default,
      TwoAttemptEpisode, ReflectionEpisode), or `dict` for raw dicts.

  Returns:
    list of `record_type`.

  Raises:
    FileNotFoundError: if `path` does not exist.
    ValueError: naming the file and line of invalid JSON or a bad record.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No such JSONL file: {path!r}.")
  out = []
  with open(path, "r", encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        d = json.loads(line)
        out.append(d if record_type is dict else record_type.from_dict(d))
      except (json.JSONDecodeError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}:{lineno}: not a valid "
                         f"{record_type.__name__} record: {e}") from e
  return out
