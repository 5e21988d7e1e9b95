"""The SWiRL trajectory dataset: TFDS ArrayRecord shards, written and read.

Writing (`prepare_dataset`) runs the TFDS builder of `trajectory_builder`
over a list of sub-trajectory records (`swirl_jax.swirl.filters`), into
`data_dir/<name>/<version>/` with `dataset_info.json`, `features.json` and
`<name>-<split>.array_record-0000i-of-0000N` shards. It is the in-process
form of

    tfds build swirl_trajectories \\
      --imports=swirl_jax.data.trajectory_builder \\
      --manual_dir=RECORDS_DIR --data_dir=DATA_DIR \\
      --file_format=array_record --num_shards=N

with the records in RECORDS_DIR/train.jsonl (the CLI runs the same builder's
`download_and_prepare` with that manual dir).

Reading (`open_data_source`) goes through `tfds.builder_from_directory(...)
.as_data_source(split)`: random access, `len()`, records decoded to plain
Python dicts (str / int / float / bool), without importing TensorFlow. Shards
are checked when the source is opened (every file present, readable, with
the number of records `dataset_info.json` promises; `verify=True` also reads
every record), and any failure to read a record names the shard file:
both raise `TrajectoryDataError`.

Nothing here imports tensorflow_datasets at module import.
"""

from __future__ import annotations

import bisect
import collections.abc
import contextlib
import glob
import importlib.resources
import importlib.util
import itertools
import json
import os
import shutil
import sys
import tempfile
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from swirl_jax.swirl import filters

NAME = "swirl_trajectories"
VERSION = "1.0.0"
DEFAULT_SPLIT = "train"
INFO_FILENAME = "dataset_info.json"
FEATURES_FILENAME = "features.json"

# Reader options for opening shards to check them: no read-ahead threads.
_CHECK_OPTIONS = "readahead_buffer_size:0,max_parallelism:0"
# Records read at a time by `check_shard(..., verify=True)`.
_VERIFY_CHUNK = 1024

Records = Union[Sequence[Mapping[str, Any]],
                Mapping[str, Sequence[Mapping[str, Any]]]]


class TrajectoryDataError(ValueError):
  """A trajectory dataset file is missing, truncated or corrupted."""


# ----------------------------------------------------------------------------
# Writing.


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


def prepare_dataset(records: Records, data_dir: str | os.PathLike,
                    name: str = NAME, version: str = VERSION, shards: int = 1,
                    overwrite: bool = False,
                    release_notes: Optional[str] = None) -> str:
  """Writes sub-trajectory records as a TFDS ArrayRecord dataset.

  Args:
    records: a list of records (`filters.sub_trajectories`), written as
      split 'train', or a mapping split name -> list of records. Every split
      needs at least one record.
    data_dir: the TFDS data dir; the dataset goes to data_dir/name/version.
    name: the dataset's name (lowercase snake_case).
    version: 'MAJOR.MINOR.PATCH'.
    shards: ArrayRecord files per split (at most one per record: a split
      with fewer records gets one shard per record).
    overwrite: replace an existing dataset at data_dir/name/version.
    release_notes: notes for a version other than 1.0.0.

  Returns:
    str: the dataset directory data_dir/name/version.

  Raises:
    FileExistsError: the dataset exists and `overwrite` is False.
    ValueError / TypeError: a record lacks a field or has a wrong type
      (naming the record), an empty split, a bad name or version.
  """
  if int(shards) < 1:
    raise ValueError(f"shards must be >= 1, got {shards}.")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from swirl_jax.data import trajectory_builder  # pylint: disable=g-import-not-at-top
  splits = trajectory_builder.as_splits(records)
  cls = trajectory_builder.builder_class(name, version, release_notes)
  data_dir = os.path.abspath(os.fspath(data_dir))
  target = os.path.join(data_dir, name, version)
  if os.path.exists(target):
    if not overwrite:
      raise FileExistsError(
          f"A dataset already exists at {target}; pass overwrite=True to "
          "replace it, or choose another version or data_dir.")
    shutil.rmtree(target)
  num_shards = min(int(shards), min(len(r) for r in splits.values()))
  builder = cls(records=splits, data_dir=data_dir, file_format="array_record")
  with _importlib_resources_shim(), tempfile.TemporaryDirectory(
      prefix="swirl_tfds_") as downloads:
    builder.download_and_prepare(
        download_dir=downloads,
        download_config=tfds.download.DownloadConfig(num_shards=num_shards))
  return os.fspath(builder.data_dir)


# ----------------------------------------------------------------------------
# Reading.


def _version_key(name: str) -> tuple[int, ...]:
  parts = name.split(".")
  return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else ()


def find_dataset_dir(data_dir: str | os.PathLike, name: str = NAME,
                     version: Optional[str] = None) -> str:
  """The directory holding `dataset_info.json` of the dataset.

  Args:
    data_dir: the dataset directory itself, or a TFDS data dir holding
      name/version/.
    name: the dataset name under a data dir.
    version: the version to read (None: the newest prepared one).

  Raises:
    FileNotFoundError: naming where it looked.
  """
  data_dir = os.fspath(data_dir)
  if os.path.isfile(os.path.join(data_dir, INFO_FILENAME)):
    return data_dir
  root = os.path.join(data_dir, name)
  if version is not None:
    path = os.path.join(root, version)
    if os.path.isfile(os.path.join(path, INFO_FILENAME)):
      return path
    raise FileNotFoundError(
        f"No prepared dataset {name!r} version {version} in {data_dir!r} "
        f"(no {os.path.join(path, INFO_FILENAME)}).")
  found = [os.path.dirname(p) for p in
           glob.glob(os.path.join(root, "*", INFO_FILENAME))]
  found = [p for p in found if _version_key(os.path.basename(p))]
  if not found:
    raise FileNotFoundError(
        f"No prepared dataset {name!r} in {data_dir!r}: looked for "
        f"{os.path.join(root, '<version>', INFO_FILENAME)} and "
        f"{os.path.join(data_dir, INFO_FILENAME)}. Build it with "
        "swirl_jax.data.trajectories.prepare_dataset.")
  return max(found, key=lambda p: _version_key(os.path.basename(p)))


def _to_python(value: Any) -> Any:
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray):
    if value.dtype.kind in "SO":
      return [_to_python(v) for v in value.tolist()]
    return value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, dict):
    return {k: _to_python(v) for k, v in value.items()}
  return value


class TrajectoryDataSource(collections.abc.Sequence):
  """Random access to one split of a trajectory dataset, as Python dicts.

      source = open_data_source(data_dir)
      len(source), source[0]['action'], source[-1]['label']

  Records have the fields of `filters.RECORD_FIELDS` (str, int, float,
  bool); the reward was stored as float32. The source pickles (for grain
  worker processes) as its directory and split and reopens lazily.

  Args:
    dataset_dir: the directory with `dataset_info.json` (`find_dataset_dir`).
    split: the split to read.
    verify: also read every record at open (full checksum check).

  Raises:
    TrajectoryDataError: naming the file, when the dataset description
      cannot be read or a shard is missing, truncated or corrupted; also
      raised by `__getitem__` for a record that cannot be read.
    ValueError: the split does not exist.
  """

  def __init__(self, dataset_dir: str | os.PathLike, split: str = DEFAULT_SPLIT,
               verify: bool = False):
    self.dataset_dir = os.fspath(dataset_dir)
    self.split = split
    self._source = None
    self._open(check=True, verify=verify)

  # -- opening ----------------------------------------------------------------

  def _open(self, check: bool, verify: bool = False) -> None:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    try:
      builder = tfds.builder_from_directory(self.dataset_dir)
      info = builder.info
    except Exception as e:  # pylint: disable=broad-except
      raise TrajectoryDataError(
          f"Cannot read the dataset description in {self.dataset_dir} "
          f"({INFO_FILENAME} / {FEATURES_FILENAME}): {type(e).__name__}: "
          f"{e}") from e
    if self.split not in info.splits:
      raise ValueError(f"The dataset in {self.dataset_dir} has no split "
                       f"{self.split!r}; it has {sorted(info.splits)}.")
    file_format = getattr(info.file_format, "value", info.file_format)
    if str(file_format) != "array_record":
      raise TrajectoryDataError(
          f"The dataset in {self.dataset_dir} is stored as "
          f"{file_format}, not array_record; rebuild it with "
          "prepare_dataset.")
    missing = [k for k in filters.RECORD_FIELDS if k not in info.features]
    if missing:
      raise TrajectoryDataError(
          f"The dataset in {self.dataset_dir} is not a SWiRL trajectory "
          f"dataset: its features lack {missing}.")
    split_info = info.splits[self.split]
    self.name = info.name
    self.version = str(info.version)
    self.release_notes = dict(info.release_notes or {})
    self.shard_paths = [os.fspath(p) for p in split_info.filepaths]
    self.shard_lengths = [int(n) for n in split_info.shard_lengths]
    self._ends = list(itertools.accumulate(self.shard_lengths))
    if check:
      for path, n in zip(self.shard_paths, self.shard_lengths):
        check_shard(path, n, verify=verify)
    try:
      self._source = builder.as_data_source(split=self.split)
    except Exception as e:  # pylint: disable=broad-except
      raise TrajectoryDataError(
          f"Cannot open split {self.split!r} of {self.dataset_dir} (shards "
          f"{self.shard_paths}): {type(e).__name__}: {e}") from e
    expected = self._ends[-1] if self._ends else 0
    if len(self._source) != expected:
      raise TrajectoryDataError(
          f"Split {self.split!r} of {self.dataset_dir} has "
          f"{len(self._source)} records but its shards promise "
          f"{expected}.")

  def __getstate__(self) -> dict[str, Any]:
    return {"dataset_dir": self.dataset_dir, "split": self.split}

  def __setstate__(self, state: Mapping[str, Any]) -> None:
    self.dataset_dir = state["dataset_dir"]
    self.split = state["split"]
    self._source = None
    self._open(check=False)

  # -- reading ----------------------------------------------------------------

  def __len__(self) -> int:
    return self._ends[-1] if self._ends else 0

  def shard_of(self, index: int) -> tuple[str, int]:
    """(shard path, position in that shard) of record `index` (>= 0)."""
    shard = bisect.bisect_right(self._ends, index)
    start = self._ends[shard - 1] if shard else 0
    return self.shard_paths[shard], index - start

  def _read(self, index: int) -> dict[str, Any]:
    n = len(self)
    if not -n <= index < n:
      raise IndexError(f"Record {index} out of range: split {self.split!r} "
                       f"of {self.dataset_dir} has {n} records.")
    index %= n
    try:
      raw = self._source[index]
    except Exception as e:  # pylint: disable=broad-except
      path, pos = self.shard_of(index)
      raise TrajectoryDataError(
          f"Cannot read record {index} of split {self.split!r}: shard {path} "
          f"(its record {pos}) is truncated or corrupted: "
          f"{type(e).__name__}: {e}") from e
    return _to_python(raw)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self._read(i) for i in range(*index.indices(len(self)))]
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
      return self._read(int(index))
    raise TypeError(f"Record indices must be integers or slices, not "
                    f"{type(index).__name__}.")

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    return [self._read(int(i)) for i in indices]

  def __iter__(self) -> Iterator[dict[str, Any]]:
    for i in range(len(self)):
      yield self._read(i)

  def __repr__(self) -> str:
    return (f"TrajectoryDataSource({self.dataset_dir!r}, split="
            f"{self.split!r}, records={len(self)}, shards="
            f"{len(self.shard_paths)})")


def check_shard(path: str, num_records: int, verify: bool = False) -> None:
  """Checks one ArrayRecord shard: present, readable, `num_records` long.

  Args:
    path: the shard file.
    num_records: the count `dataset_info.json` gives for it.
    verify: also read every record (checks every chunk's checksum).

  Raises:
    TrajectoryDataError: naming `path`.
  """
  if not os.path.isfile(path):
    raise TrajectoryDataError(f"Shard {path} is missing.")
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  reader = None
  try:
    reader = array_record_module.ArrayRecordReader(path, _CHECK_OPTIONS)
    if not reader.ok():
      raise RuntimeError("the reader reports a bad file")
    found = reader.num_records()
    if found != num_records:
      raise RuntimeError(f"it holds {found} records, dataset_info.json "
                         f"says {num_records}")
    for start in range(0, found if verify else 0, _VERIFY_CHUNK):
      reader.read(start, min(start + _VERIFY_CHUNK, found))
  except Exception as e:  # pylint: disable=broad-except
    raise TrajectoryDataError(
        f"Shard {path} ({os.path.getsize(path)} bytes) is truncated or "
        f"corrupted: {e}") from e
  finally:
    if reader is not None:
      with contextlib.suppress(Exception):
        reader.close()


def open_data_source(data_dir: str | os.PathLike, split: str = DEFAULT_SPLIT,
                     name: str = NAME, version: Optional[str] = None,
                     verify: bool = False) -> TrajectoryDataSource:
  """Opens a split of a prepared trajectory dataset for random access.

  Args:
    data_dir: the dataset directory, or the TFDS data dir holding
      name/version/ (`prepare_dataset`'s data_dir).
    split: the split ('train' unless the dataset was written with others).
    name: the dataset name under a data dir.
    version: the version (None: the newest prepared one).
    verify: read every record once to check every checksum.

  Returns:
    TrajectoryDataSource: `len()`, `source[i]` -> dict of Python values.
  """
  return TrajectoryDataSource(find_dataset_dir(data_dir, name, version),
                              split=split, verify=verify)


def load_records(data_dir: str | os.PathLike, split: str = DEFAULT_SPLIT,
                 name: str = NAME, version: Optional[str] = None
                 ) -> list[dict[str, Any]]:
  """Every record of a split, in order (see `open_data_source`)."""
  return list(open_data_source(data_dir, split, name, version))


def dataset_version(data_dir: str | os.PathLike, name: str = NAME,
                    version: Optional[str] = None) -> str:
  """The version written in the dataset's `dataset_info.json`."""
  path = os.path.join(find_dataset_dir(data_dir, name, version),
                      INFO_FILENAME)
  with open(path, "r", encoding="utf-8") as f:
    return str(json.load(f)["version"])
