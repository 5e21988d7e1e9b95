"""Task families: loaders for the real formats, generators and verifiers.

Importing this package registers every family with the task registry:

  gsm8k, hotpotqa, math, code, humaneval, mbpp, countdown, function_calling,
  math_small and code_small (small.py: problems a tiny CPU model learns),
  and 'rg/<dataset>' for any reasoning-gym dataset. compact.py has compact
  prompts and a fast Countdown generator for the R3 tasks.

Use `get_task(name, **kwargs)` to build one (see `base.Task` for the API).
"""

from swirl_jax.tasks import base
from swirl_jax.tasks import prompts
from swirl_jax.tasks import gsm8k
from swirl_jax.tasks import math
from swirl_jax.tasks import reasoning_gym_task
from swirl_jax.tasks import countdown
from swirl_jax.tasks import code
from swirl_jax.tasks import hotpotqa
from swirl_jax.tasks import function_calling
from swirl_jax.tasks import small

DataFormatError = base.DataFormatError
Example = base.Example
Task = base.Task
Verdict = base.Verdict
get_task = base.get_task
register_task = base.register_task
task_names = base.task_names
SPLITS = base.SPLITS
