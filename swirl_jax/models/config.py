"""One configuration dataclass for the Gemma 1, Gemma 2 and Gemma 3 text decoders.

The fields name architectural switches, not model families, so a preset is just a
choice of values (see `presets.py`). Layer kinds are given per layer in
`attention_types` ('global' = full causal attention, 'local' = sliding window).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional, Sequence

import jax.numpy as jnp

GLOBAL = "global"
LOCAL = "local"
_ATTENTION_TYPES = (GLOBAL, LOCAL)
_DTYPES = {
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
}


def dtype_from_name(name: str):
  """Maps 'float32' / 'bfloat16' / 'float16' to a jnp dtype, with a clear error."""
  if not isinstance(name, str):
    name = jnp.dtype(name).name
  if name not in _DTYPES:
    raise ValueError(
        f"Unsupported dtype {name!r}; choose one of {sorted(_DTYPES)}.")
  return _DTYPES[name]


# Keys a workdir's model_config.json may carry beside the fields (where the
# weights came from); `from_dict` ignores them.
_RECORD_ONLY_KEYS = ("weights_source",)


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Shapes and switches of a Gemma-family decoder.

  Attributes:
    vocab_size: number of token ids V.
    num_layers: decoder blocks.
    embed_dim: model width D.
    hidden_dim: GeGLU width F (per branch).
    num_heads: query heads N.
    num_kv_heads: key/value heads K (K == N: MHA, 1: MQA, otherwise GQA).
    head_dim: H, independent of D / N.
    attention_types: per layer, 'global' or 'local' (sliding window).
    sliding_window_size: W for local layers: a query at slot q sees keys at
      slots k with q - W < k <= q.
    query_pre_attn_scalar: queries are scaled by this ** -0.5 (None: head_dim).
    attn_logits_soft_cap: Gemma 2 attention-logit cap (None: off).
    final_logit_soft_cap: Gemma 2 final-logit cap (None: off).
    use_post_attn_norm / use_post_ffw_norm: Gemma 2/3 post-norms.
    use_qk_norm: Gemma 3 RMSNorm of queries and keys over head_dim.
    rope_base_global / rope_base_local: RoPE wavelengths per layer kind.
    rope_scale_global / rope_scale_local: linear RoPE scaling factors
      (positions are divided by the factor; Gemma 3 4B+ uses 8 on global).
    rms_norm_eps: epsilon of every RMSNorm.
    dtype: compute dtype name ('float32' / 'bfloat16').
    param_dtype: parameter dtype name.
    max_seq_len: longest sequence the presets promise (informational, used by
      samplers to bound caches).
  """

  vocab_size: int
  num_layers: int
  embed_dim: int
  hidden_dim: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  attention_types: tuple[str, ...] = ()
  sliding_window_size: Optional[int] = None
  query_pre_attn_scalar: Optional[float] = None
  attn_logits_soft_cap: Optional[float] = None
  final_logit_soft_cap: Optional[float] = None
  use_post_attn_norm: bool = False
  use_post_ffw_norm: bool = False
  use_qk_norm: bool = False
  rope_base_global: float = 10_000.0
  rope_base_local: float = 10_000.0
  rope_scale_global: float = 1.0
  rope_scale_local: float = 1.0
  rms_norm_eps: float = 1e-6
  dtype: str = "float32"
  param_dtype: str = "float32"
  max_seq_len: int = 8192

  def __post_init__(self):
    types = tuple(self.attention_types) or (GLOBAL,) * self.num_layers
    object.__setattr__(self, "attention_types", types)
    for name in ("vocab_size", "num_layers", "embed_dim", "hidden_dim",
                 "num_heads", "num_kv_heads", "head_dim"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"TransformerConfig.{name} must be a positive int, "
                         f"got {value!r}.")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_heads={self.num_heads} is not a multiple of "
          f"num_kv_heads={self.num_kv_heads}.")
    if self.head_dim % 2:
      raise ValueError(f"head_dim={self.head_dim} must be even for RoPE.")
    if len(types) != self.num_layers:
      raise ValueError(
          f"attention_types has {len(types)} entries but num_layers="
          f"{self.num_layers}.")
    bad = [t for t in types if t not in _ATTENTION_TYPES]
    if bad:
      raise ValueError(f"Unknown attention type {bad[0]!r}; use one of "
                       f"{_ATTENTION_TYPES}.")
    if LOCAL in types and not self.sliding_window_size:
      raise ValueError("Local attention layers need sliding_window_size > 0.")
    dtype_from_name(self.dtype)
    dtype_from_name(self.param_dtype)

  # --- derived quantities -------------------------------------------------
  @property
  def query_scale(self) -> float:
    scalar = self.query_pre_attn_scalar or self.head_dim
    return float(scalar) ** -0.5

  @property
  def compute_dtype(self):
    return dtype_from_name(self.dtype)

  @property
  def params_dtype(self):
    return dtype_from_name(self.param_dtype)

  def num_params(self, include_embedding: bool = True) -> int:
    """Exact parameter count of the decoder built from this config."""
    d, f, h = self.embed_dim, self.hidden_dim, self.head_dim
    attn = d * h * (self.num_heads * 2 + self.num_kv_heads * 2)
    mlp = 3 * d * f
    norms = d * (2 + int(self.use_post_attn_norm) + int(self.use_post_ffw_norm))
    qk = 2 * h if self.use_qk_norm else 0
    per_layer = attn + mlp + norms + qk
    total = self.num_layers * per_layer + d
    if include_embedding:
      total += self.vocab_size * d
    return total

  def replace(self, **changes: Any) -> "TransformerConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["attention_types"] = list(self.attention_types)
    return out

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "TransformerConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    d = {k: v for k, v in d.items() if k not in _RECORD_ONLY_KEYS}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"Unknown TransformerConfig fields {unknown}.")
    d = dict(d)
    if "attention_types" in d:
      d["attention_types"] = tuple(d["attention_types"])
    return cls(**d)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)


def alternating_pattern(num_layers: int, local_per_global: int) -> tuple[str, ...]:
  """Per-layer kinds: `local_per_global` local layers, then one global, repeated.

  Gemma 2 is (1 local, 1 global), Gemma 3 is (5 local, 1 global); the first
  layer is always local.
  """
  period = local_per_global + 1
  return tuple(GLOBAL if (i + 1) % period == 0 else LOCAL
               for i in range(num_layers))


def same_architecture(a: TransformerConfig, b: TransformerConfig,
                      ignore: Sequence[str] = ("dtype", "param_dtype",
                                               "max_seq_len")) -> bool:
  """True when the two configs describe the same parameter shapes and maths."""
  da, db = a.to_dict(), b.to_dict()
  for k in ignore:
    da.pop(k, None)
    db.pop(k, None)
  return da == db


def config_differences(a: TransformerConfig, b: TransformerConfig
                       ) -> dict[str, tuple[Any, Any]]:
  """{field: (a's value, b's value)} for every field where they differ."""
  da, db = a.to_dict(), b.to_dict()
  return {k: (v, db.get(k)) for k, v in da.items() if db.get(k) != v}
