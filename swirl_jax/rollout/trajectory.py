"""Records of generated episodes, their JSON form and JSONL files.

* `Step` / `Trajectory`: a SWiRL multi-step tool-use episode. `turns` is the
  whole chat: turns[0] is the user prompt, turns[2*i + 1] the model's action
  i and turns[2*i + 2] the user turn that answered it (`QUERY -> RESULT`, or
  the feedback to a malformed action), so the state before action i is
  turns[:2*i + 1]. `states_and_actions()` is SWiRL's split of a trajectory
  with k actions into k (state, action) sub-trajectories.
* `ModelTurn`: one sampled model turn with the exact token ids of the context
  it was sampled from, the sampled ids and their log-probabilities.
* `TwoAttemptEpisode` (SCoRe) and `ReflectionEpisode` (R3).

Every record has `to_dict` / `from_dict` (plain JSON types only); JSONL
files are written atomically by `save_jsonl` and read by `load_jsonl`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Any, Iterable, Mapping, Optional, Sequence, Type, TypeVar

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


# ----------------------------------------------------------------------------
# Helpers.


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


def _turns_to_json(turns: Sequence[Turn]) -> list[list[str]]:
  return [[str(role), str(text)] for role, text in turns]


def _turns_from_json(turns: Sequence[Sequence[str]]) -> list[Turn]:
  out = []
  for i, turn in enumerate(turns):
    if len(turn) != 2 or turn[0] not in (USER, MODEL):
      raise ValueError(f"Turn {i} must be [role, text] with role 'user' or "
                       f"'model', got {turn!r}.")
    out.append((str(turn[0]), str(turn[1])))
  return out


def _ints(values: Iterable[Any]) -> list[int]:
  return [int(v) for v in values]


def _floats(values: Iterable[Any]) -> list[float]:
  return [float(v) for v in values]


def _reward(verdict: Optional[Verdict]) -> float:
  return 0.0 if verdict is None else verdict.reward


def _require(d: Mapping[str, Any], keys: Sequence[str], what: str) -> None:
  missing = [k for k in keys if k not in d]
  if missing:
    raise ValueError(f"{what} dict lacks keys {missing}; has {sorted(d)}.")


# ----------------------------------------------------------------------------
# Multi-step episodes (SWiRL).


@dataclasses.dataclass
class Step:
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

  def to_dict(self) -> dict[str, Any]:
    return {"index": int(self.index), "action": self.action,
            "action_tokens": _ints(self.action_tokens),
            "action_logprobs": _floats(self.action_logprobs),
            "tool": self.tool, "tool_input": self.tool_input,
            "tool_result": self.tool_result, "malformed": self.malformed,
            "context_tokens": int(self.context_tokens),
            "truncated": bool(self.truncated)}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "Step":
    _require(d, ("index", "action", "action_tokens", "action_logprobs"),
             "Step")
    return cls(index=int(d["index"]), action=str(d["action"]),
               action_tokens=_ints(d["action_tokens"]),
               action_logprobs=_floats(d["action_logprobs"]),
               tool=d.get("tool"), tool_input=d.get("tool_input"),
               tool_result=d.get("tool_result"), malformed=d.get("malformed"),
               context_tokens=int(d.get("context_tokens", 0)),
               truncated=bool(d.get("truncated", False)))


@dataclasses.dataclass
class Trajectory:
  """A multi-step tool-use episode.

  Attributes:
    task: the task's registry name.
    example_id: `Example.id`.
    question: `Example.question`.
    gold: `Example.answer`, the gold answer text.
    sample_index: which of the example's samples this is (0-based).
    turns: the full chat, list of (role, text); turns[:2*i + 1] is the state
      before action i, turns[2*i + 1] is action i.
    steps: one `Step` per action.
    final_answer: the parsed answer, or None if the episode gave none.
    verdict: the task's grade of `final_answer` (None before verification).
    finish_reason: 'answer', 'step_limit', 'context_limit' or
      'malformed_limit'.
  """

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
    """SWiRL's split: one (context turns, action text) pair per action.

    Returns:
      list of k pairs for k actions; pair i is (turns[:2*i + 1], action i).
    """
    return [(self.state(i), self.turns[2 * i + 1][1])
            for i in range(len(self.steps))]

  def to_dict(self) -> dict[str, Any]:
    return {"task": self.task, "example_id": self.example_id,
            "question": self.question, "gold": self.gold,
            "sample_index": int(self.sample_index),
            "turns": _turns_to_json(self.turns),
            "steps": [s.to_dict() for s in self.steps],
            "final_answer": self.final_answer,
            "verdict": _verdict_to_dict(self.verdict),
            "finish_reason": self.finish_reason}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "Trajectory":
    _require(d, ("task", "example_id", "turns", "steps", "finish_reason"),
             "Trajectory")
    return cls(task=str(d["task"]), example_id=str(d["example_id"]),
               question=str(d.get("question", "")),
               gold=str(d.get("gold", "")),
               sample_index=int(d.get("sample_index", 0)),
               turns=_turns_from_json(d["turns"]),
               steps=[Step.from_dict(s) for s in d["steps"]],
               final_answer=d.get("final_answer"),
               verdict=_verdict_from_dict(d.get("verdict")),
               finish_reason=str(d["finish_reason"]))


# ----------------------------------------------------------------------------
# Single model turns, SCoRe and R3 episodes.


@dataclasses.dataclass
class ModelTurn:
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
    finish: 'stop', 'length', 'context_limit' (no room: nothing sampled) or
      'given'.
  """

  text: str
  tokens: list[int]
  logprobs: list[float]
  context_ids: list[int]
  finish: str = TURN_STOP

  def __post_init__(self):
    if self.finish not in TURN_FINISHES:
      raise ValueError(f"Unknown turn finish {self.finish!r}; expected one "
                       f"of {list(TURN_FINISHES)}.")

  def to_dict(self) -> dict[str, Any]:
    return {"text": self.text, "tokens": _ints(self.tokens),
            "logprobs": _floats(self.logprobs),
            "context_ids": _ints(self.context_ids), "finish": self.finish}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "ModelTurn":
    _require(d, ("text", "tokens", "logprobs", "context_ids"), "ModelTurn")
    return cls(text=str(d["text"]), tokens=_ints(d["tokens"]),
               logprobs=_floats(d["logprobs"]),
               context_ids=_ints(d["context_ids"]),
               finish=str(d.get("finish", TURN_STOP)))


@dataclasses.dataclass
class TwoAttemptEpisode:
  """A SCoRe episode: attempt y1, the correction instruction, attempt y2.

  The chat is [user: prompt, model: y1.text, user: instruction,
  model: y2.text]; y1.context_ids / y2.context_ids are its encodings up to
  each attempt.

  Attributes:
    task, example_id, question, gold, sample_index: as in `Trajectory`.
    prompt: the first user turn (the task prompt).
    instruction: the self-correction instruction (second user turn).
    y1, y2: the two attempts.
    answer1, answer2: the answers `task.parse_answer` found (or None).
    verdict1, verdict2: their grades.
  """

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

  def to_dict(self) -> dict[str, Any]:
    return {"task": self.task, "example_id": self.example_id,
            "question": self.question, "gold": self.gold,
            "sample_index": int(self.sample_index), "prompt": self.prompt,
            "instruction": self.instruction, "y1": self.y1.to_dict(),
            "y2": self.y2.to_dict(), "answer1": self.answer1,
            "answer2": self.answer2,
            "verdict1": _verdict_to_dict(self.verdict1),
            "verdict2": _verdict_to_dict(self.verdict2),
            "reward1": self.reward1, "reward2": self.reward2}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "TwoAttemptEpisode":
    _require(d, ("task", "example_id", "prompt", "instruction", "y1", "y2"),
             "TwoAttemptEpisode")
    return cls(task=str(d["task"]), example_id=str(d["example_id"]),
               question=str(d.get("question", "")),
               gold=str(d.get("gold", "")),
               sample_index=int(d.get("sample_index", 0)),
               prompt=str(d["prompt"]), instruction=str(d["instruction"]),
               y1=ModelTurn.from_dict(d["y1"]),
               y2=ModelTurn.from_dict(d["y2"]),
               answer1=d.get("answer1"), answer2=d.get("answer2"),
               verdict1=_verdict_from_dict(d.get("verdict1")),
               verdict2=_verdict_from_dict(d.get("verdict2")))


@dataclasses.dataclass
class ReflectionEpisode:
  """An R3 episode: a failed first attempt, a reflection, and a retry.

  The chat is [user: prompt, model: first.text, user: instruction,
  model: reflection.text, user: retry_instruction, model: retry.text]. For
  GRPO, the episodes sharing `group_index` form one group (the
  `group_size` reflections on one failed attempt); only
  `reflection.tokens` carry the advantage: the trainer's sequence is
  `reflection.context_ids + reflection.tokens` with every context id masked.

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

  def to_dict(self) -> dict[str, Any]:
    return {"task": self.task, "example_id": self.example_id,
            "question": self.question, "gold": self.gold,
            "group_index": int(self.group_index),
            "reflection_index": int(self.reflection_index),
            "prompt": self.prompt, "instruction": self.instruction,
            "retry_instruction": self.retry_instruction,
            "first": self.first.to_dict(), "first_answer": self.first_answer,
            "first_verdict": _verdict_to_dict(self.first_verdict),
            "reflection": self.reflection.to_dict(),
            "retry": self.retry.to_dict(), "retry_answer": self.retry_answer,
            "retry_verdict": _verdict_to_dict(self.retry_verdict),
            "reward": self.reward}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "ReflectionEpisode":
    _require(d, ("task", "example_id", "prompt", "instruction",
                 "retry_instruction", "first", "reflection", "retry"),
             "ReflectionEpisode")
    return cls(task=str(d["task"]), example_id=str(d["example_id"]),
               question=str(d.get("question", "")),
               gold=str(d.get("gold", "")),
               group_index=int(d.get("group_index", 0)),
               reflection_index=int(d.get("reflection_index", 0)),
               prompt=str(d["prompt"]), instruction=str(d["instruction"]),
               retry_instruction=str(d["retry_instruction"]),
               first=ModelTurn.from_dict(d["first"]),
               first_answer=d.get("first_answer"),
               first_verdict=_verdict_from_dict(d.get("first_verdict")),
               reflection=ModelTurn.from_dict(d["reflection"]),
               retry=ModelTurn.from_dict(d["retry"]),
               retry_answer=d.get("retry_answer"),
               retry_verdict=_verdict_from_dict(d.get("retry_verdict")))


# ----------------------------------------------------------------------------
# JSONL files.


def save_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> str:
  """Writes one JSON object per line, atomically.

  The lines go to a temporary file in the same directory, which is fsynced
  and then renamed over `path`: readers see the old file or the whole new
  one, never a partial write.

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
