"""Unit tests of the training core: schedules, steps, objectives, mesh rules,
checkpoint compatibility and gin errors."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from swirl_jax import models, sharding
from swirl_jax.objectives import get_objective, objective_names
from swirl_jax.objectives.common import segment_attention_mask
from swirl_jax.objectives.kl import kl_penalty
from swirl_jax.training import checkpointing
from swirl_jax.training.optimizer import learning_rate_schedule, make_optimizer
from swirl_jax.training.train_state import TrainState
from swirl_jax.training.train_step import make_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _batch(b=4, length=16, vocab=64, seed=0):
  rng = np.random.default_rng(seed)
  inputs = rng.integers(4, vocab, (b, length)).astype(np.int32)
  targets = np.concatenate([inputs[:, 1:], np.zeros((b, 1), np.int32)], 1)
  mask = np.zeros((b, length), np.float32)
  mask[:, length // 2:-1] = 1
  mask[0, :] = 0
  mask[0, -3:-1] = 1  # rows with different numbers of target tokens
  return dict(inputs=inputs, targets=targets, loss_mask=mask,
              positions=np.tile(np.arange(length), (b, 1)).astype(np.int32),
              segment_ids=np.ones((b, length), np.int32))


@pytest.fixture(scope="module")
def tiny():
  config = models.get_config("tiny", vocab_size=64)
  return config, models.init_params(config, jax.random.key(0))


def test_schedule_warmup_then_cosine():
  s = learning_rate_schedule(peak_learning_rate=1.0, warmup_steps=10,
                             total_steps=110, decay="cosine",
                             end_learning_rate_fraction=0.1)
  assert float(s(0)) == 0.0
  assert float(s(5)) == pytest.approx(0.5)
  assert float(s(10)) == pytest.approx(1.0)
  assert float(s(110)) == pytest.approx(0.1)
  lin = learning_rate_schedule(peak_learning_rate=1.0, warmup_steps=0,
                               total_steps=100, decay="linear",
                               end_learning_rate_fraction=0.0)
  assert float(lin(50)) == pytest.approx(0.5)
  with pytest.raises(ValueError, match="exponential"):
    learning_rate_schedule(decay="exponential")


def test_sft_loss_is_masked_mean_nll(tiny):
  config, params = tiny
  model = models.Transformer(config)
  batch = jax.tree.map(jnp.asarray, _batch())
  loss, metrics = get_objective("sft").loss_fn(params, batch, None, model)
  logits = model.apply({"params": params}, batch["inputs"])
  logp = jax.nn.log_softmax(logits)
  nll = -jnp.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
  expected = jnp.sum(nll * batch["loss_mask"]) / jnp.sum(batch["loss_mask"])
  assert float(loss) == pytest.approx(float(expected), rel=1e-6)
  assert float(metrics["weight"]) == float(np.sum(batch["loss_mask"]))


def test_masked_tokens_get_no_gradient(tiny):
  """Changing a target where loss_mask is 0 changes nothing."""
  config, params = tiny
  model = models.Transformer(config)
  a = _batch()
  b = dict(a, targets=a["targets"].copy())
  b["targets"][1, 0] = (b["targets"][1, 0] + 1) % 64  # masked position
  fn = lambda p, x: get_objective("sft").loss_fn(p, x, None, model)[0]
  ga = jax.grad(fn)(params, jax.tree.map(jnp.asarray, a))
  gb = jax.grad(fn)(params, jax.tree.map(jnp.asarray, b))
  for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    np.testing.assert_array_equal(x, y)


def test_microbatches_equal_full_batch(tiny):
  config, params = tiny
  model = models.Transformer(config)
  schedule = optax.constant_schedule(1e-3)
  tx = optax.sgd(1e-2)  # linear in the gradient: exposes weighting errors
  batch = jax.tree.map(jnp.asarray, _batch(b=4))
  state = TrainState.create(params, tx, jax.random.key_data(jax.random.key(0)))
  s1, m1 = jax.jit(make_train_step(model, get_objective("sft"), tx,
                                   schedule, 1))(state, batch, None)
  s2, m2 = jax.jit(make_train_step(model, get_objective("sft"), tx,
                                   schedule, 2))(state, batch, None)
  assert float(m1["loss"]) == pytest.approx(float(m2["loss"]), rel=1e-5)
  for x, y in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
    np.testing.assert_allclose(x, y, atol=1e-6)
  assert int(s2.step) == 1
  with pytest.raises(ValueError, match="not divisible by num_microbatches=3"):
    jax.jit(make_train_step(model, get_objective("sft"), tx, schedule, 3))(
        state, batch, None)


def test_segment_mask_blocks_other_sequences():
  seg = jnp.array([[1, 1, 2, 2, 0]])
  m = np.asarray(segment_attention_mask(seg))[0]
  assert m[1].tolist() == [True, True, False, False, False]
  assert m[3].tolist() == [False, False, True, True, False]
  assert not m[4].any()


def test_kl_estimators():
  logp = jnp.log(jnp.array([0.5, 0.2]))
  ref = jnp.log(jnp.array([0.25, 0.2]))
  k3 = kl_penalty(logp, ref, "k3")
  r = 0.25 / 0.5
  assert float(k3[0]) == pytest.approx(r - np.log(r) - 1)
  assert float(k3[1]) == pytest.approx(0.0)
  np.testing.assert_allclose(kl_penalty(logp, ref, "k1"), logp - ref)
  with pytest.raises(ValueError, match="k7"):
    kl_penalty(logp, ref, "k7")


def test_unknown_objective_suggests():
  assert "sft" in objective_names()
  with pytest.raises(ValueError, match=r"Did you mean 'sft'\?"):
    get_objective("sfft")


def test_optimizer_skips_decay_on_vectors():
  params = {"w": jnp.ones((2, 2)), "scale": jnp.ones((2,))}
  tx = make_optimizer(optax.constant_schedule(0.0), weight_decay=0.5)
  grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert float(jnp.abs(updates["scale"]).sum()) == 0.0  # lr 0, no decay
  tx = make_optimizer(optax.constant_schedule(1.0), weight_decay=0.5)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert float(updates["scale"].sum()) == 0.0
  assert float(updates["w"][0, 0]) == pytest.approx(-0.5)


@pytest.mark.parametrize("sizes, message", [
    ((3, 1, 1), "needs 3 devices"),
    ((-1, -1, 1), "Only one mesh axis"),
    ((0, 1, 1), "data=0"),
])
def test_make_mesh_errors(sizes, message):
  with pytest.raises(ValueError, match=message):
    sharding.make_mesh(*sizes)


def test_logical_to_mesh_spec_skips_non_dividing_axes():
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1),
                           sharding.MESH_AXES)
  spec = sharding.logical_to_mesh_spec(
      jax.sharding.PartitionSpec("vocab", "embed"), (64, 128), mesh)
  assert spec == jax.sharding.PartitionSpec(None, None)  # size-1 axes dropped

  class FakeMesh:
    shape = {"data": 2, "fsdp": 2, "tensor": 2}
  spec = sharding.logical_to_mesh_spec(
      jax.sharding.PartitionSpec("embed", "kv_heads", "head_dim"),
      (128, 1, 32), FakeMesh())
  assert spec == jax.sharding.PartitionSpec("fsdp", None, None)
  spec = sharding.logical_to_mesh_spec(
      jax.sharding.PartitionSpec("activation_batch", None), (8, 3), FakeMesh())
  assert spec == jax.sharding.PartitionSpec(("data", "fsdp"), None)
  with pytest.raises(ValueError, match="'colour'"):
    sharding.logical_to_mesh_spec(jax.sharding.PartitionSpec("colour"), (4,),
                                  FakeMesh())


def test_incompatible_workdir_is_refused_and_untouched(tmp_path, tiny):
  config, params = tiny
  ckpt = checkpointing.Checkpointer(str(tmp_path / "checkpoints"),
                                    save_every=1, async_save=False)
  tx = optax.adam(1e-3)
  state = TrainState.create(params, tx, jax.random.key_data(jax.random.key(0)))
  ckpt.save(1, state, {"pos": 1}, config, force=True)
  ckpt.close()
  before = sorted(os.walk(tmp_path))
  from swirl_jax.training.trainer import train
  other = config.replace(num_layers=2, attention_types=("local", "global"))
  with pytest.raises(checkpointing.IncompatibleCheckpointError,
                     match=r"num_layers.*\(4, 2\)"):
    train(str(tmp_path), model_config=other, dataset_fn=None, train_steps=5)
  assert sorted(os.walk(tmp_path)) == before


def _main(*args):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", "swirl_jax.main", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=120)


@pytest.mark.parametrize("binding, expected", [
    ("swirl_jax.training.trainer.train.train_stpes=5",
     ["train_stpes", "train_steps"]),
    ("swirl_jax.training.trainer.trian.train_steps=5",
     ["trian", "swirl_jax.training.trainer.train"]),
    ("TRAIN_STEPS='ten'", ["train_steps", "'ten'", "int"]),
    ("TRAIN_STPES=5", ["%TRAIN_STPES", "no gin file uses", "TRAIN_STEPS"]),
])
def test_bad_gin_binding_stops_before_work(tmp_path, binding, expected):
  proc = _main("--gin_file=gin_configs/experiments/sft_tiny.gin",
               f"--workdir={tmp_path}/w", f"--gin.{binding}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  for text in expected:
    assert text in proc.stderr
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_missing_required_binding_is_named(tmp_path):
  proc = _main("--gin_file=gin_configs/runs/sft.gin",
               "--gin_file=gin_configs/models/tiny.gin",
               f"--workdir={tmp_path}/w")
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "TRAIN_STEPS" in proc.stderr or "train_steps" in proc.stderr
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_missing_gin_file(tmp_path):
  proc = _main("--gin_file=gin_configs/experiments/nope.gin",
               f"--workdir={tmp_path}/w")
  assert proc.returncode == 2 and "nope.gin" in proc.stderr


def test_init_from_hf_and_workdir(tmp_path, tiny):
  config, params = tiny
  from swirl_jax.checkpoints import hf
  from swirl_jax.training.trainer import load_initial_params
  hf.save(str(tmp_path / "hf"), config, params)
  loaded = load_initial_params(f"hf:{tmp_path / 'hf'}", config,
                               jax.random.key(5), None)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="does not match"):
    load_initial_params(f"hf:{tmp_path / 'hf'}",
                        config.replace(final_logit_soft_cap=None),
                        jax.random.key(5), None)
  # A swirl_jax workdir: the params of its latest checkpoint.
  ckpt = checkpointing.Checkpointer(str(tmp_path / "run" / "checkpoints"),
                                    save_every=1, async_save=False)
  state = TrainState.create(params, optax.sgd(0.1),
                            jax.random.key_data(jax.random.key(0)))
  ckpt.save(7, state, {}, config, force=True)
  ckpt.close()
  loaded = load_initial_params(str(tmp_path / "run"), config,
                               jax.random.key(5), None)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    load_initial_params(str(tmp_path / "empty"), config, jax.random.key(5),
                        None)


def test_optimizer_frozen_params_do_not_move_and_hold_no_state():
  params = {"embedding": jnp.ones((4, 2)),
            "layer_0": {"mlp": {"up": jnp.ones((2, 3))}}}
  grads = {"embedding": jnp.full((4, 2), 100.0),
           "layer_0": {"mlp": {"up": jnp.full((2, 3), 0.1)}}}
  tx = make_optimizer(optax.constant_schedule(0.1), max_grad_norm=1.0,
                      frozen=("embedding",))
  state = tx.init(params)
  sizes = [x.size for x in jax.tree.leaves(state) if hasattr(x, "size")]
  assert sum(sizes) <= 2 * 6 + 4  # moments of `up` only (+ counters)
  updates, _ = tx.update(grads, state, params)
  assert float(jnp.abs(updates["embedding"]).max()) == 0.0
  # The trainable leaf still gets Adam's first step, -lr * sign(g).
  np.testing.assert_allclose(updates["layer_0"]["mlp"]["up"], -0.1,
                             rtol=1e-4)
  unfrozen = make_optimizer(optax.constant_schedule(0.1), max_grad_norm=1.0)
  moved, _ = unfrozen.update(grads, unfrozen.init(params), params)
  assert float(jnp.abs(moved["embedding"]).max()) > 0.0


def test_optimizer_frozen_pattern_errors():
  params = {"embedding": jnp.ones((4, 2))}
  with pytest.raises(ValueError, match=r"\['layer_9/.*'\] match no "
                     r"parameter \(paths look like \['embedding'\]\)"):
    make_optimizer(optax.constant_schedule(0.1),
                   frozen=("layer_9/.*",)).init(params)
  with pytest.raises(ValueError, match=r"'\(' is not a regular expression"):
    make_optimizer(optax.constant_schedule(0.1), frozen=("(",))


def test_optimizer_frozen_names_ignore_flax_boxes():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from swirl_jax.training.optimizer import frozen_labels  # pylint: disable=g-import-not-at-top
  boxed = {"embedding": nn.LogicallyPartitioned(jnp.ones((4, 2)),
                                                ("vocab", "embed")),
           "final_norm": {"scale": nn.LogicallyPartitioned(
               jnp.ones((2,)), ("embed",))}}
  labels = frozen_labels(boxed, ("embedding",))
  assert jax.tree.leaves(labels) == ["frozen", "train"]


def test_training_run_with_a_frozen_embedding(tmp_path):
  """A gin-configured run: the frozen embedding ends where it started, the
  other parameters move (and the sharded optimizer state builds)."""
  config = models.get_config("tiny")
  params = models.init_params(config, jax.random.key(3))
  from swirl_jax.checkpoints import hf
  from swirl_jax.training.trainer import load_initial_params
  hf.save(str(tmp_path / "hf"), config, params)
  proc = _main("--gin_file=gin_configs/experiments/sft_tiny.gin",
               f"--workdir={tmp_path}/w", "--gin.TRAIN_STEPS=2",
               "--gin.BATCH_SIZE=2", "--gin.SEQ_LEN=64",
               "--gin.swirl_jax.training.trainer.train.init_from="
               f"'hf:{tmp_path / 'hf'}'",
               "--gin.swirl_jax.training.optimizer.make_optimizer.frozen="
               "('embedding',)")
  assert proc.returncode == 0, proc.stderr[-3000:]
  trained = load_initial_params(str(tmp_path / "w"), config,
                                jax.random.key(5), None)
  np.testing.assert_array_equal(trained["embedding"], params["embedding"])
  moved = np.abs(np.asarray(trained["layer_0"]["mlp"]["up"])
                 - np.asarray(params["layer_0"]["mlp"]["up"])).max()
  assert moved > 0


def test_compilation_cache_is_read_back_and_changes_nothing(tmp_path):
  """Two runs sharing a compilation cache: the first writes the compiled
  train step there, the second reads it back, and both train the same
  parameters bit for bit; '' turns the cache off."""
  config = models.get_config("tiny")
  cache = tmp_path / "cache"
  args = ("--gin_file=gin_configs/experiments/sft_tiny.gin",
          "--gin.TRAIN_STEPS=2", "--gin.CHECKPOINT_EVERY=2",
          "--gin.BATCH_SIZE=2", "--gin.SEQ_LEN=64")
  for name in ("a", "b"):
    proc = _main(*args, f"--workdir={tmp_path / name}",
                 f"--compilation_cache_dir={cache}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    if name == "a":
      entries = sorted(os.listdir(cache))
      assert any(e.startswith("jit_step") for e in entries), entries
  assert sorted(os.listdir(cache)) == entries  # nothing compiled anew
  from swirl_jax.training.trainer import load_initial_params
  a, b = (load_initial_params(str(tmp_path / n), config, jax.random.key(5),
                              None) for n in ("a", "b"))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  proc = _main(*args, f"--workdir={tmp_path / 'c'}", "--compilation_cache_dir=")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert not os.path.exists(tmp_path / "c" / "compilation_cache")
