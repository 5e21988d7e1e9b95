"""Device mesh, logical-axis rules and placement of params, state and batches.

The model names its axes logically ('embed', 'mlp', 'heads', ...; see
`swirl_jax.models.LOGICAL_AXES`); `DEFAULT_RULES` maps them to the mesh axes
`data`, `fsdp` and `tensor`. Arrays are placed with `NamedSharding`, and the
train step is compiled with `jax.jit(in_shardings=..., out_shardings=...)`.

A mesh axis is dropped for an array dimension it does not divide (for example
one KV head on a tensor axis of 2): that dimension is replicated instead of
failing, and `describe_sharding` shows what was chosen.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from typing import Any, Optional, Sequence

import flax.linen as nn
import gin
import jax
from jax.experimental import mesh_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
# `swirl_jax.objectives.shared_prefix.PREFIX_KEY` (not imported: the
# objectives import this module's users); tests/test_sharding.py ties them.
_PREFIX_KEY = "prefix_inputs"

# (logical name, mesh axis or axes or None). Params are fully sharded over
# `fsdp` on their embed dimension and tensor-parallel over heads / mlp / vocab.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("activation_batch", BATCH_AXES),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_mlp", "tensor"),
    ("activation_heads", "tensor"),
    ("activation_head_dim", None),
    ("activation_vocab", "tensor"),
)


def maybe_initialize_distributed() -> bool:
  """Calls `jax.distributed.initialize()` when launched on several hosts.

  Cloud TPU pods are detected by JAX itself; elsewhere the standard variables
  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID select the
  coordinator. Returns True if initialisation happened.
  """
  if jax.distributed.is_initialized():
    return False
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ.get("JAX_NUM_PROCESSES", "1")),
        process_id=int(os.environ.get("JAX_PROCESS_ID", "0")))
    return True
  if os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") >= 1:
    jax.distributed.initialize()
    return True
  return False


@gin.configurable
def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A (data, fsdp, tensor) mesh over all devices; one size may be -1.

  Raises ValueError naming the sizes when they do not multiply to the
  number of devices.
  """
  devices = list(devices if devices is not None else jax.devices())
  sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
  for name, size in sizes.items():
    if not isinstance(size, int) or size == 0 or size < -1:
      raise ValueError(f"Mesh axis {name}={size!r} must be a positive int or "
                       "-1 (fill the rest).")
  free = [k for k, v in sizes.items() if v == -1]
  if len(free) > 1:
    raise ValueError(f"Only one mesh axis may be -1, got {free}.")
  fixed = math.prod(v for v in sizes.values() if v != -1)
  if free:
    if len(devices) % fixed:
      raise ValueError(f"Cannot fill mesh axis {free[0]!r}: {len(devices)} "
                       f"devices are not divisible by {fixed}.")
    sizes[free[0]] = len(devices) // fixed
  shape = tuple(sizes[a] for a in MESH_AXES)
  if math.prod(shape) != len(devices):
    raise ValueError(f"Mesh {dict(zip(MESH_AXES, shape))} needs "
                     f"{math.prod(shape)} devices, but {len(devices)} are "
                     "available.")
  try:
    device_array = mesh_utils.create_device_mesh(
        shape, devices=devices)
  except Exception:  # pylint: disable=broad-except  # e.g. CPU, odd shapes
    device_array = np.asarray(devices).reshape(shape)
  return Mesh(device_array, MESH_AXES)


def _mesh_axes_for(name: Optional[str], rules) -> tuple[str, ...]:
  if name is None:
    return ()
  for logical, mesh_axes in rules:
    if logical == name:
      if mesh_axes is None:
        return ()
      return (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
  raise ValueError(f"No sharding rule for logical axis {name!r}; rules cover "
                   f"{[r[0] for r in rules]}.")


def logical_to_mesh_spec(logical: PartitionSpec, shape: Sequence[int],
                         mesh: Mesh, rules=DEFAULT_RULES) -> PartitionSpec:
  """Maps a logical PartitionSpec to mesh axes, skipping non-dividing axes."""
  used: set[str] = set()
  out = []
  for name, dim in zip(tuple(logical) + (None,) * (len(shape) - len(logical)),
                       shape):
    axes = []
    size = 1
    for axis in _mesh_axes_for(name, rules):
      n = mesh.shape[axis]
      if axis in used or n == 1 or dim % (size * n):
        continue
      axes.append(axis)
      size *= n
    used.update(axes)
    out.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
  return PartitionSpec(*out)


def _is_spec(x):
  return isinstance(x, PartitionSpec)


def tree_shardings(logical_specs: Any, shapes: Any, mesh: Mesh,
                   rules=DEFAULT_RULES) -> Any:
  """NamedShardings for a tree, from logical specs and ShapeDtypeStructs."""
  specs = jax.tree.leaves(logical_specs, is_leaf=_is_spec)
  leaves, treedef = jax.tree.flatten(shapes)
  if len(specs) != len(leaves):
    raise ValueError(f"{len(specs)} logical specs for {len(leaves)} arrays.")
  return jax.tree.unflatten(treedef, [
      NamedSharding(mesh, logical_to_mesh_spec(s, x.shape, mesh, rules))
      for s, x in zip(specs, leaves)])


def boxed_shardings(abstract_boxed: Any, mesh: Mesh, rules=DEFAULT_RULES):
  """Shardings for an eval_shape'd tree holding nn.LogicallyPartitioned boxes.

  Leaves without logical names (step counters, RNG keys) are replicated.
  """
  specs = nn.get_partition_spec(abstract_boxed)
  shapes = nn.unbox(abstract_boxed)
  return tree_shardings(specs, shapes, mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension over (data, fsdp); the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def global_group_ids(local_ids: np.ndarray,
                     process_index: Optional[int] = None) -> np.ndarray:
  """Makes a host's group ids [N] unique across the processes of a run.

  Each host builds its own rows and numbers their groups 0, 1, ...; the train
  step sees the global batch (every host's rows), where group statistics must
  not mix rows of two hosts. Host p's ids are shifted by p * N (N local rows
  bound the number of local groups, and every host has the same N).
  """
  local_ids = np.asarray(local_ids, np.int32)
  if process_index is None:
    process_index = jax.process_index()
  return local_ids + np.int32(process_index * local_ids.shape[0])


def bucketed_row_length(longest: int, bucket: Optional[int],
                        limit: int) -> int:
  """The row length L of a batch whose longest local row has `longest` tokens.

  L is `longest` rounded up to a multiple of `bucket` (so the train step
  compiles for a few lengths, not one per batch), at most `limit`; with
  bucket None it is `limit`. On several hosts every host's batch must have
  the same L, so the hosts agree on the largest (a collective: every
  process calls this at the same point of every step).
  """
  if bucket is None:
    return int(limit)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    longest = int(np.max(multihost_utils.process_allgather(
        np.asarray(longest, np.int32))))
  return int(min(limit, max(bucket, -(-int(longest) // bucket) * bucket)))


def agreed_minimum(value: int) -> int:
  """The smallest `value` over all processes (one collective on several
  hosts: every process calls it at the same point), e.g. the shared-prefix
  length every host's batch can use."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    value = int(np.min(multihost_utils.process_allgather(
        np.asarray(value, np.int32))))
  return int(value)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def put_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict:
  """Assembles global arrays from this process's rows of the batch.

  Each process passes only its own rows (global_batch / process_count); the
  result is a dict of global jax.Arrays sharded over (data, fsdp).
  """
  sharding = batch_sharding(mesh)
  shards = math.prod(mesh.shape[a] for a in BATCH_AXES)
  local_batch = dict(local_batch)
  prefix = local_batch.get(_PREFIX_KEY)
  if prefix is not None and (len(prefix) * jax.process_count()) % shards:
    # One shared prefix per group, but fewer groups than batch shards: the
    # plain forward (same results) instead of an unshardable array.
    logging.getLogger(__name__).warning(
        "Dropping '%s': %d groups do not split over %d batch shards; the "
        "forward computes each row's prefix.", _PREFIX_KEY,
        len(prefix) * jax.process_count(), shards)
    del local_batch[_PREFIX_KEY]
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules=DEFAULT_RULES):
  """Makes `nn.with_logical_constraint` in the model active on `mesh`."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(list(rules)):
    yield


def describe_sharding(tree: Any) -> dict[str, str]:
  """{'path': 'PartitionSpec(...)'} for every array of a sharded tree."""
  out = {}
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    spec = getattr(getattr(x, "sharding", None), "spec", None)
    out[jax.tree_util.keystr(path)] = str(spec)
  return out
