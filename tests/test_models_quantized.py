"""Tests of the int8 matmuls used by `Sampler(unembed="int8", body="int8")`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swirl_jax import models
from swirl_jax.models import quantized
from swirl_jax.sampling import Sampler


def _table(n=512, d=64, seed=0):
  rng = np.random.default_rng(seed)
  w = rng.standard_normal((n, d)).astype(np.float32)
  w[3] = 0.0  # an all-zero row keeps a finite scale
  return w


def test_quantize_rows_round_trips_within_half_a_step():
  w = _table()
  table = quantized.quantize_rows(jnp.asarray(w))
  assert table.values.dtype == jnp.int8 and table.values.shape == w.shape
  assert table.scale.shape == (w.shape[0],)
  back = np.asarray(table.values, np.float32) * np.asarray(table.scale)[:, None]
  step = np.abs(w).max(axis=1, keepdims=True) / 127.0
  assert np.all(np.abs(back - w) <= 0.5 * step + 1e-7)
  assert np.all(back[3] == 0.0) and np.isfinite(np.asarray(table.scale)).all()


@pytest.mark.parametrize("rows", [1, 2, 7])
def test_int8_matmul_t_is_close_to_the_float_product(rows):
  w = _table()
  x = np.random.default_rng(1).standard_normal((rows, 1, 64)).astype(
      np.float32)
  table = quantized.quantize_rows(jnp.asarray(w))
  got = np.asarray(quantized.int8_matmul_t(jnp.asarray(x), table))
  want = np.einsum("btd,nd->btn", x, w)
  assert got.shape == (rows, 1, 512) and got.dtype == np.float32
  # Two roundings of 1/254 of each row's absmax: the error of one logit is
  # bounded by sum_d |x_d| |dw| + |dx_d| |w| + |dx_d| |dw|.
  dx = np.abs(x).max(-1, keepdims=True) / 254.0
  dw = np.abs(w).max(-1) / 254.0
  bound = (np.abs(x).sum(-1, keepdims=True) * dw
           + dx * np.abs(w).sum(-1) + dx * dw * 64)
  assert np.all(np.abs(got - want) <= bound + 1e-5)
  assert np.abs(got - want).max() < 0.02 * np.abs(want).max()


def test_one_row_is_the_same_as_in_a_batch():
  w = _table()
  x = np.random.default_rng(2).standard_normal((3, 64)).astype(np.float32)
  table = quantized.quantize_rows(jnp.asarray(w))
  batch = np.asarray(quantized.int8_matmul_t(jnp.asarray(x), table))
  one = np.asarray(quantized.int8_matmul_t(jnp.asarray(x[1:2]), table))
  np.testing.assert_array_equal(one[0], batch[1])


def test_bad_shapes_name_the_shape():
  with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
    quantized.quantize_rows(jnp.zeros((2, 3, 4)))
  table = quantized.quantize_rows(jnp.ones((8, 4)))
  with pytest.raises(ValueError, match="5 features"):
    quantized.int8_matmul_t(jnp.ones((1, 5)), table)


def test_sampler_int8_unembed_follows_the_float_sampler():
  """Greedy decoding with the int8 table: the decode steps' log-probs close
  to the float sampler's but not equal (the int8 table is used; the first
  token comes from the float prefill), the tokens the same; a bad name is
  refused."""
  config = models.get_config("tiny")
  params = models.init_params(config, jax.random.key(0))
  prompts = [[2, 5, 9, 11, 40], [2, 7], [2] + list(range(3, 20))]
  plain = Sampler(config, params).generate(prompts, max_new_tokens=16)
  q = Sampler(config, params, unembed="int8").generate(prompts,
                                                       max_new_tokens=16)
  assert [len(t) for t in q.tokens] == [16] * 3
  agree = np.mean([a == b for ta, tb in zip(plain.tokens, q.tokens)
                   for a, b in zip(ta, tb)])
  assert agree >= 0.9
  same = [(a, b) for ta, tb, la, lb in zip(plain.tokens, q.tokens,
                                           plain.logprobs, q.logprobs)
          for x, y, a, b in zip(ta[1:], tb[1:], la[1:], lb[1:]) if x == y]
  diff = np.abs(np.subtract(*zip(*same)))
  assert diff.max() < 0.05 and diff.max() > 1e-6
  with pytest.raises(ValueError, match="'int4'"):
    Sampler(config, params, unembed="int4")


@pytest.mark.parametrize("n_in,shape", [(1, (64, 4, 16)), (2, (4, 16, 64)),
                                        (1, (64, 32))])
def test_int8_dense_is_close_to_the_float_einsum(n_in, shape):
  """Each output's column quantised on its own: round-trip within half a
  step per output, the product within the two roundings' bound, for
  multi-axis kernels (attention's q [D, N, H] and o [N, H, D]) too."""
  rng = np.random.default_rng(3)
  w = rng.standard_normal(shape).astype(np.float32)
  kernel = quantized.quantize_kernel(jnp.asarray(w), n_in)
  assert kernel.values.shape == shape and kernel.values.dtype == jnp.int8
  assert kernel.scale.shape == shape[n_in:]
  size_in = int(np.prod(shape[:n_in]))
  w2 = w.reshape(size_in, -1)
  back = (np.asarray(kernel.values, np.float32).reshape(size_in, -1)
          * np.asarray(kernel.scale).reshape(1, -1))
  assert np.all(np.abs(back - w2) <= 0.5 * np.abs(w2).max(0) / 127 + 1e-7)
  for rows in (1, 5):
    x = rng.standard_normal((rows, 1) + shape[:n_in]).astype(np.float32)
    got = np.asarray(quantized.int8_dense(jnp.asarray(x), kernel, n_in))
    x2 = x.reshape(rows, size_in)
    want = x2 @ w2
    assert got.shape == (rows, 1) + shape[n_in:]
    dx = np.abs(x2).max(-1, keepdims=True) / 254.0
    dw = np.abs(w2).max(0, keepdims=True) / 254.0
    bound = (np.abs(x2).sum(-1, keepdims=True) * dw
             + dx * np.abs(w2).sum(0, keepdims=True) + dx * dw * size_in)
    assert np.all(np.abs(got.reshape(rows, -1) - want) <= bound + 1e-5)
  with pytest.raises(ValueError, match="n_in=3"):
    quantized.quantize_kernel(jnp.asarray(w), 3)
  with pytest.raises(ValueError, match="input shape"):
    quantized.int8_dense(jnp.ones((1, 7)), kernel, n_in)


def test_quantize_dense_kernels_replaces_exactly_the_block_matmuls():
  config = models.get_config("tiny")
  params = models.init_params(config, jax.random.key(0))
  q = quantized.quantize_dense_kernels(params)
  kernels = {path for path, leaf in
             jax.tree_util.tree_flatten_with_path(
                 q, is_leaf=lambda x: isinstance(x, quantized.QuantizedKernel))[0]
             if isinstance(leaf, quantized.QuantizedKernel)}
  names = {tuple(k.key for k in path[-2:]) for path in kernels}
  assert names == set(quantized.DENSE_KERNELS)
  assert len(kernels) == len(quantized.DENSE_KERNELS) * config.num_layers
  assert q["embedding"] is params["embedding"]
  assert q["layer_0"]["pre_attention_norm"]["scale"] is (
      params["layer_0"]["pre_attention_norm"]["scale"])


def test_sampler_int8_body_follows_the_float_sampler():
  """Greedy decoding with int8 kernels and table: most tokens the same as
  float's, the decode steps' log-probs close but not equal; the first token
  (from the float prefill) identical; a bad name is refused."""
  config = models.get_config("tiny")
  params = models.init_params(config, jax.random.key(0))
  prompts = [[2, 5, 9, 11, 40], [2, 7], [2] + list(range(3, 20))]
  plain = Sampler(config, params).generate(prompts, max_new_tokens=16)
  q = Sampler(config, params, unembed="int8", body="int8").generate(
      prompts, max_new_tokens=16)
  assert [t[0] for t in q.tokens] == [t[0] for t in plain.tokens]
  np.testing.assert_allclose([l[0] for l in q.logprobs],
                             [l[0] for l in plain.logprobs], rtol=1e-6)
  agree = np.mean([a == b for ta, tb in zip(plain.tokens, q.tokens)
                   for a, b in zip(ta, tb)])
  assert agree >= 0.8
  same = [(a, b) for ta, tb, la, lb in zip(plain.tokens, q.tokens,
                                           plain.logprobs, q.logprobs)
          for x, y, a, b in zip(ta[1:], tb[1:], la[1:], lb[1:]) if x == y]
  diff = np.abs(np.subtract(*zip(*same)))
  assert diff.max() < 0.1 and diff.max() > 1e-6
  with pytest.raises(ValueError, match="'int4'"):
    Sampler(config, params, body="int4")


def test_sampler_int8_prefill_runs_the_prompt_on_the_int8_body():
  """prefill='int8': the first token's log-prob now comes from the int8
  kernels (close to, not equal to, the float prefill's), greedy tokens
  mostly agree, and with a shared prefix too; it needs body='int8'."""
  config = models.get_config("tiny")
  params = models.init_params(config, jax.random.key(0))
  prompts = [[2, 5, 9, 11, 40], [2, 7], [2] + list(range(3, 20))]
  body = Sampler(config, params, unembed="int8", body="int8").generate(
      prompts, max_new_tokens=16)
  full = Sampler(config, params, unembed="int8", body="int8",
                 prefill="int8")
  out = full.generate(prompts, max_new_tokens=16)
  first = np.abs(np.subtract([l[0] for l in out.logprobs],
                             [l[0] for l in body.logprobs]))
  assert first.max() > 1e-6 and first.max() < 0.1
  agree = np.mean([a == b for ta, tb in zip(body.tokens, out.tokens)
                   for a, b in zip(ta, tb)])
  assert agree >= 0.8
  grouped = [[2, 5, 9, 11, 40, 7], [2, 5, 9, 11, 40, 8]]
  one = full.generate(grouped, max_new_tokens=8, seed=3)
  shared = full.generate(grouped, max_new_tokens=8, seed=3, group_size=2,
                         shared_prefix=True)
  assert shared.tokens == one.tokens
  np.testing.assert_allclose(np.concatenate(shared.logprobs),
                             np.concatenate(one.logprobs), atol=1e-4)
  with pytest.raises(ValueError, match="needs body='int8'"):
    Sampler(config, params, prefill="int8")
  with pytest.raises(ValueError, match="'int4'"):
    Sampler(config, params, body="int8", prefill="int4")


def test_int8_sampler_requantises_on_update_params_and_reuses_the_last_two():
  """The int8 weights follow update_params (no stale copy), are made once
  per float tree (the policy and the reference alternate without
  quantising again), and give what a fresh sampler of those params gives."""
  config = models.get_config("tiny")
  a = models.init_params(config, jax.random.key(0))
  b = models.init_params(config, jax.random.key(1))
  prompts = [[2, 5, 9, 11, 40], [2, 7]]
  sampler = Sampler(config, a, unembed="int8", body="int8")
  weights_a = sampler._decode_weights
  assert isinstance(weights_a.table, quantized.QuantizedTable)
  sampler.update_params(b)
  weights_b = sampler._decode_weights
  assert weights_b is not weights_a
  fresh = Sampler(config, b, unembed="int8", body="int8")
  assert (sampler.generate(prompts, max_new_tokens=12).tokens
          == fresh.generate(prompts, max_new_tokens=12).tokens)
  sampler.update_params(a)
  assert sampler._decode_weights is weights_a
  sampler.update_params(b)
  assert sampler._decode_weights is weights_b
  assert Sampler(config, a)._decode_weights is None
