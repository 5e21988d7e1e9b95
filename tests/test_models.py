"""Tests of the Gemma decoder: configs, presets, shapes, masks, logical axes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swirl_jax import models
from swirl_jax.models import layers

# Published parameter counts (text decoders, tied embeddings).
PUBLISHED_PARAMS = {
    "gemma-2b": 2_506_172_416,
    "gemma-7b": 8_537_680_896,
    "gemma2-2b": 2_614_341_888,
    "gemma2-9b": 9_241_705_984,
    "gemma2-27b": 27_227_128_320,
    "gemma3-270m": 268_098_176,
    "gemma3-1b": 999_885_952,
    "gemma3-4b": 3_880_263_168,
    "gemma3-12b": 11_766_034_176,
    "gemma3-27b": 27_009_346_304,
}


@pytest.fixture(scope="module")
def tiny():
  config = models.get_config("tiny", sliding_window_size=8)
  return config, models.init_params(config, jax.random.key(0))


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_preset_shapes_match_published_counts(name):
  config = models.get_config(name)
  shapes = models.param_shapes(config)
  total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  assert total == config.num_params() == PUBLISHED_PARAMS[name]


def test_preset_layer_patterns():
  g2 = models.get_config("gemma2-9b")
  assert g2.attention_types[:4] == ("local", "global", "local", "global")
  g3 = models.get_config("gemma3-4b")
  assert g3.attention_types[:6] == ("local",) * 5 + ("global",)
  assert g3.rope_scale_global == 8.0 and g3.rope_base_global == 1e6
  assert models.get_config("gemma2-27b").query_scale == pytest.approx(144 ** -0.5)
  assert models.get_config("gemma-2b").query_scale == pytest.approx(256 ** -0.5)


def test_unknown_preset_error_suggests_name():
  with pytest.raises(ValueError, match="gemma2-2b"):
    models.get_config("gemma2-2bb")


@pytest.mark.parametrize("change, message", [
    (dict(num_heads=6, num_kv_heads=4), "num_kv_heads=4"),
    (dict(head_dim=31), "head_dim=31"),
    (dict(attention_types=("global",) * 3), "attention_types has 3"),
    (dict(attention_types=("local", "global", "sparse", "global")), "sparse"),
    (dict(dtype="float64"), "float64"),
    (dict(embed_dim=0), "embed_dim"),
])
def test_config_validation_names_bad_value(change, message):
  with pytest.raises(ValueError, match=message):
    models.get_config("tiny", **change)


def test_config_dict_round_trip():
  config = models.get_config("gemma3-1b")
  assert models.TransformerConfig.from_dict(config.to_dict()) == config
  with pytest.raises(ValueError, match="bogus"):
    models.TransformerConfig.from_dict({**config.to_dict(), "bogus": 1})


def test_forward_shapes_and_dtype(tiny):
  config, params = tiny
  tokens = jnp.arange(2 * 20).reshape(2, 20) % config.vocab_size
  logits = models.Transformer(config).apply({"params": params}, tokens)
  assert logits.shape == (2, 20, config.vocab_size)
  assert logits.dtype == jnp.float32
  assert np.all(np.abs(np.asarray(logits)) <= config.final_logit_soft_cap)


def test_causality(tiny):
  """Changing a later token never changes earlier logits."""
  config, params = tiny
  model = models.Transformer(config)
  tokens = jax.random.randint(jax.random.key(1), (1, 24), 0, config.vocab_size)
  changed = tokens.at[0, 15].set((tokens[0, 15] + 1) % config.vocab_size)
  a = model.apply({"params": params}, tokens)
  b = model.apply({"params": params}, changed)
  np.testing.assert_array_equal(a[0, :15], b[0, :15])
  assert not np.allclose(a[0, 15:], b[0, 15:])


def test_sliding_window_limits_local_layers():
  """With only local layers, tokens beyond the receptive field are invisible."""
  config = models.get_config("tiny", sliding_window_size=4, num_layers=1,
                             attention_types=("local",))
  params = models.init_params(config, jax.random.key(0))
  model = models.Transformer(config)
  tokens = jax.random.randint(jax.random.key(2), (1, 16), 0, config.vocab_size)
  changed = tokens.at[0, 3].set((tokens[0, 3] + 1) % config.vocab_size)
  a = model.apply({"params": params}, tokens)
  b = model.apply({"params": params}, changed)
  # Query 7 sees keys 4..7 only; query 6 sees 3..6.
  np.testing.assert_array_equal(a[0, 7:], b[0, 7:])
  assert not np.allclose(a[0, 6], b[0, 6])


def test_left_padding_is_invisible(tiny):
  config, params = tiny
  model = models.Transformer(config)
  real = jax.random.randint(jax.random.key(3), (1, 10), 0, config.vocab_size)
  padded = jnp.concatenate([jnp.zeros((1, 5), jnp.int32), real], axis=1)
  mask = jnp.concatenate([jnp.zeros((1, 5), bool), jnp.ones((1, 10), bool)], 1)
  apply = jax.jit(model.apply)  # one compile instead of op-by-op dispatch
  a = apply({"params": params}, real)
  b = apply({"params": params}, padded, models.positions_from_mask(mask),
            models.causal_attention_mask(mask))
  np.testing.assert_allclose(a[0], b[0, 5:], atol=1e-5)


def test_rope_is_relative():
  """Scores of rotated q, k depend only on the position difference."""
  q = jax.random.normal(jax.random.key(0), (1, 1, 1, 16))
  k = jax.random.normal(jax.random.key(1), (1, 1, 1, 16))
  def score(pq, pk):
    rq = layers.apply_rope(q, jnp.array([[pq]]), 10_000.0)
    rk = layers.apply_rope(k, jnp.array([[pk]]), 10_000.0)
    return float(jnp.sum(rq * rk))
  assert score(7, 3) == pytest.approx(score(107, 103), rel=1e-4)
  # Linear scaling by s equals positions divided by s.
  a = layers.apply_rope(q, jnp.array([[8]]), 10_000.0, scale=8.0)
  b = layers.apply_rope(q, jnp.array([[1]]), 10_000.0)
  np.testing.assert_allclose(a, b, atol=1e-6)


def test_rms_norm_convention():
  x = jnp.array([[3.0, 4.0]])
  y = layers.RMSNorm().apply({"params": {"scale": jnp.array([0.0, 1.0])}}, x)
  rms = np.sqrt((9 + 16) / 2 + 1e-6)
  np.testing.assert_allclose(y, [[3 / rms, 2 * 4 / rms]], rtol=1e-6)


def test_logical_axes_cover_every_param():
  config = models.get_config("gemma3-1b")
  axes = models.param_logical_axes(config)
  shapes = models.param_shapes(config)
  flat_axes = jax.tree_util.tree_leaves_with_path(
      axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  flat_shapes = jax.tree_util.tree_leaves_with_path(shapes)
  assert len(flat_axes) == len(flat_shapes)
  for (path, spec), (_, shape) in zip(flat_axes, flat_shapes):
    assert len(spec) == len(shape.shape), path
    assert set(spec) <= set(models.LOGICAL_AXES), (path, spec)
  assert axes["embedding"] == jax.sharding.PartitionSpec("vocab", "embed")
  assert axes["layer_0"]["attn"]["k"] == jax.sharding.PartitionSpec(
      "embed", "kv_heads", "head_dim")


def test_bfloat16_compute_float32_params():
  config = models.get_config("tiny", dtype="bfloat16", param_dtype="float32")
  params = models.init_params(config, jax.random.key(0))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  tokens = jnp.ones((1, 8), jnp.int32)
  logits = jax.jit(models.Transformer(config).apply)({"params": params},
                                                      tokens)
  f32 = jax.jit(models.Transformer(config.replace(dtype="float32")).apply)(
      {"params": params}, tokens)
  assert logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, f32, atol=0.1)


@pytest.mark.parametrize("policy", ["full", "dots"])
def test_remat_policies_give_same_gradients(tiny, policy):
  config, params = tiny
  tokens = jnp.arange(16).reshape(1, 16)
  def loss(p, remat):
    logits = models.Transformer(config, remat_policy=remat).apply(
        {"params": p}, tokens)
    return jnp.mean(jax.nn.log_softmax(logits)[..., 0])
  grad = jax.jit(jax.grad(loss), static_argnums=1)
  g0 = grad(params, "none")
  g1 = grad(params, policy)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_bad_remat_policy(tiny):
  config, params = tiny
  with pytest.raises(ValueError, match="sometimes"):
    models.Transformer(config, remat_policy="sometimes").apply(
        {"params": params}, jnp.ones((1, 2), jnp.int32))


def test_cached_decode_matches_full_forward(tiny):
  """Prefill + one-token decode steps give the full forward's logits."""
  config, params = tiny
  model = models.Transformer(config)
  tokens = jax.random.randint(jax.random.key(4), (2, 12), 0,
                              config.vocab_size)
  full = model.apply({"params": params}, tokens)
  cache = models.init_cache(config, 2, 12)
  pos = jnp.broadcast_to(jnp.arange(12), (2, 12))
  causal = jnp.arange(12)[None, :] <= jnp.arange(12)[:, None]
  p = 5
  # Jitted (two shapes: the prefill and a one-token step); op by op, the
  # eager decode loop took most of a minute on a loaded 2-core machine.
  step = jax.jit(lambda *a: model.apply({"params": params}, *a,
                                        method="forward_with_cache"))
  logits, cache = step(tokens[:, :p], pos[:, :p],
                       jnp.broadcast_to(causal[:p], (2, p, 12)), cache,
                       jnp.int32(0))
  steps = [logits]
  for i in range(p, 12):
    logits, cache = step(tokens[:, i:i + 1], pos[:, i:i + 1],
                         jnp.broadcast_to(causal[i:i + 1], (2, 1, 12)),
                         cache, jnp.int32(i))
    steps.append(logits)
  np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full,
                             rtol=1e-4, atol=1e-4)
