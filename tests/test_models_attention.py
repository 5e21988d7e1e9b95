"""models/attention.py: the hand-written gradient and the blocked form equal
the plain softmax attention, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swirl_jax import models
from swirl_jax.models import attention


def _inputs(b=2, k=2, g=3, t=7, s=9, h=8, seed=0):
  rng = np.random.default_rng(seed)
  qg = jnp.asarray(rng.normal(size=(b, k, t * g, h)), jnp.float32)
  key = jnp.asarray(rng.normal(size=(b, k, s, h)) * 3, jnp.float32)
  value = jnp.asarray(rng.normal(size=(b, k, s, h)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=(b, k, t * g, h)), jnp.float32)
  return qg, key, value, weights


def _causal_mask(b, t, s, start, window=None, pad=0):
  q = start + np.arange(t)[:, None]
  kk = np.arange(s)[None, :]
  mask = kk <= q
  if window:
    mask &= q - kk < window
  mask = np.broadcast_to(mask, (b, t, s)).copy()
  mask[0, :, :pad] = False  # row 0 left-padded: its first queries see nothing
  return jnp.asarray(mask)


def _value_and_grads(fn, qg, key, value, weights):
  loss = lambda q, k_, v: jnp.sum(fn(q, k_, v) * weights)  # noqa: E731
  return fn(qg, key, value), jax.grad(loss, argnums=(0, 1, 2))(qg, key,
                                                               value)


@pytest.mark.parametrize("cap", [None, 2.0])
def test_hand_written_gradient_equals_autodiff(cap):
  """Including fully masked rows (left padding), whose uniform
  probabilities over masked logits must get no gradient."""
  qg, key, value, weights = _inputs(t=7, s=7)
  mask = _causal_mask(2, 7, 7, 0, pad=3)
  got, got_grads = _value_and_grads(
      lambda q, k_, v: attention.attention(q, k_, v, mask, cap),
      qg, key, value, weights)
  want, want_grads = _value_and_grads(
      lambda q, k_, v: attention.attention_reference(q, k_, v, mask, cap),
      qg, key, value, weights)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  for a, b in zip(got_grads, want_grads):
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("start,window,block", [
    (0, None, 3), (0, 4, 2), (0, 4, 5), (5, 3, 4), (5, None, 3)])
def test_blocked_attention_equals_attention(start, window, block):
  """Blocks that do and do not divide T, a window, and queries that start
  at a later slot of a longer cache (a prefill after a shared prefix)."""
  t = 7
  s = start + t + 4  # empty slots after the last query, as in a cache
  qg, key, value, weights = _inputs(t=t, s=s)
  mask = _causal_mask(2, t, s, start, window, pad=2)
  # A query that sees no key at all (left padding) averages the values of
  # the keys it is computed against, all of them or its block's: both are
  # meaningless and masked downstream, so the test gives them no weight.
  sees_some = jnp.repeat(jnp.any(mask, axis=-1), 3, axis=1)  # [B, T*G]
  weights = weights * sees_some[:, None, :, None]
  got, got_grads = _value_and_grads(
      lambda q, k_, v: attention.blocked_attention(
          q, k_, v, mask, 2.0, query_start=start, window=window,
          block=block), qg, key, value, weights)
  want, want_grads = _value_and_grads(
      lambda q, k_, v: attention.attention_reference(q, k_, v, mask, 2.0),
      qg, key, value, weights)
  np.testing.assert_allclose(got * sees_some[:, None, :, None],
                             want * sees_some[:, None, :, None],
                             rtol=1e-5, atol=1e-6)
  for a, b in zip(got_grads, want_grads):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_model_with_blocks_equals_model_without(monkeypatch):
  """The tiny model (local window 64) on 150 tokens, blocks of 32 against
  one block: logits and parameter gradients."""
  config = models.get_config("tiny")
  model = models.Transformer(config)
  params = models.init_params(config, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 150), 0,
                              config.vocab_size)

  def run():
    def loss(p):
      logits = model.apply({"params": p}, tokens)
      return jnp.mean(jax.nn.log_softmax(logits)[..., 3]), logits
    (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return logits, grads

  monkeypatch.setattr(attention, "QUERY_BLOCK", 32)
  blocked_logits, blocked_grads = run()
  monkeypatch.setattr(attention, "QUERY_BLOCK", 10 ** 6)
  logits, grads = run()
  np.testing.assert_allclose(blocked_logits, logits, rtol=1e-4, atol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-6),
               blocked_grads, grads)
