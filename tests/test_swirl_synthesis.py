"""SWiRL stage 1 end to end on the tiny model: rollouts -> judge -> filter ->
TFDS shards -> stage-2 states through grain."""

import json
import os

import pytest

from swirl_jax.data import rl_records
from swirl_jax.data import trajectories as traj_data
from swirl_jax.swirl import synthesis


@pytest.fixture
def setup(tiny_policy):
  return tiny_policy


def test_synthesize_writes_dataset_statistics_and_resumes(setup, tmp_path):
  config, params, tokenizer = setup
  kwargs = dict(task_names=("gsm8k", "hotpotqa"), num_questions=2,
                samples_per_question=2, filter_strategy="none",
                prompt_style="compact", max_new_tokens=16,
                max_context_tokens=512, max_steps=2)
  stats = synthesis.synthesize(str(tmp_path), config, params, tokenizer,
                               **kwargs)
  assert stats["num_trajectories"] == 8
  assert set(stats["kept_per_filter"]) == {
      "none", "process", "outcome", "process_and_outcome"}
  assert stats["kept_per_filter"]["none"]["trajectories"] == 8
  assert stats["kept"]["trajectories"] == 8
  on_disk = json.load(open(tmp_path / "filter_statistics.json"))
  assert on_disk["kept_per_filter"] == stats["kept_per_filter"]
  trajs = [json.loads(l) for l in open(tmp_path / "trajectories.jsonl")]
  assert len(trajs) == 8
  num_steps = sum(len(t["steps"]) for t in trajs)

  ds = rl_records.records_dataset(
      traj_data.open_data_source(str(tmp_path / "data")),
      global_batch_size=4, seed=0)
  it = iter(ds)
  batch = next(it)
  assert isinstance(batch, list) and len(batch) == 4
  assert {r["task"] for r in batch} <= {"gsm8k", "hotpotqa"}
  state = it.get_state()
  following = next(it)
  it2 = iter(ds)
  it2.set_state(state)
  assert next(it2) == following
  from swirl_jax.data.trajectories import open_data_source
  assert len(open_data_source(str(tmp_path / "data"))) == num_steps

  # A rerun finds the stage-1 output and does not redo the rollouts.
  mtime = os.path.getmtime(tmp_path / "trajectories.jsonl")
  again = synthesis.synthesize(str(tmp_path), config, params, tokenizer,
                               **kwargs)
  assert again["kept_per_filter"] == stats["kept_per_filter"]
  assert os.path.getmtime(tmp_path / "trajectories.jsonl") == mtime


def test_filter_keeping_nothing_is_a_clear_error(setup, tmp_path):
  config, params, tokenizer = setup
  with pytest.raises(ValueError, match="kept no trajectory"):
    synthesis.synthesize(str(tmp_path), config, params, tokenizer,
                         task_names=("gsm8k",), num_questions=1,
                         samples_per_question=2, filter_strategy="outcome",
                         prompt_style="compact", max_new_tokens=8,
                         max_steps=1)
  with pytest.raises(ValueError, match="procss"):
    synthesis.synthesize(str(tmp_path), config, params, tokenizer,
                         filter_strategy="procss")


def test_stage1_run_rebuilds_and_feeds_sft_on_filtered_steps(setup, tmp_path):
  """`build_from_run` (the command line's work) rebuilds stage 1's dataset
  from its trajectories.jsonl, and the SFT baseline reads the stored steps
  with the action as its only supervised tokens."""
  from swirl_jax.data import trajectories as traj_data  # pylint: disable=g-import-not-at-top
  config, params, tokenizer = setup
  run = tmp_path / "run"
  synthesis.synthesize(str(run), config, params, tokenizer,
                       task_names=("gsm8k",), num_questions=2,
                       samples_per_question=2, filter_strategy="none",
                       prompt_style="compact", max_new_tokens=12,
                       max_context_tokens=256, max_steps=2)
  stored = traj_data.load_records(run / "data")
  out = traj_data.build_from_run(run / "trajectories.jsonl",
                                 tmp_path / "rebuilt", judge="rules",
                                 filter_strategy="none")
  assert traj_data.load_records(tmp_path / "rebuilt") == stored
  assert out["num_records"] == len(stored)
  # Stage 1's own labels.jsonl if it wrote one, else the same rules judge.
  assert out["labels_from"] in (str(run / "labels.jsonl"), "judge:rules")
  ds = traj_data.filtered_steps_sft_dataset(
      str(tmp_path / "sft"), 0, 1, 0, data_dir=str(run / "data"),
      seq_len=320, global_batch_size=2, pack=False,
      tokenizer_path=tokenizer.path, num_threads=1)
  batch = next(iter(ds))
  actions = {r["action"] + "<end_of_turn>" for r in stored}
  for row in range(2):
    supervised = batch["targets"][row][batch["loss_mask"][row] == 1]
    assert tokenizer.decode(supervised) in actions


def test_real_data_keeps_train_and_test_questions_apart(tmp_path):
  from swirl_jax.tasks import get_task  # pylint: disable=g-import-not-at-top
  task = get_task("gsm8k")
  files = {}
  for split, n in (("train", 3), ("test", 2)):
    files[split] = tmp_path / f"{split}.jsonl"
    files[split].write_text("".join(
        f'{{"question": "Q{split}{i}: {i} + 2?", '
        f'"answer": "<<{i}+2={i + 2}>>{i + 2}\\n#### {i + 2}"}}\n'
        for i in range(n)))
  paths = {"train": str(files["train"]), "test": str(files["test"])}
  train = synthesis.task_examples(task, None, seed=0, split="train",
                                  data_path=paths)
  test = synthesis.task_examples(task, None, seed=0, split="test",
                                 data_path=paths)
  assert [e.question for e in train] == [f"Qtrain{i}: {i} + 2?"
                                         for i in range(3)]
  assert len(test) == 2 and all("Qtest" in e.question for e in test)
  # One file serves the evaluation only; training on it is refused by name.
  assert len(synthesis.task_examples(task, None, seed=0, split="test",
                                     data_path=paths["test"])) == 2
  with pytest.raises(ValueError, match=r"test\.jsonl.*is one file"):
    synthesis.task_examples(task, None, seed=0, split="train",
                            data_path=paths["test"])
  with pytest.raises(ValueError, match="no 'train' entry"):
    synthesis.task_examples(task, None, seed=0, split="train",
                            data_path={"test": paths["test"]})
