"""Tests for swirl_jax.data.trajectories: TFDS ArrayRecord round trips.

One dataset is prepared per module (with several shards) and copied for the
tests that corrupt it.
"""

import importlib.resources
import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from swirl_jax.data import trajectories as data
from swirl_jax.swirl import filters

tfds = pytest.importorskip("tensorflow_datasets")

NUM_RECORDS = 23
SHARDS = 3


def make_records(n=NUM_RECORDS, offset=0):
  out = []
  for i in range(offset, offset + n):
    context = [["user", f"Question {i}: what is 6*7? \u00e9\u4e2d"],
               ["model", "<math_exp> 6*7 </math_exp>"], ["user", "6*7 -> 42"]]
    out.append({
        "trajectory_id": f"gsm8k/ex{i // 3}/{i % 3}", "task": "gsm8k",
        "example_id": f"ex{i // 3}", "sample_index": i % 3,
        "step_index": i % 4, "num_steps": 4,
        "context": json.dumps(context, ensure_ascii=False),
        "action": f"<answer> {i} </answer>", "kind": "answer",
        "tool": "" if i % 2 else "math_exp",
        "tool_input": "" if i % 2 else "6*7",
        "tool_result": "" if i % 2 else "42",
        "label": "GOOD" if i % 3 else "BAD",
        "reward": 1.0 if i % 3 else 0.0, "judge_parsed": i % 5 != 0,
        "explanation": "because\nreasons" * (i % 3), "outcome": i % 2 == 0,
        "final_answer": str(i) if i % 4 else "", "finish_reason": "answer",
        "question": f"Question {i}", "gold": "42"})
  return out


RECORDS = make_records()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  path = data.prepare_dataset(RECORDS, data_dir, shards=SHARDS)
  return str(data_dir), path


def _copy(prepared, tmp_path):
  data_dir, path = prepared
  dst = tmp_path / "copy"
  shutil.copytree(data_dir, dst)
  return str(dst), os.path.join(dst, os.path.relpath(path, data_dir))


def test_round_trip_keeps_records_and_order(prepared):
  data_dir, path = prepared
  assert path == os.path.join(data_dir, data.NAME, data.VERSION)
  source = data.open_data_source(data_dir)
  assert len(source) == NUM_RECORDS
  assert list(source) == RECORDS
  assert source[0] == RECORDS[0] and source[-1] == RECORDS[-1]
  assert source[5:8] == RECORDS[5:8]
  assert source.__getitems__([7, 2]) == [RECORDS[7], RECORDS[2]]
  assert all(type(source[1][k]) is t for k, t in filters.RECORD_FIELDS.items())
  with pytest.raises(IndexError, match="has 23 records"):
    source[NUM_RECORDS]
  with pytest.raises(TypeError, match="integers or slices"):
    source["0"]


def test_layout_version_and_release_notes(prepared):
  data_dir, path = prepared
  files = sorted(os.listdir(path))
  shards = [f for f in files if ".array_record-" in f]
  assert shards == [f"{data.NAME}-train.array_record-0000{i}-of-0000{SHARDS}"
                    for i in range(SHARDS)]
  assert {"dataset_info.json", "features.json"} <= set(files)
  with open(os.path.join(path, "dataset_info.json")) as f:
    info = json.load(f)
  assert info["version"] == "1.0.0" and info["fileFormat"] == "array_record"
  assert "1.0.0" in info["releaseNotes"]
  assert data.dataset_version(data_dir) == "1.0.0"
  source = data.open_data_source(path)  # the version dir itself also works
  assert source.version == "1.0.0" and "1.0.0" in source.release_notes
  assert len(source.shard_paths) == SHARDS
  assert sum(source.shard_lengths) == NUM_RECORDS
  # TFDS itself reads the dataset.
  builder = tfds.builder_from_directory(path)
  assert builder.info.splits["train"].num_examples == NUM_RECORDS
  raw = builder.as_data_source(split="train")
  assert raw[3]["action"] == RECORDS[3]["action"].encode()


def test_fast_decoding_equals_tfds_decoding(tmp_path):
  """The data source parses records itself; TFDS's decoder agrees."""
  records = make_records(5)
  records[1]["reward"] = 0.7  # not exact in float32
  records[2]["context"] = ""
  path = data.prepare_dataset(records, tmp_path)
  source = data.open_data_source(tmp_path)
  assert source._raw is not None  # pylint: disable=protected-access
  generic = tfds.builder_from_directory(path).as_data_source(split="train")
  for i in range(5):
    assert source[i] == data._to_python(generic[i])  # pylint: disable=protected-access
    assert all(type(source[i][k]) is t
               for k, t in filters.RECORD_FIELDS.items())
  assert source[1]["reward"] == float(np.float32(0.7))
  assert source[2]["context"] == ""


def test_reading_does_not_import_tensorflow(prepared):
  data_dir, _ = prepared
  script = textwrap.dedent(f"""
      import sys
      from swirl_jax.data import trajectories
      assert "tensorflow_datasets" not in sys.modules, "tfds at import"
      source = trajectories.open_data_source({data_dir!r})
      records = list(source)
      assert len(records) == {NUM_RECORDS}
      print("tensorflow" in sys.modules, records[4]["action"])
  """)
  out = subprocess.run([sys.executable, "-c", script], capture_output=True,
                       text=True, check=False, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.split() == ["False", "<answer>", "4", "</answer>"]


def test_splits_names_versions_and_overwrite(tmp_path):
  splits = {"train": make_records(5), "validation": make_records(2, 100)}
  path = data.prepare_dataset(splits, tmp_path, name="swirl_gsm8k_process",
                              version="1.1.0", shards=4,
                              release_notes="Process-filtered GSM8K.")
  assert path.endswith(os.path.join("swirl_gsm8k_process", "1.1.0"))
  valid = data.open_data_source(tmp_path, split="validation",
                                name="swirl_gsm8k_process")
  assert list(valid) == splits["validation"]
  assert len(valid.shard_paths) == 2  # at most one shard per record
  assert valid.version == "1.1.0"
  assert valid.release_notes["1.1.0"] == "Process-filtered GSM8K."
  with pytest.raises(ValueError, match=r"no split 'test'.*'train'"):
    data.open_data_source(tmp_path, split="test", name="swirl_gsm8k_process")
  with pytest.raises(FileExistsError, match="overwrite=True"):
    data.prepare_dataset(splits, tmp_path, name="swirl_gsm8k_process",
                         version="1.1.0")
  data.prepare_dataset(make_records(3, 50), tmp_path,
                       name="swirl_gsm8k_process", version="1.1.0",
                       overwrite=True)
  assert data.load_records(tmp_path, name="swirl_gsm8k_process") == (
      make_records(3, 50))
  # The newest version is read unless one is named.
  data.prepare_dataset(make_records(1), tmp_path, name="swirl_gsm8k_process",
                       version="1.2.0")
  assert data.open_data_source(tmp_path, name="swirl_gsm8k_process"
                               ).version == "1.2.0"
  assert len(data.open_data_source(tmp_path, name="swirl_gsm8k_process",
                                   version="1.1.0")) == 3


def test_bad_records_and_arguments(tmp_path):
  bad = make_records(2)
  del bad[1]["label"]
  with pytest.raises(ValueError, match=r"Record 1 of split 'train' lacks "
                     r"fields \['label'\]"):
    data.prepare_dataset(bad, tmp_path)
  wrong_type = make_records(1)
  wrong_type[0]["reward"] = "1.0"
  with pytest.raises(ValueError, match="'reward' must be a float"):
    data.prepare_dataset(wrong_type, tmp_path)
  with pytest.raises(ValueError, match="has no records"):
    data.prepare_dataset([], tmp_path)
  with pytest.raises(ValueError, match="shards must be >= 1"):
    data.prepare_dataset(make_records(1), tmp_path, shards=0)
  with pytest.raises(ValueError, match="Invalid dataset name 'Bad-Name'"):
    data.prepare_dataset(make_records(1), tmp_path, name="Bad-Name")
  with pytest.raises(ValueError, match="Invalid dataset version '1.0'"):
    data.prepare_dataset(make_records(1), tmp_path, version="1.0")
  assert not os.path.exists(tmp_path / data.NAME)
  with pytest.raises(FileNotFoundError, match="No prepared dataset"):
    data.open_data_source(tmp_path)


def test_builder_reads_the_manual_dir(tmp_path, monkeypatch):
  """What `tfds build --manual_dir=... --imports=...` runs."""
  if importlib.util.find_spec("importlib_resources") is None:
    # TFDS's builder wants the importlib_resources backport; the stdlib
    # module has the same API on Python >= 3.10 (the reader does not need it).
    monkeypatch.setitem(sys.modules, "importlib_resources",
                        importlib.resources)
  from swirl_jax.data import trajectory_builder  # pylint: disable=g-import-not-at-top
  from swirl_jax.rollout.trajectory import save_jsonl  # pylint: disable=g-import-not-at-top
  manual = tmp_path / "records"
  save_jsonl(manual / "train.jsonl", RECORDS[:6])
  builder = trajectory_builder.SwirlTrajectories(
      data_dir=str(tmp_path / "out"), file_format="array_record")
  builder.download_and_prepare(
      download_dir=str(tmp_path / "dl"),
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual),
                                                   num_shards=2))
  assert data.load_records(tmp_path / "out") == RECORDS[:6]
  assert tfds.builder("swirl_trajectories", data_dir=str(tmp_path / "out")
                      ).info.version == "1.0.0"
  # A records file given directly.
  splits = trajectory_builder.read_records_path(str(manual / "train.jsonl"))
  assert splits == {"train": RECORDS[:6]}
  with pytest.raises(FileNotFoundError, match="No <split>.jsonl files"):
    trajectory_builder.read_records_path(str(tmp_path / "dl"))


def test_source_pickles_for_worker_processes(prepared):
  source = data.open_data_source(prepared[0])
  clone = pickle.loads(pickle.dumps(source))
  assert len(clone) == NUM_RECORDS and clone[11] == RECORDS[11]
  import grain  # pylint: disable=g-import-not-at-top
  ds = grain.MapDataset.source(source)
  assert len(ds) == NUM_RECORDS and ds[2] == RECORDS[2]


# -- damaged shards ------------------------------------------------------------


def _shard(path, i=1):
  return os.path.join(path, f"{data.NAME}-train.array_record-0000{i}-of-"
                      f"0000{SHARDS}")


def test_truncated_shard_fails_at_open_naming_the_file(prepared, tmp_path):
  data_dir, path = _copy(prepared, tmp_path)
  shard = _shard(path)
  with open(shard, "rb") as f:
    raw = f.read()
  for cut in (len(raw) - 50, len(raw) // 2, 100, 0):
    with open(shard, "wb") as f:
      f.write(raw[:cut])
    with pytest.raises(data.TrajectoryDataError) as e:
      data.open_data_source(data_dir)
    assert shard in str(e.value) and "truncated or corrupted" in str(e.value)


def test_garbage_shard_fails_at_open_naming_the_file(prepared, tmp_path):
  data_dir, path = _copy(prepared, tmp_path)
  shard = _shard(path, 0)
  with open(shard, "wb") as f:
    f.write(b"not an array record file " * 40)
  with pytest.raises(data.TrajectoryDataError, match="truncated or corrupted"
                     ) as e:
    data.open_data_source(data_dir)
  assert shard in str(e.value)


def test_corrupted_records_fail_when_read_naming_the_file(prepared, tmp_path):
  data_dir, path = _copy(prepared, tmp_path)
  shard = _shard(path)
  with open(shard, "r+b") as f:  # Overwrite the first chunk's bytes.
    f.seek(40)
    f.write(b"\xff" * 60)
  source = data.open_data_source(data_dir)  # the footer is intact
  first = source.shard_lengths[0]
  assert source[first - 1] == RECORDS[first - 1]  # other shards still read
  with pytest.raises(data.TrajectoryDataError) as e:
    source[first]
  message = str(e.value)
  assert shard in message and f"record {first}" in message
  assert "(its record 0)" in message
  # A full check finds it when opening.
  with pytest.raises(data.TrajectoryDataError, match="truncated or corrupted"
                     ) as e:
    data.open_data_source(data_dir, verify=True)
  assert shard in str(e.value)


def test_missing_shard_and_bad_description(prepared, tmp_path):
  data_dir, path = _copy(prepared, tmp_path)
  os.remove(_shard(path, 2))
  with pytest.raises(data.TrajectoryDataError, match="is missing") as e:
    data.open_data_source(data_dir)
  assert _shard(path, 2) in str(e.value)
  with open(os.path.join(path, "features.json"), "w") as f:
    f.write("{not json")
  with pytest.raises(data.TrajectoryDataError,
                     match="Cannot read the dataset description") as e:
    data.open_data_source(data_dir)
  assert path in str(e.value)


# -- building from a stage-1 run -----------------------------------------------


def _trajectory(example, sample, tools=1, correct=True):
  """A gsm8k-like episode: `tools` calculator calls, then an answer."""
  from swirl_jax.rollout import trajectory as traj_lib  # pylint: disable=g-import-not-at-top
  from swirl_jax.tasks.base import Verdict  # pylint: disable=g-import-not-at-top
  turns = [("user", f"Question {example}: what is {example} * 7?")]
  steps = []
  for i in range(tools):
    turns += [("model", f"Compute. <math_exp> {example}*7+{i} </math_exp>"),
              ("user", f"{example}*7+{i} -> {example * 7 + i}")]
    steps.append(traj_lib.Step(i, turns[-2][1], [5, 6], [-0.1, -0.2],
                               tool="math_exp", tool_input=f"{example}*7+{i}",
                               tool_result=str(example * 7 + i)))
  answer = str(example * 7 if correct else -1)
  turns.append(("model", f"Done. <answer> {answer} </answer>"))
  steps.append(traj_lib.Step(tools, turns[-1][1], [7], [-0.3]))
  return traj_lib.Trajectory(
      task="gsm8k", example_id=f"ex{example}", question=f"Q{example}",
      gold=str(example * 7), sample_index=sample, turns=turns, steps=steps,
      final_answer=answer, verdict=Verdict(correct=correct, category="x"),
      finish_reason="answer")


def _run(tmp_path, with_labels=True):
  """A stage-1 run dir: 4 trajectories; the second has a BAD step, the third
  a wrong answer. Returns (run dir, trajectories, labels)."""
  from swirl_jax.judges.base import JudgeResult  # pylint: disable=g-import-not-at-top
  from swirl_jax.rollout.trajectory import save_jsonl  # pylint: disable=g-import-not-at-top
  trajs = [_trajectory(1, 0, tools=2), _trajectory(1, 1, tools=1),
           _trajectory(2, 0, tools=1, correct=False),
           _trajectory(3, 0, tools=0)]
  labels = [[JudgeResult.of(True, f"ok {i}") for i in range(t.num_steps)]
            for t in trajs]
  labels[1][0] = JudgeResult.of(False, "useless query")
  run = tmp_path / "run"
  save_jsonl(run / data.TRAJECTORIES_FILENAME, trajs)
  if with_labels:
    data.save_labels(run / data.LABELS_FILENAME, trajs, labels)
  return run, trajs, labels


def test_build_from_run_stores_every_required_field(tmp_path):
  run, trajs, labels = _run(tmp_path)
  out = data.build_from_run(run / "trajectories.jsonl", tmp_path / "tfds",
                            filter_strategy="process", shards=2)
  # The labels file next to the trajectories was found and used.
  assert out["labels_from"] == str(run / "labels.jsonl")
  assert out["statistics"]["kept_per_filter"]["process"]["trajectories"] == 3
  assert out["statistics"]["kept_per_filter"]["outcome"]["trajectories"] == 3
  kept = [trajs[0], trajs[2], trajs[3]]
  expected = filters.all_sub_trajectories(kept, [labels[0], labels[2],
                                                 labels[3]])
  source = data.open_data_source(tmp_path / "tfds")
  assert list(source) == expected and out["num_records"] == 6
  assert source.version == data.VERSION and len(source.shard_paths) == 2
  first_call, wrong_answer = source[0], source[4]
  assert first_call["trajectory_id"] == "gsm8k/ex1/0"
  assert first_call["step_index"] == 0 and first_call["num_steps"] == 3
  assert json.loads(first_call["context"]) == [list(trajs[0].turns[0])]
  assert first_call["action"] == trajs[0].turns[1][1]
  assert (first_call["tool"], first_call["tool_input"],
          first_call["tool_result"]) == ("math_exp", "1*7+0", "7")
  assert (first_call["label"], first_call["reward"]) == ("GOOD", 1.0)
  assert first_call["task"] == "gsm8k" and first_call["outcome"] is True
  assert wrong_answer["outcome"] is False and wrong_answer["kind"] == "answer"
  # Process-only keeps the wrong answer; process AND outcome does not.
  both = data.build_from_run(run / "trajectories.jsonl", tmp_path / "tfds",
                             filter_strategy="process_and_outcome",
                             version="1.1.0")
  assert both["num_records"] == 4
  assert data.open_data_source(tmp_path / "tfds").version == "1.1.0"


def test_build_from_run_without_labels_asks_the_judge(tmp_path):
  from swirl_jax.judges import base as judge_base  # pylint: disable=g-import-not-at-top

  class NoAnswers(judge_base.Judge):
    """GOOD for tool calls, BAD for answers: only 0-tool episodes fail."""

    def judge_steps(self, requests):
      return [judge_base.JudgeResult.of("<answer>" not in r.action_text
                                        or r.step_index > 0, "test")
              for r in requests]

  run, trajs, _ = _run(tmp_path, with_labels=False)
  out = data.build_from_run(run / "trajectories.jsonl", tmp_path / "tfds",
                            judge=NoAnswers(), filter_strategy="process")
  assert out["labels_from"] == "judge:NoAnswers"
  ids = {r["trajectory_id"] for r in data.load_records(tmp_path / "tfds")}
  assert ids == {filters.trajectory_id(t) for t in trajs[:3]}
  # By name: the registered rules judge.
  out = data.build_from_run(run / "trajectories.jsonl", tmp_path / "rules",
                            judge="rules", filter_strategy="none")
  assert out["labels_from"] == "judge:rules" and out["num_records"] == 8


def test_labels_by_position_as_stage_1_writes_them(tmp_path):
  """A labels file of bare lists (line j labels trajectory j) also works."""
  run, trajs, labels = _run(tmp_path)
  positional = tmp_path / "positional.jsonl"
  with open(positional, "w") as f:
    for ls in labels:
      f.write(json.dumps([l.to_dict() for l in ls]) + "\n")
  assert data.load_labels(positional, trajs) == labels
  assert data.load_labels(run / "labels.jsonl", trajs[::-1]) == labels[::-1]
  with pytest.raises(ValueError, match=r"positional.jsonl labels 4 "
                     r"trajectories by position but the run has 3"):
    data.load_labels(positional, trajs[:3])


def test_build_from_run_errors_name_the_file(tmp_path):
  run, trajs, labels = _run(tmp_path)
  labels_path = run / "labels.jsonl"
  with pytest.raises(FileNotFoundError, match="nothere.jsonl"):
    data.build_from_run(run / "nothere.jsonl", tmp_path / "tfds")
  data.save_labels(labels_path, trajs[:3], labels[:3])
  with pytest.raises(ValueError, match=r"labels.jsonl has no labels for "
                     r"trajectory 'gsm8k/ex3/0'"):
    data.build_from_run(run / "trajectories.jsonl", tmp_path / "tfds")
  labels[0] = labels[0][:2]
  with pytest.raises(ValueError, match="3 steps but 2 labels"):
    data.save_labels(labels_path, trajs, labels)
  with open(labels_path, "w") as f:
    f.write('{"trajectory_id": "gsm8k/ex1/0", "labels": [{"label": "OK"}]}\n')
  with pytest.raises(ValueError, match=r"labels.jsonl: entry 1 is not"):
    data.build_from_run(run / "trajectories.jsonl", tmp_path / "tfds",
                        labels_path=labels_path)
  os.remove(labels_path)
  with pytest.raises(ValueError, match=r"kept none of the 4 trajectories.*"
                     r"trajectories.jsonl.*judge:BadJudge"):

    class BadJudge:  # pylint: disable=too-few-public-methods
      name = "BadJudge"

      def judge_steps(self, requests):
        from swirl_jax.judges.base import JudgeResult  # pylint: disable=g-import-not-at-top
        return [JudgeResult.of(False, "no") for _ in requests]

    data.build_from_run(run / "trajectories.jsonl", tmp_path / "tfds",
                        judge=BadJudge())
  assert not os.path.exists(tmp_path / "tfds")


def test_command_line_builds_and_describes(tmp_path, capsys):
  run, _, _ = _run(tmp_path)
  out = subprocess.run(
      [sys.executable, "-m", "swirl_jax.data.trajectories",
       f"--trajectories={run / 'trajectories.jsonl'}",
       f"--data_dir={tmp_path / 'tfds'}", "--filter=none", "--shards=2"],
      capture_output=True, text=True, check=False, timeout=120)
  assert out.returncode == 0, out.stderr
  summary = json.loads(out.stdout)
  assert summary["num_records"] == 8 and summary["kept"]["trajectories"] == 4
  assert summary["kept_per_filter"]["process"] == 3
  assert summary["dataset_dir"] == str(tmp_path / "tfds" / data.NAME /
                                       data.VERSION)
  assert data.main(["--describe", f"--data_dir={tmp_path / 'tfds'}"]) == 0
  described = json.loads(capsys.readouterr().out)
  assert described["num_records"] == 8 and described["trajectories"] == 4
  assert described["labels"] == {"GOOD": 7, "BAD": 1}
  # Errors: one line naming the file, exit status 1.
  assert data.main([f"--trajectories={run / 'trajectories.jsonl'}",
                    f"--data_dir={tmp_path / 'tfds'}"]) == 1
  assert "overwrite" in capsys.readouterr().err
  shard = os.path.join(summary["dataset_dir"],
                       f"{data.NAME}-train.array_record-00001-of-00002")
  with open(shard, "r+b") as f:
    f.truncate(100)
  assert data.main(["--describe", f"--data_dir={tmp_path / 'tfds'}"]) == 1
  err = capsys.readouterr().err
  assert err.startswith("error: Shard ") and shard in err


# -- SFT on the stored steps ---------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
  from swirl_jax import tokenizer as tok  # pylint: disable=g-import-not-at-top
  texts = [tok.format_chat(filters.context_turns(r) + [("model",
                                                        r["action"])])
           for r in make_records(200)]
  path = tmp_path_factory.mktemp("spm") / "steps.model"
  return tok.train_sentencepiece(texts, str(path), vocab_size=1024)


def _sft(data_dir, tokenizer_path, process_index=0, process_count=1, seed=0,
         **kwargs):
  args = dict(data_dir=data_dir, seq_len=128, global_batch_size=4, pack=False,
              tokenizer_path=tokenizer_path, num_threads=2,
              prefetch_buffer_size=8)
  args.update(kwargs)
  return data.filtered_steps_sft_dataset("unused_workdir", process_index,
                                         process_count, seed, **args)


def _sequences(batches):
  """Every (inputs, next-token mask) sequence of the batches, in order."""
  out = []
  for b in batches:
    for row in range(b["inputs"].shape[0]):
      seg = b["segment_ids"][row]
      for s in np.unique(seg[seg > 0]):
        idx = np.flatnonzero(seg == s)
        out.append((tuple(b["inputs"][row, idx]),
                    tuple(b["loss_mask"][row, idx])))
  return out


def _expected(tokenizer, record):
  """The chat the rollout engine sampled the action after, then the action."""
  prompt = tokenizer.encode_chat(filters.context_turns(record),
                                 add_generation_prompt=True)
  target = tokenizer.encode(record["action"]) + [tokenizer.end_of_turn_id]
  # loss_mask[t] says whether targets[t] = inputs[t + 1] is an action token.
  mask = [0.0] * (len(prompt) - 1) + [1.0] * len(target) + [0.0]
  return tuple(prompt + target), tuple(mask)


@pytest.mark.parametrize("pack", [False, True])
def test_filtered_steps_sft_prompt_is_the_context_target_the_action(
    prepared, tokenizer_path, pack):
  from swirl_jax.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  tokenizer = Tokenizer(tokenizer_path)
  expected = {_expected(tokenizer, r) for r in RECORDS}
  assert len(expected) == NUM_RECORDS
  it = iter(_sft(prepared[0], tokenizer_path, pack=pack))
  batches = [next(it) for _ in range(12)]
  for b in batches:
    assert {k: (v.shape, v.dtype.name) for k, v in b.items()} == {
        k: ((4, 128), "float32" if k == "loss_mask" else "int32")
        for k in ("inputs", "targets", "loss_mask", "positions",
                  "segment_ids")}
  seqs = _sequences(batches)
  assert set(seqs) <= expected
  if not pack:  # rows are epoch 0's permutation of the records, then more
    assert set(seqs[:NUM_RECORDS]) == expected
  else:
    assert set(seqs) == expected
  # The supervised tokens decode to the action and <end_of_turn>.
  b = batches[0]
  decoded = tokenizer.decode(b["targets"][0][b["loss_mask"][0] == 1])
  assert decoded.endswith("</answer><end_of_turn>")


def test_filtered_steps_sft_shards_by_process_and_restores(prepared,
                                                           tokenizer_path):
  per_process = []
  for p in range(2):
    it = iter(_sft(prepared[0], tokenizer_path, process_index=p,
                   process_count=2, seed=3))
    per_process.append(set(_sequences([next(it) for _ in range(6)])[:11]))
  assert len(per_process[0]) == len(per_process[1]) == 11  # 23 // 2 each
  assert not per_process[0] & per_process[1]
  # Checkpointable: a fresh iterator given the state continues identically.
  it = iter(_sft(prepared[0], tokenizer_path, pack=True))
  for _ in range(3):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  following = [next(it) for _ in range(4)]
  again = iter(_sft(prepared[0], tokenizer_path, pack=True))
  again.set_state(state)
  for a, b in zip(following, [next(again) for _ in range(4)]):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_filtered_steps_sft_is_gin_configurable(prepared, tokenizer_path):
  import gin  # pylint: disable=g-import-not-at-top
  prefix = "swirl_jax.data.trajectories.filtered_steps_sft_dataset"
  try:
    gin.parse_config([f"{prefix}.data_dir = {prepared[0]!r}",
                      f"{prefix}.seq_len = 96",
                      f"{prefix}.global_batch_size = 2",
                      f"{prefix}.tokenizer_path = {tokenizer_path!r}"])
    batch = next(iter(data.filtered_steps_sft_dataset(
        workdir="w", process_index=0, process_count=1, seed=0)))
  finally:
    gin.clear_config()
  assert batch["inputs"].shape == (2, 96)
  with pytest.raises(FileNotFoundError, match="No prepared dataset"):
    data.filtered_steps_sft_dataset("w", 0, 1, 0, data_dir="/nonexistent",
                                    tokenizer_path=tokenizer_path)


# -- a damaged dataset under a training run ------------------------------------


def _tree(root):
  """{relative path: file bytes} of everything under root."""
  out = {}
  for dirpath, _, files in os.walk(root):
    for name in files:
      path = os.path.join(dirpath, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = f.read()
  return out


def test_damaged_shard_stops_a_resumed_run_and_keeps_what_was_trained(
    prepared, tokenizer_path, tmp_path):
  """Train 2 steps on the stored data; then a truncated shard (found when
  the dataset is opened) and corrupted records (found when read) each stop
  the resumed run with an error naming the shard, and the checkpoints and
  metrics already written stay byte for byte."""
  import functools  # pylint: disable=g-import-not-at-top
  from swirl_jax import models  # pylint: disable=g-import-not-at-top
  from swirl_jax.training import trainer  # pylint: disable=g-import-not-at-top
  data_dir, path = _copy(prepared, tmp_path)
  workdir = str(tmp_path / "train")

  config = models.get_config("tiny", num_layers=1, attention_types=("global",))

  def train(stop_after=None):
    return trainer.train(
        workdir, model_config=config,
        dataset_fn=functools.partial(
            data.filtered_steps_sft_dataset, data_dir=data_dir, seq_len=64,
            global_batch_size=4, tokenizer_path=tokenizer_path,
            num_threads=2, prefetch_buffer_size=8),
        train_steps=6, stop_after=stop_after, checkpoint_every=2,
        log_every=1, async_checkpoints=False)

  assert train(stop_after=2).last_step == 2
  before = _tree(workdir)
  assert any(p.startswith("checkpoints") for p in before)
  assert b'"step": 2' in before["metrics.jsonl"]
  pristine = {i: open(_shard(path, i), "rb").read() for i in range(SHARDS)}

  with open(_shard(path, 1), "r+b") as f:  # Truncated: found at open.
    f.truncate(len(pristine[1]) // 2)
  with pytest.raises(data.TrajectoryDataError, match="truncated or corrupted"
                     ) as e:
    train()
  assert _shard(path, 1) in str(e.value)
  assert _tree(workdir) == before

  for i in range(SHARDS):  # Footers intact, records corrupted: found on read.
    with open(_shard(path, i), "wb") as f:
      f.write(_corrupt_every_record(pristine[i]))
  assert len(data.open_data_source(data_dir)) == NUM_RECORDS  # opens fine
  with pytest.raises(data.TrajectoryDataError, match=r"Cannot read record "
                     r"\d+ of split 'train': shard .* is truncated") as e:
    train()
  assert any(_shard(path, i) in str(e.value) for i in range(SHARDS))
  after = _tree(workdir)
  # The rerun failed on its first batch: it only added a TensorBoard event
  # file (and rewrote config.gin and metrics.jsonl with the same bytes).
  assert {k: v for k, v in after.items() if k in before} == before
  assert all(k.startswith("tensorboard") for k in set(after) - set(before))


def _corrupt_every_record(shard_bytes):
  """The shard with every record's chunk damaged and its footer intact.

  TFDS writes one chunk per record (group_size:1), each compressed as zstd
  frames; the last two frames are the footer's (the chunk index the reader
  checks when it opens the file).
  """
  raw = bytearray(shard_bytes)
  frames = [i for i in range(len(raw)) if raw[i:i + 4] == b"\x28\xb5\x2f\xfd"]
  assert len(frames) > 2
  for i in frames[:-2]:
    raw[i + 6:i + 14] = b"\xff" * 8
  return bytes(raw)


def test_filtered_steps_sft_names_the_shard_of_a_corrupted_record(
    prepared, tokenizer_path, tmp_path):
  data_dir, path = _copy(prepared, tmp_path)
  with open(_shard(path, 1), "r+b") as f:  # Corrupt its first record.
    f.seek(40)
    f.write(b"\xff" * 60)
  it = iter(_sft(data_dir, tokenizer_path))  # opens: the footer is intact
  with pytest.raises(data.TrajectoryDataError) as e:
    for _ in range(NUM_RECORDS):  # one epoch reads every record
      next(it)
  assert _shard(path, 1) in str(e.value) and "(its record 0)" in str(e.value)
