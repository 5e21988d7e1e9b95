"""SCoRe Stage I / II: reward shaping, which tokens each KL term covers, and
that Stage I gives the first attempt no reward gradient."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swirl_jax.objectives import get_objective, score
from swirl_jax.objectives.common import target_logprobs

LN2 = math.log(2.0)
K3_UP = 2.0 - LN2 - 1.0  # k3 with ref - logp = ln 2

token_loss = jax.jit(score.score_token_loss,
                     static_argnames=("kl_estimator", "aggregation"))


def test_shaped_rewards_by_hand():
  r1 = jnp.array([0.0, 0.0, 1.0, 1.0])
  r2 = jnp.array([0.0, 1.0, 0.0, 1.0])
  big_r1, big_r2 = score.shaped_rewards(r1, r2, alpha=10.0)
  np.testing.assert_array_equal(big_r1, r1)
  # wrong->wrong 0; wrong->right 1 + 10; right->wrong 0 - 10; right->right 1
  np.testing.assert_array_equal(big_r2, [0.0, 11.0, -10.0, 1.0])
  np.testing.assert_array_equal(score.shaped_rewards(r1, r2, 0.0)[1], r2)


def test_token_loss_by_hand():
  logp = -jnp.ones((2, 4))
  m1 = jnp.array([[1, 1, 0, 0], [1, 0, 0, 0]])
  m2 = jnp.array([[0, 0, 1, 1], [0, 1, 1, 1]])
  adv1, adv2 = jnp.array([0.5, -1.0]), jnp.array([2.0, 1.0])
  # -adv * logp = adv per token: row 0 [.5, .5, 2, 2]; row 1 [-1, 1, 1, 1]
  loss, m = token_loss(logp, logp, m1, m2, adv1, adv2, 0.1, 0.01)
  assert float(loss) == pytest.approx(7 / 8) and float(m["weight"]) == 8
  loss, m = token_loss(logp, logp, m1, m2, adv1, adv2, 0.1, 0.01,
                       aggregation="sequence")
  assert float(loss) == pytest.approx(((0.5 + 2) + (-1 + 1)) / 2)
  assert float(m["weight"]) == 2
  # KL: k3 = 1 - ln 2 at one y1 token (coef 0.1) and one y2 token (0.01)
  ref = logp.at[0, 0].add(LN2).at[1, 3].add(LN2)
  loss, m = token_loss(logp, ref, m1, m2, adv1, adv2, 0.1, 0.01)
  assert float(loss) == pytest.approx(7 / 8 + 0.11 * K3_UP / 8, rel=1e-5)
  assert float(m["kl1"]) == pytest.approx(K3_UP / 3, rel=1e-5)
  assert float(m["kl2"]) == pytest.approx(K3_UP / 5, rel=1e-5)


class PositionLogits:
  """A 'model' whose logits are the parameters: hand-made [B, L, V]."""

  def apply(self, variables, inputs, positions, attention_mask):
    del inputs, positions, attention_mask
    return variables["params"]["logits"]


MODEL = PositionLogits()
# Each row: x = tokens 0-1, y1 = 2-3, instruction = 4, y2 = 5-7 (targets).
Y1 = np.zeros((4, 8), bool)
Y1[:, 2:4] = True
Y2 = np.zeros((4, 8), bool)
Y2[:, 5:8] = True
Y2[3, 7] = False
N_TOKENS = Y1.sum() + Y2.sum()


@functools.lru_cache(maxsize=None)
def _cached_batch(seed=0, vocab=8):
  rng = np.random.default_rng(seed)
  b, length = Y1.shape
  params = {"logits": jnp.asarray(rng.standard_normal((b, length, vocab)),
                                  jnp.float32)}
  batch = dict(
      inputs=rng.integers(0, vocab, (b, length)).astype(np.int32),
      targets=rng.integers(0, vocab, (b, length)).astype(np.int32),
      positions=np.tile(np.arange(length), (b, 1)).astype(np.int32),
      segment_ids=np.ones((b, length), np.int32),
      attempt1_mask=Y1.astype(np.float32), attempt2_mask=Y2.astype(np.int32),
      reward1=np.array([0.0, 0.0, 1.0, 1.0], np.float32),
      reward2=np.array([0.0, 1.0, 0.0, 1.0], np.float32))
  batch = jax.tree.map(jnp.asarray, batch)
  batch["ref_logprobs"] = target_logprobs(MODEL, params, batch)  # KL = 0
  return params, batch


def _batch():
  params, batch = _cached_batch()
  return params, dict(batch)


@functools.lru_cache(maxsize=None)
def _objective(name, **kwargs):
  fn = get_objective(name).loss_fn
  return jax.jit(functools.partial(fn, rng=None, model=MODEL, **kwargs))


@functools.lru_cache(maxsize=None)
def _grad_fn(name, **kwargs):
  fn = get_objective(name).loss_fn
  return jax.jit(jax.grad(lambda p, x: fn(p, x, None, MODEL, **kwargs)[0]))


def _grad(name, params, batch, **kwargs):
  return _grad_fn(name, **kwargs)(params, batch)["logits"]


def test_stage2_advantages_by_hand():
  params, batch = _batch()
  loss, m = _objective("score_stage2")(params, batch)
  # R1 = [0, 0, 1, 1] -> leave-one-out baselines [2/3, 2/3, 1/3, 1/3]
  adv1 = np.array([-2, -2, 2, 2]) / 3
  # R2 = [0, 11, -10, 1] (sum 2) -> baselines [2/3, -3, 4, 1/3]
  adv2 = np.array([-2 / 3, 14.0, -14.0, 2 / 3])
  expected, _ = token_loss(target_logprobs(MODEL, params, batch),
                           batch["ref_logprobs"], Y1, Y2, adv1, adv2, 0.01,
                           0.01)
  assert float(loss) == pytest.approx(float(expected), rel=1e-5)
  assert float(m["shaped_reward2"]) == pytest.approx(0.5)
  assert float(m["delta"]) == 0.0
  assert float(m["mean_advantage1"]) == pytest.approx(0.0, abs=1e-6)
  assert float(m["weight"]) == N_TOKENS
  # the ablation without shaping equals alpha = 0; batch baselines win
  no_shaping, _ = _objective("score_stage2", reward_shaping=False)(
      params, batch)
  alpha0, _ = _objective("score_stage2", alpha=0.0)(params, batch)
  assert float(no_shaping) == float(alpha0) != float(loss)
  given = dict(batch, baseline1=jnp.asarray([2, 2, 1, 1]) / 3,
               baseline2=jnp.asarray([2 / 3, -3.0, 4.0, 1 / 3]))
  assert float(_objective("score_stage2", baseline="none")(params, given)[0]
               ) == pytest.approx(float(loss), rel=1e-5)


def _kl_change(name, where, **kwargs):
  """Loss change when ref_logprobs rise by ln 2 on `where` (KL 0 -> k3)."""
  params, batch = _batch()
  base, _ = _objective(name, **kwargs)(params, batch)
  moved = dict(batch, ref_logprobs=batch["ref_logprobs"] + LN2 * where)
  return float(_objective(name, **kwargs)(params, moved)[0] - base)


def test_kl_terms_cover_the_right_tokens():
  per_token = K3_UP / N_TOKENS
  outside = ~(Y1 | Y2)
  # Stage I: beta2 on y1, beta1 on y2, nothing elsewhere
  assert _kl_change("score_stage1", Y1, beta2=0.25) == pytest.approx(
      0.25 * Y1.sum() * per_token, rel=1e-4)
  assert _kl_change("score_stage1", Y2, beta1=0.02) == pytest.approx(
      0.02 * Y2.sum() * per_token, rel=1e-4)
  assert _kl_change("score_stage1", outside) == 0.0
  # Stage II: beta1 on both attempts
  assert _kl_change("score_stage2", Y1, beta1=0.03) == pytest.approx(
      0.03 * Y1.sum() * per_token, rel=1e-4)
  assert _kl_change("score_stage2", Y2, beta1=0.03) == pytest.approx(
      0.03 * Y2.sum() * per_token, rel=1e-4)
  assert _kl_change("score_stage2", outside) == 0.0


def test_stage1_beta2_from_batch():
  params, batch = _batch()
  moved = dict(batch, ref_logprobs=batch["ref_logprobs"] + LN2 * Y1)
  fn = _objective("score_stage1")
  base = float(fn(params, batch)[0])
  for beta2 in (jnp.float32(0.5), jnp.full((4,), 0.5)):
    loss, m = fn(params, dict(moved, beta2=beta2))
    assert float(loss) - base == pytest.approx(
        0.5 * Y1.sum() * K3_UP / N_TOKENS, rel=1e-4)
    assert float(m["beta2"]) == 0.5


def test_stage1_first_attempt_gets_no_reward_gradient():
  params, batch = _batch()
  # pure reward term (KL coefficients 0): zero gradient at y1's logits
  g = np.asarray(_grad("score_stage1", params, batch, beta1=0.0, beta2=0.0))
  assert np.all(g[Y1] == 0.0) and np.all(g[~(Y1 | Y2)] == 0.0)
  assert np.abs(g[Y2]).max() > 0
  # Stage II does push y1 by its reward
  g2 = np.asarray(_grad("score_stage2", params, batch))
  assert np.abs(g2[Y1]).max() > 0
  # with the KL on: y1's gradient comes from the KL only, so it does not
  # depend on the rewards; and reward1 changes nothing at all in Stage I
  moved = dict(batch, ref_logprobs=batch["ref_logprobs"] + 0.3)
  ga = np.asarray(_grad("score_stage1", params, moved))
  gb = np.asarray(_grad("score_stage1", params,
                        dict(moved, reward2=1.0 - moved["reward2"])))
  gc = np.asarray(_grad("score_stage1", params,
                        dict(moved, reward1=1.0 - moved["reward1"])))
  assert np.abs(ga[Y1]).max() > 0
  np.testing.assert_array_equal(ga[Y1], gb[Y1])
  assert np.abs(ga[Y2] - gb[Y2]).max() > 0
  np.testing.assert_array_equal(ga, gc)
  # sequence aggregation: the loss without KL equals that with y1 removed
  no_y1 = dict(batch, attempt1_mask=jnp.zeros_like(batch["attempt1_mask"]))
  kw = dict(beta1=0.0, beta2=0.0, aggregation="sequence")
  np.testing.assert_allclose(_grad("score_stage1", params, batch, **kw),
                             _grad("score_stage1", params, no_y1, **kw),
                             rtol=1e-6)


def test_errors():
  params, batch = _batch()
  s1 = get_objective("score_stage1").loss_fn
  s2 = get_objective("score_stage2").loss_fn
  with pytest.raises(ValueError, match="beta2 must be >= 0"):
    s1(params, batch, None, MODEL, beta2=-1.0)
  with pytest.raises(ValueError, match="alpha must be >= 0"):
    s2(params, batch, None, MODEL, alpha=-10.0)
  with pytest.raises(ValueError, match="'median'"):
    s2(params, batch, None, MODEL, baseline="median")
  with pytest.raises(KeyError, match=r"missing \['reward1'\]"):
    s2(params, {k: v for k, v in batch.items() if k != "reward1"}, None,
       MODEL)
  with pytest.raises(KeyError, match="'attempt2_mask'"):
    s1(params, {k: v for k, v in batch.items() if k != "attempt2_mask"},
       None, MODEL)


def test_base_first_attempt_rows_train_only_the_second_attempt():
  # Row 1's y1 came from the base model (an extra prompt for the second
  # attempt): no loss on its y1 tokens, but its r1 still shapes R2.
  params, batch = _batch()
  m1 = np.asarray(batch["attempt1_mask"]).copy()
  m1[1] = 0.0
  extra = dict(batch, attempt1_mask=jnp.asarray(m1))
  g = np.asarray(_grad("score_stage2", params, extra))
  assert np.all(g[1][Y1[1]] == 0.0) and np.abs(g[1][Y2[1]]).max() > 0
  assert np.abs(g[0][Y1[0]]).max() > 0
  flipped = dict(extra, reward1=extra["reward1"].at[1].set(1.0))
  g_flipped = np.asarray(_grad("score_stage2", params, flipped))
  # r1 of row 1: 0 -> 1 lowers its shaped R2 from 11 to 1
  assert np.abs(g_flipped[1][Y2[1]] - g[1][Y2[1]]).max() > 0
  assert np.all(g_flipped[1][Y1[1]] == 0.0)
