"""Every RL objective is registered and runs in `make_train_step`: a jitted
step on a tiny Gemma, and microbatch accumulation equal to the full batch."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from swirl_jax import models
from swirl_jax.objectives import get_objective, objective_names
from swirl_jax.training.train_state import TrainState
from swirl_jax.training.train_step import make_train_step

RL_OBJECTIVES = ("grpo", "score_stage1", "score_stage2", "stepwise_pg")
VOCAB, LENGTH = 64, 12


def _rl_batch(b=4, seed=0):
  """A batch with the fields of every RL objective.

  Rows: prompt 0-3, first attempt / action 4-6, instruction 7, second
  attempt 8-10, padding 11 (segment 0).
  """
  rng = np.random.default_rng(seed)
  inputs = rng.integers(4, VOCAB, (b, LENGTH)).astype(np.int32)
  targets = np.concatenate([inputs[:, 1:], np.zeros((b, 1), np.int32)], 1)
  segment_ids = np.ones((b, LENGTH), np.int32)
  segment_ids[:, -1] = 0
  y1 = np.zeros((b, LENGTH), np.float32)
  y1[:, 3:6] = 1  # targets of inputs 3..5 are tokens 4..6
  y2 = np.zeros((b, LENGTH), np.float32)
  y2[:, 7:10] = 1
  y2[1, 9] = 0
  batch = dict(
      inputs=inputs, targets=targets, segment_ids=segment_ids,
      positions=np.tile(np.arange(LENGTH), (b, 1)).astype(np.int32),
      action_mask=y1, attempt1_mask=y1, attempt2_mask=y2,
      rewards=np.array([1.0, 0.0, 0.3, 0.9], np.float32),
      group_ids=np.array([0, 0, 1, 1], np.int32),
      reward1=np.array([0.0, 1.0, 0.0, 1.0], np.float32),
      reward2=np.array([1.0, 1.0, 0.0, 0.0], np.float32),
      old_logprobs=np.full((b, LENGTH), -np.log(VOCAB), np.float32)
      + 0.05 * rng.standard_normal((b, LENGTH)).astype(np.float32))
  return jax.tree.map(jnp.asarray, batch)


def _random_params(config, seed=0):
  """Random params without compiling the Flax initialiser (fast)."""
  rng = np.random.default_rng(seed)
  leaves, treedef = jax.tree.flatten(models.param_shapes(config))
  return jax.tree.unflatten(treedef, [
      jnp.asarray(0.05 * rng.standard_normal(s.shape), s.dtype)
      for s in leaves])


def test_rl_objectives_are_registered():
  names = objective_names()
  for name in RL_OBJECTIVES:
    assert name in names
    assert get_objective(name).needs_reference


def test_one_jitted_train_step_each_on_tiny_gemma():
  config = models.get_config("tiny", vocab_size=VOCAB, num_layers=2,
                             attention_types=("local", "global"))
  model = models.Transformer(config)
  params = _random_params(config)
  ref_params = jax.tree.map(lambda x: 0.9 * x, params)
  tx = optax.adam(1e-3)
  schedule = optax.constant_schedule(1e-3)
  state = TrainState.create(params, tx,
                            jax.random.key_data(jax.random.key(0)))
  steps = [make_train_step(model, get_objective(n), tx, schedule)
           for n in RL_OBJECTIVES]
  # one jit for the four steps: one compilation instead of four
  results = jax.jit(lambda s, x, r: [f(s, x, r) for f in steps])(
      state, _rl_batch(), ref_params)
  for name, (new_state, metrics) in zip(RL_OBJECTIVES, results):
    assert int(new_state.step) == 1, name
    for key, value in metrics.items():
      assert np.isfinite(float(value)), (name, key)
    assert "weight" not in metrics and float(metrics["grad_norm"]) > 0, name
    changed = [not np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(params), jax.tree.leaves(new_state.params))]
    assert all(changed), name
  assert float(results[0][1]["kl"]) > 0  # the reference was used


class Bigram:
  """logits[b, t] = table[inputs[b, t]] (fast to compile)."""

  def apply(self, variables, inputs, positions, attention_mask):
    del positions, attention_mask
    return variables["params"]["table"][inputs]


CONFIGS = (("grpo", "sequence"), ("grpo", "token"), ("stepwise_pg", "token"),
           ("score_stage1", "token"), ("score_stage2", "sequence"))


def _with_aggregation(name, aggregation):
  objective = get_objective(name)
  loss_fn = objective.loss_fn
  return objective.__class__(
      name, lambda p, b, r, m: loss_fn(p, b, r, m, aggregation=aggregation),
      objective.needs_reference)


def test_microbatches_equal_full_batch():
  """'weight' makes accumulated microbatch gradients equal the full batch's
  (groups lie within microbatches), for both aggregations."""
  rng = np.random.default_rng(1)
  params = {"table": jnp.asarray(rng.standard_normal((VOCAB, VOCAB)),
                                 jnp.float32)}
  ref_params = {"table": 0.8 * params["table"]}
  tx = optax.sgd(1.0)  # linear in the gradient: exposes weighting errors
  schedule = optax.constant_schedule(1.0)
  batch = _rl_batch()
  # unequal token and row counts in the two microbatches (rows 0-1, 2-3)
  action = np.zeros((4, LENGTH), np.float32)
  action[0, 4:6] = 1
  action[2, 3:6] = 1
  action[3, 3:10] = 1
  empty_row1 = jnp.asarray([[1.0], [0.0], [1.0], [1.0]])
  batch = dict(batch, action_mask=jnp.asarray(action),
               advantages=jnp.asarray([1.0, -1.0, -0.5, 0.8]),
               attempt1_mask=batch["attempt1_mask"] * empty_row1,
               attempt2_mask=batch["attempt2_mask"] * empty_row1)
  state = TrainState.create(params, tx,
                            jax.random.key_data(jax.random.key(0)))
  steps = [make_train_step(Bigram(), _with_aggregation(*config), tx,
                           schedule, micro)
           for config in CONFIGS for micro in (1, 2)]
  results = jax.jit(lambda s, x, r: [f(s, x, r) for f in steps])(
      state, batch, ref_params)
  for i, config in enumerate(CONFIGS):
    (s1, m1), (s2, m2) = results[2 * i], results[2 * i + 1]
    assert float(m1["loss"]) == pytest.approx(float(m2["loss"]), rel=1e-5), \
        config
    np.testing.assert_allclose(s1.params["table"], s2.params["table"],
                               atol=1e-6, err_msg=str(config))
    assert not np.array_equal(s1.params["table"], params["table"]), config


def test_hyperparameters_are_gin_configurable():
  import gin  # pylint: disable=g-import-not-at-top
  from swirl_jax import gin_utils  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(2)
  params = {"table": jnp.asarray(rng.standard_normal((VOCAB, VOCAB)),
                                 jnp.float32)}
  batch = dict(_rl_batch(), ref_logprobs=jnp.full((4, LENGTH), -4.0))
  grpo = get_objective("grpo").loss_fn
  stage2 = get_objective("score_stage2").loss_fn
  want_grpo = float(grpo(params, batch, None, Bigram(), beta=0.5)[0])
  want_s2 = float(stage2(params, batch, None, Bigram(), alpha=3.0)[0])
  try:
    gin.parse_config(["swirl_jax.objectives.grpo.grpo_loss.beta = 0.5",
                      "score_stage2_loss.alpha = 3.0"])
    assert float(grpo(params, batch, None, Bigram())[0]) == pytest.approx(
        want_grpo, rel=1e-6)
    assert float(stage2(params, batch, None, Bigram())[0]) == pytest.approx(
        want_s2, rel=1e-6)
    gin.parse_config(["stepwise_pg_loss.aggregation = 'tokens'"])
    with pytest.raises(ValueError, match="got 'tokens'"):
      get_objective("stepwise_pg").loss_fn(params, batch, None, Bigram())
    gin.parse_config(["score_stage1_loss.beta2 = 'strong'"])
    with pytest.raises(gin_utils.GinConfigError, match="beta2"):
      gin_utils.check_binding_types()
  finally:
    gin.clear_config()


def _tiny():
  config = models.get_config("tiny", vocab_size=VOCAB, num_layers=2,
                             attention_types=("local", "global"))
  return config, models.Transformer(config)


def test_exact_kl_from_gin_runs_in_the_train_step():
  """kl_estimator='exact' bound by gin: the step computes the reference's
  logits itself (no 'ref_logits' in the batch), its 'kl' metric is the
  exact KL over the vocabulary of the two models' logits, and its gradient
  is not k3's."""
  import gin  # pylint: disable=g-import-not-at-top
  from swirl_jax.objectives.common import segment_attention_mask  # pylint: disable=g-import-not-at-top
  config, model = _tiny()
  params = _random_params(config)
  ref_params = _random_params(config, seed=7)  # far from params: a real KL
  tx = optax.sgd(1.0)
  schedule = optax.constant_schedule(1.0)
  state = TrainState.create(params, tx,
                            jax.random.key_data(jax.random.key(0)))
  batch = _rl_batch()
  assert "ref_logits" not in batch and "ref_logprobs" not in batch
  steps = {}
  try:
    for kind in ("exact", "k3"):
      gin.clear_config()
      gin.parse_config([f"stepwise_pg_loss.kl_estimator = '{kind}'",
                        "stepwise_pg_loss.kl_coef = 1.0"])
      objective = get_objective("stepwise_pg")
      assert objective.kl_estimator == kind
      assert objective.needs_ref_logits == (kind == "exact")
      steps[kind] = make_train_step(model, objective, tx, schedule)
    # The step decides at build time whether to add 'ref_logits'; the loss
    # reads its kl_estimator from gin when traced, so each step is traced
    # under the binding it was built with.
    gin.clear_config()
    gin.parse_config(["stepwise_pg_loss.kl_estimator = 'exact'",
                      "stepwise_pg_loss.kl_coef = 1.0"])
    exact_state, exact_m = jax.jit(steps["exact"])(state, batch, ref_params)
    gin.clear_config()
    gin.parse_config(["stepwise_pg_loss.kl_estimator = 'k3'",
                      "stepwise_pg_loss.kl_coef = 1.0"])
    k3_state, k3_m = jax.jit(steps["k3"])(state, batch, ref_params)
  finally:
    gin.clear_config()

  mask = segment_attention_mask(batch["segment_ids"])

  def logits(p):
    return np.asarray(model.apply({"params": p}, batch["inputs"],
                                  batch["positions"], mask), np.float64)

  def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))

  logp, logr = log_softmax(logits(params)), log_softmax(logits(ref_params))
  kl_tok = np.sum(np.exp(logp) * (logp - logr), axis=-1)  # [B, L]
  action = np.asarray(batch["action_mask"])
  want = float(np.sum(kl_tok * action) / np.sum(action))  # 'token' mean
  assert want > 1e-3
  assert float(exact_m["kl"]) == pytest.approx(want, rel=1e-4, abs=1e-7)
  assert float(exact_m["kl"]) != pytest.approx(float(k3_m["kl"]), rel=1e-3)
  # Same policy-gradient term, different KL gradients: SGD(1) moves the
  # params by -grad, so the updates differ.
  diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree.leaves(exact_state.params), jax.tree.leaves(k3_state.params)))
  assert diff > 1e-4
  assert float(exact_m["grad_norm"]) != pytest.approx(
      float(k3_m["grad_norm"]), rel=1e-3)


def test_exact_kl_without_reference_logits_option_is_refused_clearly():
  """Built with ref_logits=False, an 'exact' loss names what it misses."""
  config, model = _tiny()
  params = _random_params(config)
  tx = optax.sgd(1.0)
  state = TrainState.create(params, tx,
                            jax.random.key_data(jax.random.key(0)))
  objective = get_objective("stepwise_pg")
  import functools  # pylint: disable=g-import-not-at-top
  exact = objective.__class__(
      "stepwise_pg", functools.partial(objective.loss_fn,
                                       kl_estimator="exact"), True)
  assert exact.needs_ref_logits  # a partial's keyword counts too
  step = make_train_step(model, exact, tx, optax.constant_schedule(1.0),
                         ref_logits=False)
  with pytest.raises(KeyError, match="ref_logits"):
    jax.eval_shape(step, state, _rl_batch(), params)


def test_frozen_params_get_no_gradient_and_do_not_move():
  """make_train_step(frozen=...) (default: make_optimizer.frozen from gin)."""
  import gin  # pylint: disable=g-import-not-at-top
  from swirl_jax import models  # pylint: disable=g-import-not-at-top
  from swirl_jax.objectives import get_objective  # pylint: disable=g-import-not-at-top
  from swirl_jax.training.optimizer import make_optimizer  # pylint: disable=g-import-not-at-top
  from swirl_jax.training.train_state import TrainState  # pylint: disable=g-import-not-at-top
  from swirl_jax.training.train_step import make_train_step  # pylint: disable=g-import-not-at-top
  config = models.get_config("tiny")
  model = models.Transformer(config)
  params = models.init_params(config, jax.random.key(0))
  rng = np.random.default_rng(0)
  inputs = rng.integers(0, config.vocab_size, (2, 16)).astype(np.int32)
  batch = dict(inputs=inputs, targets=np.roll(inputs, -1, 1),
               positions=np.tile(np.arange(16, dtype=np.int32), (2, 1)),
               segment_ids=np.ones((2, 16), np.int32),
               loss_mask=np.ones((2, 16), np.float32))
  schedule = optax.constant_schedule(1e-2)
  with gin.unlock_config():
    gin.bind_parameter("swirl_jax.training.optimizer.make_optimizer.frozen",
                       ("embedding",))
  try:
    tx = make_optimizer(schedule)
    step = make_train_step(model, get_objective("sft"), tx, schedule)
  finally:
    gin.clear_config()
  state = TrainState.create(params, tx, jax.random.key_data(jax.random.key(1)))
  new_state, metrics = jax.jit(step)(state, batch, None)
  np.testing.assert_array_equal(new_state.params["embedding"],
                                params["embedding"])
  assert np.abs(np.asarray(new_state.params["layer_0"]["mlp"]["up"])
                - np.asarray(params["layer_0"]["mlp"]["up"])).max() > 0
  # The grad norm is that of the trainable parameters only.
  plain_tx = make_optimizer(schedule)
  plain = make_train_step(model, get_objective("sft"), plain_tx, schedule,
                          frozen=())
  _, plain_metrics = jax.jit(plain)(
      TrainState.create(params, plain_tx,
                        jax.random.key_data(jax.random.key(1))), batch, None)
  assert float(metrics["grad_norm"]) < float(plain_metrics["grad_norm"])
