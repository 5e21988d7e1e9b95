"""TFDS builder of the R3 failure dataset (ArrayRecord shards).

Importing this module imports tensorflow_datasets (not TensorFlow). Import
it only to build; readers use `swirl_jax.r3.failures.open_failures`.

Each example is one failed query (`swirl_jax.r3.failures.FAILURE_FIELDS`):
the task, the instance (JSON), the prompt, the failed attempt (text, sampled
ids and their log-probabilities), its verdict, and how many answers were
sampled for the query and how many of them were correct. Examples are
stored in the order given (`disable_shuffling`), keyed by position.

The records come from `records=` (a list, split 'train', or a mapping split
-> list) or, for the command line, the manual dir's `<split>.jsonl` files:

    tfds build r3_failures --imports=swirl_jax.r3.failure_builder \\
      --manual_dir=RECORDS_DIR --data_dir=DATA_DIR \\
      --file_format=array_record
"""

from __future__ import annotations

import glob
import os
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow_datasets as tfds

from swirl_jax.r3 import failures
from swirl_jax.rollout import trajectory as traj_lib

Records = Union[Sequence[Mapping[str, Any]],
                Mapping[str, Sequence[Mapping[str, Any]]]]

_TFDS_FEATURES = {
    str: tfds.features.Text,
    int: lambda: tfds.features.Scalar(np.int64),
    "tokens": lambda: tfds.features.Tensor(shape=(None,), dtype=np.int32),
    "logprobs": lambda: tfds.features.Tensor(shape=(None,),
                                             dtype=np.float32),
}


def features() -> tfds.features.FeaturesDict:
  """The TFDS features of a failure record."""
  return tfds.features.FeaturesDict(
      {k: _TFDS_FEATURES[t]() for k, t in failures.FAILURE_FIELDS.items()})


def as_splits(records: Records) -> dict[str, list[Mapping[str, Any]]]:
  """A list of records (split 'train') or a split mapping, each checked."""
  if isinstance(records, Mapping):
    splits = {str(k): list(v) for k, v in records.items()}
  else:
    splits = {failures.DEFAULT_SPLIT: list(records)}
  for split, recs in splits.items():
    if not recs:
      raise ValueError(f"Split {split!r} has no failure records; TFDS "
                       "cannot write an empty split.")
    for i, r in enumerate(recs):
      failures.check_record(r, f"Record {i} of split {split!r}")
  return splits


def _encode(record: Mapping[str, Any]) -> dict[str, Any]:
  out = {}
  for key, kind in failures.FAILURE_FIELDS.items():
    value = record[key]
    if kind == "tokens":
      value = np.asarray(value, np.int32).reshape(-1)
    elif kind == "logprobs":
      value = np.asarray(value, np.float32).reshape(-1)
    out[key] = value
  return out


class R3Failures(tfds.core.GeneratorBasedBuilder):
  """Queries the model failed, each with one failed attempt.

  Args:
    records: the records to write, or None (read the manual dir).
    **kwargs: `GeneratorBasedBuilder` arguments (data_dir, file_format).
  """

  VERSION = tfds.core.Version(failures.VERSION)
  RELEASE_NOTES = {failures.VERSION: "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Write the failure records (swirl_jax.r3.failures.FAILURE_FIELDS) as "
      "<split>.jsonl files with swirl_jax.rollout.save_jsonl and pass their "
      "directory as the manual dir.")

  def __init__(self, *, records: Optional[Records] = None, **kwargs):
    self._records = records
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, features=features(), disable_shuffling=True,
        description=("R3 failure dataset: queries on which sampling the "
                     "model failed under the task's binary verifier, with "
                     "the failed attempt to reflect on."),
        homepage="https://arxiv.org/abs/2505.24726")

  def _split_generators(self, dl_manager):
    if self._records is not None:
      splits = as_splits(self._records)
    else:
      files = sorted(glob.glob(os.path.join(os.fspath(dl_manager.manual_dir),
                                            "*.jsonl")))
      if not files:
        raise FileNotFoundError(
            f"No <split>.jsonl failure records in {dl_manager.manual_dir}.")
      splits = as_splits({os.path.basename(f)[:-len(".jsonl")]:
                          traj_lib.load_jsonl(f, dict) for f in files})
    return {split: self._generate_examples(recs)
            for split, recs in splits.items()}

  def _generate_examples(self, records: Sequence[Mapping[str, Any]]
                         ) -> Iterator[tuple[int, dict[str, Any]]]:
    for i, record in enumerate(records):
      yield i, _encode(record)
