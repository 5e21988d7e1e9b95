"""TFDS builder of the R3 failure dataset (ArrayRecord shards).

Importing this module imports tensorflow_datasets (not TensorFlow). Import
it only to build; readers use `swirl_jax.data.failures.open_failures`.

Each example is one failed query (`swirl_jax.data.failures.FAILURE_FIELDS`):
the task, the instance (JSON), the prompt, the failed attempt (text, sampled
ids and their log-probabilities), its verdict, and how many answers were
sampled for the query and how many of them were correct. The builder is the
shared `data.record_builder.RecordBuilder` with these fields; the records
come from `records=` or, for the command line, the manual dir's
`<split>.jsonl` files:

    tfds build r3_failures --imports=swirl_jax.data.failure_builder \\
      --manual_dir=RECORDS_DIR --data_dir=DATA_DIR \\
      --file_format=array_record
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from swirl_jax.data import record_builder
from swirl_jax.data import failures


class R3Failures(record_builder.RecordBuilder):
  """Queries the model failed, each with one failed attempt."""

  VERSION = tfds.core.Version(failures.VERSION)
  RELEASE_NOTES = {failures.VERSION: "Initial release."}
  FIELDS = failures.FAILURE_FIELDS
  KIND = failures.FAILURE_KIND
  DEFAULT_SPLIT = failures.DEFAULT_SPLIT
  DESCRIPTION = ("R3 failure dataset: queries on which sampling the model "
                 "failed under the task's binary verifier, with the failed "
                 "attempt to reflect on.")
  HOMEPAGE = "https://arxiv.org/abs/2505.24726"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Write the failure records (swirl_jax.data.failures.FAILURE_FIELDS) as "
      "<split>.jsonl files with swirl_jax.rollout.save_jsonl and pass their "
      "directory as the manual dir.")
