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
import functools
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


def agreed_maximum(value: int) -> int:
  """The largest `value` over all processes (one collective on several
  hosts: every process calls it at the same point), e.g. a padded length
  every host's batch must share."""
  return -agreed_minimum(-int(value))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


@functools.lru_cache(maxsize=32)
def local_batch_shards(mesh: Mesh) -> int:
  """How many slices of the batch dimension this process's devices hold
  under `batch_sharding(mesh)` (all of them, data x fsdp, on one process)."""
  names = list(mesh.axis_names)
  batch_dims = [names.index(a) for a in BATCH_AXES]
  me = jax.process_index()
  coords = {tuple(idx[d] for d in batch_dims)
            for idx in np.ndindex(*mesh.devices.shape)
            if mesh.devices[idx].process_index == me}
  return len(coords)


def check_local_rows(rows: int, mesh: Mesh, what: str = "batch") -> None:
  """Refuses a per-host batch whose rows do not split evenly over this
  process's batch shards (ValueError naming the sizes)."""
  local = local_batch_shards(mesh)
  if rows % local:
    total = math.prod(mesh.shape[a] for a in BATCH_AXES)
    raise ValueError(
        f"The per-host {what} has {rows} rows, which do not divide evenly "
        f"over this process's {local} batch shards (mesh data x fsdp = "
        f"{total} shards over {jax.process_count()} process(es)); make "
        f"the rows per host a multiple of {local} (global batch a multiple "
        f"of {total}).")


def put_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict:
  """Assembles global arrays from this process's rows of the batch.

  Each process passes only its own rows (global_batch / process_count); the
  result is a dict of global jax.Arrays sharded over (data, fsdp). Rows
  that do not split over this process's batch shards are a ValueError
  naming the sizes (`check_local_rows`).
  """
  sharding = batch_sharding(mesh)
  shards = math.prod(mesh.shape[a] for a in BATCH_AXES)
  local_batch = dict(local_batch)
  for key, value in local_batch.items():
    if key != _PREFIX_KEY:
      check_local_rows(int(np.shape(value)[0]), mesh, f"batch {key!r}")
      break
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


# ----------------------------------------------------------------------------
# Several processes: what the online RL paths need (see docs/tpu_gpu.md,
# "Online RL on several hosts").


def is_multiprocess() -> bool:
  return jax.process_count() > 1


def _allgather_ints(values) -> np.ndarray:
  """[process_count, k] int64: every process's `values` (a collective)."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  local = np.asarray(values, np.int64).reshape(-1)
  return np.asarray(multihost_utils.process_allgather(local)).reshape(
      jax.process_count(), local.size)


def process_row_offset(rows: int, what: str = "records") -> int:
  """Index of this process's first row in the global list of `rows`-sized
  per-process lists (process p's rows come after those of 0..p-1).

  Every process must hold the same number (a ValueError naming them
  otherwise): an online RL builder numbers its rows globally from it, and
  the train step's global batch needs equal shares. One collective on
  several processes (every process calls it at the same point); 0 on one.
  """
  if not is_multiprocess():
    return 0
  counts = _allgather_ints([rows])[:, 0]
  if np.any(counts != counts[0]):
    raise ValueError(
        f"The processes hold different numbers of {what}: "
        f"{dict(enumerate(counts.tolist()))} (process: count); each must "
        "get the same share of the global batch (make the global batch a "
        "multiple of the process count).")
  return int(jax.process_index() * rows)


def global_sums(values) -> np.ndarray:
  """Element-wise sums of float `values` [k] over the processes (one
  collective on several; the values themselves on one)."""
  values = np.asarray(values, np.float64).reshape(-1)
  if not is_multiprocess():
    return values
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  gathered = np.asarray(multihost_utils.process_allgather(values))
  return gathered.reshape(jax.process_count(), -1).sum(axis=0)


def _is_global(x) -> bool:
  return isinstance(x, jax.Array) and not x.is_fully_addressable


def spans_processes(tree: Any) -> bool:
  """Whether any array of `tree` lives on other processes' devices too."""
  return any(_is_global(x) for x in jax.tree.leaves(tree))


def host_meshes() -> tuple[Mesh, Mesh]:
  """(hosts x local mesh over all devices, this process's local mesh).

  The first has axes ('hosts',) + MESH_AXES, shape (P, 1, n, 1): row p
  holds process p's n devices (by id); the second is this process's row
  as a (1, n, 1) (data, fsdp, tensor) mesh.
  """
  count = jax.process_count()
  rows = [sorted((d for d in jax.devices() if d.process_index == p),
                 key=lambda d: d.id) for p in range(count)]
  if len({len(r) for r in rows}) != 1:
    raise ValueError(f"Processes have different device counts: "
                     f"{[len(r) for r in rows]}.")
  grid = np.asarray(rows, dtype=object)
  n = grid.shape[1]
  both = Mesh(grid.reshape(count, 1, n, 1), ("hosts",) + MESH_AXES)
  local = Mesh(grid[jax.process_index()].reshape(1, n, 1), MESH_AXES)
  return both, local


def _local_spec(x: jax.Array, n: int) -> PartitionSpec:
  """x's dims sharded over 'fsdp' globally stay so over the n local
  devices when n divides them; everything else is replicated."""
  spec = tuple(getattr(x.sharding, "spec", ()) or ())
  out = []
  used = False
  for dim, entry in zip(x.shape, spec + (None,) * (x.ndim - len(spec))):
    axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
    if not used and "fsdp" in axes and n > 1 and dim % n == 0:
      out.append("fsdp")
      used = True
    else:
      out.append(None)
  return PartitionSpec(*out)


_RESHARDS: dict = {}  # layout -> the jitted reshard to host-local copies


def host_local_copy(tree: Any) -> tuple[Any, Optional[Mesh]]:
  """A copy of `tree` that lives on this process's devices only.

  For sampling on several hosts: each host decodes its own prompts with
  the whole model on its own devices, so no sampling step waits on
  another host. Arrays sharded over all processes are resharded (one
  collective: every process calls this at the same point) to a copy on
  each host's devices, FSDP-sharded over them where the global array was
  (its 'embed' dims), else replicated; per device that is about
  params / local_devices bytes beside the training state.

  Returns (tree, local_mesh): `tree` itself and None when nothing in it
  spans processes (one process: no copy, no change).
  """
  if not spans_processes(tree):
    return tree, None
  both, local = host_meshes()
  n = local.devices.size

  def target(x):
    if not _is_global(x):
      return None
    return NamedSharding(both, _local_spec(x, n))

  leaves, treedef = jax.tree.flatten(tree)
  moving = [i for i, x in enumerate(leaves) if _is_global(x)]
  targets = tuple(target(leaves[i]) for i in moving)
  key = (targets, tuple((leaves[i].shape, leaves[i].dtype, leaves[i].sharding)
                        for i in moving))
  if key not in _RESHARDS:  # one compilation per tree layout
    _RESHARDS[key] = jax.jit(lambda xs: xs, out_shardings=list(targets))
  moved = _RESHARDS[key]([leaves[i] for i in moving])
  out = list(leaves)
  for i, y in zip(moving, moved):
    spec = y.sharding.spec
    out[i] = jax.make_array_from_single_device_arrays(
        y.shape, NamedSharding(local, spec),
        [shard.data for shard in y.addressable_shards])
  return jax.tree.unflatten(treedef, out), local


def mesh_of(tree: Any) -> Optional[Mesh]:
  """The mesh of the first NamedSharding'ed array of `tree`, or None."""
  for x in jax.tree.leaves(tree):
    mesh = getattr(getattr(x, "sharding", None), "mesh", None)
    if isinstance(mesh, Mesh):
      return mesh
  return None


_GLOBAL_CALLS: dict = {}  # (fn, mesh) -> its jit with batch-sharded outputs


def host_rows_call(fn, params: Any, local_batch: dict[str, np.ndarray],
                   mesh: Optional[Mesh] = None) -> Any:
  """`fn(params, batch)` on the global batch; this process's rows back.

  On one process (or params that do not span processes) this is just
  `fn(params, local_batch)` with numpy inputs, as before. On several, the
  processes' rows are assembled into global arrays (`put_batch`, over
  the mesh of `params` unless given), `fn` (jitted, its outputs [B, ...]
  sharded like the batch) runs once over all of them, and each process
  gets numpy arrays of its own rows back, in its order. A collective:
  every process calls it at the same point, with the same shapes.
  """
  if not spans_processes(params):
    return jax.tree.map(np.asarray, fn(params, local_batch))
  mesh = mesh if mesh is not None else mesh_of(params)
  batch = put_batch(local_batch, mesh)
  key = (fn, mesh)
  if key not in _GLOBAL_CALLS:
    _GLOBAL_CALLS[key] = jax.jit(fn, out_shardings=batch_sharding(mesh))
  out = _GLOBAL_CALLS[key](params, batch)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  local = multihost_utils.global_array_to_host_local_array(
      out, mesh, PartitionSpec(BATCH_AXES))
  return jax.tree.map(np.asarray, local)
