"""Shared-prefix forwards equal plain forwards (values and gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swirl_jax import models
from swirl_jax.objectives import get_objective
from swirl_jax.objectives.common import target_logprobs
from swirl_jax.objectives.shared_prefix import (PREFIX_KEY,
                                                align_shared_prefixes,
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
  # P = 20: the last prefix position's target is each row's own token.
  shared = with_shared_prefix(batch, 4, bucket=1)
  assert shared[PREFIX_KEY].shape == (3, 20)
  plain = jax.jit(lambda p, b: target_logprobs(model, p, b))(params, batch)
  fast = jax.jit(lambda p, b: target_logprobs(model, p, b))(params, shared)
  real = batch["segment_ids"] > 0
  np.testing.assert_allclose(np.asarray(fast)[real], np.asarray(plain)[real],
                             atol=2e-5, rtol=1e-5)
  # The accuracy metric of the SFT loss (argmax == target) too.
  hits = jax.jit(lambda p, b: target_logprobs(model, p, b, return_hits=True)[
      1])
  np.testing.assert_array_equal(np.asarray(hits(params, shared))[real],
                                np.asarray(hits(params, batch))[real])


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


def _mixed_batch(prompts=(9, 23, 14), g=4, length=40, seed=1):
  """Groups whose shared contexts have different lengths (SWiRL's states)."""
  rng = np.random.default_rng(seed)
  b = len(prompts) * g
  seqs = np.zeros((b, length + 1), np.int32)
  seg = np.zeros((b, length), np.int32)
  mask = np.zeros((b, length), np.float32)
  for i, prompt in enumerate(prompts):
    head = rng.integers(3, 200, prompt)
    for j in range(g):
      r = i * g + j
      n = int(rng.integers(prompt + 2, min(length + 1, prompt + 12)))
      seqs[r, :prompt] = head
      seqs[r, prompt:n] = rng.integers(3, 200, n - prompt)
      seg[r, :n - 1] = 1
      mask[r, prompt - 1:n - 1] = 1.0
  return {"inputs": seqs[:, :-1], "targets": seqs[:, 1:],
          "positions": np.tile(np.arange(length, dtype=np.int32), (b, 1)),
          "segment_ids": seg, "action_mask": mask, "loss_mask": mask.copy(),
          "sampler_logprobs": rng.normal(size=(b, length)).astype(np.float32)
          * mask, "rewards": rng.normal(size=b).astype(np.float32),
          "group_ids": np.repeat(np.arange(len(prompts)), g).astype(np.int32)}


def test_aligned_layout_moves_each_groups_context_to_one_slot():
  batch = _mixed_batch(prompts=(9, 23, 14))
  out = align_shared_prefixes(batch, 4, bucket=8, suffix_bucket=4)
  # Group contexts of 8, 22 and 13 input tokens (the last context token
  # predicts the first loss target, so it stays with the rows): P = 24.
  p = out[PREFIX_KEY].shape[1]
  assert p == 24 and out["inputs"].shape[1] % 4 == 0
  np.testing.assert_array_equal(out[PREFIX_KEY], out["inputs"][::4, :p])
  assert not out["loss_mask"][:, :p].any()  # every loss target is a row's own
  # Each row keeps its tokens, in order, with their positions and values.
  real, moved = batch["segment_ids"] > 0, out["segment_ids"] > 0
  assert out["inputs"].shape[1] < batch["inputs"].shape[1] + p
  for key in ("inputs", "targets", "positions", "action_mask", "loss_mask",
              "sampler_logprobs"):
    np.testing.assert_array_equal(out[key][moved], batch[key][real])
  np.testing.assert_array_equal(moved.sum(1), real.sum(1))
  for key in ("rewards", "group_ids"):
    np.testing.assert_array_equal(out[key], batch[key])
  # Group 0's 8 shared tokens end at slot 24, after 16 slots of padding.
  assert not moved[:4, :16].any() and moved[:4, 16:].sum(1).min() > 8


def test_aligned_logprobs_and_gradients_equal_the_plain_forward(tiny):
  model, params = tiny  # window 12: local layers mask across the prefix
  loss_fn = get_objective("grpo").loss_fn
  batch = _mixed_batch()
  batch["advantages"] = batch["rewards"]
  ref = jax.tree.map(lambda x: x * 1.01, params)
  batch["ref_logprobs"] = np.asarray(target_logprobs(model, ref, batch))
  aligned = align_shared_prefixes(batch, 4, bucket=8, suffix_bucket=4)
  assert PREFIX_KEY in aligned
  fwd = jax.jit(lambda p, b: target_logprobs(model, p, b))
  real, moved = batch["segment_ids"] > 0, aligned["segment_ids"] > 0
  np.testing.assert_allclose(np.asarray(fwd(params, aligned))[moved],
                             np.asarray(fwd(params, batch))[real],
                             atol=2e-5, rtol=1e-5)
  # Without the prefix key (put_batch's fallback) the re-laid rows are a
  # plain batch with the same values.
  plain_aligned = {k: v for k, v in aligned.items() if k != PREFIX_KEY}
  np.testing.assert_allclose(np.asarray(fwd(params, plain_aligned))[moved],
                             np.asarray(fwd(params, batch))[real],
                             atol=2e-5, rtol=1e-5)

  def grads(b):
    return jax.jit(jax.grad(
        lambda p: loss_fn(p, b, None, model, beta=0.04)[0]))(params)

  for a, b in zip(jax.tree.leaves(grads(batch)),
                  jax.tree.leaves(grads(aligned))):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=2e-6,
                               rtol=2e-4)


def test_aligned_layout_refuses_packed_rows_and_bad_sizes():
  batch = _mixed_batch()
  with pytest.raises(ValueError, match="group_size=5"):
    align_shared_prefixes(batch, 5)
  with pytest.raises(ValueError, match="bucket=0"):
    align_shared_prefixes(batch, 4, bucket=0)
  packed = dict(batch, segment_ids=batch["segment_ids"].copy())
  packed["segment_ids"][2, 5:7] = 2
  with pytest.raises(ValueError, match="row 2"):
    align_shared_prefixes(packed, 4)
  # Nothing shared (group size 1, or rows differing at slot 0): unchanged.
  assert PREFIX_KEY not in align_shared_prefixes(batch, 1)
  differ = dict(batch, inputs=batch["inputs"].copy())
  differ["inputs"][1::4, 0] += 1
  out = align_shared_prefixes(differ, 4, bucket=1)
  assert PREFIX_KEY not in out and out["inputs"].shape == batch["inputs"].shape
