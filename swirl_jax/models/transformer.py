"""The Gemma-family decoder (flax.linen, pure functional) and its helpers.

    model = Transformer(config)
    params = init_params(config, jax.random.key(0))
    logits = model.apply({'params': params}, tokens)          # [B, T, V] float32

Cached decoding (used by `swirl_jax.sampling`):

    cache = init_cache(config, batch, length)
    logits, cache = model.apply({'params': params}, tokens, positions, mask,
                                cache, write_index, method='forward_with_cache')
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from swirl_jax.models import quantized
from swirl_jax.models.attention import soft_cap
from swirl_jax.models.config import TransformerConfig
from swirl_jax.models.layers import Block, RMSNorm
from swirl_jax.models.xla_cpu import dense

Params = Any
Cache = list  # per layer {'k', 'v': [B, K, S, H], 'pos': [B, S] int32}

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def causal_attention_mask(input_mask: jax.Array) -> jax.Array:
  """[B, T] bool (True = real token) -> [B, T, T] causal mask over real keys."""
  t = input_mask.shape[-1]
  causal = jnp.tril(jnp.ones((t, t), dtype=bool))
  return jnp.logical_and(causal[None], input_mask[:, None, :].astype(bool))


def positions_from_mask(input_mask: jax.Array) -> jax.Array:
  """[B, T] bool -> [B, T] int32 positions counting only real tokens.

  Left padding gets position 0 (it is masked out anyway).
  """
  m = input_mask.astype(jnp.int32)
  return jnp.maximum(jnp.cumsum(m, axis=-1) - 1, 0)


class Transformer(nn.Module):
  """Gemma 1/2/3 text decoder. See `TransformerConfig` for the switches.

  Attributes:
    config: the architecture.
    remat_policy: one of REMAT_POLICIES ('none', 'full', 'dots',
      'dots_no_batch'); rematerialises each block under that policy.
  """

  config: TransformerConfig
  remat_policy: str = "none"

  def setup(self):
    cfg = self.config
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"Unknown remat_policy {self.remat_policy!r}; choose "
                       f"one of {sorted(REMAT_POLICIES)}.")
    block = Block
    if self.remat_policy != "none":
      block = nn.remat(Block, policy=REMAT_POLICIES[self.remat_policy])
    self.embedding = self.param(
        "embedding",
        nn.with_logical_partitioning(
            nn.initializers.normal(stddev=cfg.embed_dim ** -0.5),
            ("vocab", "embed")),
        (cfg.vocab_size, cfg.embed_dim), cfg.params_dtype)
    self.layers = [block(cfg, kind, name=f"layer_{i}")
                   for i, kind in enumerate(cfg.attention_types)]
    self.final_norm = RMSNorm(cfg.rms_norm_eps, "embed", cfg.params_dtype)

  def embed(self, tokens: jax.Array) -> jax.Array:
    """[B, T] int -> [B, T, D], scaled by sqrt(D) in the compute dtype."""
    dtype = self.config.compute_dtype
    x = jnp.take(self.embedding, tokens, axis=0).astype(dtype)
    x = x * jnp.asarray(self.config.embed_dim ** 0.5, dtype)
    return nn.with_logical_constraint(
        x, ("activation_batch", "activation_length", "activation_embed"))

  def unembed(self, x: jax.Array,
              table_t: Optional[jax.Array] = None) -> jax.Array:
    """[B, T, D] final hidden states -> [B, T, V] float32 logits.

    `table_t` is the embedding table already transposed, [D, V] (the
    sampler materialises it once per generate call; see
    `forward_with_cache`), or the table quantised to int8
    (`quantized.QuantizedTable`, [V, D]: `Sampler(unembed="int8")`); by
    default the table is transposed here.
    """
    if isinstance(table_t, quantized.QuantizedTable):
      logits = quantized.int8_matmul_t(x, table_t)
      logits = soft_cap(logits, self.config.final_logit_soft_cap)
      return nn.with_logical_constraint(
          logits,
          ("activation_batch", "activation_length", "activation_vocab"))
    dtype = self.config.compute_dtype
    # A 2-D matmul against the transposed table (see `xla_cpu.dense`: the
    # embedding gradient is then a plain dlogits^T @ x, no transposed copy
    # of the [B*T, V] logits gradient).
    if table_t is None:
      table_t = jax.lax.optimization_barrier(self.embedding.T)
    logits = dense(x, table_t.astype(dtype))
    logits = soft_cap(logits.astype(jnp.float32),
                      self.config.final_logit_soft_cap)
    return nn.with_logical_constraint(
        logits, ("activation_batch", "activation_length", "activation_vocab"))

  def _forward(self, tokens, positions, attention_mask, cache, write_index):
    if tokens.ndim != 2:
      raise ValueError(f"tokens must be [batch, length], got shape "
                       f"{tokens.shape}.")
    b, t = tokens.shape
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    if attention_mask is None:
      attention_mask = causal_attention_mask(jnp.ones((b, t), bool))
    x = self.embed(tokens)
    new_cache = [] if cache is not None else None
    for i, layer in enumerate(self.layers):
      layer_cache = cache[i] if cache is not None else None
      x, c = layer(x, positions, attention_mask, layer_cache, write_index)
      if cache is not None:
        new_cache.append(c)
    x = self.final_norm(x)
    return x, new_cache

  def __call__(self, tokens: jax.Array, positions: Optional[jax.Array] = None,
               attention_mask: Optional[jax.Array] = None) -> jax.Array:
    """Logits for a batch of sequences.

    Args:
      tokens: [B, T] int token ids.
      positions: [B, T] RoPE positions (default 0..T-1).
      attention_mask: [B, T, T] bool, True where a query may see a key
        (default causal). Sliding windows are applied on top, per layer.
    Returns:
      [B, T, V] float32 logits.
    """
    x, _ = self._forward(tokens, positions, attention_mask, None, None)
    return self.unembed(x)

  def hidden_states(self, tokens, positions=None, attention_mask=None):
    """[B, T, D] final-norm hidden states (for memory-light log-prob code)."""
    x, _ = self._forward(tokens, positions, attention_mask, None, None)
    return x

  def forward_with_cache(self, tokens, positions, attention_mask, cache,
                         write_index, unembed_table_t=None,
                         last_only: bool = False):
    """One prefill or decode step against a KV cache.

    Args:
      tokens: [B, T] ids written at cache slots write_index .. write_index+T-1.
      positions: [B, T] RoPE positions.
      attention_mask: [B, T, S] bool over the S cache slots (causal in
        slots, and padding); sliding windows are applied per layer on
        token-position distance.
      cache: list of per-layer {'k', 'v'} arrays [B, K, S, H] and 'pos' [B, S].
      write_index: slot of the first new token: an int32 scalar, or a
        Python int (static: a prefill then skips the key slots after its
        last token, `layers.Attention`).
      unembed_table_t: optional [D, V] transposed embedding table. A decode
        loop passes it materialised once: on XLA:CPU the [B, D] x [V, D]^T
        product of every step otherwise re-reads the table transposed
        (~1.5x the time of the plain [B, D] x [D, V] matmul).
      last_only: unembed only the last position (a prefill needs no more):
        logits [B, 1, V]. A 262k vocabulary makes the [B, T, V] logits of a
        prefill of 64 x 512 tokens 34 GB.
    Returns:
      (logits [B, T, V] float32 ([B, 1, V] with last_only), updated cache).
    """
    x, new_cache = self._forward(tokens, positions, attention_mask, cache,
                                 write_index)
    if last_only:
      x = x[:, -1:]
    return self.unembed(x, unembed_table_t), new_cache


def init_cache(config: TransformerConfig, batch: int, length: int,
               dtype: Any = None) -> Cache:
  """Zero KV cache: per layer {'k', 'v'} of shape [batch, K, length, H] and
  'pos' [batch, length] int32, the token position of each slot."""
  dtype = dtype or config.compute_dtype
  shape = (batch, config.num_kv_heads, length, config.head_dim)
  return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype),
           "pos": jnp.zeros((batch, length), jnp.int32)}
          for _ in range(config.num_layers)]


def _boxed_init(config: TransformerConfig, rng: jax.Array):
  model = Transformer(config)
  tokens = jnp.zeros((1, 1), jnp.int32)
  return model.init(rng, tokens)["params"]


def init_params(config: TransformerConfig, rng: jax.Array) -> Params:
  """Random parameters (plain arrays, logical-axis boxes removed)."""
  return nn.unbox(jax.jit(_boxed_init, static_argnums=0)(config, rng))


def param_shapes(config: TransformerConfig) -> Params:
  """jax.ShapeDtypeStruct tree of the parameters, without allocating them."""
  return nn.unbox(jax.eval_shape(functools.partial(_boxed_init, config),
                                 jax.random.key(0)))


def param_logical_axes(config: TransformerConfig) -> Params:
  """Tree of PartitionSpecs of logical axis names, one per parameter."""
  boxed = jax.eval_shape(functools.partial(_boxed_init, config),
                         jax.random.key(0))
  return nn.get_partition_spec(boxed)
