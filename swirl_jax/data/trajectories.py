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
Python dicts (str / int / float / bool), without importing TensorFlow. The
records' tf.train.Example bytes are parsed here directly (the same values
as TFDS's generic decoder, about 6x faster; the generic decoder is used for
a dataset with features other than text and scalars). Shards
are checked when the source is opened (every file present, readable, with
the number of records `dataset_info.json` promises; `verify=True` also reads
every record), and any failure to read a record names the shard file:
both raise `TrajectoryDataError`.

Building from a stage-1 run (`build_from_run`, also the command line)
turns the run's `trajectories.jsonl` and its step labels (`labels.jsonl`,
`save_labels`; or a judge that labels the steps anew) into the filtered
dataset:

    python -m swirl_jax.data.trajectories \\
      --trajectories=RUN/trajectories.jsonl [--labels=RUN/labels.jsonl] \\
      --data_dir=DATA_DIR [--filter=process] [--shards=N] [--version=1.0.0]

SFT on the stored steps (`filtered_steps_sft_dataset`, gin-configurable):
every record becomes one supervised example, prompt = its context turns in
the Gemma chat format the rollout engine sampled from, target = its action;
the grain pipeline (`swirl_jax.data.pipeline.make_sft_dataset`) tokenises,
pads or packs, shards by process and batches them. This is the paper's SFT
baseline on the same filtered data SWiRL's stage 2 trains on.

Nothing here imports tensorflow_datasets at module import.
"""

from __future__ import annotations

import bisect
import collections.abc
import contextlib
import glob
import itertools
import json
import os
import sys
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import gin
import numpy as np

from swirl_jax.swirl import filters

NAME = "swirl_trajectories"
VERSION = "1.0.0"
DEFAULT_SPLIT = "train"
INFO_FILENAME = "dataset_info.json"
FEATURES_FILENAME = "features.json"
# What a stage-1 run (`swirl_jax.swirl.synthesis`) leaves in its workdir.
TRAJECTORIES_FILENAME = "trajectories.jsonl"
LABELS_FILENAME = "labels.jsonl"

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
  from swirl_jax.data import record_builder  # pylint: disable=g-import-not-at-top
  from swirl_jax.data import trajectory_builder  # pylint: disable=g-import-not-at-top
  return record_builder.write_dataset(
      trajectory_builder.builder_class(name, version, release_notes),
      records, data_dir, shards=shards, overwrite=overwrite)


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


# How `_parse_example` reads a feature from a tf.train.Example.
_TEXT, _BOOL, _INT, _FLOAT = "text", "bool", "int", "float"


def _flat_fields(features) -> Optional[dict[str, str]]:
  """{name: _TEXT | _BOOL | _INT | _FLOAT} for a FeaturesDict of Text and
  scalar features; None if it has any other feature (then records are
  decoded by TFDS's generic, slower decoder)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  out = {}
  for name, feature in features.items():
    if isinstance(feature, tfds.features.Text):
      out[name] = _TEXT
    elif (isinstance(feature, tfds.features.Tensor) and
          tuple(feature.shape) == ()):
      kind = np.dtype(feature.np_dtype).kind
      if kind not in "bif":
        return None
      out[name] = {"b": _BOOL, "i": _INT, "f": _FLOAT}[kind]
    else:
      return None
  return out


def _parse_example(serialized: bytes, fields: Mapping[str, str]
                   ) -> dict[str, Any]:
  """A serialized tf.train.Example of Text / scalar features -> Python dict.

  Gives what TFDS's generic decoder followed by `_to_python` gives (str,
  bool, int, and float32 values as float), several times faster.

  Raises:
    KeyError: a feature is missing; google.protobuf's DecodeError: the
      bytes are not an Example.
  """
  from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=g-import-not-at-top
  feature_map = tf_example_pb2.Example.FromString(serialized).features.feature
  out = {}
  for name, kind in fields.items():
    if name not in feature_map:
      raise KeyError(f"the record has no feature {name!r}")
    feature = feature_map[name]
    if kind == _TEXT:
      out[name] = feature.bytes_list.value[0].decode("utf-8")
    elif kind == _BOOL:
      out[name] = bool(feature.int64_list.value[0])
    elif kind == _INT:
      out[name] = int(feature.int64_list.value[0])
    else:
      out[name] = float(np.float32(feature.float_list.value[0]))
  return out


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

  Other record datasets (R3's failures) subclass it, setting the class
  attributes: `required_fields` (the features a dataset of the kind must
  have), `kind` (its name in messages) and `error` (the exception raised).
  """

  required_fields: Mapping[str, Any] = filters.RECORD_FIELDS
  kind = "SWiRL trajectory"
  error: type[ValueError] = TrajectoryDataError

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
      raise self.error(
          f"Cannot read the dataset description in {self.dataset_dir} "
          f"({INFO_FILENAME} / {FEATURES_FILENAME}): {type(e).__name__}: "
          f"{e}") from e
    if self.split not in info.splits:
      raise ValueError(f"The dataset in {self.dataset_dir} has no split "
                       f"{self.split!r}; it has {sorted(info.splits)}.")
    file_format = getattr(info.file_format, "value", info.file_format)
    if str(file_format) != "array_record":
      raise self.error(
          f"The dataset in {self.dataset_dir} is stored as "
          f"{file_format}, not array_record; rebuild it with "
          "prepare_dataset.")
    missing = [k for k in self.required_fields if k not in info.features]
    if missing:
      raise self.error(
          f"The dataset in {self.dataset_dir} is not a {self.kind} "
          f"dataset: its features lack {missing}.")
    self._fields = _flat_fields(info.features)
    split_info = info.splits[self.split]
    self.name = info.name
    self.version = str(info.version)
    self.release_notes = dict(info.release_notes or {})
    self.shard_paths = [os.fspath(p) for p in split_info.filepaths]
    self.shard_lengths = [int(n) for n in split_info.shard_lengths]
    self._ends = list(itertools.accumulate(self.shard_lengths))
    if check:
      for path, n in zip(self.shard_paths, self.shard_lengths):
        try:
          check_shard(path, n, verify=verify)
        except TrajectoryDataError as e:
          if self.error is TrajectoryDataError:
            raise
          raise self.error(str(e)) from e
    try:
      self._source = builder.as_data_source(split=self.split)
    except Exception as e:  # pylint: disable=broad-except
      raise self.error(
          f"Cannot open split {self.split!r} of {self.dataset_dir} (shards "
          f"{self.shard_paths}): {type(e).__name__}: {e}") from e
    # The undecoded ArrayRecord source, for the fast path.
    self._raw = (getattr(self._source, "data_source", None)
                 if self._fields is not None else None)
    expected = self._ends[-1] if self._ends else 0
    if len(self._source) != expected:
      raise self.error(
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
      if self._raw is None:  # a feature the fast path does not know
        return _to_python(self._source[index])
      return _parse_example(self._raw[index], self._fields)
    except Exception as e:  # pylint: disable=broad-except
      path, pos = self.shard_of(index)
      raise self.error(
          f"Cannot read record {index} of split {self.split!r}: shard {path} "
          f"(its record {pos}) is truncated or corrupted: "
          f"{type(e).__name__}: {e}") from e

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
    return (f"{type(self).__name__}({self.dataset_dir!r}, split="
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


# ----------------------------------------------------------------------------
# Building the dataset from a stage-1 run.


def save_labels(path: str | os.PathLike, trajs: Sequence[Any],
                labels: Sequence[Sequence[Any]]) -> str:
  """Writes the step labels of a run as JSONL, atomically.

  One line per trajectory, in order: {"trajectory_id": ..., "labels":
  [JudgeResult.to_dict(), ...]} with one label per step. `load_labels` reads
  it back against the run's `trajectories.jsonl`.

  Args:
    path: the output file (conventionally RUN/labels.jsonl).
    trajs: the run's `Trajectory`s.
    labels: labels[j][i], the `JudgeResult` of step i of trajs[j].

  Returns:
    str: `path`.

  Raises:
    ValueError: the labels do not match the trajectories (counts).
  """
  from swirl_jax.rollout import trajectory as traj_lib  # pylint: disable=g-import-not-at-top
  if len(labels) != len(trajs):
    raise ValueError(f"Got labels for {len(labels)} trajectories but "
                     f"{len(trajs)} trajectories.")
  for t, ls in zip(trajs, labels):
    if len(ls) != t.num_steps:
      raise ValueError(f"Trajectory {filters.trajectory_id(t)} has "
                       f"{t.num_steps} steps but {len(ls)} labels.")
  return traj_lib.save_jsonl(path, (
      {"trajectory_id": filters.trajectory_id(t),
       "labels": [l.to_dict() for l in ls]} for t, ls in zip(trajs, labels)))


def load_labels(path: str | os.PathLike, trajs: Sequence[Any]
                ) -> list[list[Any]]:
  """Reads a run's step labels for `trajs`.

  Two line forms are read: {"trajectory_id": ..., "labels": [...]}
  (`save_labels`; matched to `trajs` by id, in any order) and a bare list
  of JudgeResult dicts (`swirl_jax.swirl.synthesis.save_labels`; line j
  labels trajs[j], so the file must have one line per trajectory).

  Args:
    path: the labels JSONL file.
    trajs: the run's trajectories (ids must be unique).

  Returns:
    labels[j]: the list of `JudgeResult`s of trajs[j].

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: naming `path` (and the entry or trajectory id) when an
      entry is malformed, an id repeats, a trajectory has no labels or a
      different number of labels than steps.
  """
  from swirl_jax.judges import base as judge_base  # pylint: disable=g-import-not-at-top
  from swirl_jax.rollout import trajectory as traj_lib  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  rows = traj_lib.load_jsonl(path, dict)
  ids = [filters.trajectory_id(t) for t in trajs]
  if rows and all(isinstance(row, list) for row in rows):
    if len(rows) != len(trajs):
      raise ValueError(f"{path} labels {len(rows)} trajectories by position "
                       f"but the run has {len(trajs)}; is it the labels file "
                       "of the same run?")
    rows = [{"trajectory_id": tid, "labels": row}
            for tid, row in zip(ids, rows)]
  by_id: dict[str, list[Any]] = {}
  for entry, row in enumerate(rows, start=1):
    try:
      tid = str(row["trajectory_id"])
      results = [judge_base.JudgeResult.from_dict(d) for d in row["labels"]]
    except (KeyError, TypeError, ValueError) as e:
      raise ValueError(
          f"{path}: entry {entry} is not {{'trajectory_id': str, 'labels': "
          f"[JudgeResult dicts]}} (nor a list of JudgeResult dicts): "
          f"{type(e).__name__}: {e}") from e
    if tid in by_id:
      raise ValueError(f"{path}: trajectory {tid!r} is labelled twice.")
    by_id[tid] = results
  out = []
  for t, tid in zip(trajs, ids):
    if tid not in by_id:
      raise ValueError(f"{path} has no labels for trajectory {tid!r}; it "
                       f"labels {len(by_id)} trajectories. Is it the labels "
                       "file of the same run?")
    if len(by_id[tid]) != t.num_steps:
      raise ValueError(f"{path}: trajectory {tid!r} has {t.num_steps} steps "
                       f"but {len(by_id[tid])} labels.")
    out.append(by_id[tid])
  return out


def records_from_run(trajs: Sequence[Any], labels: Sequence[Sequence[Any]],
                     filter_strategy: str = filters.PROCESS
                     ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """The sub-trajectory records of the trajectories the filter keeps.

  Args:
    trajs: `Trajectory`s.
    labels: labels[j][i], the `JudgeResult` of step i of trajs[j].
    filter_strategy: one of `filters.FILTERS`.

  Returns:
    (records, statistics): one record per step of every kept trajectory,
    in order, and `filters.filter_statistics`.
  """
  kept = filters.filter_trajectories(trajs, labels, filter_strategy)
  stats = filters.filter_statistics(trajs, labels, kept, filter_strategy)
  kept_ids = {id(t) for t in kept}
  records = [r for t, ls in zip(trajs, labels) if id(t) in kept_ids
             for r in filters.sub_trajectories(t, ls)]
  return records, stats


def build_from_run(trajectories_path: str | os.PathLike,
                   data_dir: str | os.PathLike, *,
                   labels_path: Optional[str | os.PathLike] = None,
                   judge: Any = "rules",
                   filter_strategy: str = filters.PROCESS, shards: int = 1,
                   name: str = NAME, version: str = VERSION,
                   overwrite: bool = False,
                   release_notes: Optional[str] = None) -> dict[str, Any]:
  """Builds the filtered TFDS dataset from a stage-1 run's files.

  The labels come from `labels_path`, else from `labels.jsonl` next to the
  trajectories if there is one, else from `judge` (a `Judge`, or the name
  of a registered judge built without arguments, e.g. 'rules'), which
  labels every step anew.

  Args:
    trajectories_path: the run's `trajectories.jsonl` (`Trajectory` lines).
    data_dir: the TFDS data dir to write name/version/ into.
    labels_path: a `save_labels` file.
    judge: the judge used when there is no labels file.
    filter_strategy: one of `filters.FILTERS` (paper's best: 'process').
    shards: ArrayRecord files (see `prepare_dataset`).
    name / version / overwrite / release_notes: see `prepare_dataset`.

  Returns:
    dict: 'dataset_dir', 'num_records', 'labels_from' (the labels file, or
    'judge:<name>'), 'statistics' (`filters.filter_statistics`).

  Raises:
    FileNotFoundError: naming a missing trajectories or labels file.
    ValueError: malformed files (naming file and line), labels that do not
      match, or a filter that keeps nothing.
  """
  from swirl_jax.rollout import trajectory as traj_lib  # pylint: disable=g-import-not-at-top
  filters.check_filter(filter_strategy)
  trajectories_path = os.fspath(trajectories_path)
  trajs = traj_lib.load_jsonl(trajectories_path)
  if not trajs:
    raise ValueError(f"{trajectories_path} holds no trajectories.")
  ids = collections.Counter(filters.trajectory_id(t) for t in trajs)
  repeated = [tid for tid, n in ids.items() if n > 1]
  if repeated:
    raise ValueError(f"{trajectories_path}: trajectory ids repeat "
                     f"({repeated[:3]}); give one run's trajectories.")
  if labels_path is None:
    sibling = os.path.join(os.path.dirname(os.path.abspath(
        trajectories_path)), LABELS_FILENAME)
    labels_path = sibling if os.path.isfile(sibling) else None
  if labels_path is not None:
    labels = load_labels(labels_path, trajs)
    labels_from = os.fspath(labels_path)
  else:
    if isinstance(judge, str):
      from swirl_jax.judges import get_judge  # pylint: disable=g-import-not-at-top
      judge = get_judge(judge)
    labels = filters.judge_trajectories(trajs, judge)
    judge_name = getattr(judge, "name", "") or type(judge).__name__
    labels_from = f"judge:{judge_name}"
  records, stats = records_from_run(trajs, labels, filter_strategy)
  if not records:
    per_filter = {k: v["trajectories"]
                  for k, v in stats["kept_per_filter"].items()}
    raise ValueError(
        f"The {filter_strategy!r} filter kept none of the {len(trajs)} "
        f"trajectories of {trajectories_path} (labels: {labels_from}; "
        f"trajectories kept per filter: {per_filter}). Use a looser filter.")
  path = prepare_dataset(records, data_dir, name=name, version=version,
                         shards=shards, overwrite=overwrite,
                         release_notes=release_notes)
  return {"dataset_dir": path, "num_records": len(records),
          "labels_from": labels_from, "statistics": stats}


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line of `build_from_run` (and a look at a built dataset)."""
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      prog="python -m swirl_jax.data.trajectories",
      description="Build the SWiRL trajectory dataset (TFDS ArrayRecord) "
                  "from a stage-1 run's trajectories.jsonl, or describe a "
                  "built one.")
  parser.add_argument("--trajectories",
                      help="the run's trajectories.jsonl")
  parser.add_argument("--labels", default=None,
                      help="its labels.jsonl (default: labels.jsonl next to "
                           "--trajectories, else --judge labels the steps)")
  parser.add_argument("--judge", default="rules",
                      help="registered judge used without a labels file")
  parser.add_argument("--filter", default=filters.PROCESS,
                      choices=filters.FILTERS, dest="filter_strategy")
  parser.add_argument("--data_dir", required=True,
                      help="TFDS data dir (the dataset goes to "
                           "DATA_DIR/NAME/VERSION)")
  parser.add_argument("--name", default=NAME)
  parser.add_argument("--version", default=None,
                      help=f"MAJOR.MINOR.PATCH (building: default {VERSION};"
                           " describing: the newest)")
  parser.add_argument("--release_notes", default=None)
  parser.add_argument("--shards", type=int, default=1)
  parser.add_argument("--overwrite", action="store_true")
  parser.add_argument("--describe", action="store_true",
                      help="read the dataset in --data_dir (every record, "
                           "checking every shard) and print a summary")
  args = parser.parse_args(argv)
  if not args.describe and not args.trajectories:
    parser.error("--trajectories is required to build (or pass --describe).")
  try:
    # TFDS prints progress to stdout; stdout carries only the JSON summary.
    with contextlib.redirect_stdout(sys.stderr):
      summary = _run_command(args)
  except (FileNotFoundError, FileExistsError, ValueError) as e:
    # TrajectoryDataError is a ValueError: every message names its file.
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(json.dumps(summary, indent=2, sort_keys=True))
  return 0


def _run_command(args) -> dict[str, Any]:
  """`main`'s work: build (or describe) and summarise."""
  if args.describe:
    source = open_data_source(args.data_dir, name=args.name,
                              version=args.version, verify=True)
    records = list(source)
    summary = {
        "dataset_dir": source.dataset_dir, "version": source.version,
        "num_records": len(records),
        "shards": dict(zip(source.shard_paths, source.shard_lengths)),
        "trajectories": len({r["trajectory_id"] for r in records}),
        "tasks": dict(collections.Counter(r["task"] for r in records)),
        "labels": dict(collections.Counter(r["label"] for r in records)),
        "outcome_rate": (sum(r["outcome"] for r in records) /
                         max(len(records), 1))}
  else:
    summary = build_from_run(
        args.trajectories, args.data_dir, labels_path=args.labels,
        judge=args.judge, filter_strategy=args.filter_strategy,
        shards=args.shards, name=args.name,
        version=args.version or VERSION, overwrite=args.overwrite,
        release_notes=args.release_notes)
    stats = summary.pop("statistics")
    summary["kept"] = stats["kept"]
    summary["kept_per_filter"] = {
        k: v["trajectories"] for k, v in stats["kept_per_filter"].items()}
  return summary


# ----------------------------------------------------------------------------
# SFT on the stored steps.


def step_sft_example(record: Mapping[str, Any]) -> dict[str, Any]:
  """One stored step as an SFT example of `swirl_jax.data.sft`.

  Args:
    record: a sub-trajectory record (fields of `filters.RECORD_FIELDS`).

  Returns:
    {'prompt': [(role, text), ...] the context turns (`filters.
    context_turns`), 'target': the action text}. `sft.tokenize_example`
    encodes it as `tokenizer.encode_chat(prompt, add_generation_prompt=
    True)` (exactly the ids the rollout engine sampled the action after)
    followed by `encode(action) + [<end_of_turn>]`, the only supervised
    tokens.
  """
  return {"prompt": filters.context_turns(record),
          "target": str(record["action"])}


@gin.configurable
def filtered_steps_sft_dataset(
    workdir: str, process_index: int, process_count: int, seed: int, *,
    data_dir: str = gin.REQUIRED, seq_len: int = 512,
    global_batch_size: int = 16, pack: bool = True,
    tokenizer_path: Optional[str] = None, split: str = DEFAULT_SPLIT,
    name: str = NAME, version: Optional[str] = None, verify: bool = False,
    long_prompts: str = "cut_left", num_threads: int = 4,
    prefetch_buffer_size: int = 128, stats: Any = None) -> Any:
  """SFT batches of the stored (filtered) steps: the paper's SFT baseline.

  A `dataset_fn` for `swirl_jax.training.trainer.train`. Each record of the
  TFDS dataset becomes one example (`step_sft_example`: prompt = the context
  turns, chat-formatted as the rollout engine did; target = the action), and
  `swirl_jax.data.pipeline.make_sft_dataset` shuffles (seeded, reshuffled
  every epoch), repeats forever, tokenises in `num_threads` threads, pads or
  first-fit packs to `seq_len` and batches. The loss mask is 1 on the
  action's tokens and its `<end_of_turn>` only. Records are read through the
  TF-free data source (`open_data_source`): a missing, truncated or
  corrupted shard raises `TrajectoryDataError` naming the file when the
  dataset is built (footer and record counts; every record with
  `verify=True`), and when a damaged record is read.

  Args:
    workdir: the training run's workdir (for the default tokenizer, see
      `swirl_jax.data.sources.tokenizer_path_for`).
    process_index: this JAX process (its shard of the records:
      `pipeline.shard_bounds`, remainder dropped).
    process_count: number of JAX processes.
    seed: shuffle seed.
    data_dir: the dataset (stage 1 writes it to its workdir/data), a TFDS
      data dir holding name/version/ or the version directory itself.
    seq_len: L, tokens per row. A step longer than L loses its oldest
      context tokens (BOS kept), as stage 2 cuts the same states
      (`swirl_jax.swirl.stepwise`), so every stored step is trained on;
      counted in `stats` and logged (see `pipeline.make_sft_dataset`).
    global_batch_size: rows per step over all processes.
    pack: first-fit pack several steps per row (else one per row, padded).
    tokenizer_path: the sentencepiece model (None: `tokenizer_path_for
      (workdir)`, which honours its gin binding `path`).
    split / name / version: which stored dataset to read.
    verify: read every record when opening (full checksum check).
    long_prompts: 'cut_left' (above) or 'drop' (a step whose context
      alone has >= L tokens is dropped).
    num_threads / prefetch_buffer_size: grain read-ahead.
    stats: optional `pipeline.TruncationStats`.

  Returns:
    grain.IterDataset whose iterators yield dicts of [b, L] numpy arrays
    ('inputs', 'targets', 'loss_mask', 'positions', 'segment_ids'; b =
    global_batch_size // process_count) and have get_state() / set_state().

  Raises:
    FileNotFoundError: no dataset in `data_dir`, or no tokenizer file.
    TrajectoryDataError: a shard is missing, truncated or corrupted (naming
      it).
    ValueError: bad sizes (see `make_sft_dataset`).
  """
  import grain  # pylint: disable=g-import-not-at-top
  from swirl_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from swirl_jax.data import sources  # pylint: disable=g-import-not-at-top
  from swirl_jax.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  if data_dir is None:
    raise ValueError("filtered_steps_sft_dataset needs data_dir: the "
                     "stage-1 dataset (its workdir/data).")
  source = open_data_source(data_dir, split=split, name=name, version=version,
                            verify=verify)
  path = (sources.tokenizer_path_for(workdir) if tokenizer_path is None
          else sources.tokenizer_path_for(workdir, path=tokenizer_path))
  examples = grain.MapDataset.source(source).map(step_sft_example)
  return pipeline.make_sft_dataset(
      examples, Tokenizer(path), seq_len=seq_len,
      global_batch_size=global_batch_size, seed=seed, pack=pack,
      process_index=process_index, process_count=process_count,
      num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size,
      stats=stats, long_prompts=long_prompts)


if __name__ == "__main__":
  sys.exit(main())
