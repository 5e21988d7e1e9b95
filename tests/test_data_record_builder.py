"""The shared TFDS builder: a dataset declared by its fields is written,
read back without TensorFlow, in order, with bad records named first."""

import pytest

from swirl_jax.data import record_builder
from swirl_jax.data import record_fields
from swirl_jax.data import trajectories

tfds = pytest.importorskip("tensorflow_datasets")

FIELDS = {"key": str, "n": int, "ok": bool, "ids": "tokens",
          "logps": "logprobs"}


class ToyRecords(record_builder.RecordBuilder, skip_registration=True):
  VERSION = tfds.core.Version("1.2.0")
  FIELDS = FIELDS
  KIND = "a toy record"


class ToySource(trajectories.TrajectoryDataSource):
  required_fields = FIELDS
  kind = "toy"


def _records(n):
  return [{"key": f"r{i}", "n": i, "ok": i % 2 == 0, "ids": list(range(i + 1)),
           "logps": [-0.5] * (i + 1)} for i in range(n)]


def test_write_and_read_back(tmp_path):
  path = record_builder.write_dataset(
      ToyRecords, {"train": _records(5), "test": _records(2)},
      str(tmp_path), shards=2)
  assert path.endswith("toy_records/1.2.0")
  source = ToySource(path, "train")
  assert len(source) == 5
  assert [r["key"] for r in source] == [f"r{i}" for i in range(5)]
  assert source[3]["ids"] == [0, 1, 2, 3] and source[3]["ok"] is False
  assert source[3]["logps"] == pytest.approx([-0.5] * 4)
  assert len(ToySource(path, "test")) == 2
  with pytest.raises(FileExistsError, match="overwrite=True"):
    record_builder.write_dataset(ToyRecords, _records(1), str(tmp_path))
  record_builder.write_dataset(ToyRecords, _records(1), str(tmp_path),
                               overwrite=True)
  assert len(ToySource(path, "train")) == 1


def test_bad_records_fail_before_writing(tmp_path):
  bad = _records(3)
  bad[2]["n"] = "two"
  with pytest.raises(record_fields.RecordFieldError,
                     match="Record 2 of split 'train' field 'n'"):
    record_builder.write_dataset(ToyRecords, bad, str(tmp_path))
  with pytest.raises(ValueError, match="Split 'test' has no records"):
    record_builder.write_dataset(ToyRecords, {"test": []}, str(tmp_path))
  with pytest.raises(ValueError, match="shards must be >= 1"):
    record_builder.write_dataset(ToyRecords, _records(1), str(tmp_path), 0)
  assert not (tmp_path / "toy_records").exists()


def test_records_path_reads_split_files(tmp_path):
  from swirl_jax.rollout import save_jsonl
  save_jsonl(str(tmp_path / "in" / "train.jsonl"), _records(2))
  save_jsonl(str(tmp_path / "in" / "validation.jsonl"), _records(1))
  splits = record_builder.read_records_path(str(tmp_path / "in"))
  assert {k: len(v) for k, v in splits.items()} == {"train": 2,
                                                   "validation": 1}
  with pytest.raises(FileNotFoundError, match="No <split>.jsonl"):
    record_builder.read_records_path(str(tmp_path))
