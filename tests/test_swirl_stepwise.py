"""SWiRL stage 2: batches of sampled, judged actions, trained online."""

import json

import numpy as np
import pytest

from swirl_jax.data import demonstrations
from swirl_jax.judges import get_judge
from swirl_jax.swirl.filters import RECORD_FIELDS, check_record
from swirl_jax.swirl.stepwise import StepwiseBatchBuilder


def _records(n=4):
  """Sub-trajectory records built from scripted gsm8k episodes."""
  demos = demonstrations.tool_use_demonstrations(
      tasks=("gsm8k",), num_per_task=n, prompt_style="compact")
  out = []
  for d in demos:
    turns = d["turns"]
    rec = {k: ("" if t is str else t(0)) for k, t in RECORD_FIELDS.items()}
    rec.update(trajectory_id=f"gsm8k/{d['id']}/0", task="gsm8k",
               example_id=d["id"], step_index=1,
               num_steps=(len(turns) - 1) // 2,
               context=json.dumps(turns[:3]), action=turns[3][1],
               kind="tool", label="GOOD", reward=1.0, judge_parsed=True,
               outcome=True, question=turns[0][1], gold="0")
    check_record(rec)
    out.append(rec)
  return out


@pytest.fixture
def setup(tiny_policy):
  return tiny_policy


def test_batch_rows_mask_exactly_the_sampled_actions(setup):
  config, params, tokenizer = setup
  builder = StepwiseBatchBuilder(config, tokenizer, get_judge("rules"),
                                 group_size=3, max_new_tokens=12,
                                 seq_len=256, shared_prefix_bucket=0)
  records = _records(4)
  batch = builder(params, records, step=0)  # the plain layout
  longest = int(batch["segment_ids"].sum(axis=1).max())
  # Rows are as long as the longest, rounded up to the 128-token bucket.
  assert batch["inputs"].shape == (12, 128 if longest <= 128 else 256)
  np.testing.assert_array_equal(batch["group_ids"],
                                np.repeat(np.arange(4), 3))
  assert set(np.unique(batch["rewards"])) <= {0.0, 1.0}
  # Row 0: the context is the chat encoding of the record's state; the
  # targets under the mask are the sampled action tokens.
  ctx = tokenizer.encode_chat([tuple(t) for t in
                               json.loads(records[0]["context"])])
  row_mask = batch["action_mask"][0] > 0
  first = int(np.argmax(row_mask))
  assert first == len(ctx) - 1
  np.testing.assert_array_equal(batch["inputs"][0, :len(ctx)], ctx)
  n_action = int(row_mask.sum())
  assert 1 <= n_action <= 12
  assert row_mask[first:first + n_action].all()  # one contiguous span
  real = int(batch["segment_ids"][0].sum())
  assert real == first + n_action  # the row ends with the action
  np.testing.assert_array_equal(batch["targets"][0, :real - 1],
                                batch["inputs"][0, 1:real])
  # Same step, same actions (exact resume); another step, other actions.
  again = builder(params, records, step=0)
  np.testing.assert_array_equal(again["inputs"], batch["inputs"])
  other = builder(params, records, step=1)
  assert not np.array_equal(other["inputs"], batch["inputs"])


def test_judge_rewards_a_good_action_in_the_record_context():
  record = _records(1)[0]
  # The judge sees the decoded action in the record's context.
  from swirl_jax.swirl.filters import judge_request_for_record
  good = get_judge("rules").judge_steps(
      [judge_request_for_record(record, record["action"])])[0]
  bad = get_judge("rules").judge_steps(
      [judge_request_for_record(record, "<math_exp> 123456 * 789 </math_exp>")]
  )[0]
  assert good.reward == 1.0 and bad.reward == 0.0


def test_online_stepwise_pg_training_steps(setup, tmp_path):
  """train() with batch_fn: sample, judge and update, twice."""
  config, params, tokenizer = setup
  from swirl_jax.training.trainer import train
  records = _records(4)
  builder = StepwiseBatchBuilder(config, tokenizer, get_judge("rules"),
                                 group_size=2, max_new_tokens=8, seq_len=192)

  class States:
    def __init__(self):
      self.i = 0
    def __iter__(self):
      return self
    def __next__(self):
      self.i += 1
      return records[:2] if self.i % 2 else records[2:]
    def get_state(self):
      return {"i": self.i}
    def set_state(self, s):
      self.i = s["i"]

  result = train(str(tmp_path), model_config=config,
                 dataset_fn=lambda **kw: States(), objective="stepwise_pg",
                 train_steps=2, checkpoint_every=2, log_every=1,
                 batch_fn=builder, async_checkpoints=False)
  assert result.last_step == 2
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [1, 2]
  assert all(np.isfinite(r["loss"]) for r in rows)
  assert "kl" in rows[0] and "mean_reward" in rows[0]


def test_row_length_is_bucketed_and_capped(setup):
  config, _, tokenizer = setup
  builder = StepwiseBatchBuilder(config, tokenizer, get_judge("rules"),
                                 group_size=2, max_new_tokens=8, seq_len=320)
  short = builder.rows([[2, 5, 6]] * 2, [[7, 8]] * 2)
  assert short["inputs"].shape == (2, 128)
  long_ctx = list(range(2, 202))
  longer = builder.rows([long_ctx, [2, 5]], [[7] * 8, [7]])
  assert longer["inputs"].shape == (2, 256)
  np.testing.assert_array_equal(longer["inputs"][0, :200], long_ctx)
  capped = builder.rows([list(range(2, 400))] * 2, [[7]] * 2)
  assert capped["inputs"].shape == (2, 320)
  fixed = StepwiseBatchBuilder(config, tokenizer, get_judge("rules"),
                               group_size=2, max_new_tokens=8, seq_len=320,
                               length_bucket=None)
  assert fixed.rows([[2, 5, 6]] * 2, [[7, 8]] * 2)["inputs"].shape == (2, 320)


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=0.7), "temperature=0.7"),
    (dict(temperature=0.0), "temperature=0.0"),
    (dict(top_p=0.9), "top_p=0.9"),
])
def test_off_policy_sampling_is_refused(setup, kwargs, message):
  # The stepwise_pg loss takes the actions as samples of pi itself.
  config, _, tokenizer = setup
  with pytest.raises(ValueError, match=message):
    StepwiseBatchBuilder(config, tokenizer, get_judge("rules"), **kwargs)
  StepwiseBatchBuilder(config, tokenizer, get_judge("rules"),
                       temperature=1.0, top_p=1.0)  # no filter: accepted


def test_shared_context_is_computed_once_with_the_same_loss(setup):
  """Each state's G rows share its context: the rows are re-laid so that
  every state's context ends at one slot P, the batch carries the contexts
  once per group ('prefix_inputs'), and the loss is the plain forward's."""
  import jax  # pylint: disable=g-import-not-at-top
  from swirl_jax import models  # pylint: disable=g-import-not-at-top
  from swirl_jax.objectives import get_objective  # pylint: disable=g-import-not-at-top
  from swirl_jax.objectives import shared_prefix  # pylint: disable=g-import-not-at-top
  config, params, tokenizer = setup
  records = _records(3)
  kw = dict(group_size=4, max_new_tokens=12, seq_len=256)
  shared = StepwiseBatchBuilder(config, tokenizer, get_judge("rules"),
                                shared_prefix_bucket=16, **kw)
  plain = StepwiseBatchBuilder(config, tokenizer, get_judge("rules"),
                               shared_prefix_bucket=0, **kw)
  a = shared(params, records, step=0)
  b = plain(params, records, step=0)
  assert shared_prefix.PREFIX_KEY not in b
  prefix = a[shared_prefix.PREFIX_KEY]
  contexts = [len(tokenizer.encode_chat(
      [tuple(t) for t in json.loads(r["context"])])) for r in records]
  assert len(set(contexts)) > 1  # states of mixed lengths
  # The longest context's tokens but its last (which predicts the first
  # action token), rounded up to 16; each row's action in the 12 after.
  assert prefix.shape == (3, -(-(max(contexts) - 1) // 16) * 16)
  assert a["inputs"].shape == (12, prefix.shape[1] + 12)
  np.testing.assert_array_equal(prefix, a["inputs"][::4, :prefix.shape[1]])
  moved, real = a["segment_ids"] > 0, b["segment_ids"] > 0
  for k in b:  # the same samples, rows and rewards
    if b[k].ndim == 2:
      np.testing.assert_array_equal(a[k][moved], b[k][real])
    else:
      np.testing.assert_array_equal(a[k], b[k])
  model = models.Transformer(config)
  loss_fn = get_objective("stepwise_pg").loss_fn
  rng = jax.random.key(0)
  loss_a, _ = loss_fn(params, dict(a), rng, model, kl_coef=0.0)
  loss_b, _ = loss_fn(params, dict(b), rng, model, kl_coef=0.0)
  np.testing.assert_allclose(float(loss_a), float(loss_b), rtol=1e-4,
                             atol=1e-6)
  from swirl_jax.objectives.common import target_logprobs  # pylint: disable=g-import-not-at-top
  logp_a = np.asarray(target_logprobs(model, params, dict(a)))[
      a["action_mask"] > 0]
  logp_b = np.asarray(target_logprobs(model, params, dict(b)))[
      b["action_mask"] > 0]
  assert logp_b.size > 0 and np.all(logp_b < 0)
  np.testing.assert_allclose(logp_a, logp_b, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="shared_prefix_bucket must be >= 0"):
    StepwiseBatchBuilder(config, tokenizer, get_judge("rules"),
                         shared_prefix_bucket=-1)
