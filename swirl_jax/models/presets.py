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


def _gemma1(*, num_layers, embed_dim, hidden_dim, num_heads, num_kv_heads):
  return TransformerConfig(
      vocab_size=256_000, num_layers=num_layers, embed_dim=embed_dim,
      hidden_dim=hidden_dim, num_heads=num_heads, num_kv_heads=num_kv_heads,
      head_dim=256, attention_types=(GLOBAL,) * num_layers, max_seq_len=8192)


def _gemma2(*, num_layers, embed_dim, hidden_dim, num_heads, num_kv_heads,
            head_dim, query_pre_attn_scalar):
  return TransformerConfig(
      vocab_size=256_000, num_layers=num_layers, embed_dim=embed_dim,
      hidden_dim=hidden_dim, num_heads=num_heads, num_kv_heads=num_kv_heads,
      head_dim=head_dim, attention_types=alternating_pattern(num_layers, 1),
      sliding_window_size=4096, query_pre_attn_scalar=query_pre_attn_scalar,
      attn_logits_soft_cap=50.0, final_logit_soft_cap=30.0,
      use_post_attn_norm=True, use_post_ffw_norm=True, max_seq_len=8192)


def _gemma3(*, num_layers, embed_dim, hidden_dim, num_heads, num_kv_heads,
            head_dim, query_pre_attn_scalar, vocab_size, sliding_window_size,
            rope_scale_global, max_seq_len):
  return TransformerConfig(
      vocab_size=vocab_size, num_layers=num_layers, embed_dim=embed_dim,
      hidden_dim=hidden_dim, num_heads=num_heads, num_kv_heads=num_kv_heads,
      head_dim=head_dim, attention_types=alternating_pattern(num_layers, 5),
      sliding_window_size=sliding_window_size,
      query_pre_attn_scalar=query_pre_attn_scalar,
      use_post_attn_norm=True, use_post_ffw_norm=True, use_qk_norm=True,
      rope_base_global=1_000_000.0, rope_base_local=10_000.0,
      rope_scale_global=rope_scale_global, max_seq_len=max_seq_len)


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
  return _gemma1(num_layers=18, embed_dim=2048, hidden_dim=16384, num_heads=8,
                 num_kv_heads=1)


@_register("gemma-7b")
def gemma_7b():
  return _gemma1(num_layers=28, embed_dim=3072, hidden_dim=24576, num_heads=16,
                 num_kv_heads=16)


@_register("gemma2-2b")
def gemma2_2b():
  return _gemma2(num_layers=26, embed_dim=2304, hidden_dim=9216, num_heads=8,
                 num_kv_heads=4, head_dim=256, query_pre_attn_scalar=256)


@_register("gemma2-9b")
def gemma2_9b():
  return _gemma2(num_layers=42, embed_dim=3584, hidden_dim=14336, num_heads=16,
                 num_kv_heads=8, head_dim=256, query_pre_attn_scalar=256)


@_register("gemma2-27b")
def gemma2_27b():
  # query_pre_attn_scalar = embed_dim / num_heads = 144 (not head_dim).
  return _gemma2(num_layers=46, embed_dim=4608, hidden_dim=36864, num_heads=32,
                 num_kv_heads=16, head_dim=128, query_pre_attn_scalar=144)


@_register("gemma3-270m")
def gemma3_270m():
  # google/gemma-3-270m: 268,098,176 parameters, 170M of them the embedding.
  return _gemma3(num_layers=18, embed_dim=640, hidden_dim=2048, num_heads=4,
                 num_kv_heads=1, head_dim=256, query_pre_attn_scalar=256,
                 vocab_size=262_144, sliding_window_size=512,
                 rope_scale_global=1.0, max_seq_len=32_768)


@_register("gemma3-1b")
def gemma3_1b():
  return _gemma3(num_layers=26, embed_dim=1152, hidden_dim=6912, num_heads=4,
                 num_kv_heads=1, head_dim=256, query_pre_attn_scalar=256,
                 vocab_size=262_144, sliding_window_size=512,
                 rope_scale_global=1.0, max_seq_len=32_768)


@_register("gemma3-4b")
def gemma3_4b():
  return _gemma3(num_layers=34, embed_dim=2560, hidden_dim=10240, num_heads=8,
                 num_kv_heads=4, head_dim=256, query_pre_attn_scalar=256,
                 vocab_size=262_208, sliding_window_size=1024,
                 rope_scale_global=8.0, max_seq_len=131_072)


@_register("gemma3-12b")
def gemma3_12b():
  return _gemma3(num_layers=48, embed_dim=3840, hidden_dim=15360, num_heads=16,
                 num_kv_heads=8, head_dim=256, query_pre_attn_scalar=256,
                 vocab_size=262_208, sliding_window_size=1024,
                 rope_scale_global=8.0, max_seq_len=131_072)


@_register("gemma3-27b")
def gemma3_27b():
  # query_pre_attn_scalar = embed_dim / num_heads = 168.
  return _gemma3(num_layers=62, embed_dim=5376, hidden_dim=21504, num_heads=32,
                 num_kv_heads=16, head_dim=128, query_pre_attn_scalar=168,
                 vocab_size=262_208, sliding_window_size=1024,
                 rope_scale_global=8.0, max_seq_len=131_072)


def preset_names() -> list[str]:
  return PRESETS.names()


def get_config(name: str, **overrides: Any) -> TransformerConfig:
  """The preset `name`, with dataclass fields replaced by `overrides`."""
  config = PRESETS.get(name)()
  return config.replace(**overrides) if overrides else config
