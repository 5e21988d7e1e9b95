"""One TFDS builder for every stored record dataset (ArrayRecord shards).

Importing this module imports tensorflow_datasets (not TensorFlow). A
record dataset is a short subclass of `RecordBuilder` declaring its fields
(`data.record_fields`), its default split and its description:

    class R3Failures(RecordBuilder):
      VERSION = tfds.core.Version("1.0.0")
      FIELDS = failures.FAILURE_FIELDS
      KIND = "an R3 failure record"
      ...

The records come from `records=` (a list, written as the default split, or
a mapping split -> list), `records_path=` (a JSONL file, or a directory of
`<split>.jsonl` files), or the manual dir of `tfds build --manual_dir=DIR`
(read like a directory). Each record is checked against the fields before
anything is written; examples are stored in the order given
(`disable_shuffling`), keyed by position. `write_dataset` is the in-process
form of `tfds build ... --file_format=array_record --num_shards=N`.
Readers need neither this module nor TensorFlow
(`data.trajectories.TrajectoryDataSource`).
"""

from __future__ import annotations

import contextlib
import glob
import importlib.resources
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from typing import Any, ClassVar, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow_datasets as tfds

from swirl_jax.data import record_fields
from swirl_jax.rollout import trajectory as traj_lib

Records = Union[Sequence[Mapping[str, Any]],
                Mapping[str, Sequence[Mapping[str, Any]]]]

_FEATURES = {
    str: tfds.features.Text,
    bool: lambda: tfds.features.Scalar(np.bool_),
    int: lambda: tfds.features.Scalar(np.int64),
    float: lambda: tfds.features.Scalar(np.float32),
    "tokens": lambda: tfds.features.Tensor(shape=(None,), dtype=np.int32),
    "logprobs": lambda: tfds.features.Tensor(shape=(None,), dtype=np.float32),
}
_SPLIT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def features(fields: record_fields.Fields) -> tfds.features.FeaturesDict:
  """The TFDS features of records with these fields."""
  bad = [k for k, t in fields.items() if t not in _FEATURES]
  if bad:
    raise TypeError(f"No TFDS feature for the type of fields {bad}.")
  return tfds.features.FeaturesDict(
      {k: _FEATURES[t]() for k, t in fields.items()})


def read_records_path(path: str, default_split: str = "train"
                      ) -> dict[str, list[dict[str, Any]]]:
  """Splits of records from a JSONL file (the default split) or a
  directory of `<split>.jsonl` files.

  Raises:
    FileNotFoundError: `path` does not exist or holds no `*.jsonl` file.
    ValueError: a line is not valid JSON (naming file and line).
  """
  path = os.fspath(path)
  if os.path.isfile(path):
    return {default_split: traj_lib.load_jsonl(path, dict)}
  if not os.path.isdir(path):
    raise FileNotFoundError(f"No records file or directory {path!r}.")
  files = sorted(glob.glob(os.path.join(path, "*.jsonl")))
  if not files:
    raise FileNotFoundError(
        f"No <split>.jsonl files of records in {path!r}; write them with "
        f"swirl_jax.rollout.trajectory.save_jsonl (e.g. "
        f"{os.path.join(path, default_split + '.jsonl')}).")
  return {os.path.basename(f)[:-len(".jsonl")]: traj_lib.load_jsonl(f, dict)
          for f in files}


def as_splits(records: Records, fields: record_fields.Fields,
              default_split: str = "train", kind: str = "record"
              ) -> dict[str, list[Mapping[str, Any]]]:
  """A list of records (the default split) or a split mapping, each record
  checked (`record_fields.check_record`)."""
  if isinstance(records, Mapping):
    splits = {str(k): list(v) for k, v in records.items()}
  else:
    splits = {default_split: list(records)}
  if not splits:
    raise ValueError("No splits of records were given.")
  for split, recs in splits.items():
    if not _SPLIT_RE.match(split):
      raise ValueError(f"Invalid split name {split!r}: use letters, digits "
                       "and '_' (e.g. 'train').")
    if not recs:
      raise ValueError(f"Split {split!r} has no records; TFDS cannot write "
                       "an empty split.")
    for i, r in enumerate(recs):
      record_fields.check_record(r, fields, f"Record {i} of split {split!r}",
                                 kind)
  return splits


def encode(record: Mapping[str, Any], fields: record_fields.Fields
           ) -> dict[str, Any]:
  """The TFDS example of a record: its fields, token lists as arrays."""
  out = {}
  for key, kind in fields.items():
    value = record[key]
    if kind == "tokens":
      value = np.asarray(value, np.int32).reshape(-1)
    elif kind == "logprobs":
      value = np.asarray(value, np.float32).reshape(-1)
    out[key] = value
  return out


class RecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A dataset of records; subclasses declare what is below.

  Args:
    records: records to write (see the module docstring), or None.
    records_path: a JSONL file or a directory of `<split>.jsonl` files.
    **kwargs: `tfds.core.GeneratorBasedBuilder` arguments (data_dir,
      file_format, ...).
  """

  FIELDS: ClassVar[record_fields.Fields] = {}
  KIND: ClassVar[str] = "a record"        # what one record is, in messages
  DEFAULT_SPLIT: ClassVar[str] = "train"
  DESCRIPTION: ClassVar[str] = ""
  HOMEPAGE: ClassVar[str] = ""
  CITATION: ClassVar[str] = ""

  def __init__(self, *, records: Optional[Records] = None,
               records_path: Optional[str] = None, **kwargs):
    self._records = records
    self._records_path = records_path
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.DESCRIPTION,
        features=features(self.FIELDS), disable_shuffling=True,
        homepage=self.HOMEPAGE, citation=self.CITATION)

  def _split_generators(self, dl_manager):
    records = self._records
    if records is None:  # the manual dir is read only when it is needed
      records = read_records_path(
          self._records_path or os.fspath(dl_manager.manual_dir),
          self.DEFAULT_SPLIT)
    splits = as_splits(records, self.FIELDS, self.DEFAULT_SPLIT, self.KIND)
    return {split: self._generate_examples(recs)
            for split, recs in splits.items()}

  def _generate_examples(self, records: Sequence[Mapping[str, Any]]
                         ) -> Iterator[tuple[int, dict[str, Any]]]:
    for i, record in enumerate(records):
      yield i, encode(record, self.FIELDS)


@contextlib.contextmanager
def _importlib_resources_shim():
  """Lets TFDS's builder import `importlib_resources` when it is missing.

  TFDS locates a builder's code (`DatasetBuilder.code_path`) with the
  `importlib_resources` backport; on Python >= 3.10 the stdlib
  `importlib.resources` has the API it uses. The alias is installed only
  while building and removed afterwards.
  """
  if ("importlib_resources" in sys.modules or
      importlib.util.find_spec("importlib_resources") is not None):
    yield
    return
  sys.modules["importlib_resources"] = importlib.resources
  try:
    yield
  finally:
    if sys.modules.get("importlib_resources") is importlib.resources:
      del sys.modules["importlib_resources"]


def write_dataset(builder_cls: type[RecordBuilder], records: Records,
                  data_dir: str, shards: int = 1,
                  overwrite: bool = False) -> str:
  """Writes `records` with `builder_cls` as TFDS ArrayRecord shards.

  Args:
    builder_cls: the dataset's builder (its name and version give the
      directory data_dir/name/version).
    records: a list (the default split) or a mapping split -> list; every
      split needs at least one record.
    data_dir: the TFDS data dir.
    shards: ArrayRecord files per split (at most one per record: a split
      with fewer records gets one shard per record).
    overwrite: replace an existing dataset at data_dir/name/version.
  Returns:
    The dataset directory.
  Raises:
    FileExistsError: the dataset exists and `overwrite` is False.
    RecordFieldError / ValueError: a bad record (named), an empty split.
  """
  if int(shards) < 1:
    raise ValueError(f"shards must be >= 1, got {shards}.")
  splits = as_splits(records, builder_cls.FIELDS, builder_cls.DEFAULT_SPLIT,
                     builder_cls.KIND)
  data_dir = os.path.abspath(os.fspath(data_dir))
  target = os.path.join(data_dir, builder_cls.name,
                        str(builder_cls.VERSION))
  if os.path.exists(target):
    if not overwrite:
      raise FileExistsError(
          f"A dataset already exists at {target}; pass overwrite=True to "
          "replace it, or choose another version or data_dir.")
    shutil.rmtree(target)
  num_shards = min(int(shards), min(len(r) for r in splits.values()))
  builder = builder_cls(records=splits, data_dir=data_dir,
                        file_format="array_record")
  with _importlib_resources_shim(), tempfile.TemporaryDirectory(
      prefix=f"{builder_cls.name}_tfds_") as downloads:
    builder.download_and_prepare(
        download_dir=downloads,
        download_config=tfds.download.DownloadConfig(num_shards=num_shards))
  return os.fspath(builder.data_dir)
