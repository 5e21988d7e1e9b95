"""Named model presets: the published Gemma shapes plus `tiny` for CPU work.

`get_config(name, **overrides)` is the one way to get a preset; gin model files
call it through `swirl_jax.models.preset_config`.
"""

from __future__ import annotations

from typing import Any, Callable

from swirl_jax import registries
from swirl_jax.models.config import GLOBAL, TransformerConfig, alternating_pattern

PRESETS: registries.Registry[Callable[[], TransformerConfig]] = (
    registries.Registry("model preset"))
_register = PRESETS.register


def _gemma1(num_layers, embed_dim, hidden_dim, num_heads, num_kv_heads):
  return TransformerConfig(
      vocab_size=256_000, num_layers=num_layers, embed_dim=embed_dim,
      hidden_dim=hidden_dim, num_heads=num_heads, num_kv_heads=num_kv_heads,
      head_dim=256, attention_types=(GLOBAL,) * num_layers, max_seq_len=8192)


def _gemma2(num_layers, embed_dim, hidden_dim, num_heads, num_kv_heads,
            head_dim, query_pre_attn_scalar):
  return TransformerConfig(
      vocab_size=256_000, num_layers=num_layers, embed_dim=embed_dim,
      hidden_dim=hidden_dim, num_heads=num_heads, num_kv_heads=num_kv_heads,
      head_dim=head_dim, attention_types=alternating_pattern(num_layers, 1),
      sliding_window_size=4096, query_pre_attn_scalar=query_pre_attn_scalar,
      attn_logits_soft_cap=50.0, final_logit_soft_cap=30.0,
      use_post_attn_norm=True, use_post_ffw_norm=True, max_seq_len=8192)


def _gemma3(num_layers, embed_dim, hidden_dim, num_heads, num_kv_heads,
            head_dim, query_pre_attn_scalar, vocab_size, window, global_scale,
            max_seq_len):
  return TransformerConfig(
      vocab_size=vocab_size, num_layers=num_layers, embed_dim=embed_dim,
      hidden_dim=hidden_dim, num_heads=num_heads, num_kv_heads=num_kv_heads,
      head_dim=head_dim, attention_types=alternating_pattern(num_layers, 5),
      sliding_window_size=window, query_pre_attn_scalar=query_pre_attn_scalar,
      use_post_attn_norm=True, use_post_ffw_norm=True, use_qk_norm=True,
      rope_base_global=1_000_000.0, rope_base_local=10_000.0,
      rope_scale_global=global_scale, max_seq_len=max_seq_len)


@_register("tiny")
def tiny() -> TransformerConfig:
  """A ~1M-parameter Gemma 2-style model that trains in minutes on 2 CPU cores.

  Exercises every Gemma 2 feature (GQA, sliding window, soft-caps, post-norms).
  The vocabulary matches the embedded sentencepiece model (1024 pieces).
  """
  return TransformerConfig(
      vocab_size=1024, num_layers=4, embed_dim=128, hidden_dim=512,
      num_heads=4, num_kv_heads=1, head_dim=32,
      attention_types=alternating_pattern(4, 1), sliding_window_size=64,
      query_pre_attn_scalar=32, attn_logits_soft_cap=50.0,
      final_logit_soft_cap=30.0, use_post_attn_norm=True,
      use_post_ffw_norm=True, max_seq_len=1024)


@_register("gemma-2b")
def gemma_2b():
  return _gemma1(18, 2048, 16384, 8, 1)


@_register("gemma-7b")
def gemma_7b():
  return _gemma1(28, 3072, 24576, 16, 16)


@_register("gemma2-2b")
def gemma2_2b():
  return _gemma2(26, 2304, 9216, 8, 4, 256, 256)


@_register("gemma2-9b")
def gemma2_9b():
  return _gemma2(42, 3584, 14336, 16, 8, 256, 256)


@_register("gemma2-27b")
def gemma2_27b():
  # query_pre_attn_scalar = embed_dim / num_heads = 144 (not head_dim).
  return _gemma2(46, 4608, 36864, 32, 16, 128, 144)


@_register("gemma3-270m")
def gemma3_270m():
  # google/gemma-3-270m: 268,098,176 parameters, 170M of them the embedding.
  return _gemma3(18, 640, 2048, 4, 1, 256, 256, 262_144, 512, 1.0, 32_768)


@_register("gemma3-1b")
def gemma3_1b():
  return _gemma3(26, 1152, 6912, 4, 1, 256, 256, 262_144, 512, 1.0, 32_768)


@_register("gemma3-4b")
def gemma3_4b():
  return _gemma3(34, 2560, 10240, 8, 4, 256, 256, 262_208, 1024, 8.0, 131_072)


@_register("gemma3-12b")
def gemma3_12b():
  return _gemma3(48, 3840, 15360, 16, 8, 256, 256, 262_208, 1024, 8.0, 131_072)


@_register("gemma3-27b")
def gemma3_27b():
  # query_pre_attn_scalar = embed_dim / num_heads = 168.
  return _gemma3(62, 5376, 21504, 32, 16, 128, 168, 262_208, 1024, 8.0, 131_072)


def preset_names() -> list[str]:
  return PRESETS.names()


def get_config(name: str, **overrides: Any) -> TransformerConfig:
  """The preset `name`, with dataclass fields replaced by `overrides`."""
  config = PRESETS.get(name)()
  return config.replace(**overrides) if overrides else config
