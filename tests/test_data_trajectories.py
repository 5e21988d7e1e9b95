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
