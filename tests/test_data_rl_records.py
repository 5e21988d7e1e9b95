"""The records pipeline of online RL: slices per process, seeded epochs,
resumable iterators, one group per element, repeated elements."""

import json

import pytest

from swirl_jax.data import rl_records
from swirl_jax.data import demonstrations
from swirl_jax.tasks import get_task


def _take(ds, n):
  it = iter(ds)
  return [next(it) for _ in range(n)]


def _task_records(names, n):
  """n generated problems per task as SCoRe's {'task', 'example'} records."""
  return demonstrations.interleave([
      [{"task": name, "example": ex.to_dict()}
       for ex in get_task(name).generate(n, seed=i, split="train")]
      for i, name in enumerate(names)])


def test_batches_cover_each_epoch_and_resume():
  records = _task_records(("math_small", "code_small"), 5)
  assert len(records) == 10 and records[1]["task"] == "code_small"
  ds = rl_records.records_dataset(records, global_batch_size=5, seed=1)
  epochs = _take(ds, 4)
  assert all(len(b) == 5 and all("example" in r for r in b) for b in epochs)
  ids = [[r["example"]["id"] for r in b[0] + b[1]] for b in
         (epochs[:2], epochs[2:])]
  want = sorted(r["example"]["id"] for r in records)
  assert sorted(ids[0]) == sorted(ids[1]) == want  # every record per epoch
  assert ids[0] != ids[1]  # a new order every epoch
  it = iter(ds)
  next(it)
  state = json.loads(json.dumps(it.get_state()))
  later = [next(it) for _ in range(3)]
  again = iter(ds)
  again.set_state(state)
  assert [next(again) for _ in range(3)] == later


def test_processes_read_disjoint_slices():
  records = [{"i": i} for i in range(12)]
  seen = []
  for p in range(3):
    ds = rl_records.records_dataset(records, global_batch_size=6, seed=0,
                                    process_index=p, process_count=3)
    first = _take(ds, 2)
    assert all(len(b) == 2 for b in first)
    seen.append({r["i"] for b in first for r in b})
    assert seen[-1] == {i for i in range(12) if i % 3 == p}
  with pytest.raises(ValueError, match="positive multiple of process_count"):
    rl_records.records_dataset(records, global_batch_size=4, seed=0,
                               process_count=3)


def test_group_by_and_repeat_each():
  records = [{"task": "b" if i % 3 else "a", "i": i} for i in range(9)]
  ds = rl_records.records_dataset(records, global_batch_size=2, seed=0,
                                  group_by="task", repeat_each=2)
  batches = _take(ds, 8)
  tasks = [{r["task"] for r in b} for b in batches]
  assert [t.pop() for t in tasks] == ["a", "a", "b", "b"] * 2
  assert batches[0] == batches[1] and batches[2] == batches[3]
  assert batches[0] != batches[4] or batches[2] != batches[6]


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="dataset of stored states is empty"):
    rl_records.records_dataset([], global_batch_size=2, seed=0,
                               what="stored states")
  with pytest.raises(ValueError, match="repeat_each must be >= 1"):
    rl_records.records_dataset([{"i": 0}], global_batch_size=1, seed=0,
                               repeat_each=0)
  with pytest.raises(ValueError, match="Process 1 of 2 gets no records with "
                     "task='a'"):
    rl_records.records_dataset([{"task": "a"}, {"task": "b"}, {"task": "b"}],
                               global_batch_size=2, seed=0, process_index=1,
                               process_count=2, group_by="task")


def test_dataset_fn_opens_records_on_the_process():
  opened = []

  def open_records():
    opened.append(1)
    return [{"i": i} for i in range(4)]

  fn = rl_records.records_dataset_fn(open_records, global_batch_size=2)
  assert not opened
  first = _take(fn(workdir="w", process_index=1, process_count=2, seed=3), 2)
  assert opened and [len(b) for b in first] == [1, 1]
  assert {r["i"] for b in first for r in b} == {1, 3}
