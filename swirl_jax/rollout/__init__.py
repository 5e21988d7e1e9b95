"""Batched episode generation: SWiRL tool use, SCoRe two attempts, R3 retries.

* `RolloutEngine` (engine.py): `run` (multi-step tool-use trajectories)
  and `play` (an episode script, scripts.py: SCoRe's `run_two_attempts`,
  R3's `run_reflect_retry`, `first_attempts` and Self-Refine are scripts),
  all on one batched "sample the next model turn of these conversations"
  step (`generate_turns`) and one grading step (`grade`).
* `RLBatchBuilder` (batches.py): groups sampled by an episode script,
  rewards, advantages, training rows of token spans, reference and old
  log-probs; the recipes' builders subclass it.
* `parse_action` / `malformed_feedback` (actions.py): the action format.
* `Trajectory`, `Step`, `ModelTurn`, `TwoAttemptEpisode`,
  `ReflectionEpisode`, `save_jsonl`, `load_jsonl` (trajectory.py).
"""

from swirl_jax.rollout.actions import (
    ANSWER,
    MALFORMED,
    NOT_BOTH,
    TOOL,
    ParsedAction,
    malformed_feedback,
    parse_action,
    strip_end_of_turn,
)
from swirl_jax.rollout import scripts
from swirl_jax.rollout.engine import (Conversation, GradedTurn, RolloutEngine,
                                      RolloutStats)
from swirl_jax.rollout.trajectory import (
    FINISH_ANSWER,
    FINISH_CONTEXT_LIMIT,
    FINISH_MALFORMED_LIMIT,
    FINISH_REASONS,
    FINISH_STEP_LIMIT,
    ModelTurn,
    ReflectionEpisode,
    Step,
    Trajectory,
    TwoAttemptEpisode,
    load_jsonl,
    save_jsonl,
)
