"""swirl_jax.models.xla_cpu: each CPU-friendly form equals its plain form."""

import jax
import jax.numpy as jnp
import numpy as np

from swirl_jax.models import attention, xla_cpu


def test_dense_is_the_einsum():
  """The 2-D matmul form gives the einsum's values and gradients."""
  kx, kw, ko = jax.random.split(jax.random.key(1), 3)
  x = jax.random.normal(kx, (3, 5, 8))
  w = jax.random.normal(kw, (8, 2, 4))
  np.testing.assert_allclose(xla_cpu.dense(x, w),
                             jnp.einsum("btd,dnh->btnh", x, w),
                             rtol=1e-5, atol=1e-5)
  wo = jax.random.normal(ko, (2, 4, 8))
  y = jnp.einsum("btd,dnh->btnh", x, w)
  np.testing.assert_allclose(xla_cpu.dense(y, wo, n_in=2),
                             jnp.einsum("btnh,nhd->btd", y, wo),
                             rtol=1e-5, atol=1e-4)
  def grad(f):
    return jax.grad(lambda w: jnp.sum(jnp.sin(f(x, w))))(w)
  np.testing.assert_allclose(
      grad(xla_cpu.dense), grad(lambda x, w: jnp.einsum("btd,dnh->btnh", x, w)),
      rtol=1e-4, atol=1e-4)


def test_gated_gelu_hand_gradient_matches_autodiff():
  kg, ku, kd = jax.random.split(jax.random.key(2), 3)
  gate = 3.0 * jax.random.normal(kg, (4, 6, 32))
  up = jax.random.normal(ku, (4, 6, 32))
  d_out = jax.random.normal(kd, (4, 6, 32))
  plain = lambda g, u: jax.nn.gelu(g, approximate=True) * u  # noqa: E731
  np.testing.assert_array_equal(xla_cpu.gated_gelu(gate, up), plain(gate, up))
  loss = lambda f: lambda g, u: jnp.sum(f(g, u) * d_out)  # noqa: E731
  got = jax.grad(loss(xla_cpu.gated_gelu), argnums=(0, 1))(gate, up)
  want = jax.grad(loss(plain), argnums=(0, 1))(gate, up)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_decode_attention_equals_attention_on_the_updated_cache():
  """The decode fast path (old cache + the new token apart) is `attention`
  over the cache with the new key and value written in."""
  b, k, g, s, h, slot = 3, 2, 2, 10, 8, 6
  keys = jax.random.split(jax.random.key(3), 5)
  qg = jax.random.normal(keys[0], (b, k, g, h))
  key = jax.random.normal(keys[1], (b, k, 1, h))
  value = jax.random.normal(keys[2], (b, k, 1, h))
  written = jnp.arange(s) < slot  # slots 0..slot-1 hold earlier tokens
  cache_k = jnp.where(written[:, None], jax.random.normal(keys[3],
                                                          (b, k, s, h)), 0.0)
  cache_v = jnp.where(written[:, None], jax.random.normal(keys[4],
                                                          (b, k, s, h)), 0.0)
  mask = jnp.broadcast_to(jnp.arange(s) <= slot, (b, s)).at[0, 0].set(False)
  got = xla_cpu.decode_attention(qg, key, value, cache_k, cache_v,
                                jnp.int32(slot), mask, 50.0)
  new_k = jax.lax.dynamic_update_slice(cache_k, key, (0, 0, slot, 0))
  new_v = jax.lax.dynamic_update_slice(cache_v, value, (0, 0, slot, 0))
  want = attention.attention(qg, new_k, new_v, mask[:, None, :], 50.0)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
