"""Two-attempt episodes beyond `RolloutEngine.run_two_attempts`.

`RolloutEngine.run_two_attempts` samples both attempts of an episode with
one policy. SCoRe and its baselines also need

* `two_attempts_from_first`: second attempts of the current policy after
  first attempts sampled by another one (SCoRe's option of using the base
  model's first attempts as extra prompts for the second attempt);
* `first_attempts`: single attempts only (the single-turn training ablation,
  parallel samples for inference-time scaling);
* `self_refine_episodes`: the Self-Refine prompting baseline: y1, then the
  model's own feedback on y1, then the correction instruction and y2.

All of them build chats with the engine's public conversation API
(`new_conversation`, `add_turn`, `prompt_ids`), so every context is exactly
what `run_two_attempts` would have built, and sample with one sampler call
per turn (`sample_turns`, the same call `run_two_attempts` makes).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from swirl_jax import tokenizer as tokenizer_lib
from swirl_jax.rollout import trajectory as traj
from swirl_jax.tasks import base as task_base

SELF_REFINE_FEEDBACK_INSTRUCTION = (
    "Review your previous answer and find problems with your answer.")


def sample_turns(engine: Any, convs: Sequence[Any], seed: int,
                 sampler: Any = None) -> list[traj.ModelTurn]:
  """The next model turn of every conversation, in one sampler call.

  Each row's budget is min(engine.max_new_tokens, engine.max_context_tokens
  - context length); a row without room gets an empty 'context_limit' turn.

  Args:
    engine: a `RolloutEngine` (tokenizer, sampling settings, limits).
    convs: conversations ending with a user turn (not modified).
    seed: the sampler seed of this call.
    sampler: the sampler to use (default `engine.sampler`).
  Returns:
    list[ModelTurn], one per conversation.
  """
  sampler = sampler or engine.sampler
  tokenizer = engine.tokenizer
  prompts = [engine.prompt_ids(c) for c in convs]
  budgets = [min(engine.max_new_tokens, engine.max_context_tokens - len(p))
             for p in prompts]
  out: list[Optional[traj.ModelTurn]] = [None] * len(convs)
  live = [i for i, b in enumerate(budgets) if b >= 1]
  for i, b in enumerate(budgets):
    if b < 1:
      out[i] = traj.ModelTurn("", [], [], prompts[i], traj.TURN_CONTEXT_LIMIT)
  if live:
    stops = tokenizer_lib.stop_ids(tokenizer)
    result = sampler.generate(
        [prompts[i] for i in live], max_new_tokens=[budgets[i] for i in live],
        temperature=engine.temperature, top_k=engine.top_k,
        top_p=engine.top_p, stop_tokens=stops, seed=seed)
    for j, i in enumerate(live):
      tokens = [int(t) for t in result.tokens[j]]
      done = bool(result.done[j])
      ended = done and bool(tokens) and tokens[-1] in stops
      out[i] = traj.ModelTurn(
          text=tokenizer.decode(tokens[:-1] if ended else tokens),
          tokens=tokens, logprobs=[float(x) for x in result.logprobs[j]],
          context_ids=prompts[i],
          finish=traj.TURN_STOP if done else traj.TURN_LENGTH)
  return out  # type: ignore[return-value]


def _seed(seed: int, *labels: Any) -> int:
  return task_base.seed_for(seed, "score-episodes", *labels) % (1 << 31)


def _parse(task, text: str) -> Optional[str]:
  try:
    return task.parse_answer(text)
  except Exception:  # pylint: disable=broad-except
    return None


def grade(task: Any, examples: Sequence[task_base.Example],
          texts: Sequence[str]) -> tuple[list[Optional[str]],
                                         list[task_base.Verdict]]:
  """(answers, verdicts) of response texts (verify_batch: parallel code)."""
  answers = [_parse(task, t) for t in texts]
  verdicts = task.verify_batch(list(examples), answers)
  return answers, verdicts


def first_attempts(engine: Any, task: Any,
                   examples: Sequence[task_base.Example], num_samples: int,
                   seed: int = 0, sampler: Any = None
                   ) -> list[tuple[task_base.Example, traj.ModelTurn,
                                   Optional[str], task_base.Verdict]]:
  """`num_samples` graded first attempts per example, example-major.

  Returns:
    list of (example, turn, answer, verdict).
  """
  rows = [ex for ex in examples for _ in range(int(num_samples))]
  convs = []
  for ex in rows:
    conv = engine.new_conversation()
    engine.add_turn(conv, traj.USER, task.prompt(ex))
    convs.append(conv)
  turns = sample_turns(engine, convs, _seed(seed, "first"), sampler)
  answers, verdicts = grade(task, rows, [t.text for t in turns])
  return list(zip(rows, turns, answers, verdicts))


def two_attempts_from_first(
    engine: Any, task: Any,
    firsts: Sequence[tuple[task_base.Example, traj.ModelTurn, Optional[str],
                           task_base.Verdict]],
    seed: int = 0, instruction: Optional[str] = None,
    sample_offset: int = 0) -> list[traj.TwoAttemptEpisode]:
  """Second attempts (sampled by `engine`) after given first attempts.

  Args:
    engine: samples y2 (its sampler holds the current policy).
    task: the task.
    firsts: (example, y1, answer1, verdict1), e.g. from `first_attempts`
      with the base model's sampler.
    seed: sampling seed.
    instruction: the correction instruction (default the task's).
    sample_offset: added to the episodes' sample_index.
  Returns:
    list[TwoAttemptEpisode], in the order of `firsts`.
  """
  instruction = instruction or task.correction_instruction
  if not instruction:
    raise ValueError(f"Task {task.name!r} has no correction_instruction.")
  convs = []
  for ex, y1, _, _ in firsts:
    conv = engine.new_conversation()
    engine.add_turn(conv, traj.USER, task.prompt(ex))
    engine.add_turn(conv, traj.MODEL, y1.text)
    engine.add_turn(conv, traj.USER, instruction)
    convs.append(conv)
  y2s = sample_turns(engine, convs, _seed(seed, "second"))
  answers2, verdicts2 = grade(task, [f[0] for f in firsts],
                              [t.text for t in y2s])
  out = []
  for i, ((ex, y1, a1, v1), conv, y2, a2, v2) in enumerate(
      zip(firsts, convs, y2s, answers2, verdicts2)):
    out.append(traj.TwoAttemptEpisode(
        task=task.name, example_id=ex.id, question=ex.question,
        gold=ex.answer, sample_index=sample_offset + i,
        prompt=conv.turns[0][1], instruction=instruction, y1=y1, y2=y2,
        answer1=a1, answer2=a2, verdict1=v1, verdict2=v2))
  return out


def self_refine_episodes(engine: Any, task: Any,
                         examples: Sequence[task_base.Example],
                         seed: int = 0,
                         feedback_instruction: str =
                         SELF_REFINE_FEEDBACK_INSTRUCTION,
                         instruction: Optional[str] = None
                         ) -> list[traj.TwoAttemptEpisode]:
  """Self-Refine prompting: y1, self-feedback, then correction -> y2.

  The chat is [user: x, model: y1, user: feedback_instruction,
  model: feedback, user: correction instruction, model: y2]. The returned
  episodes hold y1 and y2 (y2.context_ids include the feedback turn).
  """
  instruction = instruction or task.correction_instruction
  firsts = first_attempts(engine, task, examples, 1, seed=seed)
  convs = []
  for ex, y1, _, _ in firsts:
    conv = engine.new_conversation()
    engine.add_turn(conv, traj.USER, task.prompt(ex))
    engine.add_turn(conv, traj.MODEL, y1.text)
    engine.add_turn(conv, traj.USER, feedback_instruction)
    convs.append(conv)
  feedback = sample_turns(engine, convs, _seed(seed, "feedback"))
  for conv, fb in zip(convs, feedback):
    engine.add_turn(conv, traj.MODEL, fb.text)
    engine.add_turn(conv, traj.USER, instruction)
  y2s = sample_turns(engine, convs, _seed(seed, "refine"))
  answers2, verdicts2 = grade(task, examples, [t.text for t in y2s])
  return [traj.TwoAttemptEpisode(
      task=task.name, example_id=ex.id, question=ex.question, gold=ex.answer,
      sample_index=0, prompt=conv.turns[0][1], instruction=instruction,
      y1=y1, y2=y2, answer1=a1, answer2=a2, verdict1=v1, verdict2=v2)
          for (ex, y1, a1, v1), conv, y2, a2, v2 in zip(
              firsts, convs, y2s, answers2, verdicts2)]
