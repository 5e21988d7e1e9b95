"""The jit-compiled train step: objective, microbatch accumulation, update.

    step_fn = make_train_step(model, objective, tx, schedule, num_microbatches)
    state, metrics = step_fn(state, batch, ref_params)

`ref_params` is the frozen reference model (or None); when the objective
needs it and the batch does not carry them already, `batch['ref_logprobs']`
is filled in here, outside the gradient.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from swirl_jax.objectives.common import target_logprobs
from swirl_jax.objectives.registry import Objective
from swirl_jax.training.train_state import TrainState


def split_microbatches(batch: dict, num_microbatches: int) -> dict:
  """[B, ...] -> [M, B / M, ...] for every array of the batch."""
  def split(x):
    if x.shape[0] % num_microbatches:
      raise ValueError(f"Batch size {x.shape[0]} is not divisible by "
                       f"num_microbatches={num_microbatches}.")
    return x.reshape((num_microbatches, x.shape[0] // num_microbatches)
                     + x.shape[1:])
  return jax.tree.map(split, batch)


def _grads_and_metrics(loss_fn, params, batch, rng, num_microbatches):
  """Gradients of the objective, accumulated over microbatches.

  Microbatch gradients are weighted by metrics['weight'] when the objective
  reports one (e.g. #tokens), so the result equals the full-batch gradient.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if num_microbatches == 1:
    (loss, metrics), grads = grad_fn(params, batch, rng)
    metrics = dict(metrics, loss=loss)
    metrics.pop("weight", None)
    return grads, metrics

  micro = split_microbatches(batch, num_microbatches)
  rngs = jax.random.split(rng, num_microbatches)

  def body(carry, xs):
    grad_sum, metric_sum, weight_sum = carry
    mb, key = xs
    (loss, metrics), grads = grad_fn(params, mb, key)
    weight = metrics.pop("weight", jnp.float32(1.0)).astype(jnp.float32)
    metrics = dict(metrics, loss=loss)
    grad_sum = jax.tree.map(lambda a, g: a + weight * g, grad_sum, grads)
    metric_sum = jax.tree.map(lambda a, m: a + weight * m, metric_sum, metrics)
    return (grad_sum, metric_sum, weight_sum + weight), None

  (_, metric_shapes), _ = jax.eval_shape(
      grad_fn, params, jax.tree.map(lambda x: x[0], micro), rngs[0])
  metric_shapes = dict(metric_shapes)
  metric_shapes.pop("weight", None)
  metric_shapes["loss"] = jax.ShapeDtypeStruct((), jnp.float32)
  zeros = lambda t: jax.tree.map(  # noqa: E731
      lambda x: jnp.zeros(x.shape, jnp.float32), t)
  init = (zeros(params), zeros(metric_shapes), jnp.float32(0.0))
  (grad_sum, metric_sum, weight_sum), _ = jax.lax.scan(body, init,
                                                      (micro, rngs))
  denom = jnp.maximum(weight_sum, 1e-9)
  grads = jax.tree.map(lambda g, p: (g / denom).astype(p.dtype), grad_sum,
                       params)
  metrics = jax.tree.map(lambda m: m / denom, metric_sum)
  return grads, metrics


def make_train_step(model, objective: Objective,
                    tx: optax.GradientTransformation,
                    schedule: Callable[[Any], Any],
                    num_microbatches: int = 1) -> Callable:
  """Builds `step(state, batch, ref_params) -> (state, metrics)` (not jitted).

  The trainer jits it with explicit in/out shardings.
  """
  if num_microbatches < 1:
    raise ValueError(f"num_microbatches must be >= 1, got {num_microbatches}.")

  def loss_fn(params, batch, rng):
    return objective.loss_fn(params, batch, rng, model)

  def step(state: TrainState, batch: dict, ref_params: Any):
    rng = jax.random.wrap_key_data(state.rng)
    rng, step_rng = jax.random.split(rng)
    # A batch that already has 'ref_logprobs' (an online-RL batch_fn computed
    # them once for several updates on the same batch) keeps them.
    if objective.needs_reference and "ref_logprobs" not in batch:
      if ref_params is None:
        raise ValueError(f"Objective {objective.name!r} needs a reference "
                         "model, but none was given.")
      batch = dict(batch, ref_logprobs=jax.lax.stop_gradient(
          target_logprobs(model, ref_params, batch)))
    grads, metrics = _grads_and_metrics(loss_fn, state.params, batch,
                                        step_rng, num_microbatches)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads),
                   learning_rate=jnp.asarray(schedule(state.step), jnp.float32))
    new_state = state.replace(step=state.step + 1, params=params,
                              opt_state=opt_state,
                              rng=jax.random.key_data(rng))
    return new_state, metrics

  return step
