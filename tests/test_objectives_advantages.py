"""Advantages, baselines and token aggregation of the RL objectives, on
hand-computed cases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swirl_jax.objectives import advantages as A

SQRT2 = math.sqrt(2.0)


def test_group_advantages_hand_case():
  # group 0: r = [1, 0, 0] -> mean 1/3, centred [2/3, -1/3, -1/3],
  #   population std sqrt(2/9) = sqrt(2)/3 -> [sqrt(2), -1/sqrt(2), ...];
  # group 1: constant rewards -> 0; group 2: a single row -> 0.
  rewards = jnp.array([1.0, 0.0, 0.0, 0.5, 0.5, 1.0])
  groups = jnp.array([0, 0, 0, 1, 1, 2])
  expected = [SQRT2, -1 / SQRT2, -1 / SQRT2, 0.0, 0.0, 0.0]
  np.testing.assert_allclose(A.group_advantages(rewards, groups), expected,
                             rtol=1e-6)
  np.testing.assert_allclose(
      A.group_advantages(rewards, groups, num_groups=3), expected, rtol=1e-6)
  np.testing.assert_allclose(
      A.group_advantages(rewards, groups, normalize_std=False),
      [2 / 3, -1 / 3, -1 / 3, 0, 0, 0], rtol=1e-6, atol=1e-7)


def test_group_advantages_arbitrary_ids_and_no_nan():
  rewards = jnp.array([0.1, 0.1, 0.1, 0.7, 0.3])
  groups = jnp.array([42, 42, 42, 7, 7])  # any ints without num_groups
  adv = np.asarray(A.group_advantages(rewards, groups))
  assert np.all(np.isfinite(adv))
  assert adv[:3].tolist() == [0.0, 0.0, 0.0]  # constant group: exactly 0
  np.testing.assert_allclose(adv[3:], [1.0, -1.0], rtol=1e-5)
  # gradient-free and jittable
  jitted = jax.jit(A.group_advantages, static_argnames=("num_groups",))
  np.testing.assert_allclose(jitted(rewards, groups), adv)


def test_group_advantages_row_mask_excludes_padding():
  rewards = jnp.array([1.0, 0.0, 123.0])
  groups = jnp.array([0, 0, 0])
  adv = A.group_advantages(rewards, groups, mask=jnp.array([1, 1, 0]))
  np.testing.assert_allclose(adv, [1.0, -1.0, 0.0], rtol=1e-6)


def test_advantage_estimators_registry():
  assert A.ADVANTAGE_ESTIMATORS.get("grpo") is A.group_advantages
  assert "grpo" in A.ADVANTAGE_ESTIMATORS.names()
  with pytest.raises(ValueError, match="Unknown advantage estimator 'grpoo'. "
                     "Did you mean 'grpo'"):
    A.ADVANTAGE_ESTIMATORS.get("grpoo")


def test_grouped_advantages_is_example_major():
  rewards = jnp.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0])
  got = A.grouped_advantages(rewards, group_size=4)
  want = A.group_advantages(rewards, jnp.array([0, 0, 0, 0, 1, 1, 1, 1]))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # [1,0,0,0]: mean 1/4, std sqrt(3)/4 -> 3/sqrt(3) = sqrt(3), -1/sqrt(3)
  np.testing.assert_allclose(got[:4], [math.sqrt(3)] + [-1 / math.sqrt(3)] * 3,
                             rtol=1e-6)
  np.testing.assert_allclose(
      A.grouped_advantages(rewards, 2, normalize_std=False),
      [0.5, -0.5, 0, 0, 0, 0, 0.5, -0.5])
  with pytest.raises(ValueError, match="group_size=3"):
    A.grouped_advantages(rewards, 3)


def test_reinforce_baselines():
  r = jnp.array([1.0, 0.0, 0.0, 1.0])
  # leave-one-out: (sum - r_i) / (n - 1) with sum 2, n 4
  np.testing.assert_allclose(A.reinforce_baseline(r),
                             [1 / 3, 2 / 3, 2 / 3, 1 / 3], rtol=1e-6)
  np.testing.assert_allclose(A.reinforce_baseline(r, kind="mean"), [0.5] * 4)
  np.testing.assert_allclose(A.reinforce_baseline(r, kind="none"), [0.0] * 4)
  # within groups; a row alone in its group gets 0
  np.testing.assert_allclose(
      A.reinforce_baseline(jnp.array([1.0, 0.0, 1.0]), jnp.array([5, 5, 9])),
      [0.0, 1.0, 0.0])
  # masked rows neither contribute nor receive
  np.testing.assert_allclose(
      A.reinforce_baseline(jnp.array([1.0, 0.0, 9.0]),
                           mask=jnp.array([1, 1, 0])), [0.0, 1.0, 0.0])
  with pytest.raises(ValueError, match="'median'"):
    A.reinforce_baseline(r, kind="median")


def test_aggregate_token_and_sequence():
  x = jnp.array([[1.0, 2.0, jnp.nan], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
  m = jnp.array([[1, 1, 0], [0, 0, 1], [0, 0, 0]])
  value, weight = A.aggregate(x, m, "token")
  assert float(value) == pytest.approx((1 + 2 + 6) / 3)  # NaN is masked out
  assert float(weight) == 3
  value, weight = A.aggregate(x, m, "sequence")
  assert float(value) == pytest.approx((1.5 + 6) / 2)  # empty row skipped
  assert float(weight) == 2
  # two disjoint masks: token -> one denominator; sequence -> sum of means
  m1 = jnp.array([[1, 0, 0], [1, 0, 0], [0, 0, 0]])
  m2 = jnp.array([[0, 1, 1], [0, 0, 0], [0, 0, 0]])
  x = jnp.array([[1.0, 2.0, 4.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
  value, weight = A.aggregate(x, (m1, m2), "token")
  assert float(value) == pytest.approx((1 + 2 + 4 + 3) / 4) and weight == 4
  value, weight = A.aggregate(x, (m1, m2), "sequence")
  assert float(value) == pytest.approx(((1 + 3) + 3) / 2) and weight == 2
  with pytest.raises(ValueError, match="'tokens'"):
    A.aggregate(x, m, "tokens")
