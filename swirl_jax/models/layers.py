"""Building blocks of the Gemma decoder: RMSNorm, RoPE, attention, GeGLU MLP.

Every parameter is created with a logical-axis annotation (see
`swirl_jax.models.LOGICAL_AXES`), so a mesh can shard it by rules without any
change here. Activations are annotated with `nn.with_logical_constraint`, which
is a no-op unless sharding rules are active.

Shape letters: B batch, T query length, S key length (T, or the cache length),
D embed_dim, N query heads, K kv heads, G = N / K, H head_dim, F hidden_dim.

The maths these modules call lives in pure functions: `attention` and
`soft_cap` in `swirl_jax.models.attention`; `dense`, `gated_gelu` and
`decode_attention`, written in the forms XLA:CPU compiles well, in
`swirl_jax.models.xla_cpu` (each docstring gives its plain einsum form).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from swirl_jax.models.attention import blocked_attention
from swirl_jax.models.config import LOCAL, TransformerConfig
from swirl_jax.models.quantized import QuantizedKernel
from swirl_jax.models.xla_cpu import decode_attention, dense, gated_gelu


def _param(module: nn.Module, name: str, init, shape, axes, dtype):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape,
                      dtype)


def _cast(w, dtype):
  """A kernel in the compute dtype; an int8 `QuantizedKernel` as it is."""
  return w if isinstance(w, QuantizedKernel) else w.astype(dtype)


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


class Attention(nn.Module):
  """Multi-head / grouped-query attention with optional KV cache.

  With a cache ({'k', 'v'} of shape [B, K, S, H], 'pos' [B, S]), the new
  keys, values and positions are written at slot `write_index` (the same
  for every row: prompts are left-padded) and the queries attend to the
  whole cache under `attention_mask`; a local layer's window is then
  measured in token positions ('pos'), so slots left empty between real
  tokens do not count.

  Attention is causal in slots: no query sees a key slot after its own
  (`attention_mask` must say so; a decoder's masks do). Without a cache,
  and with one at a static `write_index` (a Python int: the prefills of
  the sampler and of `objectives.shared_prefix`), the keys a query cannot
  see are skipped block by block (`attention.blocked_attention`).
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
    q = dense(x, _cast(wq, dtype))  # [B, T, N, H]
    key = dense(x, _cast(wk, dtype))  # [B, T, K, H]
    value = dense(x, _cast(wv, dtype))  # [B, T, K, H]
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
    b = x.shape[0]
    g = n // k
    # Keys and values heads-major, [B, K, S, H]: both attention matmuls are
    # then plain batched matmuls over (B, K), fast on every backend.
    key = jnp.swapaxes(key, 1, 2)
    value = jnp.swapaxes(value, 1, 2)
    new_cache = None
    if cache is not None:
      new_cache = {
          "k": jax.lax.dynamic_update_slice(
              cache["k"], key.astype(cache["k"].dtype),
              (0, 0, write_index, 0)),
          "v": jax.lax.dynamic_update_slice(
              cache["v"], value.astype(cache["v"].dtype),
              (0, 0, write_index, 0)),
          "pos": jax.lax.dynamic_update_slice(
              cache["pos"], positions.astype(jnp.int32), (0, write_index))}
      q_slots = write_index + jnp.arange(t)
    else:
      q_slots = jnp.arange(t)
    s = new_cache["k"].shape[2] if cache is not None else t
    k_slots = jnp.arange(s)

    mask = attention_mask
    if is_local and cache is not None:
      # The window by token position, not slot: a cache may hold slots no
      # token fills between real ones (the sampler's shared-prefix layout);
      # where the real slots are contiguous the two are the same.
      window = (positions[:, :, None] - new_cache["pos"][:, None, :]
                ) < cfg.sliding_window_size
      mask = jnp.logical_and(mask, window)
    elif is_local:
      window = (q_slots[:, None] - k_slots[None, :]) < cfg.sliding_window_size
      mask = jnp.logical_and(mask, window[None])

    # [B, T, N, H] -> [B, K, T*G, H]: the query rows of one KV head together,
    # time-major. Time-major (not [B, K, G*T, H]) because the reshape is then
    # free for MQA (K = 1: no transpose at all) and moves whole [G, H] tiles
    # for GQA; a head-major layout costs a transposing copy of q and of the
    # output in the forward and again in the backward pass.
    qg = q.reshape(b, t, k, g, h).transpose(0, 2, 1, 3, 4).reshape(
        b, k, t * g, h)
    if cache is not None and t == 1:
      out = decode_attention(qg, key, value, cache["k"], cache["v"],
                             write_index, mask[:, 0], cfg.attn_logits_soft_cap)
    else:
      if cache is None:  # slots are positions: the window is in slots too
        start, window = 0, cfg.sliding_window_size if is_local else None
      else:
        # A prefill: causal in slots from a static write_index (else no
        # skipping), but a local layer's window is in positions there
        # (slots may be left empty), so not skipped by slot.
        key, value = new_cache["k"], new_cache["v"]
        start = write_index if isinstance(write_index, int) else None
        window = None
      out = blocked_attention(qg, key, value, mask, cfg.attn_logits_soft_cap,
                              query_start=start, window=window)
    out = out.astype(dtype).reshape(b, k, t, g, h).transpose(
        0, 2, 1, 3, 4).reshape(b, t, n, h)
    out = dense(out, _cast(wo, dtype), n_in=2)  # [B, T, D]
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
    gate = dense(x, _cast(w_gate, dtype))  # [B, T, F]
    up = dense(x, _cast(w_up, dtype))
    hidden = gated_gelu(gate, up)
    hidden = nn.with_logical_constraint(
        hidden, ("activation_batch", "activation_length", "activation_mlp"))
    return dense(hidden, _cast(w_down, dtype))  # [B, T, D]


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
