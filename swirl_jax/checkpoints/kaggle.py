"""Official Flax/Orbax Gemma checkpoints (Kaggle, google-deepmind `gemma`).

    from swirl_jax.checkpoints import kaggle
    params = kaggle.load("/ckpts/gemma2-2b/2b", "gemma2")   # infer shapes
    params = kaggle.load(path, config)                       # verify shapes
    config, params = kaggle.load_with_config(path, "gemma2-9b")

The published checkpoints are orbax PyTrees in the library's "flat" layout:
the top-level keys are '/'-joined module paths, each holding a small dict,

    'transformer/embedder'                      {'input_embedding': [V, D]}
    'transformer/layer_{i}/attn/q_einsum'       {'w': [N, D, H]}
    'transformer/layer_{i}/attn/kv_einsum'      {'w': [2, K, D, H]}
    'transformer/layer_{i}/attn/qkv_einsum'     {'w': [3, N, D, H]}  (K == N)
    'transformer/layer_{i}/attn/attn_vec_einsum'{'w': [N, H, D]}
    'transformer/layer_{i}/attn/_query_norm'    {'scale': [H]}       (Gemma 3)
    'transformer/layer_{i}/attn/_key_norm'      {'scale': [H]}       (Gemma 3)
    'transformer/layer_{i}/mlp/gating_einsum'   {'w': [2, D, F] or [2, F, D]}
    'transformer/layer_{i}/mlp/linear'          {'w': [F, D]}
    'transformer/layer_{i}/pre_attention_norm'  {'scale': [D]}  (and
        post_attention_norm, pre_ffw_norm, post_ffw_norm)
    'transformer/final_norm'                    {'scale': [D]}

The gating einsum is [2, D, F] in Gemma 1 and Gemma 2 2B and [2, F, D]
(`transpose_gating_einsum=True` in the library) in Gemma 2 9B/27B and Gemma 3;
index 0 is the GELU gate, index 1 the linear branch. The nested layout the
newer `gm` API saves ({'layer_0': {'mlp': {'gating_einsum': ...}}}, with or
without a 'transformer' level) is read as well. Multimodal parameters
('SigLiPFromPatches_0/...', 'embedder/mm_...', 'vision_encoder') are ignored.

Published checkpoints pad the Gemma 1/2 vocabulary to 256128 rows (the HF
exports have 256000): give a preset or family name to take V from the file.
orbax is imported only when a checkpoint is read or written.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional, Union

import numpy as np

from swirl_jax.checkpoints import _common
from swirl_jax.models import presets
from swirl_jax.models.config import TransformerConfig, alternating_pattern

Params = Any
PresetOrConfig = Union[str, TransformerConfig]

FAMILIES = ("gemma", "gemma2", "gemma3")
_FAMILY_ALIASES = {"gemma": "gemma", "gemma1": "gemma", "gemma2": "gemma2",
                   "gemma3": "gemma3"}
# Preset name prefix -> family.
_PRESET_FAMILY = (("gemma3-", "gemma3"), ("gemma2-", "gemma2"),
                  ("gemma-", "gemma"))
_SHAPE_FIELDS = ("num_layers", "embed_dim", "hidden_dim", "num_heads",
                 "num_kv_heads", "head_dim", "use_post_attn_norm",
                 "use_post_ffw_norm", "use_qk_norm")
_IGNORED = re.compile(r"^(SigLiPFromPatches_0/|vision_encoder/|embedder/mm_)")
_LAYER = re.compile(r"^layer_(\d+)/")

# Our per-layer norm paths <-> the library's module names.
_NORMS = {
    "pre_attention_norm/scale": "pre_attention_norm/scale",
    "post_attention_norm/scale": "post_attention_norm/scale",
    "pre_ffw_norm/scale": "pre_ffw_norm/scale",
    "post_ffw_norm/scale": "post_ffw_norm/scale",
    "attn/q_norm/scale": "attn/_query_norm/scale",
    "attn/k_norm/scale": "attn/_key_norm/scale",
}


# --------------------------------------------------------------------------
# Layout normalisation
# --------------------------------------------------------------------------


def _normalize(tree: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Restored tree (flat or nested) -> {'layer_0/attn/q_einsum/w': array}.

  Names are relative to the transformer; the MLP einsums lose the trailing
  '/w' the flat layout has ('layer_0/mlp/gating_einsum').
  """
  flat = _common.flatten(tree)
  out = {}
  for name, value in flat.items():
    for prefix in ("params/", "transformer/"):
      if name.startswith(prefix):
        name = name[len(prefix):]
    if name.endswith(("/mlp/gating_einsum/w", "/mlp/linear/w")):
      name = name[:-2]
    if _IGNORED.match(name):
      continue
    out[name] = value
  return out


def _display(name: str) -> str:
  """A normalised name as the flat layout spells it."""
  if name.endswith(("/mlp/gating_einsum", "/mlp/linear")):
    name += "/w"
  return "transformer/" + name


# --------------------------------------------------------------------------
# Config inference
# --------------------------------------------------------------------------


def _shape(flat, name: str) -> tuple[int, ...]:
  if name not in flat:
    raise ValueError(f"Checkpoint is missing {_display(name)!r}.")
  return tuple(np.shape(flat[name]))


def _inferred_fields(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Shape fields of the config, read off the checkpoint's tensors."""
  vocab, d = _shape(flat, "embedder/input_embedding")
  layers = sorted({int(m.group(1)) for m in map(_LAYER.match, flat) if m})
  if not layers:
    raise ValueError("Checkpoint has no 'transformer/layer_{i}' parameters.")
  if layers != list(range(len(layers))):
    gaps = sorted(set(range(layers[-1] + 1)) - set(layers))
    raise ValueError(f"Checkpoint layers are not contiguous: missing "
                     f"layer_{gaps[0]} of layer_0..layer_{layers[-1]}.")
  if "layer_0/attn/qkv_einsum/w" in flat:
    _, n, _, h = _shape(flat, "layer_0/attn/qkv_einsum/w")
    k = n
  else:
    n, _, h = _shape(flat, "layer_0/attn/q_einsum/w")
    k = _shape(flat, "layer_0/attn/kv_einsum/w")[1]
  f = _shape(flat, "layer_0/mlp/linear")[0]
  return dict(
      vocab_size=vocab, num_layers=len(layers), embed_dim=d, hidden_dim=f,
      num_heads=n, num_kv_heads=k, head_dim=h,
      use_post_attn_norm="layer_0/post_attention_norm/scale" in flat,
      use_post_ffw_norm="layer_0/post_ffw_norm/scale" in flat,
      use_qk_norm="layer_0/attn/_query_norm/scale" in flat)


def _family_default(family: str, fields: Mapping[str, Any]
                    ) -> TransformerConfig:
  """Generic config of a family for shapes that match no preset."""
  num_layers = fields["num_layers"]
  if family == "gemma":
    extra = dict(max_seq_len=8192)
  elif family == "gemma2":
    extra = dict(attention_types=alternating_pattern(num_layers, 1),
                 sliding_window_size=4096,
                 query_pre_attn_scalar=fields["head_dim"],
                 attn_logits_soft_cap=50.0, final_logit_soft_cap=30.0,
                 max_seq_len=8192)
  else:
    extra = dict(attention_types=alternating_pattern(num_layers, 5),
                 sliding_window_size=1024,
                 query_pre_attn_scalar=fields["head_dim"],
                 rope_base_global=1_000_000.0, rope_base_local=10_000.0,
                 max_seq_len=131_072)
  return TransformerConfig(**fields, **extra)


def _preset_family(name: str) -> Optional[str]:
  for prefix, family in _PRESET_FAMILY:
    if name.startswith(prefix):
      return family
  return None


def _family_features(family: str) -> dict[str, bool]:
  post = family != "gemma"
  return dict(use_post_attn_norm=post, use_post_ffw_norm=post,
              use_qk_norm=family == "gemma3")


def infer_config(tree: Mapping[str, Any], preset_or_family: str
                 ) -> TransformerConfig:
  """A config for a restored checkpoint tree from a preset or family name.

  A family ('gemma', 'gemma2', 'gemma3') takes every shape from the
  checkpoint and the remaining switches (windows, caps, RoPE) from the preset
  of that family with the same shapes, or from generic family defaults (Gemma
  2: window 4096, caps 50/30; Gemma 3: window 1024, RoPE 1M/10k, no scaling).
  A preset name ('gemma2-9b', ...) must match the checkpoint's shapes, except
  the vocabulary size, which is taken from the checkpoint.
  """
  fields = _inferred_fields(_normalize(tree))
  key = preset_or_family.lower()
  if key in _FAMILY_ALIASES:
    family = _FAMILY_ALIASES[key]
    wanted = _family_features(family)
    for name, value in wanted.items():
      if fields[name] != value:
        raise ValueError(
            f"Checkpoint has {name}={fields[name]}, but family {family!r} has "
            f"{name}={value}; is it a checkpoint of another family?")
    for preset in presets.preset_names():
      if _preset_family(preset) != family:
        continue
      candidate = presets.get_config(preset)
      if all(getattr(candidate, n) == fields[n] for n in _SHAPE_FIELDS):
        return candidate.replace(vocab_size=fields["vocab_size"])
    return _family_default(family, fields)
  try:
    template = presets.get_config(preset_or_family)
  except ValueError as e:
    raise ValueError(f"{e} Families: {list(FAMILIES)}.") from None
  diffs = [f"{n}: preset {getattr(template, n)}, checkpoint {fields[n]}"
           for n in _SHAPE_FIELDS if getattr(template, n) != fields[n]]
  if diffs:
    raise ValueError(f"Checkpoint does not match preset "
                     f"{preset_or_family!r} ({'; '.join(diffs)}).")
  return template.replace(vocab_size=fields["vocab_size"])


# --------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------


def _gating_transposed(flat, config: TransformerConfig,
                       transpose_gating_einsum: Optional[bool]) -> bool:
  """Whether the checkpoint stores gating_einsum as [2, F, D]."""
  if transpose_gating_einsum is not None:
    return bool(transpose_gating_einsum)
  d, f = config.embed_dim, config.hidden_dim
  shape = _shape(flat, "layer_0/mlp/gating_einsum")
  if d == f and shape == (2, d, f):
    raise ValueError(
        f"embed_dim == hidden_dim == {d}: the gating_einsum layout ([2, D, F] "
        "or [2, F, D]) is ambiguous; pass transpose_gating_einsum.")
  if shape == (2, f, d):
    return True
  if shape == (2, d, f):
    return False
  raise ValueError(
      f"tensor {_display('layer_0/mlp/gating_einsum')!r} has shape {shape}, "
      f"but the config expects {(2, d, f)} or {(2, f, d)}.")


def _expected_kaggle_shapes(flat, config: TransformerConfig,
                            transposed: bool) -> dict[str, tuple[int, ...]]:
  """Normalised checkpoint name -> shape for `config`."""
  c = config
  d, f, n, k, h = (c.embed_dim, c.hidden_dim, c.num_heads, c.num_kv_heads,
                   c.head_dim)
  shapes = {"embedder/input_embedding": (c.vocab_size, d),
            "final_norm/scale": (d,)}
  for i in range(c.num_layers):
    p = f"layer_{i}/"
    if p + "attn/qkv_einsum/w" in flat:
      shapes[p + "attn/qkv_einsum/w"] = (3, n, d, h)
    else:
      shapes[p + "attn/q_einsum/w"] = (n, d, h)
      shapes[p + "attn/kv_einsum/w"] = (2, k, d, h)
    shapes[p + "attn/attn_vec_einsum/w"] = (n, h, d)
    shapes[p + "mlp/gating_einsum"] = (2, f, d) if transposed else (2, d, f)
    shapes[p + "mlp/linear"] = (f, d)
    for ours, theirs in _NORMS.items():
      if ours.startswith("attn/") and not c.use_qk_norm:
        continue
      if ours.startswith("post_attention") and not c.use_post_attn_norm:
        continue
      if ours.startswith("post_ffw") and not c.use_post_ffw_norm:
        continue
      shapes[p + theirs] = (h,) if ours.startswith("attn/") else (d,)
  return shapes


def _check_float(name: str, value) -> None:
  dt = np.dtype(getattr(value, "dtype", None) or np.asarray(value).dtype)
  if dt.name not in _common.FLOAT_DTYPES + ("float64",):
    raise ValueError(f"tensor {_display(name)!r} has dtype {dt.name}, which "
                     "cannot be represented; expected float32, bfloat16 or "
                     "float16.")


def from_kaggle_layout(tree: Mapping[str, Any],
                       preset_or_config: PresetOrConfig, *, dtype: Any = None,
                       transpose_gating_einsum: Optional[bool] = None
                       ) -> tuple[TransformerConfig, Params]:
  """Converts a restored official-layout tree into (config, our params).

  Args:
    tree: the restored PyTree (flat or nested layout, numpy arrays).
    preset_or_config: a TransformerConfig (every shape is verified against
      it), a preset name or a family name (see `infer_config`).
    dtype: parameter dtype; None: the config's param_dtype when a config is
      given, else the checkpoint's dtype (float32 if mixed or float64).
    transpose_gating_einsum: the gating layout ([2, F, D] if True); None
      infers it from the shape (an error when embed_dim == hidden_dim).
  Returns:
    (config, nested params of jax arrays). The config's param_dtype is the
    chosen dtype; an inferred config also computes in it.
  Raises:
    ValueError: unknown preset, shapes that disagree with the config (naming
      the tensor, the expected and the found shape), missing or unexpected
      tensors, non-float tensors.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  flat = _normalize(tree)
  if isinstance(preset_or_config, TransformerConfig):
    config = preset_or_config
    given = True
  elif isinstance(preset_or_config, str):
    config = infer_config(flat, preset_or_config)
    given = False
  else:
    raise TypeError(f"preset_or_config must be a TransformerConfig or a "
                    f"preset/family name, got {preset_or_config!r}.")

  transposed = _gating_transposed(flat, config, transpose_gating_einsum)
  expected = _expected_kaggle_shapes(flat, config, transposed)
  if (config.num_kv_heads != config.num_heads and
      any(n.endswith("qkv_einsum/w") for n in expected)):
    raise ValueError(
        f"Checkpoint uses qkv_einsum (multi-head attention) but the config has "
        f"num_kv_heads={config.num_kv_heads} != num_heads={config.num_heads}.")
  _common.check_names([_display(n) for n in flat],
                      [_display(n) for n in expected], "tensors", "checkpoint")
  for name, shape in expected.items():
    _check_float(name, flat[name])
    found = tuple(np.shape(flat[name]))
    if found != shape:
      hint = ""
      if name == "embedder/input_embedding" and found[1:] == shape[1:]:
        hint = (" (published checkpoints pad the vocabulary; pass a preset "
                "or family name to take vocab_size from the checkpoint)")
      raise ValueError(f"checkpoint: tensor {_display(name)!r} has shape "
                       f"{found}, but the config expects {shape}{hint}.")

  dtypes = {np.dtype(getattr(v, "dtype", np.float32)).name
            for v in flat.values()}
  if dtype is not None:
    target = _common.dtype_name(dtype)
  elif given:
    target = config.param_dtype
  else:
    only = dtypes.pop() if len(dtypes) == 1 else None
    target = only if only in _common.FLOAT_DTYPES else "float32"
  config = config.replace(param_dtype=target,
                          dtype=config.dtype if given else target)
  np_dtype = _common.numpy_dtype(target)

  out = {"embedding": flat["embedder/input_embedding"],
         "final_norm/scale": flat["final_norm/scale"]}
  for i in range(config.num_layers):
    p = f"layer_{i}/"
    if p + "attn/qkv_einsum/w" in flat:
      q, k, v = np.asarray(flat[p + "attn/qkv_einsum/w"])
    else:
      q = np.asarray(flat[p + "attn/q_einsum/w"])
      k, v = np.asarray(flat[p + "attn/kv_einsum/w"])
    out[p + "attn/q"] = q.transpose(1, 0, 2)
    out[p + "attn/k"] = k.transpose(1, 0, 2)
    out[p + "attn/v"] = v.transpose(1, 0, 2)
    out[p + "attn/o"] = flat[p + "attn/attn_vec_einsum/w"]
    gate, up = np.asarray(flat[p + "mlp/gating_einsum"])
    if transposed:
      gate, up = gate.T, up.T
    out[p + "mlp/gate"] = gate
    out[p + "mlp/up"] = up
    out[p + "mlp/down"] = flat[p + "mlp/linear"]
    for ours, theirs in _NORMS.items():
      if p + theirs in flat:
        out[p + ours] = flat[p + theirs]
  params = {name: jnp.asarray(np.asarray(a).astype(np_dtype, copy=False))
            for name, a in out.items()}
  return config, _common.unflatten(params)


def to_kaggle_layout(params: Params, config: TransformerConfig, *,
                     transpose_gating_einsum: Optional[bool] = None,
                     use_qkv_einsum: Optional[bool] = None
                     ) -> dict[str, dict[str, np.ndarray]]:
  """Our params -> the official flat layout (numpy), ready for orbax.

  Args:
    params: param tree of `Transformer(config)`.
    config: its architecture.
    transpose_gating_einsum: store gating_einsum as [2, F, D]; None follows
      the library: False without post-norms (Gemma 1), True otherwise (the
      Gemma 2 2B release is the exception: pass False for it).
    use_qkv_einsum: store one qkv_einsum [3, N, D, H]; None: when
      num_kv_heads == num_heads, as the library does. Needs K == N.
  Returns:
    {'transformer/layer_0/attn/q_einsum': {'w': array}, ...}.
  """
  flat = _common.to_numpy_params(params, config)
  if transpose_gating_einsum is None:
    transpose_gating_einsum = config.use_post_attn_norm
  if use_qkv_einsum is None:
    use_qkv_einsum = config.num_kv_heads == config.num_heads
  if use_qkv_einsum and config.num_kv_heads != config.num_heads:
    raise ValueError(f"use_qkv_einsum needs num_kv_heads == num_heads, got "
                     f"{config.num_kv_heads} and {config.num_heads}.")

  out: dict[str, dict[str, np.ndarray]] = {
      "transformer/embedder": {"input_embedding": flat["embedding"]},
      "transformer/final_norm": {"scale": flat["final_norm/scale"]},
  }
  for i in range(config.num_layers):
    p, t = f"layer_{i}/", f"transformer/layer_{i}/"
    q, k, v = (flat[p + "attn/" + x].transpose(1, 0, 2) for x in "qkv")
    if use_qkv_einsum:
      out[t + "attn/qkv_einsum"] = {"w": np.stack([q, k, v])}
    else:
      out[t + "attn/q_einsum"] = {"w": q}
      out[t + "attn/kv_einsum"] = {"w": np.stack([k, v])}
    out[t + "attn/attn_vec_einsum"] = {"w": flat[p + "attn/o"]}
    gate, up = flat[p + "mlp/gate"], flat[p + "mlp/up"]
    if transpose_gating_einsum:
      gate, up = gate.T, up.T
    out[t + "mlp/gating_einsum"] = {"w": np.stack([gate, up])}
    out[t + "mlp/linear"] = {"w": flat[p + "mlp/down"]}
    for ours, theirs in _NORMS.items():
      if p + ours in flat:
        module = theirs[:-len("/scale")]
        out[t + module] = {"scale": flat[p + ours]}
  return {k: {n: np.ascontiguousarray(a) for n, a in v.items()}
          for k, v in out.items()}


# --------------------------------------------------------------------------
# Orbax I/O
# --------------------------------------------------------------------------


def _restore(path: str) -> Any:
  """Restores an orbax PyTree checkpoint as numpy arrays."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  path = os.path.abspath(os.fspath(path))
  if not os.path.exists(path):
    raise FileNotFoundError(f"Checkpoint directory {path} does not exist.")
  if not os.path.isdir(path):
    raise NotADirectoryError(f"Checkpoint path {path} is not a directory.")
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    metadata = checkpointer.metadata(path)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{path} is not a readable orbax PyTree checkpoint "
                     f"(no usable _METADATA / checkpoint file): {e}") from e
  tree = getattr(metadata, "item_metadata", metadata)
  tree = getattr(tree, "tree", tree)
  if not isinstance(tree, Mapping) or not tree:
    raise ValueError(f"{path} is not a readable orbax PyTree checkpoint: no "
                     f"parameter metadata found (got {type(tree).__name__}).")
  restore_args = jax.tree.map(
      lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return checkpointer.restore(
      path, args=ocp.args.PyTreeRestore(restore_args=restore_args))


def load_with_config(path: str | os.PathLike,
                     preset_or_config: PresetOrConfig, *, dtype: Any = None,
                     transpose_gating_einsum: Optional[bool] = None
                     ) -> tuple[TransformerConfig, Params]:
  """Restores an official checkpoint; returns (config, params).

  See `from_kaggle_layout` for the arguments.
  """
  tree = _restore(path)
  try:
    return from_kaggle_layout(tree, preset_or_config, dtype=dtype,
                              transpose_gating_einsum=transpose_gating_einsum)
  except ValueError as e:
    raise ValueError(f"{os.fspath(path)}: {e}") from e


def load(path: str | os.PathLike, preset_or_config: PresetOrConfig, *,
         dtype: Any = None, transpose_gating_einsum: Optional[bool] = None
         ) -> Params:
  """Restores an official Flax/Orbax Gemma checkpoint into our params.

  Args:
    path: the orbax checkpoint directory (holding _METADATA / manifest).
    preset_or_config: TransformerConfig to verify against, or a preset or
      family name to infer the config from the tensor shapes
      (`load_with_config` also returns that config).
    dtype: parameter dtype (see `from_kaggle_layout`).
    transpose_gating_einsum: gating layout override (see
      `from_kaggle_layout`).
  Returns:
    Nested param dict of jax arrays for `Transformer(config)`.
  """
  return load_with_config(path, preset_or_config, dtype=dtype,
                          transpose_gating_einsum=transpose_gating_einsum)[1]


def save(path: str | os.PathLike, config: TransformerConfig, params: Params,
         *, transpose_gating_einsum: Optional[bool] = None,
         use_qkv_einsum: Optional[bool] = None,
         overwrite: bool = False) -> None:
  """Writes params in the official flat layout with orbax (see
  `to_kaggle_layout`); orbax writes to a temporary directory and renames."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  tree = to_kaggle_layout(params, config,
                          transpose_gating_einsum=transpose_gating_einsum,
                          use_qkv_einsum=use_qkv_einsum)
  path = os.path.abspath(os.fspath(path))
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"{path} already exists; pass overwrite=True to "
                          "replace it.")
  checkpointer = ocp.PyTreeCheckpointer()
  checkpointer.save(path, tree, force=overwrite)
