"""The one RL batch builder's pure pieces: rows -> arrays, GRPO advantages,
group selection; and the builder's own contract (group ids, kept groups,
log-probs, the cycle cache) on a fake policy."""

import json

import numpy as np
import pytest

from swirl_jax.rollout import batches
from swirl_jax.rollout.batches import RLBatchBuilder, Row, Span


def test_rows_to_batch_spans_masks_and_logprobs():
  rows = [Row([2, 5, 6, 7, 9, 8, 3, 9],
              [Span("a", 3, 5, [-0.5, -0.5]), Span("b", 6, 8, [-0.25] * 2)],
              {}),
          Row([2, 5, 7], [Span("a", 2, 3)], {})]
  out = batches.rows_to_batch(rows, 8, ("a", "b"))
  # the target at index p - 1 is token p
  np.testing.assert_array_equal(out["targets"][0, :7], [5, 6, 7, 9, 8, 3, 9])
  np.testing.assert_array_equal(np.nonzero(out["a"][0])[0], [2, 3])
  np.testing.assert_array_equal(np.nonzero(out["b"][0])[0], [5, 6])
  np.testing.assert_array_equal(out["loss_mask"], out["a"] + out["b"])
  np.testing.assert_allclose(out["sampler_logprobs"][0, 2:4], -0.5)
  np.testing.assert_allclose(out["sampler_logprobs"][0, 5:7], -0.25)
  assert not out["sampler_logprobs"][1].any()  # a span without log-probs
  np.testing.assert_array_equal(out["segment_ids"][1], [1, 1] + [0] * 6)
  np.testing.assert_array_equal(out["positions"][0, :7], np.arange(7))
  np.testing.assert_array_equal(out["valid"], [1, 1])
  # clipped to the row length, or dropped with drop_overflowing
  clipped = batches.rows_to_batch(rows, 6, ("a", "b"))
  assert clipped["b"][0].sum() == 1.0 and clipped["valid"][0] == 1
  dropped = batches.rows_to_batch(rows, 6, ("a", "b"), drop_overflowing=True)
  assert not dropped["loss_mask"][0].any() and dropped["valid"][0] == 0
  assert dropped["inputs"][0, :6].tolist() == [2, 5, 6, 7, 9, 8]
  # a row with no span tokens carries nothing
  empty = batches.rows_to_batch([Row([2, 5], [Span("a", 2, 2)], {})], 4,
                                ("a",))
  assert empty["valid"][0] == 0


def test_rows_to_batch_refuses_bad_spans():
  with pytest.raises(ValueError, match="mask 'c'"):
    batches.rows_to_batch([Row([2, 5, 6], [Span("c", 1, 3)], {})], 4, ("a",))
  with pytest.raises(ValueError, match="2 tokens has 1 log-probs"):
    batches.rows_to_batch([Row([2, 5, 6], [Span("a", 1, 3, [0.0])], {})], 4,
                          ("a",))


def test_group_advantages_by_hand():
  # (r - mean) / std per group of 4; an all-equal group gets exactly 0.
  r = np.array([1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0], np.float32)
  adv = batches.group_advantages(r, 4)
  s = np.sqrt(0.25 * 0.75)
  np.testing.assert_allclose(adv[:4], [0.75 / s, -0.25 / s, -0.25 / s,
                                       -0.25 / s], rtol=1e-5)
  assert not adv[4:8].any()
  np.testing.assert_allclose(adv[8:], [1, 1, -1, -1], rtol=1e-6)
  # ids instead of a size: the same groups
  np.testing.assert_allclose(
      batches.group_advantages(r, np.repeat(np.arange(3), 4)), adv)
  with pytest.raises(ValueError, match="group_size=5"):
    batches.group_advantages(r, 5)
  # invalid rows get 0 and leave their group's statistics
  adv = batches.group_advantages(np.array([1.0, 0.0, 1.0, 1.0]), 2,
                                 valid=np.array([1.0, 1.0, 1.0, 0.0]))
  np.testing.assert_allclose(adv, [1.0, -1.0, 0.0, 0.0])


def test_select_groups_keeps_the_groups_with_signal_first():
  rewards = np.array([1, 1, 0, 1, 0, 0, 1, 0], np.float32)  # 4 groups of 2
  assert batches.select_groups(rewards, 2, 1) == [1]
  assert batches.select_groups(rewards, 2, 2) == [1, 3]
  assert batches.select_groups(rewards, 2, 3) == [0, 1, 3]
  with pytest.raises(ValueError, match="pool of 4"):
    batches.select_groups(rewards, 2, 5)


class _Sampler:
  """Counts parameter swaps; never samples (the builder below does not)."""

  def __init__(self):
    self.params = []

  def update_params(self, params):
    self.params.append(params)


class _Counting(RLBatchBuilder):
  """Record r gives G rows [2, r, j] with reward (r + j) % 2."""

  masks = ("action_mask",)

  def __init__(self, config=None, **kwargs):
    super().__init__(config, None, sampler=_Sampler(), **kwargs)
    self.calls = 0

  def sample_rows(self, params, records, step):
    self.calls += 1
    g = self.group_size
    return [Row([2, r["id"] + 3, j + 3, 9], [Span("action_mask", 2, 4)],
                {"rewards": float((r["id"] + j) % 2 if r["id"] else 1)},
                group=i)
            for i, r in enumerate(records) for j in range(g)], {"n": 1}


def test_builder_groups_kept_groups_and_cycle_cache(tmp_path):
  records = [{"id": i} for i in range(3)]  # record 0: all rewards equal
  log = tmp_path / "log.jsonl"
  builder = _Counting(group_size=2, seq_len=8, length_bucket=4,
                      advantage="grpo", groups_per_step=2, inner_updates=2,
                      cache_dir=str(tmp_path / "cache"), log_path=str(log))
  batch = builder("p0", records, 0)
  assert batch["inputs"].shape == (4, 4)  # 2 groups x 2 rows, L bucketed
  np.testing.assert_array_equal(batch["group_ids"], [0, 0, 1, 1])
  np.testing.assert_array_equal(batch["inputs"][:, 1], [4, 4, 5, 5])
  np.testing.assert_allclose(batch["advantages"], [1, -1, -1, 1])
  np.testing.assert_array_equal(np.nonzero(batch["action_mask"][0])[0],
                                [1, 2])
  assert "old_logprobs" not in batch and "ref_logprobs" not in batch
  assert json.loads(log.read_text()) == {"n": 1}
  # step 1 reuses the cycle's batch; a new builder resumes it from disk
  np.testing.assert_array_equal(builder("p1", records, 1)["inputs"],
                                batch["inputs"])
  resumed = _Counting(group_size=2, seq_len=8, length_bucket=4,
                      advantage="grpo", groups_per_step=2, inner_updates=2,
                      cache_dir=str(tmp_path / "cache"))
  np.testing.assert_array_equal(resumed("p1", records, 1)["advantages"],
                                batch["advantages"])
  assert resumed.calls == 0 and builder.calls == 1
  builder("p2", records, 2)
  assert builder.calls == 2 and builder.sampler.params == ["p0", "p2"]
  with pytest.raises(ValueError, match="groups_per_step=2 but the dataset "
                     "gave only 1"):
    builder("p", records[:1], 4)


def test_builder_without_group_keys_has_no_group_ids():
  class Ungrouped(_Counting):
    def sample_rows(self, params, records, step):
      rows, stats = super().sample_rows(params, records, step)
      for r in rows:
        r.group = None
      return rows, stats
  batch = Ungrouped(group_size=2, seq_len=8)("p", [{"id": 1}], 0)
  assert "group_ids" not in batch and batch["inputs"].shape == (2, 8)


@pytest.mark.parametrize("kwargs, message", [
    (dict(group_size=0), "group_size must be >= 1"),
    (dict(old_logprobs="ref"), "old_logprobs must be one of"),
    (dict(advantage="rloo"), "Unknown advantage estimator 'rloo'"),
    (dict(inner_updates=0), "inner_updates must be >= 1"),
    (dict(shared_prefix_bucket=-1), "shared_prefix_bucket must be >= 0"),
])
def test_builder_refuses_bad_settings(kwargs, message):
  with pytest.raises(ValueError, match=message):
    _Counting(**dict(dict(group_size=2, seq_len=8), **kwargs))
