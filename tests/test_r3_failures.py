"""The R3 failure dataset on a scripted policy whose answers are known:
which queries are kept, with which attempt, after how many samples; the
TFDS shards written and read back; the grain dataset of record batches."""

import json
import types

import pytest

from swirl_jax.data import failures as failure_records
from swirl_jax.r3 import failures
from swirl_jax.tasks import compact

CD_KW = dict(prompt_style="compact", min_numbers=3, max_numbers=3,
             min_value=1, max_value=10, min_target=1, max_target=50)


class KnownPolicy:
  """A fake sampler: per example (found by its prompt), a list of answers
  handed out in order, one per sampled row (the last one repeats)."""

  def __init__(self, tokenizer, answers_by_prompt):
    self.tok = tokenizer
    self.answers = answers_by_prompt
    self.count = {}
    self.calls = []

  def update_params(self, params):
    del params

  def generate(self, prompts_, max_new_tokens, temperature=0.0, top_k=None,
               top_p=None, stop_tokens=None, seed=0, group_size=1):
    del max_new_tokens, temperature, top_k, top_p, seed, group_size
    self.calls.append(len(prompts_))
    eot = self.tok.end_of_turn_id
    assert eot in stop_tokens
    tokens = []
    for ids in prompts_:
      text = self.tok.decode(ids)
      key = next(k for k in self.answers if k in text)
      n = self.count.get(key, 0)
      self.count[key] = n + 1
      script = self.answers[key]
      tokens.append(self.tok.encode(script[min(n, len(script) - 1)]) + [eot])
    return types.SimpleNamespace(
        tokens=tokens, logprobs=[[-0.25] * len(t) for t in tokens],
        done=[True] * len(tokens))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  from swirl_jax.data import reflection_demonstrations as demonstrations
  from swirl_jax.tokenizer import Tokenizer, train_sentencepiece
  texts = demonstrations.tokenizer_corpus(
      task_kwargs={"countdown": CD_KW,
                   "function_calling": {"prompt_style": "compact"}},
      num_per_task=20)
  path = tmp_path_factory.mktemp("r3_failures") / "spm.model"
  return Tokenizer(train_sentencepiece(texts, str(path), vocab_size=1024))


@pytest.fixture(scope="module")
def setup(tokenizer):
  task = compact.make_task("countdown", **CD_KW)
  examples = compact.generate_examples(task, 4, seed=5)
  good = [f"<answer> {ex.answer} </answer>" for ex in examples]
  bad = "<answer> 1 + </answer>"  # invalid equation
  # ex0 always right; ex1 wrong at once; ex2 right twice then wrong; ex3
  # right 4 times, then wrong (past the budget of 4 samples).
  scripts = [[good[0]], [bad], [good[2], good[2], bad], [good[3]] * 4 + [bad]]
  answers = {task.prompt(ex): s for ex, s in zip(examples, scripts)}
  return tokenizer, task, examples, answers


def test_find_failures_keeps_failed_queries_with_their_attempt(setup):
  tokenizer, task, examples, answers = setup
  policy = KnownPolicy(tokenizer, answers)
  records, stats = failures.find_failures(
      policy, tokenizer, task, examples, max_samples=4, samples_per_round=2,
      max_new_tokens=32, seed=0)
  assert [r["example_id"] for r in records] == [examples[1].id,
                                                examples[2].id]
  r1, r2 = records
  assert (r1["sample_index"], r1["num_samples"], r1["num_correct"]) == (0, 1,
                                                                         0)
  assert (r2["sample_index"], r2["num_samples"], r2["num_correct"]) == (2, 3,
                                                                         2)
  for r in records:
    failure_records.check_record(r)
    assert r["attempt"] == "<answer> 1 + </answer>"
    assert r["category"] == "invalid_equation"
    assert r["prompt"] == task.prompt(failure_records.example_of(r))
    assert r["attempt_tokens"][-1] == tokenizer.end_of_turn_id
    assert r["attempt_logprobs"] == [-0.25] * len(r["attempt_tokens"])
    assert failures.attempt_of(r).text == r["attempt"]
  # Round 1: 4 queries x 2; round 2: ex0, ex2, ex3 still active x 2.
  assert policy.calls == [8, 6]
  assert stats["queries"] == 4 and stats["failed_queries"] == 2
  assert stats["samples"] == 4 + 1 + 3 + 4
  assert stats["correct_samples"] == 4 + 0 + 2 + 4
  assert stats["first_sample_accuracy"] == 0.75
  assert stats["categories"] == {"invalid_equation": 2}


def test_failure_dataset_round_trip_and_batches(setup, tmp_path):
  tokenizer, task, examples, answers = setup
  fc = compact.make_task("function_calling", prompt_style="compact")
  fc_examples = fc.generate(3, seed=1)
  answers = dict(answers)
  broken = '<tool_call>[{"name": </tool_call>'
  answers.update({fc.prompt(ex): [broken] for ex in fc_examples})
  policy = KnownPolicy(tokenizer, answers)
  cd_records, _ = failures.find_failures(policy, tokenizer, task, examples,
                                         max_samples=4, samples_per_round=4)
  fc_records, _ = failures.find_failures(policy, tokenizer, fc, fc_examples,
                                         max_samples=1)
  assert [r["category"] for r in fc_records] == ["format_error"] * 3
  records = cd_records + fc_records
  path = failure_records.prepare_failure_dataset(records,
                                                 str(tmp_path / "data"))
  assert path.endswith("r3_failures/1.0.0")
  source = failure_records.open_failures(str(tmp_path / "data"))
  assert len(source) == 5
  for want, got in zip(records, source):
    assert got["attempt_tokens"] == want["attempt_tokens"]
    assert got["attempt_logprobs"] == pytest.approx(want["attempt_logprobs"])
    assert {k: got[k] for k in ("example", "category", "num_samples")} == {
        k: want[k] for k in ("example", "category", "num_samples")}
  with pytest.raises(FileExistsError):
    failure_records.prepare_failure_dataset(records, str(tmp_path / "data"))

  # One task per element, tasks taking turns; repeat_each repeats elements.
  ds = failure_records.failures_dataset_fn(str(tmp_path / "data"),
                                    global_batch_size=2, repeat_each=2)(
                                        workdir="", process_index=0,
                                        process_count=1, seed=0)
  it = iter(ds)
  batches = [next(it) for _ in range(8)]
  assert all(len(b) == 2 for b in batches)
  tasks = [{r["task"] for r in b} for b in batches]
  assert all(len(t) == 1 for t in tasks)
  assert [t.pop() for t in tasks] == ["countdown"] * 2 + [
      "function_calling"] * 2 + ["countdown"] * 2 + ["function_calling"] * 2
  assert batches[0] == batches[1] and batches[2] == batches[3]
  state = it.get_state()
  nxt = next(it)
  it2 = iter(ds)
  it2.set_state(json.loads(json.dumps(state)))
  assert next(it2) == nxt


def test_missing_dataset_is_named(tmp_path):
  with pytest.raises(failure_records.FailureDataError,
                     match="No prepared dataset"):
    failure_records.open_failures(str(tmp_path))
  with pytest.raises(ValueError, match="lacks fields"):
    failure_records.check_record({"task": "countdown"})
