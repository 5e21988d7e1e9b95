"""Batched episode generation: SWiRL tool use, SCoRe two attempts, R3 retries.

* `RolloutEngine` (engine.py): `run` (SWiRL's multi-step tool use) and
  `play` (an episode script, scripts.py: SCoRe's, R3's, Self-Refine's).
* `RLBatchBuilder` (batches.py): online RL batches from played episodes;
  the recipes' builders subclass it.
* `parse_action` / `malformed_feedback` (actions.py): the action format.
* The episode records and their JSONL files (trajectory.py).
"""

from swirl_jax.rollout.actions import (ANSWER, MALFORMED, NOT_BOTH, TOOL,
                                       ParsedAction, malformed_feedback,
                                       parse_action, strip_end_of_turn)
from swirl_jax.rollout import scripts
from swirl_jax.rollout.engine import (Conversation, GradedTurn, RolloutEngine,
                                      RolloutStats)
from swirl_jax.rollout.trajectory import (
    FINISH_ANSWER, FINISH_CONTEXT_LIMIT, FINISH_MALFORMED_LIMIT,
    FINISH_REASONS, FINISH_STEP_LIMIT, ModelTurn, ReflectionEpisode, Step,
    Trajectory, TwoAttemptEpisode, load_jsonl, save_jsonl)
