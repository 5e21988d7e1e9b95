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

All of them are turn scripts over the engine's public steps
(`new_conversation`, `add_turn`, `generate_turns`, `grade`), so every
context is exactly what `run_two_attempts` would have built, with one
sampler call per turn.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from swirl_jax.rollout import trajectory as traj
from swirl_jax.rollout.engine import GradedTurn
from swirl_jax.tasks import base as task_base

SELF_REFINE_FEEDBACK_INSTRUCTION = (
    "Review your previous answer and find problems with your answer.")


def _seed(seed: int, *labels: Any) -> int:
  return task_base.seed_for(seed, "score-episodes", *labels) % (1 << 31)


def first_attempts(engine: Any, task: Any,
                   examples: Sequence[task_base.Example], num_samples: int,
                   seed: int = 0, sampler: Any = None
                   ) -> list[GradedTurn]:
  """`num_samples` graded first attempts per example, example-major
  (`RolloutEngine.first_attempts` with this module's seed)."""
  return engine.first_attempts(task, examples, num_samples,
                               seed=_seed(seed, "first"), sampler=sampler)


def two_attempts_from_first(
    engine: Any, task: Any,
    firsts: Sequence[GradedTurn],
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
  y2s = engine.generate_turns(convs, _seed(seed, "second"))
  answers2, verdicts2 = engine.grade(task, [f[0] for f in firsts],
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
  feedback = engine.generate_turns(convs, _seed(seed, "feedback"))
  for conv, fb in zip(convs, feedback):
    engine.add_turn(conv, traj.MODEL, fb.text)
    engine.add_turn(conv, traj.USER, instruction)
  y2s = engine.generate_turns(convs, _seed(seed, "refine"))
  answers2, verdicts2 = engine.grade(task, examples, [t.text for t in y2s])
  return [traj.TwoAttemptEpisode(
      task=task.name, example_id=ex.id, question=ex.question, gold=ex.answer,
      sample_index=0, prompt=conv.turns[0][1], instruction=instruction,
      y1=y1, y2=y2, answer1=a1, answer2=a2, verdict1=v1, verdict2=v2)
          for (ex, y1, a1, v1), conv, y2, a2, v2 in zip(
              firsts, convs, y2s, answers2, verdicts2)]
