"""KL-to-reference terms: each estimator's expected gradient, by Monte Carlo.

On one categorical of 5 classes (random policy logits theta, random
reference), N = 200,000 tokens a ~ pi_theta are drawn; the mean over the
samples of the gradient of a KL loss term must equal jax.grad of the exact
KL it claims to follow, within Z standard errors of that mean (the standard
error from the per-sample gradients). The tests also check the claims that
must fail: the old 'k1 as a loss' (logp - ref) has expected gradient 0,
not grad KL, and k3's is grad KL(pi_ref||pi), not grad KL(pi||pi_ref).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swirl_jax.objectives import common, grpo, kl, score, stepwise_pg

N = 200_000
V = 5
Z = 5.0  # a bound of Z standard errors: 5 components pass by chance
         # with probability > 1 - 3e-6 when the claim is true.


def _logits(seed, scale=1.0):
  return jnp.asarray(np.random.default_rng(seed).normal(0, scale, V),
                     jnp.float32)


THETA = _logits(0)
REF = _logits(1)
OLD = _logits(2, 0.5) + 0.5 * THETA  # a sampling policy != pi_theta


def kl_forward(theta, ref_logits):
  """Exact KL(pi_theta || pi_ref)."""
  lp = jax.nn.log_softmax(theta)
  return jnp.sum(jnp.exp(lp) * (lp - jax.nn.log_softmax(ref_logits)))


def kl_reverse(theta, ref_logits):
  """Exact KL(pi_ref || pi_theta)."""
  lr = jax.nn.log_softmax(ref_logits)
  return jnp.sum(jnp.exp(lr) * (lr - jax.nn.log_softmax(theta)))


GRAD_FORWARD = jax.grad(kl_forward)(THETA, REF)
GRAD_REVERSE = jax.grad(kl_reverse)(THETA, REF)


@functools.lru_cache(maxsize=None)
def samples(which="theta", seed=3):
  logits = THETA if which == "theta" else OLD
  return jax.random.categorical(jax.random.key(seed), logits, shape=(N,))


def per_sample_grads(term, actions, old_logits=None):
  """[N, V]: d term(logp(a), ref(a), old(a)) / d theta for each sample."""
  ref_lp = jax.nn.log_softmax(REF)
  old_lp = None if old_logits is None else jax.nn.log_softmax(old_logits)

  def one(theta, a):
    logp = jax.nn.log_softmax(theta)[a]
    old = None if old_lp is None else old_lp[a]
    return term(logp, ref_lp[a], old)
  return jax.jit(jax.vmap(jax.grad(one), in_axes=(None, 0)))(THETA, actions)


def mc(grads):
  """(mean [V], standard error [V]) of per-sample gradients [N, V]."""
  g = np.asarray(grads, np.float64)
  return g.mean(0), g.std(0, ddof=1) / np.sqrt(g.shape[0])


def deviation(mean, se, target):
  """max_v |mean - target| / se: the deviation in standard errors."""
  return float(np.max(np.abs(mean - np.asarray(target)) / se))


def estimator(kind):
  return lambda logp, ref, old: kl.kl_penalty(logp, ref, kind,
                                                  old_logp=old)


def test_claims_are_distinguishable():
  # The two KL gradients differ by many standard errors of the MC means
  # below (se ~ 1e-3), and neither is ~0: the tests can fail.
  assert float(jnp.max(jnp.abs(GRAD_FORWARD - GRAD_REVERSE))) > 0.05
  assert float(jnp.max(jnp.abs(GRAD_FORWARD))) > 0.05


@pytest.mark.parametrize("kind", ["k1", "k2"])
def test_k1_k2_follow_grad_kl_pi_ref(kind):
  mean, se = mc(per_sample_grads(estimator(kind), samples()))
  assert deviation(mean, se, GRAD_FORWARD) < Z
  assert deviation(mean, se, GRAD_REVERSE) > 10 * Z


def test_k3_follows_grad_of_the_reverse_kl():
  mean, se = mc(per_sample_grads(estimator("k3"), samples()))
  assert deviation(mean, se, GRAD_REVERSE) < Z
  assert deviation(mean, se, GRAD_FORWARD) > 10 * Z


def test_old_k1_as_a_loss_has_zero_expected_gradient():
  # logp - ref used directly as a loss (the old 'k1'): E[grad logp] = 0.
  mean, se = mc(per_sample_grads(lambda logp, ref, old: logp - ref,
                                 samples()))
  assert deviation(mean, se, np.zeros(V)) < Z
  assert deviation(mean, se, GRAD_FORWARD) > 10 * Z


def test_values_estimate_kl_pi_ref():
  # k1's and k3's values are unbiased estimates of KL(pi || pi_ref).
  a = samples()
  logp = jax.nn.log_softmax(THETA)[a]
  ref = jax.nn.log_softmax(REF)[a]
  exact = float(kl_forward(THETA, REF))
  for kind in ("k1", "k3"):
    v = np.asarray(kl.kl_penalty(logp, ref, kind), np.float64)
    assert abs(v.mean() - exact) < Z * v.std() / np.sqrt(N), kind
  np.testing.assert_allclose(kl.kl_penalty(logp, ref, "k1"), logp - ref)


def test_k1_importance_weighted_off_policy():
  # Samples of pi_old != pi_theta (GRPO's inner updates): k1 with old_logp
  # still follows grad KL(pi || pi_ref); k1 without it does not.
  a = samples("old")
  mean, se = mc(per_sample_grads(estimator("k1"), a, old_logits=OLD))
  assert deviation(mean, se, GRAD_FORWARD) < Z
  mean, se = mc(per_sample_grads(
      lambda logp, ref, old: kl.kl_penalty(logp, ref, "k1"), a))
  assert deviation(mean, se, GRAD_FORWARD) > 10 * Z


def test_exact_kl_value_and_gradient():
  logits = jnp.stack([THETA, REF, OLD])[None]          # [1, 3, V]
  ref_logits = jnp.stack([REF, THETA, REF])[None]
  p = jax.nn.softmax(logits, -1)
  want = np.sum(np.asarray(p) * (np.log(np.asarray(p)) - np.asarray(
      jax.nn.log_softmax(ref_logits, -1))), -1)
  np.testing.assert_allclose(kl.exact_kl(logits, ref_logits), want,
                             rtol=1e-5, atol=1e-7)
  # d KL / d theta = pi * (log pi - log ref - KL), by hand.
  g = jax.grad(lambda t: kl.exact_kl(t, REF))(THETA)
  lp, lr = jax.nn.log_softmax(THETA), jax.nn.log_softmax(REF)
  by_hand = jnp.exp(lp) * (lp - lr - kl_forward(THETA, REF))
  np.testing.assert_allclose(g, by_hand, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(g, GRAD_FORWARD, rtol=1e-5, atol=1e-7)


def test_exact_kl_mask_ignores_non_finite_logits():
  logits = jnp.stack([THETA, jnp.full((V,), jnp.nan)])[None]
  ref_logits = jnp.stack([REF, jnp.full((V,), jnp.inf)])[None]
  mask = jnp.array([[1, 0]])
  f = lambda t: jnp.sum(kl.exact_kl(t, ref_logits, mask))  # noqa: E731
  assert float(f(logits)) == pytest.approx(float(kl_forward(THETA, REF)),
                                           rel=1e-5)
  g = jax.grad(f)(logits)
  assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g[0, 1]).sum()) == 0


# -- the same claims through the objectives' token losses ---------------------
# N rows of one action token each, advantages 0: the loss is the KL term
# alone (coefficient 1, 'token' aggregation = the mean over the N samples),
# so its gradient is the MC mean of the per-sample gradients.


def _token_loss_grad(objective, kind, actions, old_logits=None):
  ref_lp = jax.nn.log_softmax(REF)[actions][:, None]
  mask = jnp.ones((actions.shape[0], 1))
  zeros = jnp.zeros((actions.shape[0],))
  ref_logits = jnp.broadcast_to(REF, (actions.shape[0], 1, V))
  old = (None if old_logits is None
         else jax.nn.log_softmax(old_logits)[actions][:, None])

  def loss(theta):
    logits = jnp.broadcast_to(theta, (actions.shape[0], 1, V))
    logp = jax.nn.log_softmax(theta)[actions][:, None]
    extra = (dict(logits=logits, ref_logits=ref_logits)
             if kind == "exact" else {})
    if objective == "stepwise_pg":
      return stepwise_pg.stepwise_pg_token_loss(
          logp, ref_lp, zeros, mask, kl_coef=1.0, kl_estimator=kind,
          aggregation="token", **extra)[0]
    if objective == "grpo":
      return grpo.grpo_token_loss(
          logp, old, ref_lp, zeros, mask, beta=1.0, kl_estimator=kind,
          aggregation="token", **extra)[0]
    return score.score_token_loss(
        logp, ref_lp, mask, jnp.zeros_like(mask), zeros, zeros, 1.0, 1.0,
        kl_estimator=kind, aggregation="token", **extra)[0]
  return np.asarray(jax.jit(jax.grad(loss))(THETA), np.float64)


OBJECTIVES = ["stepwise_pg", "grpo", "score"]
CLAIMS = {"k1": GRAD_FORWARD, "k2": GRAD_FORWARD, "k3": GRAD_REVERSE}


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_objective_kl_gradient_matches_its_claim(objective, kind):
  a = samples()
  grad = _token_loss_grad(objective, kind, a)
  mean, se = mc(per_sample_grads(estimator(kind), a))
  np.testing.assert_allclose(grad, mean, rtol=1e-3, atol=1e-6)
  assert deviation(grad, se, CLAIMS[kind]) < Z


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_objective_exact_kl_gradient(objective):
  grad = _token_loss_grad(objective, "exact", samples()[:64])
  np.testing.assert_allclose(grad, GRAD_FORWARD, rtol=1e-4, atol=1e-6)


def test_grpo_k1_off_policy_through_the_loss():
  a = samples("old")
  grad = _token_loss_grad("grpo", "k1", a, old_logits=OLD)
  _, se = mc(per_sample_grads(estimator("k1"), a, old_logits=OLD))
  assert deviation(grad, se, GRAD_FORWARD) < Z


def test_default_k3_is_unchanged_by_hand():
  logp = jnp.log(jnp.array([0.5, 0.2]))
  ref = jnp.log(jnp.array([0.25, 0.2]))
  r = 0.25 / 0.5
  np.testing.assert_allclose(kl.kl_penalty(logp, ref),
                             [r - np.log(r) - 1, 0.0], atol=1e-7)
  np.testing.assert_allclose(kl.kl_penalty(logp, ref, "k2"),
                             [0.5 * np.log(2) ** 2, 0.0], rtol=1e-6)


def test_exact_needs_the_reference_logits():
  logp = jnp.zeros((2, 3))
  mask = jnp.ones((2, 3))
  with pytest.raises(KeyError, match="ref_logits"):
    stepwise_pg.stepwise_pg_token_loss(logp, logp, jnp.zeros(2), mask,
                                       kl_coef=0.1, kl_estimator="exact")
  with pytest.raises(ValueError, match="exact"):
    kl.kl_penalty(logp, logp, "exact")
  with pytest.raises(ValueError, match="'k7'"):
    kl.kl_penalty(logp, logp, "k7")


class PositionLogits:
  """A 'model' whose logits are the parameters: hand-made [B, L, V]."""

  def apply(self, variables, inputs, positions, attention_mask):
    del inputs, positions, attention_mask
    return variables["params"]["logits"]


def test_registered_objectives_with_exact_kl():
  rng = np.random.default_rng(0)
  b, length, vocab = 4, 5, 7
  params = {"logits": jnp.asarray(rng.normal(size=(b, length, vocab)),
                                  jnp.float32)}
  ref_logits = jnp.asarray(rng.normal(size=(b, length, vocab)), jnp.float32)
  mask = np.zeros((b, length), np.float32)
  mask[:, 2:] = 1
  batch = dict(
      inputs=np.zeros((b, length), np.int32),
      targets=rng.integers(0, vocab, (b, length)).astype(np.int32),
      positions=np.tile(np.arange(length, dtype=np.int32), (b, 1)),
      segment_ids=np.ones((b, length), np.int32), action_mask=mask,
      attempt1_mask=mask, attempt2_mask=np.zeros_like(mask),
      advantages=np.zeros(b, np.float32), rewards=np.zeros(b, np.float32),
      reward1=np.zeros(b, np.float32), reward2=np.zeros(b, np.float32),
      group_ids=np.zeros(b, np.int32))
  want = float(jnp.sum(kl.exact_kl(params["logits"], ref_logits, mask))
               / mask.sum())
  model = PositionLogits()
  cases = [(stepwise_pg.stepwise_pg_loss, dict(kl_coef=1.0)),
           (grpo.grpo_loss, dict(beta=1.0, aggregation="token")),
           (score.score_stage2_loss, dict(beta1=1.0))]
  for fn, kwargs in cases:
    _, m = fn(params, dict(batch, ref_logits=ref_logits), None, model,
              kl_estimator="exact", **kwargs)
    got = m["kl"] if "kl" in m else m["kl1"]
    assert float(got) == pytest.approx(want, rel=1e-5), fn.__name__
    with pytest.raises(KeyError, match="ref_logits"):
      fn(params, batch, None, model, kl_estimator="exact", **kwargs)


def test_chunked_target_logprobs_equal_the_plain_ones():
  """`target_logprobs.chunk_tokens`: same values and parameter gradients."""
  from swirl_jax import models  # pylint: disable=g-import-not-at-top
  from swirl_jax.objectives import common  # pylint: disable=g-import-not-at-top
  config = models.get_config("tiny", sliding_window_size=8)
  model = models.Transformer(config)
  params = models.init_params(config, jax.random.key(0))
  rng = np.random.default_rng(0)
  b, length = 2, 37  # not a multiple of the chunk
  inputs = rng.integers(0, config.vocab_size, (b, length)).astype(np.int32)
  segments = np.ones((b, length), np.int32)
  segments[1, 30:] = 0
  batch = dict(inputs=inputs, targets=np.roll(inputs, -1, 1),
               positions=np.tile(np.arange(length, dtype=np.int32), (b, 1)),
               segment_ids=segments)
  weights = jnp.asarray(rng.normal(size=(b, length)), jnp.float32)

  def loss(p, chunk):
    return jnp.sum(common.target_logprobs(model, p, batch,
                                          chunk_tokens=chunk) * weights)

  plain, plain_grad = jax.value_and_grad(loss)(params, None)
  chunked, chunked_grad = jax.jit(jax.value_and_grad(loss),
                                  static_argnums=1)(params, 8)
  np.testing.assert_allclose(chunked, plain, rtol=1e-5)
  for a, c in zip(jax.tree.leaves(plain_grad), jax.tree.leaves(chunked_grad)):
    np.testing.assert_allclose(c, a, rtol=1e-3, atol=1e-5)
  with pytest.raises(ValueError, match="chunk_tokens must be a positive int, "
                     "got -1"):
    common.target_logprobs(model, params, batch, chunk_tokens=-1)


def test_sft_loss_is_the_same_with_chunked_logits():
  import gin  # pylint: disable=g-import-not-at-top
  from swirl_jax import models  # pylint: disable=g-import-not-at-top
  from swirl_jax.objectives import get_objective  # pylint: disable=g-import-not-at-top
  config = models.get_config("tiny")
  model = models.Transformer(config)
  params = models.init_params(config, jax.random.key(0))
  rng = np.random.default_rng(1)
  inputs = rng.integers(0, config.vocab_size, (2, 20)).astype(np.int32)
  batch = dict(inputs=inputs, targets=np.roll(inputs, -1, 1),
               positions=np.tile(np.arange(20, dtype=np.int32), (2, 1)),
               segment_ids=np.ones((2, 20), np.int32),
               loss_mask=np.ones((2, 20), np.float32))
  sft = get_objective("sft").loss_fn
  plain = sft(params, batch, None, model)
  with gin.unlock_config():
    gin.bind_parameter(
        "swirl_jax.objectives.common.target_logprobs.chunk_tokens", 6)
  try:
    chunked = sft(params, batch, None, model)
  finally:
    gin.clear_config()
  np.testing.assert_allclose(chunked[0], plain[0], rtol=1e-5)
  np.testing.assert_allclose(chunked[1]["accuracy"], plain[1]["accuracy"])
