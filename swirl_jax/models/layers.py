"""Building blocks of the Gemma decoder: RMSNorm, RoPE, attention, GeGLU MLP.

Every parameter is created with a logical-axis annotation (see
`swirl_jax.models.LOGICAL_AXES`), so a mesh can shard it by rules without any
change here. Activations are annotated with `nn.with_logical_constraint`, which
is a no-op unless sharding rules are active.

Shape letters: B batch, T query length, S key length (T, or the cache length),
D embed_dim, N query heads, K kv heads, G = N / K, H head_dim, F hidden_dim.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from swirl_jax.models.config import LOCAL, TransformerConfig

# A large finite negative number: masked logits become exactly 0 after softmax
# without producing NaN for rows that are fully masked (left padding).
_MASK_VALUE = -2.3819763e38


def _param(module: nn.Module, name: str, init, shape, axes, dtype):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape,
                      dtype)


def _fan_in_init(in_axis, out_axis):
  return nn.initializers.variance_scaling(
      1.0, "fan_in", "truncated_normal", in_axis=in_axis, out_axis=out_axis)


class RMSNorm(nn.Module):
  """y = x / rms(x) * (1 + scale), computed in float32 (Gemma convention)."""

  eps: float = 1e-6
  axis_name: str = "embed"
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = _param(self, "scale", nn.initializers.zeros_init(),
                   (x.shape[-1],), (self.axis_name,), self.param_dtype)
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(var + self.eps)
    y = y * (1.0 + scale.astype(jnp.float32))
    return y.astype(x.dtype)


def apply_rope(x: jax.Array, positions: jax.Array, base: float,
               scale: float = 1.0) -> jax.Array:
  """Rotary embedding, 'rotate half' layout.

  Args:
    x: [B, T, heads, H].
    positions: [B, T] integer positions.
    base: wavelength base (10k, or 1M for Gemma 3 global layers).
    scale: linear scaling factor; positions are divided by it.
  Returns:
    [B, T, heads, H] in x.dtype.
  """
  head_dim = x.shape[-1]
  fraction = 2.0 * jnp.arange(head_dim // 2, dtype=jnp.float32) / head_dim
  inv_freq = 1.0 / (base ** fraction) / scale
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, H/2]
  sin = jnp.sin(angles)[:, :, None, :]
  cos = jnp.cos(angles)[:, :, None, :]
  x32 = x.astype(jnp.float32)
  first, second = jnp.split(x32, 2, axis=-1)
  out = jnp.concatenate([first * cos - second * sin,
                         second * cos + first * sin], axis=-1)
  return out.astype(x.dtype)


def soft_cap(x: jax.Array, cap: Optional[float]) -> jax.Array:
  """cap * tanh(x / cap); identity when cap is None."""
  if cap is None:
    return x
  return jnp.tanh(x / cap) * cap


class Attention(nn.Module):
  """Multi-head / grouped-query attention with optional KV cache.

  With a cache ({'k', 'v'} of shape [B, K, S, H]), the new keys and values
  are written at slot `write_index` (the same for every row: prompts are
  left-padded) and the queries attend to the whole cache under
  `attention_mask`.
  """

  config: TransformerConfig
  attn_type: str

  @nn.compact
  def __call__(self, x, positions, attention_mask, cache=None,
               write_index=None):
    """x: [B, T, D]; positions: [B, T]; attention_mask: [B, T, S] bool.

    Returns (out [B, T, D], new_cache or None).
    """
    cfg = self.config
    dtype, pdtype = cfg.compute_dtype, cfg.params_dtype
    d, n, k, h = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    wq = _param(self, "q", _fan_in_init(0, (1, 2)), (d, n, h),
                ("embed", "heads", "head_dim"), pdtype)
    wk = _param(self, "k", _fan_in_init(0, (1, 2)), (d, k, h),
                ("embed", "kv_heads", "head_dim"), pdtype)
    wv = _param(self, "v", _fan_in_init(0, (1, 2)), (d, k, h),
                ("embed", "kv_heads", "head_dim"), pdtype)
    wo = _param(self, "o", _fan_in_init((0, 1), 2), (n, h, d),
                ("heads", "head_dim", "embed"), pdtype)

    x = x.astype(dtype)
    q = jnp.einsum("btd,dnh->btnh", x, wq.astype(dtype))
    key = jnp.einsum("btd,dkh->btkh", x, wk.astype(dtype))
    value = jnp.einsum("btd,dkh->btkh", x, wv.astype(dtype))
    if cfg.use_qk_norm:
      q = RMSNorm(cfg.rms_norm_eps, "head_dim", pdtype, name="q_norm")(q)
      key = RMSNorm(cfg.rms_norm_eps, "head_dim", pdtype, name="k_norm")(key)

    is_local = self.attn_type == LOCAL
    base = cfg.rope_base_local if is_local else cfg.rope_base_global
    scale = cfg.rope_scale_local if is_local else cfg.rope_scale_global
    q = apply_rope(q, positions, base, scale)
    key = apply_rope(key, positions, base, scale)
    q = q * jnp.asarray(cfg.query_scale, dtype)
    q = nn.with_logical_constraint(
        q, ("activation_batch", "activation_length", "activation_heads",
            "activation_head_dim"))

    t = x.shape[1]
    # Keys and values heads-major, [B, K, S, H]: both attention matmuls are
    # then plain batched matmuls over (B, K), fast on every backend.
    key = jnp.swapaxes(key, 1, 2)
    value = jnp.swapaxes(value, 1, 2)
    new_cache = None
    if cache is not None:
      key = jax.lax.dynamic_update_slice(
          cache["k"], key.astype(cache["k"].dtype), (0, 0, write_index, 0))
      value = jax.lax.dynamic_update_slice(
          cache["v"], value.astype(cache["v"].dtype), (0, 0, write_index, 0))
      new_cache = {"k": key, "v": value}
      q_slots = write_index + jnp.arange(t)
    else:
      q_slots = jnp.arange(t)
    s = key.shape[2]
    k_slots = jnp.arange(s)

    mask = attention_mask
    if is_local:
      window = (q_slots[:, None] - k_slots[None, :]) < cfg.sliding_window_size
      mask = jnp.logical_and(mask, window[None])

    b = x.shape[0]
    g = n // k
    # [B, T, N, H] -> [B, K, G*T, H]: query rows of one KV head together.
    qg = q.reshape(b, t, k, g, h).transpose(0, 2, 3, 1, 4).reshape(
        b, k, g * t, h)
    logits = jnp.einsum("bkmh,bksh->bkms", qg, key.astype(dtype),
                        preferred_element_type=jnp.float32)
    logits = soft_cap(logits.reshape(b, k, g, t, s), cfg.attn_logits_soft_cap)
    logits = jnp.where(mask[:, None, None, :, :], logits, _MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(dtype)
    out = jnp.einsum("bkms,bksh->bkmh", probs.reshape(b, k, g * t, s),
                     value.astype(dtype))
    out = out.reshape(b, k, g, t, h).transpose(0, 3, 1, 2, 4).reshape(
        b, t, n, h)
    out = jnp.einsum("btnh,nhd->btd", out, wo.astype(dtype))
    return out, new_cache


class GeGLU(nn.Module):
  """gelu_tanh(x W_gate) * (x W_up) W_down."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    dtype, pdtype = cfg.compute_dtype, cfg.params_dtype
    d, f = cfg.embed_dim, cfg.hidden_dim
    w_gate = _param(self, "gate", _fan_in_init(0, 1), (d, f), ("embed", "mlp"),
                    pdtype)
    w_up = _param(self, "up", _fan_in_init(0, 1), (d, f), ("embed", "mlp"),
                  pdtype)
    w_down = _param(self, "down", _fan_in_init(0, 1), (f, d), ("mlp", "embed"),
                    pdtype)
    x = x.astype(dtype)
    gate = jnp.einsum("btd,df->btf", x, w_gate.astype(dtype))
    up = jnp.einsum("btd,df->btf", x, w_up.astype(dtype))
    hidden = jax.nn.gelu(gate, approximate=True) * up
    hidden = nn.with_logical_constraint(
        hidden, ("activation_batch", "activation_length", "activation_mlp"))
    return jnp.einsum("btf,fd->btd", hidden, w_down.astype(dtype))


class Block(nn.Module):
  """Pre-norm attention and MLP with residuals (and Gemma 2/3 post-norms)."""

  config: TransformerConfig
  attn_type: str

  @nn.compact
  def __call__(self, x, positions, attention_mask, cache=None,
               write_index=None):
    cfg = self.config
    pdtype = cfg.params_dtype
    norm = lambda name: RMSNorm(cfg.rms_norm_eps, "embed", pdtype, name=name)
    h = norm("pre_attention_norm")(x)
    h, new_cache = Attention(cfg, self.attn_type, name="attn")(
        h, positions, attention_mask, cache, write_index)
    if cfg.use_post_attn_norm:
      h = norm("post_attention_norm")(h)
    x = x + h
    h = norm("pre_ffw_norm")(x)
    h = GeGLU(cfg, name="mlp")(h)
    if cfg.use_post_ffw_norm:
      h = norm("post_ffw_norm")(h)
    x = x + h
    x = nn.with_logical_constraint(
        x, ("activation_batch", "activation_length", "activation_embed"))
    return x, new_cache
