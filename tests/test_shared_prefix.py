"""Shared-prefix forwards equal plain forwards (values and gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swirl_jax import models
from swirl_jax.objectives import get_objective
from swirl_jax.objectives.common import target_logprobs
from swirl_jax.objectives.shared_prefix import (PREFIX_KEY,
                                                shared_prefix_length,
                                                with_shared_prefix)
from swirl_jax.training.train_step import split_microbatches


@pytest.fixture(scope="module")
def tiny():
  # A window shorter than the rows, so local layers mask across the prefix.
  config = models.get_config("tiny", sliding_window_size=12)
  return models.Transformer(config), models.init_params(config,
                                                        jax.random.key(0))


def _grouped_batch(groups=3, g=4, prompt=20, length=30, seed=0):
  """Right-padded rows: a shared prompt per group, then own ids, then pad."""
  rng = np.random.default_rng(seed)
  b = groups * g
  seqs = np.zeros((b, length + 1), np.int32)
  seg = np.zeros((b, length), np.int32)
  mask = np.zeros((b, length), np.float32)
  for i in range(groups):
    head = rng.integers(3, 200, prompt)
    for j in range(g):
      r = i * g + j
      n = int(rng.integers(prompt + 2, length + 2))  # tokens in the row
      seqs[r, :prompt] = head
      seqs[r, prompt:n] = rng.integers(3, 200, n - prompt)
      seg[r, :n - 1] = 1
      mask[r, prompt - 1:n - 1] = 1.0
  return {"inputs": seqs[:, :-1], "targets": seqs[:, 1:],
          "positions": np.tile(np.arange(length, dtype=np.int32), (b, 1)),
          "segment_ids": seg, "action_mask": mask,
          "advantages": rng.normal(size=b).astype(np.float32)}


def test_prefix_length_and_bucketing():
  batch = _grouped_batch(prompt=20)
  assert shared_prefix_length(batch, 4) == 20
  assert with_shared_prefix(batch, 4, bucket=8)[PREFIX_KEY].shape == (3, 16)
  assert with_shared_prefix(batch, 4, bucket=1)[PREFIX_KEY].shape == (3, 20)
  np.testing.assert_array_equal(
      with_shared_prefix(batch, 4, bucket=1)[PREFIX_KEY],
      batch["inputs"][::4, :20])
  # No sharing: group size 1, or rows that differ at position 0.
  assert PREFIX_KEY not in with_shared_prefix(batch, 1)
  differ = dict(batch, inputs=batch["inputs"].copy())
  differ["inputs"][5, 0] += 1  # group 1's rows differ at position 0
  assert shared_prefix_length(differ, 4) == 0
  assert PREFIX_KEY not in with_shared_prefix(differ, 4, bucket=1)
  with pytest.raises(ValueError, match="group_size=5"):
    shared_prefix_length(batch, 5)


def test_prefix_stops_where_positions_or_segments_differ():
  batch = _grouped_batch(prompt=20)
  batch["segment_ids"] = batch["segment_ids"].copy()
  batch["segment_ids"][1, 10:] = 2  # row 1 starts a packed sequence at 10
  assert shared_prefix_length(batch, 4) == 10


def test_logprobs_equal_the_plain_forward(tiny):
  model, params = tiny
  batch = _grouped_batch()
  shared = with_shared_prefix(batch, 4, bucket=4)
  assert shared[PREFIX_KEY].shape == (3, 20)
  plain = jax.jit(lambda p, b: target_logprobs(model, p, b))(params, batch)
  fast = jax.jit(lambda p, b: target_logprobs(model, p, b))(params, shared)
  real = batch["segment_ids"] > 0
  np.testing.assert_allclose(np.asarray(fast)[real], np.asarray(plain)[real],
                             atol=2e-5, rtol=1e-5)


def test_grpo_gradients_equal_the_plain_forward(tiny):
  model, params = tiny
  loss_fn = get_objective("grpo").loss_fn
  batch = _grouped_batch()
  ref = jax.tree.map(lambda x: x * 1.01, params)
  batch["ref_logprobs"] = np.asarray(target_logprobs(model, ref, batch))
  shared = with_shared_prefix(batch, 4, bucket=4)

  def grads(b):
    return jax.jit(jax.grad(
        lambda p: loss_fn(p, b, None, model, beta=0.04)[0]))(params)

  g_plain, g_fast = grads(batch), grads(shared)
  for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_fast)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=2e-6,
                               rtol=2e-4)


def test_microbatches_keep_whole_groups():
  shared = with_shared_prefix(_grouped_batch(groups=4), 4, bucket=4)
  micro = split_microbatches(shared, 2)
  assert micro["inputs"].shape == (2, 8, 30)
  assert micro[PREFIX_KEY].shape == (2, 2, 20)
  np.testing.assert_array_equal(micro[PREFIX_KEY][1],
                                micro["inputs"][1][::4, :20])


def test_bad_prefix_shape_is_named(tiny):
  model, params = tiny
  batch = dict(_grouped_batch(), **{PREFIX_KEY: np.zeros((5, 20), np.int32)})
  with pytest.raises(ValueError, match=r"\(5, 20\)"):
    target_logprobs(model, params, batch)
