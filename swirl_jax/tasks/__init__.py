"""Task families: loaders for the real formats, generators and verifiers.

Importing this package registers every family with the task registry:

  gsm8k, hotpotqa, math, code, humaneval, mbpp, countdown, function_calling,
  and 'rg/<dataset>' for any reasoning-gym dataset.

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

DataFormatError = base.DataFormatError
Example = base.Example
Task = base.Task
Verdict = base.Verdict
get_task = base.get_task
register_task = base.register_task
task_names = base.task_names
SPLITS = base.SPLITS
