"""Registers every gin configurable of swirl_jax (imported by `main`).

Importing a module registers the functions it decorates with
`@gin.configurable`; external functions are registered here under stable
names used by gin_configs/.
"""

from typing import Any, Callable

import gin

from swirl_jax import judges, models, sharding  # noqa: F401
from swirl_jax.bases import train as bases_train  # noqa: F401
from swirl_jax.data import demonstrations, sources, trajectories  # noqa: F401
from swirl_jax.evaluation import base_accuracy  # noqa: F401
from swirl_jax.objectives import grpo, score, sft, stepwise_pg  # noqa: F401
from swirl_jax.r3 import experiment as r3_experiment  # noqa: F401
from swirl_jax.score import experiment as score_experiment  # noqa: F401
from swirl_jax.swirl import experiment as swirl_experiment  # noqa: F401
from swirl_jax.training import optimizer, trainer  # noqa: F401

gin.external_configurable(models.get_config, "swirl_jax.models.preset_config")


@gin.configurable("run", module="swirl_jax")
def run(workdir: str, job: Callable[[str], Any] = gin.REQUIRED) -> Any:
  """The experiment's entry: runs its job function in `workdir`."""
  return job(workdir)
