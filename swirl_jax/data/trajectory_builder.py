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
import re
import types
from typing import Any, Mapping, Optional

import tensorflow_datasets as tfds

from swirl_jax.data import record_builder
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

Records = record_builder.Records


def features() -> tfds.features.FeaturesDict:
  """The TFDS features of a record, from `filters.RECORD_FIELDS`."""
  return record_builder.features(filters.RECORD_FIELDS)


def read_records_path(path: str) -> dict[str, list[dict[str, Any]]]:
  """Splits of records from a JSONL file ('train') or a directory of them
  (`record_builder.read_records_path`)."""
  return record_builder.read_records_path(path, DEFAULT_SPLIT)


def as_splits(records: Records) -> dict[str, list[Mapping[str, Any]]]:
  """A list of records ('train'), or a split -> records mapping, checked."""
  return record_builder.as_splits(records, filters.RECORD_FIELDS,
                                  DEFAULT_SPLIT, filters.RECORD_KIND)


class SwirlTrajectories(record_builder.RecordBuilder):
  """SWiRL sub-trajectories, one example per (context, action) pair
  (`record_builder.RecordBuilder` with the fields of
  `filters.RECORD_FIELDS`)."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = RELEASE_NOTES
  FIELDS = filters.RECORD_FIELDS
  KIND = filters.RECORD_KIND
  DEFAULT_SPLIT = DEFAULT_SPLIT
  DESCRIPTION = DESCRIPTION
  HOMEPAGE = "https://arxiv.org/abs/2504.04736"
  CITATION = CITATION
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Write the sub-trajectory records (swirl_jax.swirl.filters."
      "sub_trajectories) as <split>.jsonl files, e.g. train.jsonl, with "
      "swirl_jax.rollout.trajectory.save_jsonl, and pass their directory as "
      "the manual dir.")


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
