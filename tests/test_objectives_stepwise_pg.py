"""SWiRL step-wise policy gradient: hand-computed losses and gradients,
group baselines and the registered objective on hand-made logits."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swirl_jax.objectives import get_objective, stepwise_pg
from swirl_jax.objectives.advantages import group_advantages
from swirl_jax.objectives.common import target_logprobs

LN2 = math.log(2.0)
K3_UP = 2.0 - LN2 - 1.0  # k3 with ref - logp = ln 2

token_loss = jax.jit(stepwise_pg.stepwise_pg_token_loss, static_argnames=(
    "kl_coef", "kl_estimator", "aggregation"))


def _hand_case():
  logp = jnp.array([[-1.0, -2.0, -3.0], [-0.5, -1.5, -2.5]])
  mask = jnp.array([[1, 1, 0], [1, 1, 1]])
  adv = jnp.array([1.0, -0.5])
  return logp, mask, adv


def test_policy_gradient_loss_by_hand():
  logp, mask, adv = _hand_case()
  # -A * logp on action tokens: row 0: [1, 2, -]; row 1: [-.25, -.75, -1.25]
  loss, m = token_loss(logp, logp, adv, mask, aggregation="token")
  assert float(loss) == pytest.approx((1 + 2 - 0.25 - 0.75 - 1.25) / 5)
  assert float(m["kl"]) == 0.0 and float(m["weight"]) == 5
  loss, m = token_loss(logp, logp, adv, mask, aggregation="sequence")
  assert float(loss) == pytest.approx((1.5 + -0.75) / 2)
  assert float(m["weight"]) == 2
  # KL: ref - logp = ln 2 on one action token -> k3 = 1 - ln 2
  ref = logp.at[1, 2].add(LN2)
  loss, m = token_loss(logp, ref, adv, mask, kl_coef=0.01,
                       aggregation="token")
  assert float(m["kl"]) == pytest.approx(K3_UP / 5, rel=1e-5)
  assert float(loss) == pytest.approx(0.15 + 0.01 * K3_UP / 5, rel=1e-5)
  # ... and a change of ref at a non-action token changes nothing
  loss2, _ = token_loss(logp, ref.at[0, 2].add(5.0), adv, mask, kl_coef=0.01,
                        aggregation="token")
  assert float(loss2) == float(loss)


def test_gradient_is_advantage_weighted_by_hand():
  logp, mask, adv = _hand_case()
  f = lambda lp, agg: token_loss(lp, lp, adv, mask, kl_coef=0.0,  # noqa
                                 aggregation=agg)[0]
  np.testing.assert_allclose(jax.grad(f)(logp, "token"),
                             [[-0.2, -0.2, 0], [0.1, 0.1, 0.1]], rtol=1e-6)
  # sequence: -A_i / (n_i * rows)
  np.testing.assert_allclose(jax.grad(f)(logp, "sequence"),
                             [[-1 / 4, -1 / 4, 0], [1 / 12, 1 / 12, 1 / 12]],
                             rtol=1e-6)


class PositionLogits:
  """A 'model' whose logits are the parameters: hand-made [B, L, V]."""

  def apply(self, variables, inputs, positions, attention_mask):
    del inputs, positions, attention_mask
    return variables["params"]["logits"]


def _batch(seed=0, b=4, length=6, vocab=8):
  rng = np.random.default_rng(seed)
  params = {"logits": jnp.asarray(rng.standard_normal((b, length, vocab)),
                                  jnp.float32)}
  inputs = rng.integers(0, vocab, (b, length)).astype(np.int32)
  mask = np.zeros((b, length), np.float32)
  mask[:, 3:] = 1  # the action
  mask[1, 5] = 0
  batch = dict(inputs=inputs,
               targets=rng.integers(0, vocab, (b, length)).astype(np.int32),
               positions=np.tile(np.arange(length), (b, 1)).astype(np.int32),
               segment_ids=np.ones((b, length), np.int32), action_mask=mask,
               rewards=np.array([1.0, 0.0, 0.5, 0.5], np.float32),
               group_ids=np.array([3, 3, 8, 8], np.int32))
  batch = jax.tree.map(jnp.asarray, batch)
  model = PositionLogits()
  batch["ref_logprobs"] = target_logprobs(model, params, batch) - 0.1
  return model, params, batch


def _objective(model, **kwargs):
  fn = get_objective("stepwise_pg").loss_fn
  return jax.jit(functools.partial(fn, rng=None, model=model, **kwargs))


def test_objective_uses_group_baseline():
  model, params, batch = _batch()
  assert get_objective("stepwise_pg").needs_reference
  loss, m = _objective(model)(params, batch)
  # group 3: rewards [1, 0] -> A = [1, -1]; group 8: equal -> A = 0
  adv = group_advantages(batch["rewards"], batch["group_ids"])
  np.testing.assert_allclose(adv, [1, -1, 0, 0])
  expected, _ = token_loss(target_logprobs(model, params, batch),
                           batch["ref_logprobs"], adv, batch["action_mask"],
                           kl_coef=0.01)
  assert float(loss) == pytest.approx(float(expected), rel=1e-6)
  assert float(m["mean_reward"]) == 0.5
  assert float(m["mean_advantage"]) == 0.0
  assert float(m["weight"]) == 11
  assert float(m["kl"]) > 0
  # no std normalisation: group 3 is [0.5, -0.5]
  loss_raw, _ = _objective(model, normalize_std=False, kl_coef=0.0)(
      params, batch)
  expected, _ = token_loss(target_logprobs(model, params, batch), None,
                           adv / 2, batch["action_mask"], kl_coef=0.0)
  assert float(loss_raw) == pytest.approx(float(expected), rel=1e-6)


def test_equal_rewards_in_a_group_give_no_policy_gradient():
  model, params, batch = _batch()
  grad = jax.grad(lambda p: _objective(model, kl_coef=0.0)(p, batch)[0])(
      params)["logits"]
  g = np.asarray(grad)
  assert np.all(g[2:] == 0.0)  # group 8: rewards 0.5, 0.5
  assert np.all(g[:, :3] == 0.0)  # context (non-action) tokens
  assert np.abs(g[0, 3:]).max() > 0 and np.abs(g[1, 3:5]).max() > 0
  assert np.all(g[1, 5] == 0.0)
  # the rewarded action's sampled token is pushed up: d loss / d logit < 0
  t = int(batch["targets"][0, 3])
  assert g[0, 3, t] < 0 and g[1, 3, int(batch["targets"][1, 3])] > 0


def test_precomputed_advantages_and_loss_mask_fallback():
  model, params, batch = _batch()
  alt = {k: v for k, v in batch.items()
         if k not in ("rewards", "group_ids", "action_mask")}
  alt["advantages"] = jnp.array([1.0, -1.0, 0.0, 0.0])
  alt["loss_mask"] = batch["action_mask"]
  la, ma = _objective(model)(params, batch)
  lb, mb = _objective(model)(params, alt)
  assert float(la) == pytest.approx(float(lb), rel=1e-6)
  assert "mean_reward" not in mb


def test_errors():
  model, params, batch = _batch()
  fn = get_objective("stepwise_pg").loss_fn
  with pytest.raises(ValueError, match="kl_coef must be >= 0"):
    fn(params, batch, None, model, kl_coef=-0.1)
  with pytest.raises(ValueError, match="'mean'"):
    fn(params, batch, None, model, aggregation="mean")
  with pytest.raises(ValueError, match="'k9'"):
    fn(params, batch, None, model, kl_estimator="k9")
  with pytest.raises(KeyError, match="'advantages'"):
    fn(params, {k: v for k, v in batch.items() if k != "rewards"}, None,
       model)
  bad = dict(batch, action_mask=batch["action_mask"][:, :2])
  with pytest.raises(ValueError, match="expected the targets' shape"):
    fn(params, bad, None, model)
