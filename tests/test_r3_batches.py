"""R3 GRPO batches: the reflection episode's prompts, the training rows (only
reflection ids in the mask, with their sampling log-probs), group
advantages, exactly-zero gradients outside the mask, and the cached batch
that makes a resumed run repeat its inner updates."""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swirl_jax import models
from swirl_jax.objectives import get_objective
from swirl_jax.r3 import batches
from swirl_jax.tasks import compact
from swirl_jax.tasks import prompts

CD_KW = dict(prompt_style="compact", min_numbers=3, max_numbers=3,
             min_value=1, max_value=10, min_target=1, max_target=50)
FIRST = "<answer> 1 + </answer>"
REFLECTIONS = ["My equation was not valid. I will use {nums}: {gold}.",
               "I made a mistake.", "Try again with care.",
               "I will use {nums}: {gold}."]


class ReflectPolicy:
  """Fake sampler: reflection k (k-th row of its query in a call) is
  REFLECTIONS[k]; a retry answers gold iff its reflection names the gold
  expression, else repeats the failed attempt."""

  def __init__(self, tokenizer, gold_by_prompt):
    self.tok = tokenizer
    self.gold = gold_by_prompt
    self.prompts = []  # decoded prompts, per call
    self.temperatures = []  # per call
    self.params = []

  def update_params(self, params):
    self.params.append(params)

  def generate(self, prompts_, max_new_tokens, temperature=0.0, top_k=None,
               top_p=None, stop_tokens=None, seed=0, group_size=1,
               shared_prefix=False):
    del max_new_tokens, top_k, top_p, seed, group_size, shared_prefix
    eot = self.tok.end_of_turn_id
    assert eot in stop_tokens
    self.temperatures.append(temperature)
    texts = [self.tok.decode(p) for p in prompts_]
    self.prompts.append(texts)
    seen, out = {}, []
    for text in texts:
      key = next(k for k in self.gold if k in text)
      gold, nums = self.gold[key]
      turn = text.count("<start_of_turn>model") - 1
      if turn == 1:  # reflection
        k = seen.get(key, 0)
        seen[key] = k + 1
        answer = REFLECTIONS[k % len(REFLECTIONS)].format(gold=gold,
                                                          nums=nums)
      else:  # retry
        answer = (f"<answer> {gold} </answer>" if f": {gold}." in text
                  else FIRST)
      out.append(self.tok.encode(answer) + [eot])
    return types.SimpleNamespace(
        tokens=out, logprobs=[[-0.1 * (j + 1) for j in range(len(t))]
                              for t in out], done=[True] * len(out))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  from swirl_jax.data import reflection_demonstrations as demonstrations
  from swirl_jax.tokenizer import Tokenizer, train_sentencepiece
  texts = demonstrations.tokenizer_corpus(
      tasks=("countdown",), task_kwargs={"countdown": CD_KW}, num_per_task=20)
  path = tmp_path_factory.mktemp("r3_batches") / "spm.model"
  tokenizer = Tokenizer(train_sentencepiece(texts, str(path), 1024))
  task = compact.make_task("countdown", **CD_KW)
  examples = compact.generate_examples(task, 2, seed=2)
  records = []
  for ex in examples:
    answer = task.parse_answer(FIRST)
    verdict = task.verify(ex, answer)
    records.append({
        "failure_id": f"countdown/{ex.id}", "task": "countdown",
        "example_id": ex.id, "example": json.dumps(ex.to_dict()),
        "prompt": task.prompt(ex), "attempt": FIRST,
        "attempt_tokens": tokenizer.encode(FIRST) + [
            tokenizer.end_of_turn_id],
        "attempt_logprobs": [-1.0] * 9, "answer": answer or "",
        "category": verdict.category, "detail": verdict.detail,
        "sample_index": 0, "num_samples": 1, "num_correct": 0})
  gold = {task.prompt(ex): (ex.answer, " ".join(
      str(n) for n in task.numbers_and_target(ex)[0])) for ex in examples}
  # A one-layer model: fast to compile, still every Gemma 2 feature.
  config = models.get_config("tiny", num_layers=1, embed_dim=64,
                             hidden_dim=128, num_heads=2, head_dim=32,
                             query_pre_attn_scalar=32,
                             attention_types=("local",))
  return tokenizer, task, examples, records, gold, config


def _builder(setup, policy, **kw):
  tokenizer, _, _, _, _, config = setup
  kw.setdefault("group_size", 4)
  return batches.ReflectionBatchBuilder(
      config, tokenizer, task_kwargs={"countdown": CD_KW}, seq_len=160,
      max_new_tokens=32, sampler=policy, **kw)


def test_reflection_episode_prompts_as_specified(setup):
  tokenizer, task, examples, records, gold, _ = setup
  policy = ReflectPolicy(tokenizer, gold)
  builder = _builder(setup, policy, temperature=1.0, retry_temperature=0.0)
  eps = builder.episodes(params="p0", records=records, seed=0)
  assert policy.params == ["p0"]
  assert policy.temperatures == [1.0, 0.0]  # reflections, then retries
  assert len(eps) == 8 and [e.group_index for e in eps] == [0] * 4 + [1] * 4
  reflect_call, retry_call = policy.prompts
  for ep, ex in zip(eps[::4], examples):
    # Chat: task prompt, the stored failed attempt, R3's instruction, then
    # the reflection, the retry instruction and the retry.
    assert ep.turns[:3] == [("user", task.prompt(ex)), ("model", FIRST),
                            ("user", prompts.COUNTDOWN_REFLECTION_INSTRUCTION)]
    assert ep.turns[4] == ("user", prompts.RETRY_INSTRUCTION)
    assert ep.reflection.context_ids == tokenizer.encode_chat(ep.turns[:3])
    assert ep.retry.context_ids == tokenizer.encode_chat(ep.turns[:5])
    assert tokenizer.decode(ep.reflection.context_ids) in reflect_call
    assert tokenizer.decode(ep.retry.context_ids) in retry_call
  # Reward: the retry after the reflection that states the gold succeeds.
  assert [e.reward for e in eps] == [1.0, 0.0, 0.0, 1.0] * 2


def test_rows_mask_only_reflection_ids(setup):
  tokenizer, _, _, records, gold, _ = setup
  builder = _builder(setup, ReflectPolicy(tokenizer, gold))
  batch = builder(params="p", records=records, step=0)
  eps = builder.episodes(params="p", records=records, seed=0)
  assert batch["inputs"].shape == (8, 160)
  np.testing.assert_array_equal(batch["rewards"], [1, 0, 0, 1] * 2)
  np.testing.assert_allclose(batch["advantages"], [1, -1, -1, 1] * 2)
  np.testing.assert_array_equal(batch["group_ids"], [0] * 4 + [1] * 4)
  for i, ep in enumerate(eps):
    ctx, ref = ep.reflection.context_ids, ep.reflection.tokens
    mask = batch["action_mask"][i] > 0
    start = len(ctx) - 1
    assert mask.sum() == len(ref) and mask[start:start + len(ref)].all()
    np.testing.assert_array_equal(batch["targets"][i, mask], ref)
    np.testing.assert_array_equal(batch["inputs"][i, :len(ctx)], ctx)
    np.testing.assert_allclose(batch["old_logprobs"][i, mask],
                               ep.reflection.logprobs, rtol=1e-6)
    assert not batch["old_logprobs"][i, ~mask].any()
    # The retry's ids are not in the row at all.
    assert batch["segment_ids"][i].sum() == len(ctx) + len(ref) - 1
  np.testing.assert_array_equal(batch["loss_mask"], batch["action_mask"])


def test_rows_that_do_not_fit_carry_nothing(setup):
  tokenizer, _, _, records, gold, _ = setup
  builder = _builder(setup, ReflectPolicy(tokenizer, gold))
  eps = builder.episodes(params="p", records=records, seed=0)
  short = len(eps[0].reflection.context_ids) + 2
  rows = batches.reflection_rows(eps, seq_len=short)
  assert not rows["fits"].any() and not rows["action_mask"].any()


def test_grpo_gradient_is_exactly_zero_outside_reflection_ids(setup):
  """Changing every non-reflection target (prompt, failed attempt,
  instruction, padding) leaves the GRPO gradient bitwise unchanged."""
  tokenizer, _, _, records, gold, config = setup
  builder = _builder(setup, ReflectPolicy(tokenizer, gold))
  batch = builder(params="p", records=records, step=0)
  leaves, treedef = jax.tree.flatten(models.param_shapes(config))
  rng = np.random.default_rng(0)
  params = jax.tree.unflatten(treedef, [
      jnp.asarray(0.05 * rng.standard_normal(s.shape), s.dtype)
      for s in leaves])
  model = models.Transformer(config)
  batch["ref_logprobs"] = batch["old_logprobs"] + 0.05
  outside = batch["action_mask"] == 0
  other = dict(batch, targets=np.where(
      outside, (batch["targets"] + 5) % config.vocab_size, batch["targets"]),
               old_logprobs=np.where(outside, np.nan, batch["old_logprobs"]),
               ref_logprobs=np.where(outside, -np.inf,
                                     batch["ref_logprobs"]))
  grad = jax.jit(jax.grad(lambda p, b: get_objective("grpo").loss_fn(
      p, b, None, model, beta=0.04)[0]))
  g1, g2 = grad(params, batch), grad(params, other)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    assert np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)
  assert any(float(jnp.abs(a).max()) > 0 for a in jax.tree.leaves(g1))


def test_inner_updates_reuse_the_batch_and_resume_exactly(setup, tmp_path):
  tokenizer, _, _, records, gold, _ = setup
  policy = ReflectPolicy(tokenizer, gold)
  log_path = str(tmp_path / "rollouts.jsonl")
  builder = _builder(setup, policy, inner_updates=3,
                     cache_dir=str(tmp_path / "cache"), log_path=log_path)
  b0 = builder("params@0", records, 0)
  b1 = builder("params@1", records[::-1], 1)  # reused: same batch
  b2 = builder("params@2", records, 2)
  assert policy.params == ["params@0"]
  for k in b0:
    np.testing.assert_array_equal(b0[k], b1[k])
    np.testing.assert_array_equal(b0[k], b2[k])
  b3 = builder("params@3", records[::-1], 3)  # a new cycle samples
  assert policy.params == ["params@0", "params@3"]
  assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
      "rollout_00000003.npz"]
  # A fresh builder (a resumed run) at step 4 reloads step 3's batch.
  fresh = ReflectPolicy(tokenizer, gold)
  resumed = _builder(setup, fresh, inner_updates=3,
                     cache_dir=str(tmp_path / "cache"))
  b4 = resumed("params@4", records, 4)
  assert fresh.params == []
  for k in b3:
    np.testing.assert_array_equal(b3[k], b4[k])
  lines = [json.loads(x) for x in open(log_path)]
  assert [x["step"] for x in lines] == [0, 3]
  assert lines[0]["mean_reward"] == 0.5
  assert lines[0]["reward_by_task"] == {"countdown": 0.5}


def test_reference_and_recomputed_old_logprobs(setup):
  """With reference params, 'ref_logprobs' are the targets' log-probs of a
  training forward (masked to the reflection); 'recompute' puts the current
  policy's there as 'old_logprobs' (one fused jitted call)."""
  tokenizer, _, _, records, gold, config = setup
  params = models.init_params(config, jax.random.key(1))
  ref = jax.tree.map(lambda x: x * 0.9, params)
  builder = _builder(setup, ReflectPolicy(tokenizer, gold),
                     reference_params=ref, old_logprobs="recompute")
  batch = builder(params, records[:1], 0)
  from swirl_jax.objectives.common import target_logprobs
  model = models.Transformer(config)
  fn = jax.jit(lambda p, b: target_logprobs(model, p, b))
  keys = ("inputs", "targets", "positions", "segment_ids")
  want_ref = np.asarray(fn(ref, {k: batch[k] for k in keys}))
  want_old = np.asarray(fn(params, {k: batch[k] for k in keys}))
  mask = batch["action_mask"] > 0
  np.testing.assert_allclose(batch["ref_logprobs"][mask], want_ref[mask],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(batch["old_logprobs"][mask], want_old[mask],
                             rtol=1e-5, atol=1e-5)
  assert not batch["ref_logprobs"][~mask].any()
  # The failed query's context is carried once per group and the fused
  # forward above used it ('prefix_inputs'; same results as the plain one).
  prefix = batch["prefix_inputs"]
  assert prefix.shape[0] == 1 and prefix.shape[1] % 16 == 0
  assert prefix.shape[1] > 0
  np.testing.assert_array_equal(prefix, batch["inputs"][::4, :prefix.shape[1]])
  plain = _builder(setup, ReflectPolicy(tokenizer, gold),
                   reference_params=ref, shared_prefix_bucket=0)
  assert "prefix_inputs" not in plain(params, records[:1], 0)


def test_bad_arguments(setup):
  tokenizer, _, _, _, gold, _ = setup
  policy = ReflectPolicy(tokenizer, gold)
  with pytest.raises(ValueError, match="group_size must be >= 2"):
    _builder(setup, policy, group_size=1)
  with pytest.raises(ValueError, match="old_logprobs must be one of"):
    _builder(setup, policy, old_logprobs="ref")
  with pytest.raises(ValueError, match="old_logprobs must be 'sampler'"):
    _builder(setup, policy, old_logprobs=None)
  with pytest.raises(ValueError, match="inner_updates"):
    _builder(setup, policy, inner_updates=0)
  with pytest.raises(ValueError, match="shared_prefix_bucket must be >= 0"):
    _builder(setup, policy, shared_prefix_bucket=-1)


def test_groups_with_a_learning_signal_are_kept_first(setup):
  # (The selection itself: test_rollout_batches.py.) A pool of 2 records,
  # batches of 1 group (G=4, both with signal here): the batch holds the
  # first.
  tokenizer, _, _, records, gold, _ = setup
  pooled = _builder(setup, ReflectPolicy(tokenizer, gold), groups_per_step=1)
  batch = pooled("p", records, 0)
  assert batch["inputs"].shape[0] == 4
  np.testing.assert_array_equal(batch["group_ids"], [0] * 4)
  assert pooled.last_stats["pool"] == 2 and pooled.last_stats["queries"] == 1
  assert pooled.last_stats["batch_groups_with_signal"] == 1.0
  with pytest.raises(ValueError, match="groups_per_step=3"):
    _builder(setup, ReflectPolicy(tokenizer, gold),
             groups_per_step=3)("p", records, 0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=0.9), "temperature=0.9"),
    (dict(temperature=0.0), "temperature=0.0"),
    (dict(top_p=0.95), "top_p=0.95"),
])
def test_off_policy_reflection_sampling_is_refused(setup, kwargs, message):
  # GRPO takes the reflections as samples of pi, with the sampler's
  # temperature-1 log-probs as old_logprobs.
  tokenizer, _, _, _, gold, _ = setup
  with pytest.raises(ValueError, match=message):
    _builder(setup, ReflectPolicy(tokenizer, gold), **kwargs)
  # The retries carry no gradient: their temperature is free.
  _builder(setup, ReflectPolicy(tokenizer, gold), retry_temperature=0.7)


def test_rows_are_padded_to_the_batch_length_bucket(setup):
  tokenizer, _, _, records, gold, config = setup
  builder = batches.ReflectionBatchBuilder(
      config, tokenizer, task_kwargs={"countdown": CD_KW}, seq_len=512,
      max_new_tokens=32, sampler=ReflectPolicy(tokenizer, gold),
      group_size=4)
  eps = builder.episodes("p", records, 0)
  longest = max(len(e.reflection.context_ids) + len(e.reflection.tokens)
                for e in eps) - 1
  rows = [batches.reflection_row(e) for e in eps]
  length = builder.row_length(rows)
  assert length % 64 == 0 and longest <= length < longest + 64
  assert builder("p", records, 0)["inputs"].shape == (8, length)
  builder.length_bucket = None
  assert builder.row_length(rows) == 512
