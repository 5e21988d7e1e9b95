"""Step judges for SWiRL: rules and generative models, one protocol.

Importing this package registers the built-in judges:

  rules   `RuleProcessJudge`: deterministic checks for calculator / search
          steps (no model needed).
  model   `ModelJudge`: SWiRL's judge prompt on any checkpoint through our
          Sampler.

Use `get_judge(name, **kwargs)` (gin: `swirl_jax.judges.get_judge.name`).
"""

from swirl_jax.judges.base import BAD
from swirl_jax.judges.base import GOOD
from swirl_jax.judges.base import LABELS
from swirl_jax.judges.base import Judge
from swirl_jax.judges.base import JudgeRequest
from swirl_jax.judges.base import JudgeResult
from swirl_jax.judges.base import get_judge
from swirl_jax.judges.base import get_judge_class
from swirl_jax.judges.base import judge_names
from swirl_jax.judges.base import register_judge
from swirl_jax.judges.model import INSTRUCTION
from swirl_jax.judges.model import ModelJudge
from swirl_jax.judges.model import build_prompt
from swirl_jax.judges.model import parse_verdict
from swirl_jax.judges.rules import DEFAULT_CONSTANTS
from swirl_jax.judges.rules import RuleProcessJudge
