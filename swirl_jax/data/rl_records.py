"""The records an online RL step starts from, as the trainer's dataset.

Online RL (SWiRL stage 2, SCoRe, R3, any recipe on `RLBatchBuilder`) feeds
the trainer lists of record dicts, not token arrays: the stored states of
SWiRL, SCoRe's generated problems, R3's failed queries. The batch builder
(the trainer's `batch_fn`) turns each list into sampled, graded rows.

    dataset_fn = records_dataset_fn(records, global_batch_size=8)
    train(workdir, dataset_fn=dataset_fn, batch_fn=builder, ...)

`records_dataset` is the one grain pipeline behind all of them: each
process reads its own slice (record i goes to process i mod P), records are
shuffled anew every epoch (seeded), repeated forever and batched into lists
of `global_batch_size / P` dicts; the iterator's state is checkpointable,
so a resumed run sees the same records. With `group_by`, every element
holds records of one group (e.g. one task, so a sampler call sees one task
and one batch size), groups taking turns in name order; with `repeat_each`,
every element is yielded that many times in a row (R3's inner updates).
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, Mapping, Optional, Sequence, Union

Records = Sequence[Mapping[str, Any]]


def _record_at(source: Records, indices: Sequence[int], i: int) -> Any:
  return source[int(indices[i])]


def _element_at(batches: Any, repeat_each: int, i: int) -> Any:
  return batches[i // repeat_each]


def records_dataset(source: Records, *, global_batch_size: int, seed: int,
                    process_index: int = 0, process_count: int = 1,
                    group_by: Optional[str] = None, repeat_each: int = 1,
                    what: str = "records"):
  """A grain dataset of lists of records (see the module docstring).

  Args:
    source: random access to the records (a list, a TFDS ArrayRecord data
      source such as `data.trajectories.open_data_source`).
    global_batch_size: records per element, all processes together.
    seed: the shuffle seed (the trainer passes its own).
    process_index / process_count: this process and how many there are.
    group_by: None, or a record field: each element holds records of one
      value of it, the values taking turns in sorted order.
    repeat_each: yield every element this many times in a row (>= 1).
    what: what the records are, for error messages.
  Returns:
    A `grain.IterDataset` of lists of `global_batch_size / process_count`
    record dicts.
  """
  import grain  # pylint: disable=g-import-not-at-top
  if int(global_batch_size) < 1 or global_batch_size % process_count:
    raise ValueError(f"global_batch_size={global_batch_size} must be a "
                     f"positive multiple of process_count={process_count}.")
  if int(repeat_each) < 1:
    raise ValueError(f"repeat_each must be >= 1, got {repeat_each}.")
  if not len(source):  # pylint: disable=g-explicit-length-test
    raise ValueError(f"The dataset of {what} is empty.")
  groups: dict[Any, list[int]] = {None: list(range(len(source)))}
  if group_by is not None:
    groups = {}
    for i in range(len(source)):
      groups.setdefault(source[i][group_by], []).append(i)
  per_group = []
  for name in sorted(groups, key=str):
    indices = groups[name][process_index::process_count]
    if not indices:
      label = "" if name is None else f" with {group_by}={name!r}"
      raise ValueError(f"Process {process_index} of {process_count} gets no "
                       f"{what}{label}: {len(groups[name])} in all.")
    ds = grain.MapDataset.range(len(indices)).map(
        functools.partial(_record_at, source, indices))
    # drop_remainder: an endless dataset has no last batch, and grain's
    # length of an endless batch of 1 overflows without it.
    per_group.append(ds.shuffle(seed=seed).repeat(None).batch(
        global_batch_size // process_count, batch_fn=list,
        drop_remainder=True))
  batches = per_group[0] if len(per_group) == 1 else grain.MapDataset.mix(
      per_group)
  if int(repeat_each) > 1:
    batches = grain.MapDataset.range(0, sys.maxsize).map(
        functools.partial(_element_at, batches, int(repeat_each)))
  return batches.to_iter_dataset()


def records_dataset_fn(records: Union[Records, Callable[[], Records]],
                       **kwargs) -> Callable[..., Any]:
  """A trainer `dataset_fn` over `records` (or a function opening them on
  the process that trains); keyword arguments go to `records_dataset`."""

  def dataset_fn(workdir: str, process_index: int, process_count: int,
                 seed: int):
    del workdir
    source = records() if callable(records) else records
    return records_dataset(source, seed=seed, process_index=process_index,
                           process_count=process_count, **kwargs)

  return dataset_fn
