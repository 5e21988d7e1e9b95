"""Hugging Face `transformers` Gemma checkpoints <-> swirl_jax parameters.

    from swirl_jax.checkpoints import hf
    config, params = hf.load("/ckpts/gemma-2-2b")             # HF directory
    hf.save("/tmp/export", config, params, dtype="bfloat16")  # for transformers

Reads `GemmaForCausalLM`, `Gemma2ForCausalLM`, `Gemma3ForCausalLM` (model_type
gemma / gemma2 / gemma3_text) and the text decoder of the multimodal
`Gemma3ForConditionalGeneration` (model_type gemma3; the vision tower is
ignored). Weights come from `model.safetensors` or from shards listed in
`model.safetensors.index.json`, through the numpy API of `safetensors`: torch
and transformers are never imported.

Layouts (torch Linear weights are [out, in]):
  q_proj [N*H, D] -> attn/q [D, N, H]      k_proj, v_proj [K*H, D] -> [D, K, H]
  o_proj [D, N*H] -> attn/o [N, H, D]      gate_proj, up_proj [F, D] -> [D, F]
  down_proj [D, F] -> mlp/down [F, D]      RMSNorm weights are copied as is
Both sides use the (1 + scale) RMSNorm convention. Gemma 1 calls its pre-MLP
norm `post_attention_layernorm`; Gemma 2/3 use that name for the post-attention
norm and `pre_feedforward_layernorm` for the pre-MLP one.

transformers' Gemma 3 stores `attn_logit_softcapping` but never applies it, so
a gemma3 config imports with attn_logits_soft_cap=None (what the model
computes), and a q/k-norm config with an attention cap cannot be exported.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, Mapping, Optional

import numpy as np

from swirl_jax.checkpoints import _common
from swirl_jax.models.config import GLOBAL, LOCAL, TransformerConfig

Params = Any

# model_type -> accepted `architectures` entries.
ARCHITECTURES = {
    "gemma": ("GemmaForCausalLM",),
    "gemma2": ("Gemma2ForCausalLM",),
    "gemma3_text": ("Gemma3ForCausalLM",),
    "gemma3": ("Gemma3ForConditionalGeneration",),
}

# transformers' class defaults, used for keys a config.json leaves out (the
# published Gemma 3 multimodal configs list only a few text_config fields).
_DEFAULTS = {
    "gemma": dict(
        vocab_size=256000, hidden_size=3072, intermediate_size=24576,
        num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=16,
        head_dim=256, max_position_embeddings=8192, rms_norm_eps=1e-6,
        rope_theta=10_000.0),
    "gemma2": dict(
        vocab_size=256000, hidden_size=2304, intermediate_size=9216,
        num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
        head_dim=256, max_position_embeddings=8192, rms_norm_eps=1e-6,
        rope_theta=10_000.0, query_pre_attn_scalar=256, sliding_window=4096,
        final_logit_softcapping=30.0, attn_logit_softcapping=50.0),
    "gemma3_text": dict(
        vocab_size=262_208, hidden_size=2304, intermediate_size=9216,
        num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
        head_dim=256, max_position_embeddings=131_072, rms_norm_eps=1e-6,
        rope_theta=1_000_000.0, rope_local_base_freq=10_000.0,
        query_pre_attn_scalar=256, sliding_window=4096,
        final_logit_softcapping=None, attn_logit_softcapping=None),
}

# transformers activations that are the tanh approximation of GELU (the only
# one the model implements). Gemma 1 configs also say "gelu" for it.
_TANH_GELU = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu_python_tanh")

_LAYER_TYPES = {"sliding_attention": LOCAL, "full_attention": GLOBAL}
_HF_LAYER_TYPE = {LOCAL: "sliding_attention", GLOBAL: "full_attention"}

# Where the text decoder lives inside the file, by model_type.
_PREFIXES = {
    "gemma": ("model.",),
    "gemma2": ("model.",),
    "gemma3_text": ("model.",),
    "gemma3": ("language_model.model.", "model.language_model."),
}
_LM_HEADS = ("lm_head.weight", "language_model.lm_head.weight")
_IGNORED_PREFIXES = {  # multimodal parts we do not convert
    "gemma3": ("vision_tower.", "multi_modal_projector.", "model.vision_tower.",
               "model.multi_modal_projector."),
}

_SAFETENSORS_FLOATS = {"F32": "float32", "BF16": "bfloat16", "F16": "float16",
                       "F64": "float64"}

_SINGLE_FILE = "model.safetensors"
_INDEX_FILE = "model.safetensors.index.json"


# --------------------------------------------------------------------------
# config.json <-> TransformerConfig
# --------------------------------------------------------------------------


def _rope_entry(params: Optional[Mapping[str, Any]], default_theta: float,
                where: str) -> tuple[float, float]:
  """(base, linear scale) of one transformers RoPE dict."""
  params = dict(params or {})
  rope_type = params.get("rope_type", params.get("type", "default"))
  base = float(params.get("rope_theta", default_theta))
  partial = params.get("partial_rotary_factor")
  if partial not in (None, 1, 1.0):
    raise ValueError(f"{where}: partial_rotary_factor={partial!r} is not "
                     "supported (RoPE rotates the whole head).")
  if rope_type == "default":
    return base, 1.0
  if rope_type == "linear":
    factor = params.get("factor")
    if not isinstance(factor, (int, float)) or factor <= 0:
      raise ValueError(f"{where}: linear RoPE scaling needs a positive "
                       f"'factor', got {factor!r}.")
    return base, float(factor)
  raise ValueError(f"{where}: unsupported RoPE type {rope_type!r}; only "
                   "'default' and 'linear' scaling are implemented.")


def _text_config(hf_config: Mapping[str, Any], source: str
                 ) -> tuple[str, dict[str, Any]]:
  """Checks model_type / architectures; returns (model_type, text fields)."""
  if not isinstance(hf_config, Mapping):
    raise ValueError(f"{source}: expected a JSON object, got "
                     f"{type(hf_config).__name__}.")
  model_type = hf_config.get("model_type")
  if model_type not in ARCHITECTURES:
    raise ValueError(f"{source}: unsupported model_type {model_type!r}; "
                     f"supported: {sorted(ARCHITECTURES)}.")
  archs = hf_config.get("architectures")
  if archs is not None:
    if isinstance(archs, str):
      archs = [archs]
    if not any(a in ARCHITECTURES[model_type] for a in archs):
      raise ValueError(
          f"{source}: unsupported architectures {list(archs)!r} for "
          f"model_type {model_type!r}; expected one of "
          f"{list(ARCHITECTURES[model_type])}.")
  if hf_config.get("quantization_config"):
    method = hf_config["quantization_config"].get("quant_method", "?")
    raise ValueError(f"{source}: quantized checkpoints (quant_method="
                     f"{method!r}) are not supported.")
  if model_type != "gemma3":
    return model_type, dict(hf_config)
  text = hf_config.get("text_config")
  if text is None:
    text = {}
  if not isinstance(text, Mapping):
    raise ValueError(f"{source}: text_config must be an object, got "
                     f"{text!r}.")
  text_type = text.get("model_type", "gemma3_text")
  if text_type != "gemma3_text":
    raise ValueError(f"{source}: text_config.model_type is {text_type!r}, "
                     "expected 'gemma3_text'.")
  return model_type, dict(text)


def config_from_hf(hf_config: Mapping[str, Any], dtype: str = "float32",
                   source: str = "config.json") -> TransformerConfig:
  """Maps a transformers Gemma config (the parsed config.json) to ours.

  Args:
    hf_config: the config.json contents (model_type gemma, gemma2,
      gemma3_text, or gemma3 with a text_config).
    dtype: compute and parameter dtype name of the returned config.
    source: how error messages name the config.
  Returns:
    The TransformerConfig.
  Raises:
    ValueError: unknown model_type / architectures, or a feature the model
      does not implement (exact GELU, non-linear RoPE scaling, bidirectional
      attention, attention biases, chunked attention, quantization).
  """
  model_type, text = _text_config(hf_config, source)
  family = "gemma3_text" if model_type == "gemma3" else model_type
  defaults = _DEFAULTS[family]
  where = source if model_type != "gemma3" else f"{source} text_config"

  def get(key, default=None):
    return text[key] if key in text else defaults.get(key, default)

  # Activation.
  if family == "gemma":
    for key in ("hidden_act", "hidden_activation"):
      act = text.get(key)
      if act is not None and act not in _TANH_GELU + ("gelu",):
        raise ValueError(f"{where}: {key}={act!r} is not supported; the model "
                         f"implements tanh-approximated GELU {_TANH_GELU}.")
  else:
    act = get("hidden_activation", "gelu_pytorch_tanh")
    if act not in _TANH_GELU:
      raise ValueError(f"{where}: hidden_activation={act!r} is not "
                       "supported; the model implements tanh-approximated "
                       f"GELU {_TANH_GELU}.")

  for key in ("attention_bias", "mlp_bias"):
    if text.get(key):
      raise ValueError(f"{where}: {key}=true is not supported (the model has "
                       "no biases).")
  if text.get("use_bidirectional_attention"):
    raise ValueError(f"{where}: use_bidirectional_attention=true is not "
                     "supported (the model is causal).")

  num_layers = get("num_hidden_layers")
  num_heads = get("num_attention_heads")
  num_kv_heads = get("num_key_value_heads") or num_heads
  hidden = get("hidden_size")
  head_dim = get("head_dim")
  if head_dim is None and isinstance(hidden, int) and isinstance(num_heads,
                                                                 int):
    head_dim = hidden // num_heads

  # Layer kinds.
  if family == "gemma":
    types = (GLOBAL,) * num_layers if isinstance(num_layers, int) else ()
  elif text.get("layer_types") is not None:
    raw = list(text["layer_types"])
    bad = [t for t in raw if t not in _LAYER_TYPES]
    if bad:
      raise ValueError(f"{where}: unsupported layer type {bad[0]!r} in "
                       f"layer_types; supported: {sorted(_LAYER_TYPES)}.")
    if len(raw) != num_layers:
      raise ValueError(f"{where}: layer_types has {len(raw)} entries but "
                       f"num_hidden_layers={num_layers}.")
    types = tuple(_LAYER_TYPES[t] for t in raw)
  else:
    if family == "gemma2":
      period = 2
    else:
      period = text.get("sliding_window_pattern",
                        text.get("_sliding_window_pattern", 6))
      if not isinstance(period, int) or period <= 0:
        raise ValueError(f"{where}: sliding_window_pattern must be a positive "
                         f"int, got {period!r}.")
    types = tuple(GLOBAL if (i + 1) % period == 0 else LOCAL
                  for i in range(num_layers))

  window = None
  if LOCAL in types:
    window = get("sliding_window")
    if not isinstance(window, int) or window <= 0:
      raise ValueError(f"{where}: sliding-window layers need a positive int "
                       f"sliding_window, got {window!r}.")

  # RoPE.
  if family == "gemma3_text":
    rope = text.get("rope_parameters") or {}
    if not isinstance(rope, Mapping) or not set(rope) <= set(_LAYER_TYPES):
      raise ValueError(f"{where}: Gemma 3 rope_parameters must be keyed by "
                       f"layer type {sorted(_LAYER_TYPES)}, got {rope!r}.")
    full = dict(rope.get("full_attention") or {})
    if text.get("rope_scaling"):
      full.update(text["rope_scaling"])
    base_g, scale_g = _rope_entry(full, get("rope_theta"),
                                  f"{where} rope (full_attention)")
    base_l, scale_l = _rope_entry(rope.get("sliding_attention"),
                                  get("rope_local_base_freq"),
                                  f"{where} rope (sliding_attention)")
  else:
    rope = text.get("rope_scaling") or text.get("rope_parameters") or {}
    if not isinstance(rope, Mapping) or set(rope) & set(_LAYER_TYPES):
      raise ValueError(f"{where}: expected one RoPE dict for {family}, got "
                       f"{rope!r}.")
    base_g, scale_g = _rope_entry(rope, get("rope_theta"), f"{where} rope")
    base_l, scale_l = base_g, scale_g

  # Scaling and caps.
  if family == "gemma":
    query_pre_attn_scalar = None
    attn_cap = final_cap = None
  else:
    query_pre_attn_scalar = get("query_pre_attn_scalar")
    attn_cap = get("attn_logit_softcapping")
    final_cap = get("final_logit_softcapping")
    if family == "gemma3_text":
      # transformers' Gemma 3 attention never applies attn_logit_softcapping
      # (the field is stored but unused); follow what the model computes.
      attn_cap = None
  for name, value in (("attn_logit_softcapping", attn_cap),
                      ("final_logit_softcapping", final_cap),
                      ("query_pre_attn_scalar", query_pre_attn_scalar)):
    if value is not None and (not isinstance(value, (int, float))
                              or isinstance(value, bool) or value <= 0):
      raise ValueError(f"{where}: {name} must be a positive number or null, "
                       f"got {value!r}.")

  post_norms = family != "gemma"
  try:
    return TransformerConfig(
        vocab_size=get("vocab_size"),
        num_layers=num_layers,
        embed_dim=hidden,
        hidden_dim=get("intermediate_size"),
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        attention_types=types,
        sliding_window_size=window,
        query_pre_attn_scalar=query_pre_attn_scalar,
        attn_logits_soft_cap=(None if attn_cap is None else float(attn_cap)),
        final_logit_soft_cap=(None if final_cap is None else float(final_cap)),
        use_post_attn_norm=post_norms,
        use_post_ffw_norm=post_norms,
        use_qk_norm=family == "gemma3_text",
        rope_base_global=base_g,
        rope_base_local=base_l,
        rope_scale_global=scale_g,
        rope_scale_local=scale_l,
        rms_norm_eps=float(get("rms_norm_eps")),
        dtype=dtype,
        param_dtype=dtype,
        max_seq_len=int(get("max_position_embeddings")),
    )
  except (TypeError, ValueError) as e:
    raise ValueError(f"{where}: {e}") from e


def _family_for(config: TransformerConfig) -> str:
  """Which transformers model_type can express `config` exactly."""
  cfg = config
  used = sorted(set(cfg.attention_types))
  ropes = {t: ((cfg.rope_base_local, cfg.rope_scale_local) if t == LOCAL else
               (cfg.rope_base_global, cfg.rope_scale_global)) for t in used}
  if cfg.use_post_attn_norm != cfg.use_post_ffw_norm:
    raise ValueError(
        "No transformers Gemma class has only one of the post-norms "
        f"(use_post_attn_norm={cfg.use_post_attn_norm}, use_post_ffw_norm="
        f"{cfg.use_post_ffw_norm}).")
  if cfg.use_qk_norm:
    if not cfg.use_post_attn_norm:
      raise ValueError("use_qk_norm=True maps to Gemma 3, which also needs "
                       "use_post_attn_norm and use_post_ffw_norm.")
    if cfg.attn_logits_soft_cap is not None:
      raise ValueError(
          "use_qk_norm=True maps to Gemma 3, whose transformers attention "
          "ignores attn_logit_softcapping; attn_logits_soft_cap="
          f"{cfg.attn_logits_soft_cap} cannot be exported.")
    return "gemma3_text"
  if cfg.use_post_attn_norm:
    if len(set(ropes.values())) > 1:
      raise ValueError(
          "Different RoPE settings per layer kind (local "
          f"{ropes.get(LOCAL)}, global {ropes.get(GLOBAL)}) need Gemma 3, "
          "which also needs use_qk_norm=True; Gemma 2 has one RoPE.")
    return "gemma2"
  problems = []
  if LOCAL in used:
    problems.append("sliding-window layers")
  if cfg.attn_logits_soft_cap is not None:
    problems.append(f"attn_logits_soft_cap={cfg.attn_logits_soft_cap}")
  if cfg.final_logit_soft_cap is not None:
    problems.append(f"final_logit_soft_cap={cfg.final_logit_soft_cap}")
  if cfg.query_pre_attn_scalar not in (None, cfg.head_dim):
    problems.append(f"query_pre_attn_scalar={cfg.query_pre_attn_scalar} != "
                    f"head_dim={cfg.head_dim}")
  if problems:
    raise ValueError("A config without post-norms maps to Gemma 1, which does "
                     "not support " + ", ".join(problems) + ".")
  return "gemma"


def _number(x: float):
  """An int when integral (transformers types some of these fields as int)."""
  return int(x) if float(x).is_integer() else float(x)


def _rope_dict(base: float, scale: float) -> dict[str, Any]:
  if scale == 1.0:
    return {"rope_type": "default", "rope_theta": float(base)}
  return {"rope_type": "linear", "rope_theta": float(base),
          "factor": float(scale)}


def config_to_hf(config: TransformerConfig, dtype: str = "float32"
                 ) -> dict[str, Any]:
  """The config.json transformers needs to rebuild `config`.

  Picks Gemma 1 (no post-norms), Gemma 2 (post-norms, one RoPE) or Gemma 3
  text (q/k norm) by what the config uses.

  Raises:
    ValueError: when no transformers Gemma class expresses the config.
  """
  cfg = config
  dtype = _common.dtype_name(dtype)
  family = _family_for(cfg)
  out: dict[str, Any] = {
      "architectures": list(ARCHITECTURES[family]),
      "model_type": family,
      "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.embed_dim,
      "intermediate_size": cfg.hidden_dim,
      "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads,
      "num_key_value_heads": cfg.num_kv_heads,
      "head_dim": cfg.head_dim,
      "rms_norm_eps": cfg.rms_norm_eps,
      "max_position_embeddings": cfg.max_seq_len,
      "tie_word_embeddings": True,
      "attention_bias": False,
      "attention_dropout": 0.0,
      "use_bidirectional_attention": False,
      "dtype": dtype,
  }
  kind = cfg.attention_types[0]
  single_rope = (_rope_dict(cfg.rope_base_local, cfg.rope_scale_local)
                 if kind == LOCAL and GLOBAL not in cfg.attention_types else
                 _rope_dict(cfg.rope_base_global, cfg.rope_scale_global))
  if family == "gemma":
    out["hidden_act"] = "gelu_pytorch_tanh"
    out["rope_parameters"] = single_rope
    return out
  out["hidden_activation"] = "gelu_pytorch_tanh"
  out["layer_types"] = [_HF_LAYER_TYPE[t] for t in cfg.attention_types]
  out["sliding_window"] = int(cfg.sliding_window_size or cfg.max_seq_len)
  out["query_pre_attn_scalar"] = _number(cfg.query_pre_attn_scalar
                                         or cfg.head_dim)
  out["attn_logit_softcapping"] = cfg.attn_logits_soft_cap
  out["final_logit_softcapping"] = cfg.final_logit_soft_cap
  if family == "gemma2":
    out["rope_parameters"] = single_rope
  else:
    out["rope_parameters"] = {
        "full_attention": _rope_dict(cfg.rope_base_global,
                                     cfg.rope_scale_global),
        "sliding_attention": _rope_dict(cfg.rope_base_local,
                                        cfg.rope_scale_local),
    }
  return out


# --------------------------------------------------------------------------
# Tensor layouts
# --------------------------------------------------------------------------

# kind -> (hf -> ours, ours -> hf); `c` is the config.
_Convert = Callable[[np.ndarray, TransformerConfig], np.ndarray]
_LAYOUTS: dict[str, tuple[_Convert, _Convert]] = {
    # [N*H, D] <-> [D, N, H]
    "q": (lambda w, c: w.reshape(c.num_heads, c.head_dim, c.embed_dim)
          .transpose(2, 0, 1),
          lambda w, c: w.transpose(1, 2, 0).reshape(
              c.num_heads * c.head_dim, c.embed_dim)),
    # [K*H, D] <-> [D, K, H]
    "kv": (lambda w, c: w.reshape(c.num_kv_heads, c.head_dim, c.embed_dim)
           .transpose(2, 0, 1),
           lambda w, c: w.transpose(1, 2, 0).reshape(
               c.num_kv_heads * c.head_dim, c.embed_dim)),
    # [D, N*H] <-> [N, H, D]
    "o": (lambda w, c: w.reshape(c.embed_dim, c.num_heads, c.head_dim)
          .transpose(1, 2, 0),
          lambda w, c: w.transpose(2, 0, 1).reshape(
              c.embed_dim, c.num_heads * c.head_dim)),
    # torch Linear [out, in] <-> einsum [in, out]
    "linear": (lambda w, c: w.T, lambda w, c: w.T),
    "copy": (lambda w, c: w, lambda w, c: w),
}


def _hf_shape(kind: str, ours: tuple[int, ...], c: TransformerConfig):
  if kind == "q":
    return (c.num_heads * c.head_dim, c.embed_dim)
  if kind == "kv":
    return (c.num_kv_heads * c.head_dim, c.embed_dim)
  if kind == "o":
    return (c.embed_dim, c.num_heads * c.head_dim)
  if kind == "linear":
    return tuple(reversed(ours))
  return ours


def tensor_names(config: TransformerConfig
                 ) -> dict[str, tuple[str, str]]:
  """HF tensor name -> (our '/'-path, layout kind).

  HF names are relative to the decoder ('layers.0.mlp.up_proj.weight'); the
  causal LM files prefix them with 'model.'.
  """
  gemma1 = not config.use_post_attn_norm
  names = {"embed_tokens.weight": ("embedding", "copy"),
           "norm.weight": ("final_norm/scale", "copy")}
  for i in range(config.num_layers):
    hf, ours = f"layers.{i}.", f"layer_{i}/"
    names[hf + "self_attn.q_proj.weight"] = (ours + "attn/q", "q")
    names[hf + "self_attn.k_proj.weight"] = (ours + "attn/k", "kv")
    names[hf + "self_attn.v_proj.weight"] = (ours + "attn/v", "kv")
    names[hf + "self_attn.o_proj.weight"] = (ours + "attn/o", "o")
    if config.use_qk_norm:
      names[hf + "self_attn.q_norm.weight"] = (ours + "attn/q_norm/scale",
                                               "copy")
      names[hf + "self_attn.k_norm.weight"] = (ours + "attn/k_norm/scale",
                                               "copy")
    names[hf + "mlp.gate_proj.weight"] = (ours + "mlp/gate", "linear")
    names[hf + "mlp.up_proj.weight"] = (ours + "mlp/up", "linear")
    names[hf + "mlp.down_proj.weight"] = (ours + "mlp/down", "linear")
    names[hf + "input_layernorm.weight"] = (ours + "pre_attention_norm/scale",
                                            "copy")
    if gemma1:
      names[hf + "post_attention_layernorm.weight"] = (
          ours + "pre_ffw_norm/scale", "copy")
    else:
      names[hf + "post_attention_layernorm.weight"] = (
          ours + "post_attention_norm/scale", "copy")
      names[hf + "pre_feedforward_layernorm.weight"] = (
          ours + "pre_ffw_norm/scale", "copy")
      names[hf + "post_feedforward_layernorm.weight"] = (
          ours + "post_ffw_norm/scale", "copy")
  return names


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def _weight_files(path: str) -> list[str]:
  """The safetensors files to read: the index's shards or the single file."""
  index = os.path.join(path, _INDEX_FILE)
  if os.path.exists(index):
    try:
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
      if not isinstance(weight_map, Mapping):
        raise TypeError(f"weight_map is a {type(weight_map).__name__}")
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"{index} is not a valid safetensors index (needs a "
                       f"'weight_map' object): {e!r}") from e
    files = sorted(set(weight_map.values()))
    for name in files:
      if not os.path.exists(os.path.join(path, name)):
        raise FileNotFoundError(f"{index} lists shard {name!r}, which is "
                                f"missing from {path}.")
    return [os.path.join(path, name) for name in files]
  single = os.path.join(path, _SINGLE_FILE)
  if os.path.exists(single):
    return [single]
  present = sorted(os.listdir(path))
  hint = ""
  if any(n.endswith((".bin", ".pt", ".pth")) for n in present):
    hint = " Only safetensors weights are supported (not pytorch .bin)."
  raise FileNotFoundError(f"No weights in {path}: expected {_SINGLE_FILE} or "
                          f"{_INDEX_FILE}; found {present}.{hint}")


def _safetensors_dtype(handle, key: str, source: str) -> str:
  st_dtype = handle.get_slice(key).get_dtype()
  if st_dtype not in _SAFETENSORS_FLOATS:
    raise ValueError(f"{source}: tensor {key!r} has dtype {st_dtype}, which "
                     "cannot be represented; expected a float tensor "
                     f"({sorted(_SAFETENSORS_FLOATS)}).")
  return _SAFETENSORS_FLOATS[st_dtype]


def load(path: str | os.PathLike, dtype: Any = None
         ) -> tuple[TransformerConfig, Params]:
  """Reads a Hugging Face Gemma directory into (config, params).

  Args:
    path: directory with config.json and model.safetensors (or shards with
      model.safetensors.index.json).
    dtype: parameter dtype ('float32', 'bfloat16', 'float16'); None keeps the
      checkpoint's dtype when all tensors share one of those (else float32).
      The returned config has dtype == param_dtype == this.
  Returns:
    (TransformerConfig, nested param dict of jax arrays).
  Raises:
    FileNotFoundError: missing directory, config.json or weight files.
    ValueError: unsupported config, tensor of wrong shape or dtype, missing or
      unexpected tensors, an lm_head that is not tied to the embedding.
  """
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"Checkpoint directory {path} does not exist.")
  if not os.path.isdir(path):
    raise NotADirectoryError(f"Checkpoint path {path} is not a directory.")
  config_path = os.path.join(path, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{config_path} not found: a Hugging Face "
                            "checkpoint directory needs a config.json.")
  try:
    with open(config_path) as f:
      hf_config = json.load(f)
  except ValueError as e:
    raise ValueError(f"{config_path} is not valid JSON: {e}") from e
  target = None if dtype is None else _common.dtype_name(dtype)
  config = config_from_hf(hf_config, target or "float32", config_path)
  model_type = hf_config["model_type"]

  names = tensor_names(config)
  expected = _common.expected_shapes(config)
  files = _weight_files(path)

  # Locate the decoder prefix from the embedding tensor.
  keys_by_file = {}
  for file in files:
    with safe_open(file, framework="np") as handle:
      keys_by_file[file] = list(handle.keys())
  all_keys = {k for keys in keys_by_file.values() for k in keys}
  prefixes = [p for p in _PREFIXES[model_type]
              if p + "embed_tokens.weight" in all_keys]
  if not prefixes:
    wanted = [p + "embed_tokens.weight" for p in _PREFIXES[model_type]]
    raise ValueError(f"{path}: missing tensors: no embedding found (looked "
                     f"for {wanted}).")
  prefix = prefixes[0]
  ignored = _IGNORED_PREFIXES.get(model_type, ())

  arrays: dict[str, np.ndarray] = {}
  lm_heads = {}
  source_dtypes = set()
  unexpected = []
  for file, keys in keys_by_file.items():
    source = os.path.join(os.path.basename(path), os.path.basename(file))
    with safe_open(file, framework="np") as handle:
      for key in keys:
        rel = key[len(prefix):] if key.startswith(prefix) else None
        if rel is not None and rel in names:
          ours, kind = names[rel]
          source_dtypes.add(_safetensors_dtype(handle, key, source))
          shape = tuple(handle.get_slice(key).get_shape())
          _common.check_shape(key, shape,
                              _hf_shape(kind, expected[ours], config), source)
          arrays[ours] = _LAYOUTS[kind][0](handle.get_tensor(key), config)
        elif key in _LM_HEADS:
          _safetensors_dtype(handle, key, source)
          lm_heads[key] = handle.get_tensor(key)
        elif key.endswith("rotary_emb.inv_freq"):
          continue  # a non-persistent buffer some old exports contain
        elif key.startswith(ignored) and not key.startswith(prefix):
          continue
        else:
          unexpected.append(key)
  missing = [prefix + rel for rel, (ours, _) in names.items()
             if ours not in arrays]
  _common.report_names(missing, unexpected, "tensors", path)

  for key, head in lm_heads.items():
    embedding = arrays["embedding"]
    if head.shape != embedding.shape or not np.array_equal(
        head.astype(np.float32), embedding.astype(np.float32)):
      raise ValueError(f"{path}: tensor {key!r} differs from the embedding; "
                       "untied output embeddings are not supported.")
  tied = [hf_config.get("tie_word_embeddings", True)]
  if model_type == "gemma3":
    tied.append((hf_config.get("text_config") or {}).get(
        "tie_word_embeddings", True))
  if not lm_heads and False in tied:
    raise ValueError(f"{path}: tie_word_embeddings=false but no lm_head "
                     "tensor; untied output embeddings are not supported.")

  if target is None:
    only = source_dtypes.pop() if len(source_dtypes) == 1 else None
    target = only if only in _common.FLOAT_DTYPES else "float32"
    config = config.replace(dtype=target, param_dtype=target)
  np_dtype = _common.numpy_dtype(target)
  params = {name: jnp.asarray(np.asarray(a).astype(np_dtype, copy=False))
            for name, a in arrays.items()}
  return config, _common.unflatten(params)


# --------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------


def _shards(tensors: Mapping[str, np.ndarray], max_shard_bytes: Optional[int]
            ) -> list[dict[str, np.ndarray]]:
  if not max_shard_bytes:
    return [dict(tensors)]
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, array in tensors.items():
    if shards[-1] and size + array.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = array
    size += array.nbytes
  return shards


def save(path: str | os.PathLike, config: TransformerConfig, params: Params,
         dtype: Any = "float32", *, overwrite: bool = False,
         max_shard_bytes: Optional[int] = None,
         extra_files: Optional[Mapping[str, bytes]] = None) -> None:
  """Writes a directory `transformers.AutoModelForCausalLM.from_pretrained`
  loads (config.json + safetensors, tied embeddings).

  The directory is written under a temporary name next to `path` and renamed
  into place when complete.

  Args:
    path: output directory.
    config: the architecture; picks GemmaForCausalLM (no post-norms),
      Gemma2ForCausalLM (post-norms) or Gemma3ForCausalLM (q/k norm).
    params: param tree of `Transformer(config)` (a {'params': ...} wrapper is
      accepted).
    dtype: stored dtype, one of 'float32', 'bfloat16', 'float16'.
    overwrite: replace an existing `path`.
    max_shard_bytes: if set, split into model-0000i-of-0000n.safetensors
      files of at most this many bytes (a larger tensor gets its own shard)
      plus model.safetensors.index.json.
    extra_files: file name -> contents, written into the directory before
      it is renamed into place (a tokenizer, provenance), so a reader never
      sees the model without them.
  Raises:
    ValueError: bad dtype, params that do not match the config, or a config
      no transformers Gemma class expresses.
    FileExistsError: `path` exists and overwrite is False.
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top

  dtype = _common.dtype_name(dtype)
  hf_config = config_to_hf(config, dtype)
  flat = _common.to_numpy_params(params, config)
  np_dtype = _common.numpy_dtype(dtype)
  tensors = {}
  for rel, (ours, kind) in tensor_names(config).items():
    array = flat[ours].astype(np.float32)
    array = _LAYOUTS[kind][1](array, config).astype(np_dtype)
    tensors["model." + rel] = np.ascontiguousarray(array)

  shards = _shards(tensors, max_shard_bytes)
  with _common.atomic_directory(os.fspath(path), overwrite) as tmp:
    metadata = {"format": "pt"}
    if len(shards) == 1:
      save_file(shards[0], os.path.join(tmp, _SINGLE_FILE), metadata=metadata)
    else:
      width = max(5, int(math.log10(len(shards))) + 1)
      weight_map = {}
      for i, shard in enumerate(shards):
        name = (f"model-{i + 1:0{width}d}-of-{len(shards):0{width}d}"
                ".safetensors")
        save_file(shard, os.path.join(tmp, name), metadata=metadata)
        weight_map.update({k: name for k in shard})
      index = {"metadata": {"total_size": sum(a.nbytes
                                              for a in tensors.values())},
               "weight_map": dict(sorted(weight_map.items()))}
      with open(os.path.join(tmp, _INDEX_FILE), "w") as f:
        json.dump(index, f, indent=2)
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(hf_config, f, indent=2, sort_keys=True)
    for name, data in (extra_files or {}).items():
      if os.path.basename(name) != name or name in ("", ".", ".."):
        raise ValueError(f"extra_files names must be plain file names, "
                         f"got {name!r}.")
      with open(os.path.join(tmp, name), "wb") as f:
        f.write(data)
