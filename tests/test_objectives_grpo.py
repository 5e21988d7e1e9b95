"""GRPO: the clipped surrogate and k3 KL on hand-computed tokens, masking
(bitwise-zero gradients outside the action mask) and the registered
objective on a tiny Gemma."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swirl_jax import models
from swirl_jax.objectives import get_objective
from swirl_jax.objectives.advantages import group_advantages
from swirl_jax.objectives.common import target_logprobs
from swirl_jax.objectives import grpo

# jitted (one compile per setting instead of many eager ops)
grpo_token_loss = jax.jit(grpo.grpo_token_loss, static_argnames=(
    "clip_epsilon", "clip_epsilon_high", "beta", "kl_estimator",
    "aggregation"))

LN2 = math.log(2.0)
K3_UP = 2.0 - LN2 - 1.0      # k3 with ref - logp = +ln 2
K3_DOWN = 0.5 + LN2 - 1.0    # k3 with ref - logp = -ln 2


def _hand_case():
  """2 rows x 3 tokens; ratios r = [1, 1.5, 0.5] in both rows.

  Row 0 (A = +1): min(rA, clip(r)A) = [1, 1.2, 0.5]   -> pg = -[1, 1.2, 0.5]
  Row 1 (A = -1): min(rA, clip(r)A) = [-1, -1.5, (-0.8 masked)]
                                                       -> pg = [1, 1.5, -]
  Only row 0's middle token is clipped (r > 1.2 with A > 0).
  ref - logp = [[ln2, 0, -ln2], [0, ln2, 0]] -> k3 = [[K3_UP, 0, K3_DOWN],
  [0, K3_UP, -]].
  """
  logp = jnp.log(jnp.array([[0.5, 0.3, 0.2], [0.4, 0.6, 0.1]]))
  ratios = jnp.array([[1.0, 1.5, 0.5], [1.0, 1.5, 0.5]])
  old = logp - jnp.log(ratios)
  ref = logp + jnp.array([[LN2, 0.0, -LN2], [0.0, LN2, 0.0]])
  adv = jnp.array([1.0, -1.0])
  mask = jnp.array([[1, 1, 1], [1, 1, 0]])
  return logp, old, ref, adv, mask


def test_clipped_surrogate_and_k3_by_hand():
  logp, old, ref, adv, mask = _hand_case()
  loss, m = grpo_token_loss(logp, old, ref, adv, mask, beta=0.0,
                            aggregation="token")
  assert float(loss) == pytest.approx((-1 - 1.2 - 0.5 + 1 + 1.5) / 5,
                                      abs=1e-6)
  assert float(m["clip_fraction"]) == pytest.approx(1 / 5)
  assert float(m["ratio_mean"]) == pytest.approx((1 + 1.5 + .5 + 1 + 1.5) / 5)
  assert float(m["weight"]) == 5
  assert float(m["kl"]) == pytest.approx((2 * K3_UP + K3_DOWN) / 5, rel=1e-5)

  loss, m = grpo_token_loss(logp, old, ref, adv, mask, beta=0.0,
                            aggregation="sequence")
  assert float(loss) == pytest.approx((-2.7 / 3 + 2.5 / 2) / 2, abs=1e-6)
  assert float(m["weight"]) == 2
  kl_seq = ((K3_UP + K3_DOWN) / 3 + K3_UP / 2) / 2
  assert float(m["kl"]) == pytest.approx(kl_seq, rel=1e-5)

  beta = 0.04
  loss_b, _ = grpo_token_loss(logp, old, ref, adv, mask, beta=beta,
                              aggregation="sequence")
  assert float(loss_b) == pytest.approx(float(loss) + beta * kl_seq,
                                        rel=1e-6)


def test_clip_higher():
  logp, old, ref, adv, mask = _hand_case()
  # eps_high = 0.6: r = 1.5 is no longer clipped for A > 0.
  loss, m = grpo_token_loss(logp, old, ref, adv, mask, beta=0.0,
                            clip_epsilon_high=0.6, aggregation="token")
  assert float(loss) == pytest.approx((-1 - 1.5 - 0.5 + 1 + 1.5) / 5,
                                      abs=1e-6)
  assert float(m["clip_fraction"]) == 0.0


def test_surrogate_gradient_by_hand():
  """d loss / d logp = -A r / N unclipped, 0 clipped or masked."""
  logp, old, ref, adv, mask = _hand_case()
  grad = jax.grad(lambda lp: grpo_token_loss(
      lp, old, ref, adv, mask, beta=0.0, aggregation="token")[0])(logp)
  expected = np.array([[-1.0, 0.0, -0.5], [1.0, 1.5, 0.0]]) / 5
  np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)
  # k3's gradient: d/dlogp [e^(ref-lp) - (ref-lp) - 1] = 1 - e^(ref-lp)
  grad = jax.grad(lambda lp: grpo_token_loss(
      lp, old, ref, jnp.zeros(2), mask, beta=1.0, aggregation="token")[0])(
          logp)
  expected = np.array([[1 - 2.0, 0.0, 1 - 0.5], [0.0, 1 - 2.0, 0.0]]) / 5
  np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


def test_on_policy_without_old_logprobs():
  logp, _, ref, adv, mask = _hand_case()
  f = lambda lp, old: grpo_token_loss(lp, old, ref, adv, mask)[0]  # noqa
  np.testing.assert_allclose(jax.grad(f)(logp, None),
                             jax.grad(f)(logp, logp), rtol=1e-6)
  loss, m = grpo_token_loss(logp, None, ref, adv, mask)
  assert float(m["ratio_mean"]) == 1.0 and float(m["clip_fraction"]) == 0.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(clip_epsilon=1.5), "clip_epsilon must be in"),
    (dict(clip_epsilon_high=-0.1), "clip_epsilon_high"),
    (dict(beta=-1.0), "beta must be >= 0"),
    (dict(kl_estimator="k9"), "'k9'"),
    (dict(aggregation="tokens"), "'tokens'"),
])
def test_bad_hyperparameters(kwargs, message):
  logp, old, ref, adv, mask = _hand_case()
  with pytest.raises(ValueError, match=message):
    grpo.grpo_token_loss(logp, old, ref, adv, mask, **kwargs)


def test_missing_reference_with_beta():
  logp, old, _, adv, mask = _hand_case()
  with pytest.raises(KeyError, match="ref_logprobs"):
    grpo.grpo_token_loss(logp, old, None, adv, mask, beta=0.1)


# --------------------------------------------------------------------------
# The registered objective, on a bigram "model" (fast) and a tiny Gemma.

VOCAB, LENGTH = 64, 8


class Bigram:
  """logits[b, t] = table[inputs[b, t]]: a model with hand-made logits."""

  def apply(self, variables, inputs, positions, attention_mask):
    del positions, attention_mask
    return variables["params"]["table"][inputs]


def _random_params(config, seed=0):
  """Random params without compiling the Flax initialiser (fast)."""
  rng = np.random.default_rng(seed)
  leaves, treedef = jax.tree.flatten(models.param_shapes(config))
  return jax.tree.unflatten(treedef, [
      jnp.asarray(0.05 * rng.standard_normal(s.shape), s.dtype)
      for s in leaves])


@pytest.fixture(scope="module")
def tiny():
  config = models.get_config("tiny", vocab_size=VOCAB, num_layers=2,
                             attention_types=("local", "global"))
  params = _random_params(config)
  ref_params = jax.tree.map(lambda x: x * 1.05, params)
  return models.Transformer(config), params, ref_params


@pytest.fixture(scope="module")
def bigram():
  rng = np.random.default_rng(1)
  params = {"table": jnp.asarray(rng.standard_normal((VOCAB, VOCAB)),
                                 jnp.float32)}
  ref_params = {"table": params["table"] * 0.9}
  return Bigram(), params, ref_params


def _batch(model, params, ref_params, seed=0):
  rng = np.random.default_rng(seed)
  b = 4
  inputs = rng.integers(4, VOCAB, (b, LENGTH)).astype(np.int32)
  targets = np.concatenate([inputs[:, 1:], np.zeros((b, 1), np.int32)], 1)
  segment_ids = np.ones((b, LENGTH), np.int32)
  segment_ids[3, 6:] = 0  # right padding
  mask = np.zeros((b, LENGTH), np.float32)
  mask[:, 3:6] = 1  # the "reflection" tokens
  mask[2, 3] = 0
  batch = dict(inputs=inputs, targets=targets, segment_ids=segment_ids,
               positions=np.tile(np.arange(LENGTH), (b, 1)).astype(np.int32),
               action_mask=mask, rewards=np.array([1.0, 0.0, 0.0, 1.0]),
               group_ids=np.array([0, 0, 1, 1]))
  batch = jax.tree.map(jnp.asarray, batch)
  if model is None:  # near-uniform log-probs of a small random Gemma
    logp = ref_logp = jnp.full((b, LENGTH), -math.log(VOCAB))
  else:
    logp, ref_logp = _logprobs(model, (params, ref_params), batch)
  noise = lambda: 0.1 * jnp.asarray(  # noqa: E731
      rng.standard_normal((b, LENGTH)), jnp.float32)
  batch["old_logprobs"] = logp + noise()
  batch["ref_logprobs"] = ref_logp + (noise() if model is None else 0.0)
  return batch


def _logprobs(model, params_list, batch):
  fn = jax.jit(lambda ps, x: [target_logprobs(model, p, x) for p in ps])
  return fn(params_list, batch)


def test_objective_matches_token_loss(bigram):
  model, params, ref_params = bigram
  batch = _batch(model, params, ref_params)
  adv = group_advantages(batch["rewards"], batch["group_ids"])
  np.testing.assert_allclose(adv, [1, -1, -1, 1], rtol=1e-6)
  objective = get_objective("grpo")
  assert objective.needs_reference
  fn = jax.jit(functools.partial(objective.loss_fn, rng=None, model=model),
               static_argnames=("aggregation",))
  loss, metrics = fn(params, batch)
  (logp,) = _logprobs(model, (params,), batch)
  expected, _ = grpo_token_loss(logp, batch["old_logprobs"],
                                batch["ref_logprobs"], adv,
                                batch["action_mask"])
  assert float(loss) == pytest.approx(float(expected), rel=1e-5)
  assert float(metrics["weight"]) == 4  # rows (sequence aggregation)
  assert float(metrics["mean_reward"]) == 0.5
  # precomputed advantages take precedence over rewards
  loss2, _ = fn(params, dict(batch, advantages=adv, rewards=jnp.zeros(4)))
  assert float(loss2) == pytest.approx(float(loss), rel=1e-6)
  _, metrics = fn(params, batch, aggregation="token")
  assert float(metrics["weight"]) == 11  # action tokens


def _masked_changes(a):
  out = ~np.asarray(a["action_mask"], bool)
  b = dict(a)
  b["targets"] = jnp.where(out, (a["targets"] + 7) % VOCAB, a["targets"])
  b["old_logprobs"] = jnp.where(out, jnp.nan, a["old_logprobs"])
  b["ref_logprobs"] = jnp.where(out, -jnp.inf, a["ref_logprobs"])
  return b


def _assert_same_grads(ga, gb):
  for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    assert np.all(np.isfinite(x))
    np.testing.assert_array_equal(x, y)
  assert all(float(jnp.abs(x).max()) > 0 for x in jax.tree.leaves(ga))


def test_tokens_outside_action_mask_get_exactly_zero_gradient(tiny):
  """Changing targets / old / ref log-probs where action_mask is 0 (even to
  NaN / -inf) leaves the gradient wrt the Gemma params bitwise identical."""
  model, params, _ = tiny
  a = _batch(None, None, None)
  grad = jax.jit(jax.grad(lambda p, x: get_objective("grpo").loss_fn(
      p, x, None, model, beta=0.04, aggregation="token")[0]))
  _assert_same_grads(grad(params, a), grad(params, _masked_changes(a)))


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_masked_tokens_zero_gradient_bigram(bigram, aggregation):
  model, params, ref_params = bigram
  a = _batch(model, params, ref_params)
  grad = jax.jit(jax.grad(lambda p, x: get_objective("grpo").loss_fn(
      p, x, None, model, beta=0.04, aggregation=aggregation)[0]))
  _assert_same_grads(grad(params, a), grad(params, _masked_changes(a)))


def test_objective_errors(bigram):
  model, params, ref_params = bigram
  batch = _batch(model, params, ref_params)
  fn = get_objective("grpo").loss_fn
  no_rewards = {k: v for k, v in batch.items() if k != "group_ids"}
  with pytest.raises(KeyError, match=r"missing \['group_ids'\]"):
    fn(params, no_rewards, None, model)
  no_mask = {k: v for k, v in batch.items() if k != "action_mask"}
  with pytest.raises(KeyError, match="'action_mask'"):
    fn(params, no_mask, None, model)
  with pytest.raises(ValueError, match="clip_epsilon must be in"):
    fn(params, batch, None, model, clip_epsilon=-0.1)


def test_group_advantages_by_hand_with_zero_std_guard():
  # Groups: {1, 0, 0} -> mean 1/3, std sqrt(2)/3; {1, 1} (std 0) -> 0;
  # {0, 1} -> -1, +1; a group of one row -> 0.
  rewards = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0])
  groups = jnp.array([0, 0, 0, 1, 1, 2, 2, 3])
  adv = np.asarray(group_advantages(rewards, groups))
  s = math.sqrt(2.0) / 3.0
  np.testing.assert_allclose(adv[:3], [(2 / 3) / s, -(1 / 3) / s,
                                       -(1 / 3) / s], rtol=1e-5)
  np.testing.assert_array_equal(adv[3:5], [0.0, 0.0])
  np.testing.assert_allclose(adv[5:7], [-1.0, 1.0], rtol=1e-6)
  assert adv[7] == 0.0 and np.all(np.isfinite(adv))


def test_default_kl_coefficient_is_r3s(bigram):
  """The registered objective adds 0.001 * KL by default (R3's value)."""
  model, params, ref_params = bigram
  batch = _batch(model, params, ref_params)
  fn = get_objective("grpo").loss_fn
  loss, metrics = jax.jit(lambda p, x: fn(p, x, None, model))(params, batch)
  loss0, _ = jax.jit(lambda p, x: fn(p, x, None, model, beta=0.0))(params,
                                                                    batch)
  assert float(metrics["kl"]) > 0
  assert float(loss) == pytest.approx(
      float(loss0) + 0.001 * float(metrics["kl"]), rel=1e-6, abs=1e-9)


def test_inner_updates_move_the_ratio_until_the_clip_stops_them():
  """Several SGD updates on one batch with fixed old log-probs (GRPO's mu
  inner updates): the first has ratio 1 and nothing clipped; the ratio then
  leaves [1 - eps, 1 + eps] in the direction of the advantage, and once
  every action token is clipped the gradient is exactly zero."""
  rng = np.random.default_rng(3)
  b, length = 2, 6
  model = Bigram()
  # Distinct inputs: every position has its own row of logits.
  inputs = (np.arange(b * length).reshape(b, length) + 4).astype(np.int32)
  batch = dict(
      inputs=inputs,
      targets=rng.integers(4, VOCAB, (b, length)).astype(np.int32),
      segment_ids=np.ones((b, length), np.int32),
      positions=np.tile(np.arange(length), (b, 1)).astype(np.int32),
      action_mask=np.array([[0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0]],
                           np.float32),
      advantages=np.array([1.0, -1.0], np.float32))
  batch = jax.tree.map(jnp.asarray, batch)
  params = {"table": jnp.asarray(0.1 * rng.standard_normal((VOCAB, VOCAB)),
                                 jnp.float32)}
  (old,) = _logprobs(model, (params,), batch)
  batch["old_logprobs"] = old
  fn = jax.jit(jax.value_and_grad(
      lambda p, x: get_objective("grpo").loss_fn(p, x, None, model,
                                                 beta=0.0), has_aux=True))
  mask = np.asarray(batch["action_mask"]) > 0
  (_, m), _ = fn(params, batch)
  assert float(m["ratio_mean"]) == pytest.approx(1.0, abs=1e-6)
  assert float(m["clip_fraction"]) == 0.0
  for _ in range(200):
    (_, m), grads = fn(params, batch)
    if float(m["clip_fraction"]) == 1.0:
      break
    params = jax.tree.map(lambda p, g: p - 2.0 * g, params, grads)
  assert float(m["clip_fraction"]) == 1.0
  assert not np.any(np.asarray(grads["table"]))  # exactly zero
  (logp,) = _logprobs(model, (params,), batch)
  ratio = np.exp(np.asarray(logp) - np.asarray(old))
  assert np.all(ratio[0][mask[0]] > 1.2) and np.all(ratio[1][mask[1]] < 0.8)


def test_selected_log_softmax_is_log_softmax_at_the_target():
  """The fused pick equals log_softmax + take_along_axis, value and grad."""
  from swirl_jax.objectives.common import selected_log_softmax
  logits = 5.0 * jax.random.normal(jax.random.key(0), (3, 7, 50))
  targets = jax.random.randint(jax.random.key(1), (3, 7), 0, 50)
  plain = lambda x: jnp.take_along_axis(  # noqa: E731
      jax.nn.log_softmax(x, axis=-1), targets[..., None], axis=-1)[..., 0]
  np.testing.assert_array_equal(selected_log_softmax(logits, targets),
                                plain(logits))
  weights = jax.random.normal(jax.random.key(2), (3, 7))
  def grad(f):
    return jax.grad(lambda x: jnp.sum(f(x) * weights))(logits)
  np.testing.assert_allclose(
      grad(lambda x: selected_log_softmax(x, targets)), grad(plain),
      rtol=1e-6, atol=1e-6)
  # With a soft-cap bound the max subtraction is skipped: same values.
  capped = 30.0 * jnp.tanh(logits / 3.0)
  np.testing.assert_allclose(selected_log_softmax(capped, targets, bound=30.0),
                             plain(capped), rtol=1e-6, atol=2e-6)
  np.testing.assert_allclose(
      grad(lambda x: selected_log_softmax(x, targets, bound=30.0)),
      grad(plain), rtol=1e-5, atol=1e-6)
