"""R3's failure dataset as records: its fields, TFDS writer and reader.

One record per query the model failed (`FAILURE_FIELDS`), written as TFDS
ArrayRecord shards by the shared `data.record_builder` (`failure_builder.
R3Failures`) and read back without TensorFlow by `FailureSource`, the
trajectories' `TrajectoryDataSource` with these fields. The GRPO stage is
served by `failures_dataset_fn`. `swirl_jax.r3.failures` samples the model
and builds the dataset.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Mapping, Optional

from swirl_jax.data import record_fields
from swirl_jax.data import trajectories
from swirl_jax.tasks import base

NAME = "r3_failures"
VERSION = "1.0.0"
DEFAULT_SPLIT = "train"

# Field -> type: str, int, or 'tokens' (int32 [T]) / 'logprobs' (float32 [T]).
FAILURE_FIELDS: dict[str, Any] = {
    "failure_id": str,        # f"{task}/{example_id}"
    "task": str,              # the task's registry name
    "example_id": str,
    "example": str,           # JSON of Example.to_dict()
    "prompt": str,            # the first user turn
    "attempt": str,           # the failed attempt's text
    "attempt_tokens": "tokens",      # its sampled ids (stop id included)
    "attempt_logprobs": "logprobs",  # their log-probs under the sampler
    "answer": str,            # the parsed answer ('' if none)
    "category": str,          # the verdict's category (e.g. wrong_numbers)
    "detail": str,            # the verdict's explanation
    "sample_index": int,      # which sample of the query failed (0-based)
    "num_samples": int,       # answers sampled for the query
    "num_correct": int,       # of which correct
}


FAILURE_KIND = "an R3 failure record"


class FailureDataError(ValueError):
  """A failure dataset is missing, truncated or not a failure dataset."""


def check_record(record: Mapping[str, Any], what: str = "Record") -> None:
  """`RecordFieldError` (a ValueError and TypeError) naming the field that
  is wrong (`data.record_fields.check_record`)."""
  record_fields.check_record(record, FAILURE_FIELDS, what, FAILURE_KIND)


def example_of(record: Mapping[str, Any]) -> base.Example:
  """The stored instance of a failure record."""
  return base.Example.from_dict(json.loads(record["example"]))


# ----------------------------------------------------------------------------
# Writing and reading the TFDS dataset.


def prepare_failure_dataset(records, data_dir: str, shards: int = 1,
                            overwrite: bool = False) -> str:
  """Writes failure records as a TFDS ArrayRecord dataset.

  Args:
    records: a list of `FAILURE_FIELDS` records (split 'train') or a
      mapping split -> records.
    data_dir: the TFDS data dir; the dataset goes to data_dir/r3_failures/
      1.0.0/.
    shards: ArrayRecord files per split (at most one per record).
    overwrite: replace an existing dataset.
  Returns:
    The dataset directory.
  """
  from swirl_jax.data import failure_builder  # pylint: disable=g-import-not-at-top
  from swirl_jax.data import record_builder  # pylint: disable=g-import-not-at-top
  return record_builder.write_dataset(failure_builder.R3Failures, records,
                                      data_dir, shards=shards,
                                      overwrite=overwrite)


class FailureSource(trajectories.TrajectoryDataSource):
  """Random access to a split of a failure dataset, as Python dicts:
  `TrajectoryDataSource` (shard checks, pickling as directory and split,
  errors naming the file) with the failure fields (`FAILURE_FIELDS`)
  required and `FailureDataError` raised."""

  required_fields = FAILURE_FIELDS
  kind = "R3 failure"
  error = FailureDataError


def open_failures(data_dir: str, split: str = DEFAULT_SPLIT,
                  version: Optional[str] = None) -> FailureSource:
  """Opens a split of a failure dataset (the dataset dir or its data dir)."""
  try:
    path = trajectories.find_dataset_dir(data_dir, NAME, version)
  except FileNotFoundError as e:
    raise FailureDataError(str(e).replace(
        "swirl_jax.data.trajectories.prepare_dataset",
        "swirl_jax.r3.failures.build_failure_dataset")) from e
  return FailureSource(path, split)


def failures_dataset_fn(data_dir: str, *, global_batch_size: int,
                        repeat_each: int = 1):
  """The trainer dataset_fn of the GRPO stage over the failures in data_dir.

  Each element holds `global_batch_size` (all processes) records of one
  task, tasks taking turns in name order, so that a sampler call sees one
  task and one batch size; `repeat_each` (R3's `inner_updates`) yields
  every element that many times in a row, so the batch sampled at the
  start of a cycle comes from that cycle's element and none is skipped.
  """
  from swirl_jax.data import rl_records  # pylint: disable=g-import-not-at-top
  return rl_records.records_dataset_fn(
      functools.partial(open_failures, data_dir),
      global_batch_size=global_batch_size, group_by="task",
      repeat_each=repeat_each, what="failure records")
