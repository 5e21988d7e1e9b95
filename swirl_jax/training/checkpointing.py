"""Orbax checkpoints of the train state, the data iterator and the model config.

Each checkpoint step directory holds three items:
  state         the TrainState (params, optimizer state, step, RNG), sharded;
  data          the host data iterator's state (JSON), so a resumed run
                reads exactly the batches an uninterrupted one would;
  model_config  the TransformerConfig (JSON), checked on restart.

Orbax writes each step into a temporary directory and renames it when
complete, so a run killed at any moment leaves either a whole checkpoint or
none; the latest complete one is restored on start. Saves are asynchronous
(the device-to-host copy blocks, the file writes do not).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

from swirl_jax.models.config import (TransformerConfig, config_differences,
                                     same_architecture)


class IncompatibleCheckpointError(ValueError):
  """The workdir holds a checkpoint of a different model."""


class Checkpointer:
  """Periodic, atomic, asynchronous checkpoints with exact resume.

  Args:
    directory: where step directories live (local path or gs://).
    save_every: save when step % save_every == 0 (and on `force`).
    keep_last: keep the newest `keep_last` checkpoints...
    best_metric: ...plus the best one by this metric name (None: none).
    best_mode: 'min' or 'max' for best_metric.
    async_save: write files in a background thread.
  """

  def __init__(self, directory: str, *, save_every: int, keep_last: int = 3,
               best_metric: Optional[str] = None, best_mode: str = "min",
               async_save: bool = True):
    if save_every <= 0 or keep_last <= 0:
      raise ValueError(f"save_every ({save_every}) and keep_last "
                       f"({keep_last}) must be positive.")
    if best_mode not in ("min", "max"):
      raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}.")
    self.directory = os.path.abspath(directory) if "://" not in directory \
        else directory
    self.save_every = save_every
    self.best_metric = best_metric
    policies = [ocm.LatestN(n=keep_last)]
    if best_metric:
      policies.append(ocm.BestN(
          get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min",
          n=1, keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        save_decision_policy=ocm.FixedIntervalPolicy(save_every),
        preservation_policy=ocm.AnyPreservationPolicy(policies),
        enable_async_checkpointing=async_save, create=True)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_names=("state", "data", "model_config"))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def saved_model_config(self, step: Optional[int] = None
                         ) -> Optional[TransformerConfig]:
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    restored = self._manager.restore(
        step, args=ocp.args.Composite(model_config=ocp.args.JsonRestore()))
    return TransformerConfig.from_dict(restored["model_config"])

  def check_compatible(self, config: TransformerConfig) -> None:
    """Raises IncompatibleCheckpointError if the workdir holds another model."""
    saved = self.saved_model_config()
    if saved is not None and not same_architecture(saved, config):
      diffs = config_differences(saved, config)
      raise IncompatibleCheckpointError(
          f"The checkpoints in {self.directory} (step {self.latest_step()}) "
          f"are of a different model: (saved, requested) = {diffs}. Use a "
          "new --workdir or the model config that wrote them; nothing was "
          "overwritten.")

  def save(self, step: int, state: Any, data_state: Optional[dict],
           model_config: TransformerConfig,
           metrics: Optional[dict[str, float]] = None,
           force: bool = False) -> bool:
    """Saves if the policy says so (or force). Returns True if it saved."""
    metrics = {k: float(v) for k, v in (metrics or {}).items()
               if isinstance(v, (int, float))}
    if not self.best_metric or self.best_metric not in metrics:
      metrics = None
    return self._manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state or {}),
            model_config=ocp.args.JsonSave(model_config.to_dict())),
        metrics=metrics, force=force)

  def restore(self, abstract_state: Any, step: Optional[int] = None
              ) -> tuple[Any, dict]:
    """Restores (state, data_state) at `step` (default: latest).

    `abstract_state` is a tree of jax.ShapeDtypeStruct with `.sharding`, so
    arrays come back placed as the current mesh wants them.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {self.directory}.")
    restored = self._manager.restore(
        step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["data"] or {})

  def restore_params(self, shardings: Any, step: Optional[int] = None) -> Any:
    """Only the params of the state at `step` (default: latest)."""
    step = self.latest_step() if step is None else step
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    params = restored["state"]["params"]
    return jax.device_put(params, shardings)

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of `tree` carrying `shardings` (for restore)."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      tree, shardings)
