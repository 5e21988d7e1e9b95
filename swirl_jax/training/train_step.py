"""The jit-compiled train step: objective, microbatch accumulation, update.

    step_fn = make_train_step(model, objective, tx, schedule, num_microbatches)
    state, metrics = step_fn(state, batch, ref_params)

`ref_params` is the frozen reference model (or None); when the objective
needs it and the batch does not carry them already, `batch['ref_logprobs']`
is filled in here, outside the gradient. An objective configured with
`kl_estimator='exact'` (gin, e.g. `stepwise_pg_loss.kl_estimator =
'exact'`; see `Objective.needs_ref_logits`) also gets `batch['ref_logits']`
[B, L, V] from the same reference forward pass, inside the jitted step
(stop_gradient; never copied to the host).

Memory of 'exact': one [B, L, V] copy of the reference logits is
B * L * V * 4 bytes in float32 (2 in bfloat16, the compute dtype of the
larger presets), for the whole batch before it is split into
microbatches, beside the policy's own logits and the ~3 more [b, L, V]
temporaries of each microbatch's KL and its gradient (see
`objectives.kl.exact_kl`). With Gemma's V = 256,128: 1 GiB per 1,024
tokens of B * L (padding included) in float32; e.g. B * L = 16 x 512 =
8k tokens is 8 GiB per copy, so on a 16 / 80 / 141 GiB accelerator, with
the model's own memory left over, keep B * L to about 2k / 10k / 20k
tokens (fewer with microbatches of a larger batch: the reference copy
is of the whole batch). The tiny presets (V in the hundreds) fit at any
batch size used here.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

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
                    num_microbatches: int = 1,
                    ref_logits: Optional[bool] = None,
                    frozen: Optional[Sequence[str]] = None) -> Callable:
  """Builds `step(state, batch, ref_params) -> (state, metrics)` (not jitted).

  The trainer jits it with explicit in/out shardings.

  Args:
    model: the Transformer module.
    objective: the registered objective.
    tx, schedule: optimizer and learning-rate schedule.
    num_microbatches: gradient accumulation factor.
    ref_logits: also put the reference's logits into the batch as
      'ref_logits' (what `kl_estimator='exact'` reads). None (default):
      when `objective.needs_ref_logits`, i.e. its loss's `kl_estimator` is
      bound (by gin, in the scope active now) or defaults to 'exact'.
    frozen: parameter-path patterns held constant in the loss
      (`jax.lax.stop_gradient`), so no gradient is computed for them at all
      (for gemma3-270m's frozen embedding, the [V, D] products of the
      embedding lookup's and the unembedding's backward passes). None
      (default): `make_optimizer.frozen` as gin binds it in the scope active
      now, the parameters the optimizer keeps fixed.
  """
  if num_microbatches < 1:
    raise ValueError(f"num_microbatches must be >= 1, got {num_microbatches}.")
  want_logits = (objective.needs_ref_logits if ref_logits is None
                 else bool(ref_logits))
  if frozen is None:
    from swirl_jax.objectives.registry import configured_option  # pylint: disable=g-import-not-at-top
    from swirl_jax.training.optimizer import make_optimizer  # pylint: disable=g-import-not-at-top
    frozen = configured_option(make_optimizer, "frozen", ())
  frozen = tuple(frozen or ())

  def loss_fn(params, batch, rng):
    if frozen:
      from swirl_jax.training.optimizer import frozen_labels  # pylint: disable=g-import-not-at-top
      params = jax.tree.map(
          lambda p, label: jax.lax.stop_gradient(p) if label == "frozen"
          else p, params, frozen_labels(params, frozen))
    return objective.loss_fn(params, batch, rng, model)

  def step(state: TrainState, batch: dict, ref_params: Any):
    rng = jax.random.wrap_key_data(state.rng)
    rng, step_rng = jax.random.split(rng)
    # A batch that already has 'ref_logprobs' (an online-RL batch_fn computed
    # them once for several updates on the same batch) keeps them; so does
    # one that has 'ref_logits'.
    need_logprobs = objective.needs_reference and "ref_logprobs" not in batch
    need_logits = want_logits and "ref_logits" not in batch
    if need_logprobs or need_logits:
      if ref_params is None:
        raise ValueError(f"Objective {objective.name!r} needs a reference "
                         "model, but none was given.")
      if need_logits:
        logprobs, logits = target_logprobs(model, ref_params, batch,
                                           return_logits=True)
        batch = dict(batch, ref_logits=jax.lax.stop_gradient(logits))
      else:
        logprobs = target_logprobs(model, ref_params, batch)
      if need_logprobs:
        batch = dict(batch, ref_logprobs=jax.lax.stop_gradient(logprobs))
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
