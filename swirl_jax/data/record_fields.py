"""The one record format of the stored datasets: flat dicts of typed fields.

SWiRL's sub-trajectories (`swirl.filters.RECORD_FIELDS`) and R3's failed
queries (`data.failures.FAILURE_FIELDS`) are both records: a dict whose
fields are declared as {name: type}, with the types

  str, bool, int, float      one value (an int is a valid float);
  'tokens' / 'logprobs'      a flat list of token ids (int32 [T]) / of
                             their log-probabilities (float32 [T]).

`check_record` checks a record against its declaration before it is
stored; `data.record_builder` writes such records as TFDS ArrayRecord
datasets and `data.trajectories.TrajectoryDataSource` reads them back.
Nothing here imports TensorFlow or TFDS.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

Fields = Mapping[str, Any]
SEQUENCE_TYPES = ("tokens", "logprobs")


class RecordFieldError(TypeError, ValueError):
  """A record lacks a declared field or holds a value of the wrong type."""


def _type_name(kind: Any) -> str:
  return kind if isinstance(kind, str) else kind.__name__


def _matches(value: Any, kind: Any) -> bool:
  if kind in SEQUENCE_TYPES:
    return np.ndim(value) == 1 and not isinstance(value, (str, bytes))
  if kind is float:
    return isinstance(value, (int, float, np.integer, np.floating)) and (
        not isinstance(value, (bool, np.bool_)))
  if kind is int:
    return isinstance(value, (int, np.integer)) and (
        not isinstance(value, (bool, np.bool_)))
  return isinstance(value, kind)


def check_record(record: Mapping[str, Any], fields: Fields,
                 where: str = "record", kind: str = "record") -> None:
  """Raises `RecordFieldError` naming the first field that is wrong.

  Args:
    record: the record.
    fields: its declaration {name: type} (see the module docstring).
    where: the record's name in the message ('Record 3 of split train').
    kind: what such a record is ('a sub-trajectory record').
  """
  if not isinstance(record, Mapping):
    raise RecordFieldError(f"{where} is a {type(record).__name__}, not a "
                           "dict.")
  missing = [k for k in fields if k not in record]
  if missing:
    raise RecordFieldError(f"{where} lacks fields {missing}; {kind} has "
                           f"{list(fields)}.")
  for key, typ in fields.items():
    if not _matches(record[key], typ):
      raise RecordFieldError(
          f"{where} field {key!r} must be a {_type_name(typ)}"
          f"{' (a flat list)' if typ in SEQUENCE_TYPES else ''}, got "
          f"{type(record[key]).__name__} {record[key]!r:.80}.")
