"""Two-attempt episodes beyond `RolloutEngine.run_two_attempts` (which
samples both attempts with one policy), for SCoRe and its baselines.

Each is an episode script (`swirl_jax.rollout.scripts`) played by the
engine, so every context is exactly what `run_two_attempts` would have
built, with one sampler call per turn.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from swirl_jax.rollout import scripts
from swirl_jax.rollout import trajectory as traj
from swirl_jax.rollout.engine import GradedTurn, two_attempt_episode
from swirl_jax.tasks import base as task_base

SELF_REFINE_FEEDBACK_INSTRUCTION = (
    "Review your previous answer and find problems with your answer.")
SEED_LABEL = "score-episodes"


def first_attempts(engine: Any, task: Any,
                   examples: Sequence[task_base.Example], num_samples: int,
                   seed: int = 0, sampler: Any = None
                   ) -> list[GradedTurn]:
  """`num_samples` graded first attempts per example, example-major
  (`RolloutEngine.first_attempts` with this module's seed): the single-turn
  ablation, or first attempts of another sampler (the base model)."""
  return engine.first_attempts(
      task, examples, num_samples,
      seed=scripts.seed_of(seed, (SEED_LABEL, "first")), sampler=sampler)


def _instruction(task: Any, instruction: Optional[str]) -> str:
  instruction = instruction or task.correction_instruction
  if not instruction:
    raise ValueError(f"Task {task.name!r} has no correction_instruction.")
  return instruction


def two_attempts_from_first(
    engine: Any, task: Any,
    firsts: Sequence[GradedTurn],
    seed: int = 0, instruction: Optional[str] = None,
    sample_offset: int = 0) -> list[traj.TwoAttemptEpisode]:
  """Second attempts (sampled by `engine`) after given first attempts, e.g.
  the base model's (SCoRe's extra prompts for the second attempt).

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
  instruction = _instruction(task, instruction)
  rows = engine.play(
      task, [f.example for f in firsts],
      scripts.second_attempt(instruction, (SEED_LABEL, "second")), seed,
      given={"y1": list(firsts)})
  return [two_attempt_episode(task, row, instruction, sample_offset + i)
          for i, row in enumerate(rows)]


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
  instruction = _instruction(task, instruction)
  rows = engine.play(task, examples, scripts.self_refine(
      feedback_instruction, instruction,
      [(SEED_LABEL, label) for label in ("first", "feedback", "refine")]),
                     seed)
  return [two_attempt_episode(task, row, instruction, 0) for row in rows]
