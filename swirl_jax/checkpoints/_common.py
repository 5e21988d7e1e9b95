"""Helpers shared by the checkpoint converters: shapes, dtypes, atomic writes.

Parameters are handled as flat dicts keyed by '/'-joined paths
('layer_0/attn/q', 'embedding', ...) so error messages can name them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Any, Iterator, Mapping, Optional

import numpy as np

from swirl_jax.models.config import TransformerConfig, dtype_from_name

# The dtypes a parameter may be stored in. float64 sources are read (and
# cast), never written.
FLOAT_DTYPES = ("float32", "bfloat16", "float16")


def dtype_name(dtype: Any) -> str:
  """'float32' / 'bfloat16' / 'float16' for a name or a numpy/jnp dtype.

  Raises:
    ValueError: for anything else (float8, ints, 'float64', ...).
  """
  if dtype is None:
    raise ValueError("dtype must not be None here.")
  if isinstance(dtype, str):
    name = dtype
  else:
    try:
      name = np.dtype(dtype).name
    except TypeError as e:
      raise ValueError(f"Unsupported dtype {dtype!r}; choose one of "
                       f"{list(FLOAT_DTYPES)}.") from e
  if name not in FLOAT_DTYPES:
    raise ValueError(f"Unsupported dtype {name!r}; choose one of "
                     f"{list(FLOAT_DTYPES)}.")
  return name


def numpy_dtype(name: str) -> np.dtype:
  """The numpy dtype (ml_dtypes for bfloat16) of a FLOAT_DTYPES name."""
  return np.dtype(dtype_from_name(name))


def expected_shapes(config: TransformerConfig) -> dict[str, tuple[int, ...]]:
  """Flat '/'-path -> shape of every parameter `Transformer(config)` creates."""
  d, f = config.embed_dim, config.hidden_dim
  n, k, h = config.num_heads, config.num_kv_heads, config.head_dim
  shapes = {"embedding": (config.vocab_size, d), "final_norm/scale": (d,)}
  for i in range(config.num_layers):
    p = f"layer_{i}/"
    shapes[p + "attn/q"] = (d, n, h)
    shapes[p + "attn/k"] = (d, k, h)
    shapes[p + "attn/v"] = (d, k, h)
    shapes[p + "attn/o"] = (n, h, d)
    if config.use_qk_norm:
      shapes[p + "attn/q_norm/scale"] = (h,)
      shapes[p + "attn/k_norm/scale"] = (h,)
    shapes[p + "mlp/gate"] = (d, f)
    shapes[p + "mlp/up"] = (d, f)
    shapes[p + "mlp/down"] = (f, d)
    shapes[p + "pre_attention_norm/scale"] = (d,)
    shapes[p + "pre_ffw_norm/scale"] = (d,)
    if config.use_post_attn_norm:
      shapes[p + "post_attention_norm/scale"] = (d,)
    if config.use_post_ffw_norm:
      shapes[p + "post_ffw_norm/scale"] = (d,)
  return shapes


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested dict -> {'a/b/c': leaf}."""
  flat = {}
  for key, value in params.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten(value, path + "/"))
    else:
      flat[path] = value
  return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """{'a/b/c': leaf} -> nested dict."""
  nested: dict[str, Any] = {}
  for path, value in flat.items():
    *parents, leaf = path.split("/")
    node = nested
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return nested


def _listing(names, limit: int = 8) -> str:
  names = sorted(names)
  shown = ", ".join(repr(n) for n in names[:limit])
  more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
  return f"[{shown}]{more}"


def report_names(missing, unexpected, what: str, source: str) -> None:
  """Raises a ValueError listing missing and unexpected names, if any."""
  problems = []
  if missing:
    problems.append(f"missing {len(missing)} {what}: {_listing(missing)}")
  if unexpected:
    problems.append(
        f"unexpected {len(unexpected)} {what}: {_listing(unexpected)}")
  if problems:
    raise ValueError(f"{source}: " + "; ".join(problems) + ".")


def check_names(found, expected, what: str, source: str) -> None:
  """Raises a ValueError listing names of `expected` not in `found` and back."""
  found, expected = set(found), set(expected)
  report_names(expected - found, found - expected, what, source)


def check_shape(name: str, found, expected, source: str) -> None:
  found, expected = tuple(found), tuple(expected)
  if found != expected:
    raise ValueError(f"{source}: tensor {name!r} has shape {found}, but the "
                     f"config expects {expected}.")


def to_numpy_params(params: Mapping[str, Any], config: TransformerConfig,
                    source: str = "params") -> dict[str, np.ndarray]:
  """Flattens, checks names and shapes against `config`, moves to host.

  Args:
    params: nested param tree of `Transformer(config)` (jax or numpy arrays);
      a {'params': ...} wrapper is unwrapped.
    config: the architecture the tree must match.
    source: how error messages name the tree.
  Returns:
    flat '/'-path -> numpy array (dtype unchanged).
  """
  if set(params) == {"params"}:
    params = params["params"]
  flat = flatten(params)
  expected = expected_shapes(config)
  check_names(flat, expected, "parameters", source)
  out = {}
  for name, value in flat.items():
    array = np.asarray(value)
    check_shape(name, array.shape, expected[name], source)
    if array.dtype.kind != "f" and array.dtype.name != "bfloat16":
      raise ValueError(f"{source}: parameter {name!r} has non-float dtype "
                       f"{array.dtype.name}.")
    out[name] = array
  return out


@contextlib.contextmanager
def atomic_directory(path: str, overwrite: bool) -> Iterator[str]:
  """Yields a temporary sibling directory that replaces `path` on success.

  The directory appears at `path` only once everything inside was written;
  on an exception the temporary directory is removed and `path` untouched.
  """
  path = os.path.abspath(os.fspath(path))
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"{path} already exists; pass overwrite=True to "
                          "replace it.")
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
  try:
    yield tmp
    old: Optional[str] = None
    if os.path.exists(path):
      old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-",
                             dir=parent)
      os.rmdir(old)
      os.rename(path, old)
    os.rename(tmp, path)
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
