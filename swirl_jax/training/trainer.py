"""The training loop shared by every recipe: shard, step, log, checkpoint, resume.

    train(workdir, model_config=..., dataset_fn=..., objective='sft',
          train_steps=1000, checkpoint_every=100)

On start the loop restores the latest checkpoint in `workdir/checkpoints`
(params, optimizer state, step, RNG and the data iterator), so a run killed at
any moment and restarted reaches the same parameters at step N as an
uninterrupted one. SIGTERM (TPU preemption) saves a checkpoint and exits.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from typing import Any, Callable, Optional

import gin
import jax
import numpy as np

from swirl_jax import sharding as sharding_lib
from swirl_jax.models.config import TransformerConfig
from swirl_jax.models.transformer import Transformer, _boxed_init
from swirl_jax.objectives.registry import get_objective
from swirl_jax.training import checkpointing, metrics as metrics_lib
from swirl_jax.training.optimizer import learning_rate_schedule, make_optimizer
from swirl_jax.training.train_state import TrainState
from swirl_jax.training.train_step import make_train_step

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
  """What `train` returns: the final state and where things were written."""

  state: TrainState
  workdir: str
  last_step: int
  preempted: bool = False


class _Preemption:
  """Turns SIGTERM into a flag the loop checks between steps."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def load_initial_params(init_from: Optional[str], config: TransformerConfig,
                        rng: jax.Array, shardings: Any):
  """Params to start from, placed with `shardings`.

  init_from: None (random, from rng); 'hf:DIR' (Hugging Face directory);
  'kaggle:DIR' (official Flax/Orbax Gemma layout); 'gguf:FILE' (a llama.cpp
  GGUF file, dequantised to config.param_dtype; FILE may also name a
  packaged file, see `checkpoints.gguf.resolve_path`); 'base:NAME' or
  'base:DIR' (a small trained starting policy, `swirl_jax.bases`); or a
  swirl_jax workdir (the params of its latest checkpoint).
  """
  if not init_from:
    return jax.jit(lambda r: _unbox(_boxed_init(config, r)),
                   out_shardings=shardings)(rng)
  if init_from.startswith("hf:"):
    from swirl_jax.checkpoints import hf  # pylint: disable=g-import-not-at-top
    loaded_config, params = hf.load(init_from[3:])
    _check_same(loaded_config, config, init_from)
    return jax.device_put(params, shardings)
  if init_from.startswith("base:"):
    from swirl_jax import bases  # pylint: disable=g-import-not-at-top
    loaded_config, params = bases.load(init_from, config.param_dtype)
    _check_same(loaded_config, config, init_from)
    return jax.device_put(params, shardings)
  if init_from.startswith("gguf:"):
    from swirl_jax.checkpoints import gguf  # pylint: disable=g-import-not-at-top
    loaded_config, params = gguf.load(init_from[5:], config.param_dtype)
    _check_same(loaded_config, config, init_from)
    return jax.device_put(params, shardings)
  if init_from.startswith("kaggle:"):
    from swirl_jax.checkpoints import kaggle  # pylint: disable=g-import-not-at-top
    return jax.device_put(kaggle.load(init_from[7:], config), shardings)
  ckpt = checkpointing.Checkpointer(os.path.join(init_from, "checkpoints"),
                                    save_every=1, async_save=False)
  try:
    if ckpt.latest_step() is None:
      raise FileNotFoundError(
          f"init_from={init_from!r}: no checkpoint under "
          f"{os.path.join(init_from, 'checkpoints')} (use 'hf:DIR', "
          "'kaggle:DIR', 'gguf:FILE' or 'base:NAME' for imported "
          "checkpoints).")
    ckpt.check_compatible(config)
    return ckpt.restore_params(shardings)
  finally:
    ckpt.close()


def weights_source(init_from: Optional[str], dtype: str) -> Optional[dict]:
  """What model_config.json records about imported weights (None: nothing).

  For 'gguf:FILE' it says that the weights were dequantised from the file's
  quantisation (`checkpoints.gguf.provenance`).
  """
  if init_from and init_from.startswith("gguf:"):
    from swirl_jax.checkpoints import gguf  # pylint: disable=g-import-not-at-top
    return gguf.provenance(init_from[5:], dtype)
  return None


def model_config_json(config: TransformerConfig,
                      init_from: Optional[str] = None) -> str:
  """The workdir's model_config.json: the config's fields, plus
  'weights_source' for weights dequantised from a GGUF file
  (`TransformerConfig.from_dict` ignores that key)."""
  source = weights_source(init_from, config.param_dtype)
  if source is None:
    return config.to_json()
  return json.dumps({**config.to_dict(), "weights_source": source},
                    sort_keys=True)


def _drop_empty_boxes(tree):
  """Unwraps logical-axis boxes that hold no array: the optimizer state of a
  frozen parameter (`make_optimizer.frozen`) keeps its box around optax's
  empty `MaskedNode`, which has a partition spec but no leaf."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  return jax.tree.map(
      lambda x: x.value if (isinstance(x, nn.Partitioned)
                            and not jax.tree.leaves(x.value)) else x,
      tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def _unbox(tree):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  return nn.unbox(tree)


def _check_same(loaded: TransformerConfig, wanted: TransformerConfig, src):
  from swirl_jax.models.config import config_differences, same_architecture  # pylint: disable=g-import-not-at-top
  if not same_architecture(loaded, wanted):
    diffs = config_differences(loaded, wanted)
    raise ValueError(f"The checkpoint {src} does not match the configured "
                     f"model: (checkpoint, configured) = {diffs}.")


def _tokens_in(batch: dict) -> int:
  seg = batch.get("segment_ids")
  if seg is not None:
    return int(np.sum(np.asarray(seg) > 0))
  return int(np.asarray(batch["inputs"]).size)


@gin.configurable(denylist=["workdir"])
def train(workdir: str,
          model_config: TransformerConfig = gin.REQUIRED,
          dataset_fn: Callable[..., Any] = gin.REQUIRED,
          objective: str = "sft",
          train_steps: int = gin.REQUIRED,
          checkpoint_every: int = 100,
          keep_checkpoints: int = 3,
          best_metric: Optional[str] = None,
          best_mode: str = "min",
          log_every: int = 10,
          seed: int = 0,
          num_microbatches: int = 1,
          remat_policy: str = "none",
          init_from: Optional[str] = None,
          mesh_fn: Callable[[], jax.sharding.Mesh] = sharding_lib.make_mesh,
          async_checkpoints: bool = True,
          stop_after: Optional[int] = None,
          step_callback: Optional[Callable[[int, dict], None]] = None,
          batch_fn: Optional[Callable[[Any, Any, int], dict]] = None,
          ) -> TrainResult:
  """Trains `model_config` on batches from `dataset_fn` with `objective`.

  Args:
    workdir: run directory (checkpoints/, metrics.jsonl, tensorboard/).
    model_config: the architecture.
    dataset_fn: called as dataset_fn(workdir=, process_index=,
      process_count=, seed=) -> an iterable whose iterator yields local batch dicts of numpy
      arrays and has get_state() / set_state() (grain).
    objective: registered objective name (swirl_jax.objectives).
    train_steps: total optimizer steps.
    checkpoint_every: checkpoint period in steps.
    keep_checkpoints: newest checkpoints kept (plus the best by best_metric).
    log_every: metrics period in steps.
    seed: initialisation / dropout-free RNG seed.
    num_microbatches: gradient accumulation factor.
    remat_policy: Transformer remat policy.
    init_from: see `load_initial_params`.
    mesh_fn: builds the device mesh (gin: make_mesh.data/fsdp/tensor).
    stop_after: stop (with a checkpoint) after this step; for tests and
      staged experiments.
    step_callback: called as step_callback(step, metrics) on log steps.
    batch_fn: online RL: called as batch_fn(params, local_batch, step) on
      every process before each step, with the current params; it samples,
      scores and returns the training batch (numpy arrays). Its randomness
      must derive from `step` so that a resumed run repeats it exactly.
  """
  for name, value in (("train_steps", train_steps),
                      ("checkpoint_every", checkpoint_every),
                      ("log_every", log_every),
                      ("num_microbatches", num_microbatches)):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise ValueError(f"train.{name} must be a positive int, got {value!r}.")
  if not isinstance(model_config, TransformerConfig):
    raise TypeError(f"train.model_config must be a TransformerConfig, got "
                    f"{type(model_config).__name__}.")
  obj = get_objective(objective)
  ckpt = checkpointing.Checkpointer(
      os.path.join(workdir, "checkpoints"), save_every=checkpoint_every,
      keep_last=keep_checkpoints, best_metric=best_metric,
      best_mode=best_mode, async_save=async_checkpoints)
  ckpt.check_compatible(model_config)  # before anything is written

  mesh = mesh_fn()
  model = Transformer(model_config, remat_policy=remat_policy)
  schedule = learning_rate_schedule(total_steps=train_steps)
  tx = make_optimizer(schedule)

  rng = jax.random.key(seed)
  init_rng, state_rng = jax.random.split(rng)

  def boxed_state(r):
    boxed = _boxed_init(model_config, r)
    return TrainState.create(boxed, tx, jax.random.key_data(state_rng))

  abstract_boxed = _drop_empty_boxes(jax.eval_shape(boxed_state, init_rng))
  state_shardings = sharding_lib.boxed_shardings(abstract_boxed, mesh)
  param_shardings = state_shardings.params
  abstract_state = checkpointing.abstract_with_shardings(
      _unbox(abstract_boxed), state_shardings)

  initial_params = None
  if obj.needs_reference or ckpt.latest_step() is None:
    initial_params = load_initial_params(init_from, model_config, init_rng,
                                         param_shardings)

  start_step = ckpt.latest_step()
  data_state: dict = {}
  if start_step is not None:
    state, data_state = ckpt.restore(abstract_state, start_step)
    log.info("Resumed from step %d in %s", start_step, workdir)
  else:
    start_step = 0
    state = jax.jit(lambda p: TrainState.create(
        p, tx, jax.random.key_data(state_rng)),
                    out_shardings=state_shardings)(initial_params)

  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.gin"), "w") as f:
      f.write(gin.config_str())
    with open(os.path.join(workdir, "model_config.json"), "w") as f:
      f.write(model_config_json(model_config, init_from))

  dataset = dataset_fn(workdir=workdir, process_index=jax.process_index(),
                       process_count=jax.process_count(), seed=seed)
  iterator = iter(dataset)
  if data_state:
    iterator.set_state(data_state)

  ref_params = initial_params if obj.needs_reference else None
  step_fn = make_train_step(model, obj, tx, schedule, num_microbatches)
  batch_shard = sharding_lib.batch_sharding(mesh)
  jit_step = jax.jit(
      step_fn, in_shardings=(state_shardings, batch_shard,
                             param_shardings if ref_params is not None
                             else None),
      out_shardings=(state_shardings, None), donate_argnums=(0,))

  writer = metrics_lib.MetricsWriter(workdir, resume_step=start_step)
  last = min(train_steps, stop_after or train_steps)
  bar = metrics_lib.ProgressBar(total=train_steps, initial=start_step)
  step = start_step
  preempted = False
  last_saved = start_step if start_step in ckpt.all_steps() else None
  last_row: dict = {}
  tokens, t0 = 0, time.perf_counter()
  try:
    with _Preemption() as preemption, sharding_lib.activation_rules(mesh):
      while step < last:
        local = next(iterator)
        if batch_fn is not None:
          local = batch_fn(state.params, local, step)
        tokens += _tokens_in(local)
        batch = sharding_lib.put_batch(local, mesh)
        state, step_metrics = jit_step(state, batch, ref_params)
        step += 1
        if step % log_every == 0 or step == last:
          host = jax.device_get(step_metrics)
          elapsed = max(time.perf_counter() - t0, 1e-9)
          host["tokens_per_second"] = tokens * jax.process_count() / elapsed
          row = last_row = writer.write(step, host)
          bar.update(step, row.get("loss"), row["tokens_per_second"])
          if step_callback is not None:
            step_callback(step, row)
          tokens, t0 = 0, time.perf_counter()
        if ckpt.save(step, state, iterator.get_state(), model_config,
                     metrics=last_row):
          last_saved = step
        if preemption.requested:
          log.warning("SIGTERM: saving step %d and exiting.", step)
          preempted = True
          break
    if last_saved != step:
      ckpt.save(step, state, iterator.get_state(), model_config,
                metrics=last_row, force=True)
  finally:
    bar.close()
    writer.close()
    ckpt.close()
  return TrainResult(state=state, workdir=workdir, last_step=step,
                     preempted=preempted)
