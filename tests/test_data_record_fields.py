"""Record declarations: every field present and of its type, errors that
name the record and the field."""

import numpy as np
import pytest

from swirl_jax.data import record_fields

FIELDS = {"name": str, "count": int, "score": float, "ok": bool,
          "ids": "tokens", "logps": "logprobs"}
GOOD = {"name": "a", "count": 2, "score": 0.5, "ok": True, "ids": [1, 2],
        "logps": np.array([-0.1, -0.2], np.float32)}


def test_good_records_pass():
  record_fields.check_record(GOOD, FIELDS)
  record_fields.check_record(dict(GOOD, score=1, count=np.int64(3)), FIELDS)


@pytest.mark.parametrize("change,message", [
    ({"count": True}, "field 'count' must be a int"),
    ({"count": "2"}, "field 'count' must be a int"),
    ({"score": False}, "field 'score' must be a float"),
    ({"ok": 1}, "field 'ok' must be a bool"),
    ({"ids": [[1], [2]]}, r"field 'ids' must be a tokens \(a flat list\)"),
    ({"logps": "0.1"}, "field 'logps' must be a logprobs"),
])
def test_bad_values_are_named(change, message):
  with pytest.raises(record_fields.RecordFieldError, match=message):
    record_fields.check_record(dict(GOOD, **change), FIELDS, "Record 3")


def test_missing_fields_and_non_dicts():
  record = {k: v for k, v in GOOD.items() if k != "ok"}
  with pytest.raises(ValueError, match=r"Record 0 lacks fields \['ok'\]; "
                     "a thing has"):
    record_fields.check_record(record, FIELDS, "Record 0", "a thing")
  with pytest.raises(TypeError, match="is a list, not a dict"):
    record_fields.check_record([1], FIELDS)
