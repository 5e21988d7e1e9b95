"""The batched rollout engine: SWiRL's tool-use loop and episode scripts.

`RolloutEngine.run` generates SWiRL's multi-step tool-use episodes; `play`
runs an episode script (`swirl_jax.rollout.scripts`), and
`run_two_attempts` (SCoRe), `run_reflect_retry` (R3) and `first_attempts`
play the recipes' scripts.

Every model turn comes from `generate_turns`, one sampler call for a batch
of conversations. A conversation keeps the ids of its chat; a new turn is
encoded on its own (`encode(format_turn(role, text))`) and appended, which
equals `tokenizer.encode_chat(turns)` because turn markers are atomic
pieces of the tokenizer. A model turn enters the context as the encoding
of its decoded text, so every context is what a trainer rebuilding the chat
from its text gets; the sampled ids (`Step.action_tokens`,
`ModelTurn.tokens`) can differ from that encoding when the model samples a
non-canonical segmentation.

Model output is untrusted: it is parsed with regular expressions, never
evaluated; tools sandbox what they run.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import time
from typing import (Any, Callable, Iterable, Mapping, NamedTuple, Optional,
                    Sequence, Union)

import tqdm

from swirl_jax import tokenizer as tokenizer_lib
from swirl_jax.rollout import actions
from swirl_jax.rollout import scripts
from swirl_jax.rollout import trajectory as traj
from swirl_jax.tasks import base as task_base
from swirl_jax.tasks import prompts
from swirl_jax.tools import base as tool_base

log = logging.getLogger(__name__)

VERIFIER_ERROR = "verifier_error"
_PENDING = object()  # A host job's result slot not filled yet.

ToolsLike = Union[Mapping[str, tool_base.Tool], Sequence[tool_base.Tool]]


@dataclasses.dataclass
class RolloutStats:
  """Counts and wall-clock seconds of one engine call (`engine.last_stats`).

  Attributes:
    num_trajectories: episodes returned.
    num_sampler_calls: calls to `sampler.generate`.
    num_model_turns: model turns sampled (rows summed over calls).
    num_tool_calls: tool executions.
    generated_tokens: sampled ids, stop tokens included.
    total_s: the whole call (`time.perf_counter`).
    sampler_s: inside `sampler.generate`.
    tools_s: running tool calls (waiting on the thread pool).
    verify_s: verifying answers (waiting on the thread pool).
    extra: method-specific counts (e.g. R3's first-attempt accuracy).
  """

  num_trajectories: int = 0
  num_sampler_calls: int = 0
  num_model_turns: int = 0
  num_tool_calls: int = 0
  generated_tokens: int = 0
  total_s: float = 0.0
  sampler_s: float = 0.0
  tools_s: float = 0.0
  verify_s: float = 0.0
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def glue_s(self) -> float:
    """The rest of total_s (encoding, decoding, parsing, bookkeeping)."""
    return self.total_s - self.sampler_s - self.tools_s - self.verify_s

  @property
  def trajectories_per_s(self) -> float:
    return self.num_trajectories / self.total_s if self.total_s > 0 else 0.0

  @property
  def tokens_per_s(self) -> float:
    """Generated tokens per second of the whole call."""
    return self.generated_tokens / self.total_s if self.total_s > 0 else 0.0

  def shares(self) -> dict[str, float]:
    """Fractions of total_s in 'sampler', 'tools', 'verify' and 'glue'."""
    total = self.total_s or 1.0
    return {"sampler": self.sampler_s / total, "tools": self.tools_s / total,
            "verify": self.verify_s / total, "glue": self.glue_s / total}

  def summary(self) -> str:
    """One line: rates and the time shares."""
    s = self.shares()
    return (f"{self.num_trajectories} episodes in {self.total_s:.2f}s: "
            f"{self.trajectories_per_s:.2f} episodes/s, "
            f"{self.tokens_per_s:.1f} generated tokens/s; time: sampler "
            f"{s['sampler']:.1%}, tools {s['tools']:.1%}, verify "
            f"{s['verify']:.1%}, glue {s['glue']:.1%}")


class Conversation:
  """A chat and its ids, grown turn by turn (`RolloutEngine.add_turn`).

  Attributes:
    turns: list of (role, text).
    ids: list[int], always `tokenizer.encode_chat(turns, False)`.
  """

  __slots__ = ("turns", "ids")

  def __init__(self, turns: list[traj.Turn], ids: list[int]):
    self.turns = turns
    self.ids = ids

  def copy(self) -> "Conversation":
    return Conversation(list(self.turns), list(self.ids))


class GradedTurn(NamedTuple):
  """One sampled model turn and its grade (`RolloutEngine.first_attempts`)."""
  example: task_base.Example
  turn: traj.ModelTurn
  answer: Optional[str]
  verdict: task_base.Verdict


@dataclasses.dataclass
class _Row:
  """One multi-step episode in progress."""

  example: task_base.Example
  sample_index: int
  conv: Conversation
  steps: list[traj.Step] = dataclasses.field(default_factory=list)
  answer_text: Optional[str] = None
  answer_content: Optional[str] = None
  finish: Optional[str] = None
  malformed_run: int = 0


def _at_least_one(name: str, value: Any) -> int:
  if int(value) < 1:
    raise ValueError(f"{name} must be >= 1, got {value}.")
  return int(value)


def _as_tool_map(tools: Optional[ToolsLike]) -> dict[str, tool_base.Tool]:
  """Tools by tag, checked: every value has `run` and its own tag as key."""
  if tools is None:
    return {}
  if isinstance(tools, Mapping):
    items = list(tools.items())
  else:
    items = [(getattr(t, "tag", None), t) for t in tools]
  out = {}
  for tag, tool in items:
    if not callable(getattr(tool, "run", None)):
      raise TypeError(f"Tool for tag {tag!r} must be a swirl_jax Tool (with "
                      f"run()), got {type(tool).__name__}.")
    tool_tag = getattr(tool, "tag", None)
    if tool_tag != tag:
      raise ValueError(f"Tool {tool!r} has tag {tool_tag!r} but was given "
                       f"under the key {tag!r}; key tools by their tag.")
    if tag in out:
      raise ValueError(f"Two tools were given for the tag {tag!r}.")
    out[tag] = tool
  return out


class RolloutEngine:
  """Batched episode generation for SWiRL, SCoRe and R3.

      engine = RolloutEngine(sampler, tokenizer,
                             {"math_exp": get_tool("calculator")})
      trajs = engine.run(get_task("gsm8k"), examples, num_samples=5)
      print(engine.last_stats.summary())

  Args:
    sampler: object with `generate(prompts, max_new_tokens, temperature=,
      top_k=, top_p=, stop_tokens=, seed=)` returning `.tokens`, `.logprobs`
      and `.done` (a `swirl_jax.sampling.Sampler`).
    tokenizer: `swirl_jax.tokenizer.Tokenizer` (encode, decode, bos_id,
      eos_id, end_of_turn_id).
    tools: tools by tag (e.g. {'math_exp': Calculator()}), or a sequence of
      tools (keyed by their `tag`).
    max_new_tokens: budget of one model turn.
    temperature / top_k / top_p: sampling parameters of every call.
    max_context_tokens: the longest context + new tokens a row may reach.
    tool_workers: threads running slow tool calls (see `INLINE_HOST_S`) and
      verifiers.
    progress: show a tqdm bar on stderr.
    max_malformed: end a multi-step row after this many malformed actions
      in a row ('malformed_limit'); None: only the step limit applies.
  """

  # Host jobs (tool calls, verifications) averaging less than this many
  # seconds per call run inline, not on the thread pool.
  INLINE_HOST_S = 1e-3

  def __init__(self, sampler: Any, tokenizer: Any,
               tools: Optional[ToolsLike] = None, *,
               max_new_tokens: int = 128, temperature: float = 1.0,
               top_k: Optional[int] = None, top_p: Optional[float] = None,
               max_context_tokens: int = 2048, tool_workers: int = 8,
               progress: bool = True, max_malformed: Optional[int] = None):
    if not callable(getattr(sampler, "generate", None)):
      raise TypeError(f"sampler must have a generate() method, got "
                      f"{type(sampler).__name__}.")
    self.max_new_tokens = _at_least_one("max_new_tokens", max_new_tokens)
    if int(max_context_tokens) <= self.max_new_tokens:
      raise ValueError(
          f"max_context_tokens={max_context_tokens} must exceed "
          f"max_new_tokens={max_new_tokens}: the prompt needs room too.")
    if temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {temperature}.")
    self.tool_workers = _at_least_one("tool_workers", tool_workers)
    if max_malformed is not None and int(max_malformed) < 1:
      raise ValueError(
          f"max_malformed must be None or >= 1, got {max_malformed}.")
    self.sampler = sampler
    self.tokenizer = tokenizer
    self.tools = _as_tool_map(tools)
    self.temperature = float(temperature)
    self.top_k = top_k
    self.top_p = top_p
    self.max_context_tokens = int(max_context_tokens)
    self.progress = bool(progress)
    self.max_malformed = None if max_malformed is None else int(max_malformed)
    self.last_stats = RolloutStats()
    self._stats = RolloutStats()
    self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
    self._host_cost: dict[str, float] = {}  # job key -> seconds per call
    self._bos = [int(tokenizer.bos_id)]
    self._generation_prompt = list(tokenizer.encode(
        tokenizer_lib.format_chat([], add_generation_prompt=True)))
    self._stop_ids = tokenizer_lib.stop_ids(tokenizer)

  # -- resources -------------------------------------------------------------

  def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
    if self._pool is None:
      self._pool = concurrent.futures.ThreadPoolExecutor(
          max_workers=self.tool_workers, thread_name_prefix="rollout-tools")
    return self._pool

  def close(self) -> None:
    """Shuts the tool thread pool down (a later call starts a new one)."""
    if self._pool is not None:
      self._pool.shutdown(wait=True)
      self._pool = None

  def __enter__(self) -> "RolloutEngine":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  # -- conversations ---------------------------------------------------------

  def new_conversation(self) -> Conversation:
    """An empty chat: ids = [BOS]."""
    return Conversation([], list(self._bos))

  def add_turn(self, conv: Conversation, role: str, text: str) -> None:
    """Appends a turn and its ids (`encode(format_turn(role, text))`)."""
    conv.turns.append((role, text))
    conv.ids.extend(self.tokenizer.encode(
        tokenizer_lib.format_turn(role, text)))

  def prompt_ids(self, conv: Conversation) -> list[int]:
    """The sampler prompt: the chat ids plus '<start_of_turn>model\\n'.

    Equals `tokenizer.encode_chat(conv.turns, add_generation_prompt=True)`.
    """
    return conv.ids + self._generation_prompt

  # -- the batched model step ------------------------------------------------

  def generate_turns(self, convs: Sequence[Conversation], seed: int,
                     temperature: Optional[float] = None,
                     sampler: Any = None,
                     group_size: int = 1,
                     shared_prefix: bool = False) -> list[traj.ModelTurn]:
    """Samples the next model turn of every conversation in ONE sampler call.

    Each row's budget is min(max_new_tokens, max_context_tokens - context
    length); a row with no room gets an empty turn with finish
    'context_limit' and is not sent to the sampler. The conversations are
    not modified.

    Args:
      convs: the conversations, each ending with a user turn.
      seed: the sampler seed of this call.
      temperature: this call's temperature (None: the engine's).
      sampler: this call's sampler (None: the engine's).
      group_size: the conversations come in consecutive groups of this
        many with the same context: the sampler prefills each context once
        for its group (`Sampler.generate(group_size=...)`). Ignored when
        some row has no room left.
      shared_prefix: with `group_size`, a group's conversations need only
        begin alike: their common prefix is prefilled once.

    Returns:
      list[ModelTurn], one per conversation, in order.

    Raises:
      ValueError: if `group_size` is < 1 or does not divide len(convs).
    """
    g = int(group_size)
    if g < 1 or len(convs) % g:
      raise ValueError(f"group_size={group_size} must be >= 1 and divide "
                       f"the number of conversations ({len(convs)}).")
    prompts_ = [self.prompt_ids(c) for c in convs]
    budgets = [min(self.max_new_tokens, self.max_context_tokens - len(p))
               for p in prompts_]
    out = [traj.ModelTurn("", [], [], p, traj.TURN_CONTEXT_LIMIT)
           if b < 1 else None for p, b in zip(prompts_, budgets)]
    live = [i for i, b in enumerate(budgets) if b >= 1]
    if live:
      grouped = ({"group_size": g} if g > 1 and len(live) == len(convs)
                 else {})
      if grouped and shared_prefix:
        grouped["shared_prefix"] = True
      start = time.perf_counter()
      result = (sampler or self.sampler).generate(
          [prompts_[i] for i in live],
          max_new_tokens=[budgets[i] for i in live],
          temperature=(self.temperature if temperature is None
                       else float(temperature)),
          top_k=self.top_k, top_p=self.top_p,
          stop_tokens=self._stop_ids, seed=seed, **grouped)
      self._stats.sampler_s += time.perf_counter() - start
      self._stats.num_sampler_calls += 1
      for j, i in enumerate(live):
        tokens = [int(t) for t in result.tokens[j]]
        done = bool(result.done[j])
        ended = done and bool(tokens) and tokens[-1] in self._stop_ids
        out[i] = traj.ModelTurn(
            text=self.tokenizer.decode(tokens[:-1] if ended else tokens),
            tokens=tokens, logprobs=[float(x) for x in result.logprobs[j]],
            context_ids=prompts_[i],
            finish=traj.TURN_STOP if done else traj.TURN_LENGTH)
        self._stats.num_model_turns += 1
        self._stats.generated_tokens += len(tokens)
    return out  # type: ignore[return-value]

  # -- host work (tools, verifiers) ------------------------------------------

  def _timed(self, key: str, fn: Callable[[], Any]) -> Any:
    """`fn()`, folding its duration into the running cost of `key`."""
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    old = self._host_cost.get(key)
    self._host_cost[key] = seconds if old is None else 0.8 * old + 0.2 * seconds
    return result

  def _host_map(self, jobs: Sequence[tuple[str, Callable[[], Any]]]
                ) -> list[Any]:
    """Runs host jobs (cost key, thunk); returns their results in order.

    Jobs whose key averages at least `INLINE_HOST_S` per call (search,
    sandboxed code) run concurrently on the thread pool; cheap pure-Python
    ones run inline meanwhile, where threads would only add hand-off and GIL
    contention. The first job of an unseen key runs inline to measure it.
    """
    results: list[Any] = [_PENDING] * len(jobs)
    for i, (key, fn) in enumerate(jobs):
      if key not in self._host_cost:
        results[i] = self._timed(key, fn)
    rest = [i for i, r in enumerate(results) if r is _PENDING]
    pooled = []
    if self.tool_workers > 1 and len(rest) > 1:
      pooled = [i for i in rest
                if self._host_cost[jobs[i][0]] >= self.INLINE_HOST_S]
    futures = {i: self._executor().submit(self._timed, *jobs[i])
               for i in pooled}
    for i in rest:
      if i not in futures:
        results[i] = self._timed(*jobs[i])
    for i, future in futures.items():
      results[i] = future.result()
    return results

  def _run_tools(self, calls: Sequence[actions.ParsedAction]) -> list[str]:
    """Runs one step's tool calls; returns the result texts."""
    if not calls:
      return []
    start = time.perf_counter()
    results = self._host_map(
        [(f"tool/{c.tag}", functools.partial(self.tools[c.tag].run, c.content))
         for c in calls])
    self._stats.tools_s += time.perf_counter() - start
    self._stats.num_tool_calls += len(calls)
    return results

  @staticmethod
  def _safe_parse(task: task_base.Task, text: str) -> Optional[str]:
    try:
      return task.parse_answer(text)
    except Exception as e:  # pylint: disable=broad-except
      log.warning("%s.parse_answer raised %s: %s", task.name,
                  type(e).__name__, e)
      return None

  @staticmethod
  def _safe_verify(task: task_base.Task, example: task_base.Example,
                   answer: Optional[str]) -> task_base.Verdict:
    try:
      return task.verify(example, answer)
    except Exception as e:  # pylint: disable=broad-except
      log.warning("%s.verify raised on example %s: %s: %s", task.name,
                  example.id, type(e).__name__, e)
      return task_base.Verdict(False, VERIFIER_ERROR,
                               f"verifier raised {type(e).__name__}: {e}")

  def _verify(self, task: task_base.Task,
              pairs: Sequence[tuple[task_base.Example, Optional[str]]]
              ) -> list[task_base.Verdict]:
    """Grades (example, answer) pairs one by one (slow ones on the pool)."""
    if not pairs:
      return []
    start = time.perf_counter()
    key = f"verify/{task.name}"
    verdicts = self._host_map(
        [(key, functools.partial(self._safe_verify, task, ex, answer))
         for ex, answer in pairs])
    self._stats.verify_s += time.perf_counter() - start
    return verdicts

  def grade(self, task: task_base.Task,
            examples: Sequence[task_base.Example], texts: Sequence[str]
            ) -> tuple[list[Optional[str]], list[task_base.Verdict]]:
    """(answers, verdicts) of response texts, one per example.

    One `task.verify_batch` call (the code task runs its programs in
    parallel sandboxes); a parser or verifier that raises gives no answer /
    a wrong 'verifier_error' verdict (logged), never a crashed run.
    """
    examples = list(examples)
    answers = [self._safe_parse(task, t) for t in texts]
    start = time.perf_counter()
    try:
      verdicts = list(task.verify_batch(examples, answers))
    except Exception as e:  # pylint: disable=broad-except
      log.warning("%s.verify_batch raised %s: %s; grading one by one.",
                  task.name, type(e).__name__, e)
      return answers, self._verify(task, list(zip(examples, answers)))
    self._stats.verify_s += time.perf_counter() - start
    return answers, verdicts

  # -- bookkeeping -----------------------------------------------------------

  def _task_tool_tags(self, task: task_base.Task) -> tuple[str, ...]:
    """The task's tool tags, each checked to have a tool in this engine."""
    tags = actions.check_tool_tags(tuple(task.tools))
    missing = [t for t in tags if t not in self.tools]
    if missing:
      raise ValueError(
          f"Task {task.name!r} uses the tool tag {missing[0]!r} but the engine "
          f"has no tool for it (tools given for tags: "
          f"{sorted(self.tools) or 'none'}). Pass e.g. tools={{"
          f"{missing[0]!r}: get_tool(...)}} to RolloutEngine.")
    return tags

  def _start(self) -> float:
    self._stats = RolloutStats()
    return time.perf_counter()

  def _finish(self, start: float, num: int) -> None:
    self._stats.total_s = time.perf_counter() - start
    self._stats.num_trajectories = num
    self.last_stats = self._stats

  def _bar(self, total: int, desc: str):
    return tqdm.tqdm(total=total, desc=desc, unit="step",
                     disable=not self.progress, leave=False)

  @staticmethod
  def _check_examples(examples: Iterable[task_base.Example]
                      ) -> list[task_base.Example]:
    examples = list(examples)
    for i, ex in enumerate(examples):
      if not isinstance(ex, task_base.Example):
        raise TypeError(f"examples[{i}] must be a swirl_jax.tasks.Example, "
                        f"got {type(ex).__name__}.")
    return examples

  def _prompted(self, task: task_base.Task, example: task_base.Example
                ) -> Conversation:
    conv = self.new_conversation()
    self.add_turn(conv, traj.USER, task.prompt(example))
    return conv

  # -- SWiRL: multi-step tool use --------------------------------------------

  def run(self, task: task_base.Task, examples: Iterable[task_base.Example],
          num_samples: int = 1, max_steps: Optional[int] = None,
          seed: int = 0) -> list[traj.Trajectory]:
    """Generates multi-step tool-use episodes for every example.

    Every row (example x sample) starts from the task prompt. Each step
    makes one sampler call for the rows still running, parses every action
    (`actions.parse_action`), runs the tool calls (slow ones concurrently on
    the thread pool) and answers each row with a user turn (`QUERY ->
    RESULT`, or the feedback to a malformed action). A row ends at an
    answer, at the step limit, when its context would no longer fit, or
    after `max_malformed` malformed actions in a row. Answers are verified
    at the end.

    Args:
      task: the task (prompt, tool tags, answer parser, verifier).
      examples: the examples; each gets `num_samples` episodes.
      num_samples: episodes per example.
      max_steps: queries allowed before the answer (None:
        `task.max_steps`): an episode has at most max_steps + 1 actions,
        malformed ones included, the last of which must answer.
      seed: randomness of the whole call (step i's sampler call gets a seed
        derived from (seed, i)).

    Returns:
      list[Trajectory] of len(examples) * num_samples, example-major,
      verified.

    Raises:
      ValueError: a task tool tag has no tool, or a bad count.
    """
    examples = self._check_examples(examples)
    num_samples = _at_least_one("num_samples", num_samples)
    max_steps = _at_least_one(
        "max_steps", task.max_steps if max_steps is None else int(max_steps))
    tool_tags = self._task_tool_tags(task)
    start = self._start()

    rows = [_Row(ex, s, self._prompted(task, ex))
            for ex in examples for s in range(num_samples)]
    active = list(rows)
    room_needed = len(self._generation_prompt) + self.max_new_tokens
    with self._bar(max_steps + 1, f"rollout {task.name}") as bar:
      for step in range(max_steps + 1):
        for row in active:
          if len(row.conv.ids) + room_needed > self.max_context_tokens:
            row.finish = traj.FINISH_CONTEXT_LIMIT
        active = [r for r in active if r.finish is None]
        if not active:
          break
        turns = self.generate_turns(
            [r.conv for r in active],
            scripts.seed_of(seed, scripts.rollout_seed(step)))
        parsed = [actions.parse_action(t.text, tool_tags) for t in turns]
        calls = [i for i, p in enumerate(parsed) if p.is_tool]
        results = dict(zip(calls, self._run_tools([parsed[i] for i in calls])))
        for i, (row, turn, action) in enumerate(zip(active, turns, parsed)):
          record = traj.Step(
              index=step, action=turn.text, action_tokens=turn.tokens,
              action_logprobs=turn.logprobs,
              context_tokens=len(turn.context_ids),
              truncated=turn.finish == traj.TURN_LENGTH)
          row.steps.append(record)
          self.add_turn(row.conv, traj.MODEL, turn.text)
          if action.is_answer:
            row.answer_text, row.answer_content = turn.text, action.content
            row.finish = traj.FINISH_ANSWER
          elif action.is_tool:
            record.tool, record.tool_input = action.tag, action.content
            record.tool_result = results[i]
            self.add_turn(row.conv, traj.USER,
                          tool_base.format_result(action.content, results[i]))
            row.malformed_run = 0
          else:
            record.malformed = action.reason
            self.add_turn(row.conv, traj.USER,
                          actions.malformed_feedback(action.reason, tool_tags))
            row.malformed_run += 1
            if (self.max_malformed is not None and
                row.malformed_run >= self.max_malformed):
              row.finish = traj.FINISH_MALFORMED_LIMIT
        active = [r for r in active if r.finish is None]
        bar.update(1)
        bar.set_postfix(active=len(active))
    for row in active:
      row.finish = traj.FINISH_STEP_LIMIT

    answers = []
    for row in rows:
      parsed_answer = (None if row.answer_text is None
                       else self._safe_parse(task, row.answer_text))
      answers.append(row.answer_content if parsed_answer is None
                     else parsed_answer)
    verdicts = self._verify(task, [(r.example, a)
                                   for r, a in zip(rows, answers)])
    out = [traj.Trajectory(
        task=task.name, example_id=r.example.id, question=r.example.question,
        gold=r.example.answer, sample_index=r.sample_index,
        turns=r.conv.turns, steps=r.steps, final_answer=a, verdict=v,
        finish_reason=r.finish) for r, a, v in zip(rows, answers, verdicts)]
    self._stats.extra = {
        "finish_reasons": {k: sum(t.finish_reason == k for t in out)
                           for k in traj.FINISH_REASONS},
        "accuracy": (sum(t.correct for t in out) / len(out)) if out else 0.0}
    self._finish(start, len(out))
    return out

  # -- episode scripts -------------------------------------------------------

  def play(self, task: task_base.Task, examples: Iterable[task_base.Example],
           script: Sequence[scripts.Step], seed: int = 0,
           given: Optional[Mapping[str, Sequence[Any]]] = None,
           sampler: Any = None) -> list[scripts.ScriptRow]:
    """Plays an episode script (`swirl_jax.rollout.scripts`) on `examples`.

    Every step runs for all live rows at once: a `Sample` is one sampler
    call, a `Grade` one `grade` call. The rows start as one empty chat per
    example; a sampled or given model turn is appended to its row's chat.

    Args:
      task: the task (prompt, parser, verifier).
      examples: the examples, one row each at the start.
      script: the steps.
      seed: the call's seed; each `Sample`'s sampler seed derives from it.
      given: turn name -> one turn per example, for the `Given` steps.
      sampler: the sampler of every `Sample` (None: the engine's), e.g. the
        base model's for SCoRe's extra first attempts.

    Returns:
      The rows left at the end, in order (a Fork's copies consecutive);
      `last_stats` counts the call.
    """
    examples = self._check_examples(examples)
    script = scripts.check_script(script)
    given = dict(given or {})
    for step in script:
      if isinstance(step, scripts.Given):
        turns = given.get(step.name)
        if turns is None or len(turns) != len(examples):
          raise ValueError(
              f"The script's Given({step.name!r}) needs given[{step.name!r}]"
              f" with one turn per example ({len(examples)}), got "
              f"{'none' if turns is None else len(turns)}.")
    start = self._start()
    rows = [scripts.ScriptRow(ex, i, self.new_conversation())
            for i, ex in enumerate(examples)]
    group = 1  # the size of the last Fork's groups, while they are whole
    model_steps = sum(isinstance(s, (scripts.Sample, scripts.Given))
                      for s in script)
    with self._bar(model_steps, f"episodes {task.name}") as bar:
      for step in script:
        if isinstance(step, scripts.Fork):
          group = int(step.n)
          rows = [row.fork(p, b) for p, row in enumerate(rows)
                  for b in range(group)]
        elif isinstance(step, scripts.Say):
          for row in rows:
            self.add_turn(row.conv, traj.USER,
                          task.prompt(row.example)
                          if step.text is scripts.PROMPT else step.text)
        elif isinstance(step, (scripts.Sample, scripts.Given)):
          if isinstance(step, scripts.Sample):
            turns = self.generate_turns(
                [r.conv for r in rows], scripts.seed_of(seed, step.seed),
                step.temperature, sampler=sampler,
                group_size=group if step.group else 1,
                shared_prefix=step.shared_prefix) if rows else []
          else:
            turns = [self._given_turn(row, step.name,
                                      given[step.name][row.example_index])
                     for row in rows]
          for row, turn in zip(rows, turns):
            row.turns[step.name] = turn
            self.add_turn(row.conv, traj.MODEL, turn.text)
          bar.update(1)
        elif isinstance(step, scripts.Grade):
          pairs = [(row, name) for name in step.names for row in rows]
          if pairs:
            answers, verdicts = self.grade(
                task, [row.example for row, _ in pairs],
                [row.turns[name].text for row, name in pairs])
            for (row, name), answer, verdict in zip(pairs, answers,
                                                    verdicts):
              row.answers[name], row.verdicts[name] = answer, verdict
        else:  # KeepFailed
          if any(step.name not in row.verdicts for row in rows):
            raise ValueError(f"KeepFailed({step.name!r}): the turn has no "
                             "grade; put a Grade of it before.")
          rows = [row for row in rows if not row.verdicts[step.name].correct]
          group = 1
    self._finish(start, len(rows))
    return rows

  def _given_turn(self, row: scripts.ScriptRow, name: str,
                  item: Any) -> traj.ModelTurn:
    """A caller-supplied model turn on the row's context (a GradedTurn's
    grade is kept)."""
    if isinstance(item, GradedTurn):
      row.answers[name], row.verdicts[name] = item.answer, item.verdict
      return item.turn
    if isinstance(item, traj.ModelTurn):
      return item
    if not isinstance(item, str):
      raise TypeError(f"given[{name!r}][{row.example_index}] must be a str, "
                      f"a ModelTurn or a GradedTurn, got "
                      f"{type(item).__name__}.")
    return traj.ModelTurn(text=item, tokens=list(self.tokenizer.encode(item)),
                          logprobs=[], context_ids=self.prompt_ids(row.conv),
                          finish=traj.TURN_GIVEN)

  def first_attempts(self, task: task_base.Task,
                     examples: Iterable[task_base.Example],
                     num_samples: int = 1, seed: int = 0,
                     sampler: Any = None) -> list[GradedTurn]:
    """`num_samples` graded single attempts per example, example-major.

    Plays `scripts.single_attempt` in one sampler call with `seed` as given
    (R3's failure search and first attempts, SCoRe's single-turn episodes,
    base accuracies); `sampler` as in `play`.
    """
    num_samples = _at_least_one("num_samples", num_samples)
    rows = self.play(task, examples, scripts.single_attempt(num_samples),
                     seed, sampler=sampler)
    return [GradedTurn(r.example, r.turns["y"], r.answers["y"],
                       r.verdicts["y"]) for r in rows]

  def run_two_attempts(self, task: task_base.Task,
                       examples: Iterable[task_base.Example],
                       instruction: Optional[str] = None,
                       num_samples: int = 1,
                       seed: int = 0) -> list[traj.TwoAttemptEpisode]:
    """SCoRe episodes: y1 ~ pi(.|x), then y2 ~ pi(.|x, y1, instruction).

    Plays `scripts.two_attempts`: two sampler calls, no tools.

    Args:
      task: the task (prompt, parser, verifier).
      examples: the examples; each gets `num_samples` episodes.
      instruction: the self-correction instruction (None:
        `task.correction_instruction`).
      num_samples: episodes per example.
      seed: randomness (each attempt's sampler seed derives from (seed,
        attempt)).

    Returns:
      list[TwoAttemptEpisode], example-major, both attempts verified;
      `last_stats.extra` has the accuracies of both attempts.
    """
    num_samples = _at_least_one("num_samples", num_samples)
    instruction = instruction or task.correction_instruction
    if not instruction:
      raise ValueError(
          f"Task {task.name!r} has no correction_instruction; pass "
          "instruction= (e.g. prompts.MATH_CORRECTION_INSTRUCTION).")
    rows = self.play(task, examples,
                     scripts.two_attempts(instruction, num_samples), seed)
    out = [two_attempt_episode(task, row, instruction) for row in rows]
    n = len(out) or 1
    acc1, acc2 = (sum(e.reward1 for e in out) / n,
                  sum(e.reward2 for e in out) / n)
    self.last_stats.extra = {
        "accuracy_t1": acc1, "accuracy_t2": acc2, "delta": acc2 - acc1,
        "delta_i_to_c": sum(e.reward2 > e.reward1 for e in out) / n,
        "delta_c_to_i": sum(e.reward2 < e.reward1 for e in out) / n}
    return out

  def run_reflect_retry(
      self, task: task_base.Task, examples: Iterable[task_base.Example],
      reflection_instruction: Optional[str] = None, group_size: int = 1,
      seed: int = 0,
      first_attempts: Optional[Sequence[Union[str, traj.ModelTurn]]] = None,
      retry_instruction: str = prompts.RETRY_INSTRUCTION,
      retry_temperature: Optional[float] = None,
  ) -> list[traj.ReflectionEpisode]:
    """R3 episodes: for each failed first attempt, G reflections and retries.

    Plays `scripts.reflect_retry`: at most three sampler calls (first
    attempts unless given, reflections, retries), no tools.

    Args:
      task: the task (prompt, parser, verifier).
      examples: the examples (may repeat, e.g. one per stored failure).
      reflection_instruction: None: `task.reflection_instruction`.
      group_size: G, reflections sampled per failed first attempt.
      seed: randomness (first attempts, reflections and retries get sampler
        seeds derived from (seed, 0 / 1 / 2)).
      first_attempts: None to sample one first attempt per example, or one
        per example: its text (str) or a `ModelTurn`. Correct ones are
        skipped.
      retry_instruction: the user turn between the reflection and the retry.
      retry_temperature: the retries' temperature (None: the engine's).

    Returns:
      list[ReflectionEpisode]: G per failed first attempt, in example order,
      `group_index` numbering the failed attempts. `last_stats.extra` has
      the first-attempt and retry counts.
    """
    examples = self._check_examples(examples)
    group_size = _at_least_one("group_size", group_size)
    instruction = reflection_instruction or task.reflection_instruction
    if not instruction:
      raise ValueError(
          f"Task {task.name!r} has no reflection_instruction; pass "
          "reflection_instruction= (e.g. prompts.REFLECTION_INSTRUCTION).")
    if first_attempts is not None and len(first_attempts) != len(examples):
      raise ValueError(
          f"first_attempts has {len(first_attempts)} entries for "
          f"{len(examples)} examples; give one per example.")
    script = scripts.reflect_retry(
        instruction, group_size, given_first=first_attempts is not None,
        retry_instruction=retry_instruction,
        retry_temperature=retry_temperature)
    rows = self.play(task, examples, script, seed,
                     given={"first": first_attempts} if first_attempts
                     is not None else None)
    out = [traj.ReflectionEpisode(
        task=task.name, example_id=r.example.id, question=r.example.question,
        gold=r.example.answer, group_index=r.parent,
        reflection_index=r.branch, prompt=r.conv.turns[0][1],
        instruction=instruction, retry_instruction=retry_instruction,
        first=r.turns["first"], first_answer=r.answers["first"],
        first_verdict=r.verdicts["first"], reflection=r.turns["reflection"],
        retry=r.turns["retry"], retry_answer=r.answers["retry"],
        retry_verdict=r.verdicts["retry"]) for r in rows]
    n, failed = len(examples), len(out) // group_size
    correct = sum(e.reward for e in out)
    self.last_stats.extra = {
        "first_attempts": n, "first_attempts_correct": n - failed,
        "accuracy_t1": (n - failed) / n if n else 0.0,
        "retries": len(out), "retries_correct": correct,
        "retry_accuracy": correct / len(out) if out else 0.0}
    return out


def two_attempt_episode(task: task_base.Task, row: scripts.ScriptRow,
                        instruction: str, sample_index: Optional[int] = None
                        ) -> traj.TwoAttemptEpisode:
  """The TwoAttemptEpisode of a played row with graded turns 'y1', 'y2'."""
  ex = row.example
  return traj.TwoAttemptEpisode(
      task=task.name, example_id=ex.id, question=ex.question, gold=ex.answer,
      sample_index=row.branch if sample_index is None else sample_index,
      prompt=row.conv.turns[0][1], instruction=instruction,
      y1=row.turns["y1"], y2=row.turns["y2"], answer1=row.answers["y1"],
      answer2=row.answers["y2"], verdict1=row.verdicts["y1"],
      verdict2=row.verdicts["y2"])
