"""SCoRe batches: episode rows and spans, adaptive beta2, and the batch
builder on the random tiny model (prompts exactly as specified)."""

import numpy as np
import pytest

from swirl_jax import tokenizer as tokenizer_lib
from swirl_jax.rollout import trajectory as traj
from swirl_jax.rollout.batches import Span, rows_to_batch
from swirl_jax.score import batches
from swirl_jax.score import episodes as episodes_lib
from swirl_jax.tasks import small as small_tasks  # noqa: F401
from swirl_jax.tasks import get_task
from swirl_jax.tasks import prompts
from swirl_jax.tasks.base import Example, Verdict

EOT = 9


def _episode(ctx1, y1, ctx2, y2, r1=0.0, r2=1.0):
  return traj.TwoAttemptEpisode(
      task="t", example_id="e", question="q", gold="1", sample_index=0,
      prompt="x", instruction="p",
      y1=traj.ModelTurn("a", y1, [-0.5] * len(y1), ctx1),
      y2=traj.ModelTurn("b", y2, [-0.25] * len(y2), ctx2),
      answer1=None, answer2=None, verdict1=Verdict(bool(r1), "x"),
      verdict2=Verdict(bool(r2), "x"))


def test_episode_row_spans_and_batch_masks():
  # x = [2, 5, 6], y1 sampled = [7, EOT]; instruction [8, 4]; y2 = [3, EOT]
  ep = _episode([2, 5, 6], [7, EOT], [2, 5, 6, 7, EOT, 8, 4], [3, EOT])
  row = batches.episode_row(ep, EOT)
  assert row.tokens == [2, 5, 6, 7, EOT, 8, 4, 3, EOT]
  assert row.spans == [Span("attempt1_mask", 3, 5, [-0.5, -0.5]),
                       Span("attempt2_mask", 7, 9, [-0.25, -0.25])]
  batch = rows_to_batch([row], 10, batches.MASKS)
  # the target at index p - 1 is token p
  np.testing.assert_array_equal(batch["targets"][0, :8],
                                [5, 6, 7, EOT, 8, 4, 3, EOT])
  np.testing.assert_array_equal(np.nonzero(batch["attempt1_mask"][0])[0],
                                [2, 3])
  np.testing.assert_array_equal(np.nonzero(batch["attempt2_mask"][0])[0],
                                [6, 7])
  np.testing.assert_array_equal(batch["loss_mask"][0],
                                batch["attempt1_mask"][0] +
                                batch["attempt2_mask"][0])
  np.testing.assert_array_equal(batch["segment_ids"][0],
                                [1] * 8 + [0, 0])
  logp = batch["sampler_logprobs"]
  np.testing.assert_allclose(logp[0, 2:4], -0.5)
  np.testing.assert_allclose(logp[0, 6:8], -0.25)
  # the base model's y1 carries no loss
  row = batches.episode_row(ep, EOT, train_first=False)
  assert row.spans == [Span("attempt2_mask", 7, 9, [-0.25, -0.25])]
  # truncation clips the spans
  batch = rows_to_batch([batches.episode_row(ep, EOT)], 7, batches.MASKS)
  assert batch["attempt2_mask"][0].sum() == 1.0


def test_episode_row_reencoded_first_attempt():
  # the context re-encodes y1 [7, EOT] as [70, EOT] with the role newline
  # (last id of ctx1, 6) merged into its first piece: spanned, no log-probs
  ep = _episode([2, 5, 6], [7, EOT], [2, 5, 70, EOT, 8, 4], [3, EOT])
  row = batches.episode_row(ep, EOT)
  assert row.spans[0] == Span("attempt1_mask", 2, 4, None)
  bad = _episode([2, 5, 6], [7, EOT], [2, 1, 1, 7, EOT, 8], [3, EOT])
  with pytest.raises(ValueError, match="departs"):
    batches.episode_row(bad, EOT)


def test_adaptive_beta2():
  assert batches.adaptive_beta2(0.02, 0.1, 0.02) == pytest.approx(0.1)
  assert batches.adaptive_beta2(0.04, 0.1, 0.02) == pytest.approx(0.2)
  assert batches.adaptive_beta2(0.0, 0.1, 0.02) == pytest.approx(0.01)
  assert batches.adaptive_beta2(5.0, 0.25, 0.02, 4.0) == pytest.approx(1.0)
  assert batches.AdaptiveBeta2(0.1, 0.01)(0.005) == pytest.approx(0.05)
  with pytest.raises(ValueError, match="target_kl"):
    batches.adaptive_beta2(0.1, 0.1, 0.0)
  assert batches.k3(np.log([0.5]), np.log([0.5]))[0] == pytest.approx(0.0)


@pytest.fixture(scope="module")
def builder_parts(tiny_policy):
  config, params, tokenizer = tiny_policy
  task = get_task("math_small")
  examples = task.generate(3, seed=0, split="train")
  records = [{"task": "math_small", "example": e.to_dict()} for e in examples]
  from swirl_jax.sampling import Sampler  # pylint: disable=g-import-not-at-top
  sampler = Sampler(config, params, pad_id=tokenizer.pad_id,
                    stop_tokens=tokenizer_lib.stop_ids(tokenizer),
                    prompt_bucket=64, batch_bucket=8)
  return config, params, tokenizer, task, records, sampler


def test_builder_rows_prompts_and_rewards(builder_parts):
  config, params, tokenizer, task, records, sampler = builder_parts
  builder = batches.TwoAttemptBatchBuilder(
      config, tokenizer, {"math_small": task}, ref_params=params,
      group_size=2, base_first_attempts=1, max_new_tokens=6, seq_len=640,
      adaptive=batches.AdaptiveBeta2(0.1, 0.02), sampler=sampler)
  batch = builder(params, records, step=3)
  n = 3 * (2 + 1)
  # L: the longest episode rounded up to the 64-token bucket (<= seq_len).
  length = batch["inputs"].shape[1]
  longest = int(batch["segment_ids"].sum(axis=1).max())
  assert length % 64 == 0 and longest <= length < longest + 64
  for key in ("inputs", "targets", "positions", "segment_ids",
              "attempt1_mask", "attempt2_mask", "loss_mask", "ref_logprobs"):
    assert batch[key].shape == (n, length), key
  for key in ("reward1", "reward2", "group_ids", "beta2"):
    assert batch[key].shape == (n,), key
  assert not np.any((batch["attempt1_mask"] > 0) &
                    (batch["attempt2_mask"] > 0))
  # rows per record: 2 on-policy (group 2r), 1 with the base's y1 (2r + 1)
  np.testing.assert_array_equal(batch["group_ids"],
                                [0, 0, 1, 2, 2, 3, 4, 4, 5])
  base_rows = batch["group_ids"] % 2 == 1
  assert np.all(batch["attempt1_mask"][base_rows] == 0)
  assert np.all(batch["attempt2_mask"].sum(axis=1) > 0)
  assert np.all(batch["attempt1_mask"][~base_rows].sum(axis=1) > 0)
  eps = builder.last_episodes
  np.testing.assert_array_equal(batch["reward1"],
                                [e.reward1 for e in eps[:2]] + [eps[6].reward1]
                                + [e.reward1 for e in eps[2:4]]
                                + [eps[7].reward1]
                                + [e.reward1 for e in eps[4:6]]
                                + [eps[8].reward1])
  assert "kl1" in builder.last_stats and batch["beta2"][0] > 0
  # The episode's chat, exactly as specified: [user: SCoRe's MATH prompt,
  # model: y1, user: the MATH correction instruction, model: y2].
  ex = records[0]["example"]
  ep = eps[0]
  assert ep.prompt == prompts.math_prompt(ex["question"])
  assert ep.prompt.startswith("Solve the following math problem step by "
                              "step.")
  assert ep.instruction == prompts.MATH_CORRECTION_INSTRUCTION
  assert ep.instruction.startswith(
      "There might be an error in the solution above because of lack of "
      "understanding of the question. Please correct the error, if any, and "
      "rewrite the solution. Only output the final solution!")
  assert ep.turns == [("user", ep.prompt), ("model", ep.y1.text),
                      ("user", ep.instruction), ("model", ep.y2.text)]
  assert ep.y2.context_ids == tokenizer.encode_chat(ep.turns[:3])
  m = int(batch["segment_ids"][0].sum())
  row = list(batch["inputs"][0, :m]) + [int(batch["targets"][0, m - 1])]
  assert row == ep.y2.context_ids + ep.y2.tokens
  assert tokenizer.decode(row[1:len(ep.y2.context_ids)]) == (
      tokenizer_lib.format_chat(ep.turns[:3]))
  # same step, same episodes (resumable); another step, other samples
  again = builder(params, records, step=3)
  np.testing.assert_array_equal(again["inputs"], batch["inputs"])
  builder.close()


def test_builder_computes_each_records_prompt_once(builder_parts):
  # The rows of a record share its prompt: the batch carries it once
  # ('prefix_inputs') and the reference log-probs equal the plain forward's.
  config, params, tokenizer, task, records, sampler = builder_parts

  def build(bucket):
    builder = batches.TwoAttemptBatchBuilder(
        config, tokenizer, {"math_small": task}, ref_params=params,
        group_size=2, max_new_tokens=6, seq_len=640, sampler=sampler,
        shared_prefix_bucket=bucket)
    try:
      return builder(params, records, step=1)
    finally:
      builder.close()

  shared, plain = build(16), build(0)
  assert "prefix_inputs" not in plain
  p = shared["prefix_inputs"].shape[1]
  assert shared["prefix_inputs"].shape[0] == len(records)
  assert p > 0 and p % 16 == 0
  np.testing.assert_array_equal(shared["inputs"], plain["inputs"])
  np.testing.assert_array_equal(shared["prefix_inputs"],
                                plain["inputs"][::2, :p])
  mask = plain["loss_mask"] > 0
  np.testing.assert_allclose(shared["ref_logprobs"][mask],
                             plain["ref_logprobs"][mask], atol=2e-5)


def test_builder_single_turn_rows(builder_parts):
  config, params, tokenizer, task, records, sampler = builder_parts
  builder = batches.TwoAttemptBatchBuilder(
      config, tokenizer, {"math_small": task}, group_size=2,
      single_turn=True, max_new_tokens=6, seq_len=640, sampler=sampler)
  batch = builder(params, records[:2], step=0)
  assert batch["inputs"].shape[0] == 4 and batch["inputs"].shape[1] % 64 == 0
  assert np.all(batch["attempt2_mask"] == 0)
  assert np.all(batch["attempt1_mask"].sum(axis=1) > 0)
  assert np.all(batch["reward2"] == 0) and "ref_logprobs" not in batch
  with pytest.raises(ValueError, match="need"):
    batches.TwoAttemptBatchBuilder(config, tokenizer, {"math_small": task},
                                   base_first_attempts=1)
  with pytest.raises(KeyError, match="names task 'nope'"):
    builder(params, [{"task": "nope", "example": {}}], step=0)


@pytest.mark.parametrize("temperature", [0.7, 0.0, 1.5])
def test_off_policy_temperature_is_refused(builder_parts, temperature):
  # The SCoRe loss takes the episodes as samples of pi itself.
  config, params, tokenizer, task, _, sampler = builder_parts
  with pytest.raises(ValueError, match=f"temperature={temperature}"):
    batches.TwoAttemptBatchBuilder(config, tokenizer, {"math_small": task},
                                   ref_params=params, temperature=temperature,
                                   sampler=sampler)


def test_self_refine_chat(builder_parts):
  _, params, tokenizer, task, records, sampler = builder_parts
  from swirl_jax.rollout import RolloutEngine  # pylint: disable=g-import-not-at-top
  sampler.update_params(params)
  engine = RolloutEngine(sampler, tokenizer, max_new_tokens=6,
                         temperature=0.0, max_context_tokens=641,
                         progress=False)
  examples = [Example.from_dict(r["example"]) for r in records[:2]]
  eps = episodes_lib.self_refine_episodes(engine, task, examples, seed=1)
  assert len(eps) == 2
  ctx = tokenizer.decode(eps[0].y2.context_ids[1:])
  assert episodes_lib.SELF_REFINE_FEEDBACK_INSTRUCTION in ctx
  assert ctx.endswith(tokenizer_lib.format_turn(
      "user", prompts.MATH_CORRECTION_INSTRUCTION) + "<start_of_turn>model\n")
  engine.close()


def test_adaptive_beta2_takes_the_stage1_loss_beta2_when_unset():
  import gin  # pylint: disable=g-import-not-at-top
  from swirl_jax.score import experiment  # pylint: disable=g-import-not-at-top
  unset = batches.AdaptiveBeta2(target_kl=0.01)
  with pytest.raises(ValueError, match="beta2 is None"):
    unset(0.01)
  gin.clear_config()
  try:
    assert experiment.stage1_loss_beta2() == pytest.approx(0.1)  # default
    gin.parse_config(
        "stage1/swirl_jax.objectives.score.score_stage1_loss.beta2 = 0.25")
    filled = unset.with_beta2(experiment.stage1_loss_beta2())
    assert filled.beta2 == pytest.approx(0.25)
    assert filled(0.01) == pytest.approx(0.25)
    # An explicit nominal value is kept.
    assert batches.AdaptiveBeta2(0.3).with_beta2(0.25).beta2 == 0.3
  finally:
    gin.clear_config()
