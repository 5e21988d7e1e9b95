"""TFDS builder of the SWiRL sub-trajectory dataset (ArrayRecord shards).

Importing this module imports tensorflow_datasets (not TensorFlow) and
registers the builder `swirl_trajectories` with TFDS. Import it only to
build; readers use `swirl_jax.data.trajectories.open_data_source`, which
needs neither this module nor TensorFlow.

Each example is one sub-trajectory record of
`swirl_jax.swirl.filters.sub_trajectories` (fields `RECORD_FIELDS`: strings
as `Text`, ints as int64, the reward as float32, flags as bool). Examples are
stored in the order given (`disable_shuffling`), keyed by their position.

The records come from, in order of preference:

1. `records=` given to the constructor: a list of records (split 'train')
   or a mapping split name -> list of records;
2. `records_path=`: a JSONL file of records (split 'train'), or a directory
   whose `<split>.jsonl` files give the splits;
3. the manual dir (`download_and_prepare(download_config=
   tfds.download.DownloadConfig(manual_dir=DIR))` or `tfds build
   --manual_dir=DIR`), read like a `records_path` directory.

The command-line equivalent of `swirl_jax.data.trajectories.prepare_dataset`
(with the records written to RECORDS_DIR/train.jsonl):

    tfds build swirl_trajectories \\
      --imports=swirl_jax.data.trajectory_builder \\
      --manual_dir=RECORDS_DIR --data_dir=DATA_DIR \\
      --file_format=array_record --num_shards=N
"""

from __future__ import annotations

import functools
import glob
import os
import re
import types
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow_datasets as tfds

from swirl_jax.rollout import trajectory as traj_lib
from swirl_jax.swirl import filters

NAME = "swirl_trajectories"
VERSION = "1.0.0"
RELEASE_NOTES = {
    "1.0.0": ("Initial release: one example per SWiRL sub-trajectory "
              "(context turns as JSON, action, tool call and result, the "
              "process judge's label and reward, the trajectory's outcome)."),
}
DEFAULT_SPLIT = "train"

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")

DESCRIPTION = """\
SWiRL stage-1 data: synthetic multi-step tool-use trajectories, filtered by
a process and/or outcome judge, split into sub-trajectories. Each example is
the context before one action (JSON list of [role, text] turns), the action,
its tool call and result, the judge's GOOD/BAD label and reward, and whether
the trajectory's final answer was correct."""

CITATION = """\
@article{goldie2025swirl,
  title={Synthetic Data Generation \\& Multi-Step RL for Reasoning \\& Tool
         Use},
  author={Goldie, Anna and Mirhoseini, Azalia and Zhou, Hao and Cai, Irene
          and Manning, Christopher D.},
  journal={arXiv preprint arXiv:2504.04736},
  year={2025}
}"""

Records = Union[Sequence[Mapping[str, Any]],
                Mapping[str, Sequence[Mapping[str, Any]]]]


def features() -> tfds.features.FeaturesDict:
  """The TFDS features of a record, from `filters.RECORD_FIELDS`."""
  out = {}
  for key, typ in filters.RECORD_FIELDS.items():
    if typ is str:
      out[key] = tfds.features.Text()
    elif typ is bool:
      out[key] = tfds.features.Scalar(np.bool_)
    elif typ is int:
      out[key] = tfds.features.Scalar(np.int64)
    elif typ is float:
      out[key] = tfds.features.Scalar(np.float32)
    else:
      raise TypeError(f"No TFDS feature for field {key!r} of type {typ}.")
  return tfds.features.FeaturesDict(out)


def read_records_path(path: str) -> dict[str, list[dict[str, Any]]]:
  """Splits of records from a JSONL file ('train') or a directory of them.

  Raises:
    FileNotFoundError: `path` does not exist or holds no `*.jsonl` file.
    ValueError: a line is not valid JSON (naming file and line).
  """
  path = os.fspath(path)
  if os.path.isfile(path):
    return {DEFAULT_SPLIT: traj_lib.load_jsonl(path, dict)}
  if not os.path.isdir(path):
    raise FileNotFoundError(f"No records file or directory {path!r}.")
  files = sorted(glob.glob(os.path.join(path, "*.jsonl")))
  if not files:
    raise FileNotFoundError(
        f"No <split>.jsonl files of sub-trajectory records in {path!r}; write "
        f"them with swirl_jax.rollout.trajectory.save_jsonl (e.g. "
        f"{os.path.join(path, DEFAULT_SPLIT + '.jsonl')}).")
  return {os.path.basename(f)[:-len(".jsonl")]: traj_lib.load_jsonl(f, dict)
          for f in files}


def as_splits(records: Records) -> dict[str, list[Mapping[str, Any]]]:
  """A list of records ('train'), or a split -> records mapping, checked."""
  if isinstance(records, Mapping):
    splits = {str(k): list(v) for k, v in records.items()}
  else:
    splits = {DEFAULT_SPLIT: list(records)}
  if not splits:
    raise ValueError("No splits of records were given.")
  for split, recs in splits.items():
    if not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", split):
      raise ValueError(f"Invalid split name {split!r}: use letters, digits "
                       "and '_' (e.g. 'train').")
    if not recs:
      raise ValueError(f"Split {split!r} has no records; TFDS cannot write "
                       "an empty split.")
    for i, r in enumerate(recs):
      if not isinstance(r, Mapping):
        raise TypeError(f"Record {i} of split {split!r} is a "
                        f"{type(r).__name__}, not a dict.")
      filters.check_record(r, f"Record {i} of split {split!r}")
  return splits


class SwirlTrajectories(tfds.core.GeneratorBasedBuilder):
  """SWiRL sub-trajectories, one example per (context, action) pair.

  Args:
    records: records to write (see the module docstring), or None.
    records_path: a JSONL file or a directory of `<split>.jsonl` files.
    **kwargs: `tfds.core.GeneratorBasedBuilder` arguments (data_dir,
      file_format, ...).
  """

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = RELEASE_NOTES
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Write the sub-trajectory records (swirl_jax.swirl.filters."
      "sub_trajectories) as <split>.jsonl files, e.g. train.jsonl, with "
      "swirl_jax.rollout.trajectory.save_jsonl, and pass their directory as "
      "the manual dir.")

  def __init__(self, *, records: Optional[Records] = None,
               records_path: Optional[str] = None, **kwargs):
    self._records = records
    self._records_path = records_path
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=DESCRIPTION, features=features(),
        disable_shuffling=True, homepage="https://arxiv.org/abs/2504.04736",
        citation=CITATION)

  def _load_splits(self, dl_manager) -> dict[str, list[Mapping[str, Any]]]:
    if self._records is not None:
      return as_splits(self._records)
    if self._records_path is not None:
      return as_splits(read_records_path(self._records_path))
    return as_splits(read_records_path(os.fspath(dl_manager.manual_dir)))

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(records)
            for split, records in self._load_splits(dl_manager).items()}

  def _generate_examples(self, records: Sequence[Mapping[str, Any]]
                         ) -> Iterator[tuple[int, dict[str, Any]]]:
    for i, record in enumerate(records):
      yield i, {key: record[key] for key in filters.RECORD_FIELDS}


@functools.lru_cache(maxsize=None)
def builder_class(name: str = NAME, version: str = VERSION,
                  release_notes: Optional[str] = None
                  ) -> type[SwirlTrajectories]:
  """The builder class writing dataset `name` at `version`.

  `SwirlTrajectories` itself for the defaults; otherwise an unregistered
  subclass with that name and version (release notes: `release_notes`, or
  a note that it extends 1.0.0's format).
  """
  if not isinstance(name, str) or not _NAME_RE.match(name):
    raise ValueError(f"Invalid dataset name {name!r}: use lowercase letters, "
                     "digits and '_', starting with a letter.")
  if not isinstance(version, str) or not _VERSION_RE.match(version):
    raise ValueError(f"Invalid dataset version {version!r}: use "
                     "'MAJOR.MINOR.PATCH', e.g. '1.0.0'.")
  if name == NAME and version == VERSION and release_notes is None:
    return SwirlTrajectories
  notes = dict(RELEASE_NOTES)
  if release_notes is not None or version not in notes:
    notes[version] = release_notes or (
        f"{name} {version}: SWiRL sub-trajectories in the {VERSION} format.")

  def body(ns):
    ns.update(name=name, VERSION=tfds.core.Version(version),
              RELEASE_NOTES=notes, __module__=__name__)

  class_name = "".join(p.capitalize() for p in name.split("_")) or "Dataset"
  return types.new_class(class_name, (SwirlTrajectories,),
                         {"skip_registration": True}, body)
