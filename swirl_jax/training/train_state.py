"""The train state: params, optimizer state, step and RNG, as one pytree."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import optax


@flax.struct.dataclass
class TrainState:
  """Everything a training run needs to continue bit-for-bit.

  Attributes:
    step: int32 scalar, number of optimizer updates applied.
    params: model parameters (float32 master copy under mixed precision).
    opt_state: optax state (same dtype as params).
    rng: PRNG key data (uint32 [2]) advanced once per step.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array

  @classmethod
  def create(cls, params: Any, tx: optax.GradientTransformation,
             rng: jax.Array) -> "TrainState":
    return cls(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
               opt_state=tx.init(params), rng=rng)
