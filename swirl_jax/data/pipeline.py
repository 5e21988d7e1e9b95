"""Host-side grain pipeline: SFT examples -> padded or packed training batches.

`make_sft_dataset` builds, for one JAX process,

  source[shard] -> shuffle(seed, reshuffled every epoch) -> repeat(num_epochs)
    -> map(tokenize, truncate, shift)            (lazy, in prefetch threads)
    -> pad to seq_len | first-fit pack into rows of seq_len
    -> batch(global_batch_size // process_count)

and yields dicts of numpy arrays, all [b, L] (b = per-process batch size,
L = seq_len) -- the contract with the trainer:

  'inputs'      int32   tokens fed to the model (0 on padding).
  'targets'     int32   the next token of each position within its own
                        sequence (inputs shifted left by one); 0 where there
                        is none (last token of a sequence, padding).
  'loss_mask'   float32 1.0 where targets[t] is a supervised (target /
                        action) token; 0.0 on prompts, padding and the last
                        position of every sequence (the boundary between
                        packed sequences).
  'positions'   int32   position of each token within its own sequence
                        (restarts at 0 for each packed sequence; 0 on padding).
  'segment_ids' int32   1, 2, ... per sequence within a row; 0 on (right)
                        padding. Without packing every row has one segment.

Sharding: process p of P reads only the contiguous slice
`shard_bounds(len(examples), p, P, drop_remainder)` of the examples and
shuffles within it, so no two processes ever read the same example in an
epoch. With `drop_remainder=True` every shard has len // P examples (the last
len % P examples are never read); otherwise shards differ by at most one.

Long sequences: with `long_prompts='cut_left'`, a sequence longer than
seq_len first loses the oldest prompt tokens (BOS is kept, as SWiRL's stage 2
cuts its states, `swirl_jax.swirl.stepwise`) until the whole target fits, the
prompt keeping at least min(its length, seq_len // 2) tokens; this is counted
in `TruncationStats.context_cut`. Then (and always with the default
`long_prompts='drop'`) a sequence still longer than seq_len keeps its first
seq_len tokens (the end of the target is cut, so its `<end_of_turn>` is
lost), counted in `TruncationStats.truncated`. With 'drop', if the prompt
alone has seq_len tokens or more, nothing supervised would remain, so the
example is dropped (`TruncationStats.dropped`). All three are logged (once
each, then on every power of two). Dropping changes the number of batches an
epoch yields; so does packing. With a finite `num_epochs` in multi-process training the
processes may therefore run out after different numbers of steps: train for
a fixed number of steps (the default `num_epochs=None` repeats forever).

Iterator state: `make_iterator(ds).get_state()` is a small dict of ints
(JSON-serialisable; grain's checkpoint handler and orbax can save it) and
`set_state(state)` on a fresh iterator of the same dataset continues with
exactly the batches the original would have produced, in padded and packed
mode, mid-epoch or across epochs.

This module imports numpy and grain only; jax is imported lazily for the
default process index / count, and the tokenizer is passed in.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import (Any, Callable, Dict, Iterator, Mapping, Optional, Sequence,
                    Tuple)

import grain
from grain import experimental as grain_experimental
import numpy as np

from swirl_jax.data import sft

_LOG = logging.getLogger(__name__)

# The batch contract: key -> dtype; every array is [b, L].
BATCH_DTYPES: Dict[str, Any] = {
    "inputs": np.int32,
    "targets": np.int32,
    "loss_mask": np.float32,
    "positions": np.int32,
    "segment_ids": np.int32,
}
_SEQUENCE_KEYS = ("inputs", "targets", "loss_mask")
# What `make_sft_dataset` does with sequences longer than seq_len.
LONG_PROMPTS = ("drop", "cut_left")


def batch_spec(batch_size: int, seq_len: int
               ) -> Dict[str, Tuple[Tuple[int, int], np.dtype]]:
  """Shapes and dtypes of one batch: {key: ((batch_size, seq_len), dtype)}."""
  return {key: ((batch_size, seq_len), np.dtype(dtype))
          for key, dtype in BATCH_DTYPES.items()}


# ----------------------------------------------------------------------------
# Truncation accounting.
# ----------------------------------------------------------------------------


class TruncationStats:
  """Thread-safe counters of what tokenisation did to over-long examples.

  Counts are per tokenisation call, so they include examples read ahead by
  the prefetch buffer and examples re-read after `set_state`; they are for
  monitoring, not exact bookkeeping.

  Attributes:
    examples: examples tokenised.
    truncated: sequences longer than seq_len whose target was cut.
    dropped: examples dropped because the prompt alone filled seq_len.
    context_cut: examples whose oldest prompt tokens were cut
      (`long_prompts='cut_left'`).
  """

  def __init__(self):
    self._lock = threading.Lock()
    self.examples = 0
    self.truncated = 0
    self.dropped = 0
    self.context_cut = 0

  def record(self, *, truncated: bool = False, dropped: bool = False,
             context_cut: bool = False) -> Tuple[int, int, int]:
    """Counts one example; returns (examples, truncated, dropped) after it."""
    with self._lock:
      self.examples += 1
      self.truncated += int(truncated)
      self.dropped += int(dropped)
      self.context_cut += int(context_cut)
      return self.examples, self.truncated, self.dropped

  def as_dict(self) -> Dict[str, int]:
    """Returns {'examples', 'truncated', 'dropped', 'context_cut'} as ints."""
    with self._lock:
      return {"examples": self.examples, "truncated": self.truncated,
              "dropped": self.dropped, "context_cut": self.context_cut}

  def __repr__(self) -> str:
    return f"TruncationStats({self.as_dict()})"


def _is_power_of_two(n: int) -> bool:
  return n > 0 and n & (n - 1) == 0


# ----------------------------------------------------------------------------
# Per-example transforms.
# ----------------------------------------------------------------------------


def pad_features(features: Mapping[str, np.ndarray], seq_len: int
                 ) -> Dict[str, np.ndarray]:
  """Right-pads one sequence's next-token features to seq_len.

  Args:
    features: 'inputs', 'targets' (int [n]) and 'loss_mask' (float [n]),
      n <= seq_len, as made by `sft.to_next_token_features`.
    seq_len: L.

  Returns:
    dict of [L] arrays in the batch format (one segment, id 1; padding has
    segment 0, position 0, token 0 and mask 0).

  Raises:
    ValueError: if n > seq_len.
  """
  n = len(features["inputs"])
  if n > seq_len:
    raise ValueError(f"Sequence of {n} tokens does not fit seq_len={seq_len}; "
                     "truncate it first.")
  out = {}
  for key in _SEQUENCE_KEYS:
    array = np.zeros(seq_len, dtype=BATCH_DTYPES[key])
    array[:n] = features[key]
    out[key] = array
  positions = np.zeros(seq_len, dtype=np.int32)
  positions[:n] = np.arange(n, dtype=np.int32)
  segment_ids = np.zeros(seq_len, dtype=np.int32)
  segment_ids[:n] = 1
  out["positions"] = positions
  out["segment_ids"] = segment_ids
  return out


class _TokenizeExample:
  """(shard index, record) -> next-token features of <= seq_len tokens, or
  None (dropped).

  Runs inside grain's prefetch threads; its only state is the (locked)
  `TruncationStats` and a guard against a shard whose every example is
  dropped (which would make an endless dataset spin forever): it remembers
  which shard indices were dropped until one example is kept.
  """

  def __init__(self, tokenizer, seq_len: int, pad: bool,
               stats: TruncationStats, shard_size: int,
               cut_left: bool = False):
    self._tokenizer = tokenizer
    self._seq_len = seq_len
    self._pad = pad
    self._cut_left = cut_left
    self._stats = stats
    self._shard_size = shard_size
    self._lock = threading.Lock()
    self._kept_any = False
    self._dropped_indices = set()

  def __call__(self, indexed_example: Tuple[int, Mapping[str, Any]]
               ) -> Optional[Dict[str, np.ndarray]]:
    index, example = indexed_example
    seq = sft.tokenize_example(self._tokenizer, example)
    tokens, loss_mask = seq["tokens"], seq["loss_mask"]
    n, seq_len = len(tokens), self._seq_len
    num_context = int(np.argmax(loss_mask > 0)) if loss_mask.any() else n
    context_cut = False
    if self._cut_left and n > seq_len and num_context < n:
      # Keep BOS and the newest context tokens: room for the whole target,
      # but never less than min(num_context, seq_len // 2) of context.
      room = max(seq_len - (n - num_context), min(num_context, seq_len // 2))
      if 1 <= room < num_context:
        keep = np.r_[0, num_context - room + 1:n]
        tokens, loss_mask = tokens[keep], loss_mask[keep]
        n, num_context, context_cut = len(tokens), room, True
    if num_context >= seq_len:
      self._on_drop(index, n, num_context)
      return None
    truncated = n > seq_len
    if truncated:
      tokens, loss_mask = tokens[:seq_len], loss_mask[:seq_len]
    _, num_truncated, _ = self._stats.record(truncated=truncated,
                                             context_cut=context_cut)
    if context_cut:
      num_cut = self._stats.as_dict()["context_cut"]
      if _is_power_of_two(num_cut):
        _LOG.warning(
            "Cut the oldest prompt tokens of an SFT example (BOS kept) to "
            "%d so that it fits seq_len=%d; %d cut so far.", num_context,
            seq_len, num_cut)
    if truncated and _is_power_of_two(num_truncated):
      _LOG.warning(
          "Truncated an SFT example of %d tokens to seq_len=%d (the end of "
          "its target is cut); %d truncated so far.", n, seq_len,
          num_truncated)
    if not self._kept_any:
      with self._lock:
        self._kept_any = True
        self._dropped_indices.clear()
    features = sft.to_next_token_features(tokens, loss_mask)
    return pad_features(features, seq_len) if self._pad else features

  def _on_drop(self, index: int, n: int, num_context: int) -> None:
    _, _, num_dropped = self._stats.record(dropped=True)
    if _is_power_of_two(num_dropped):
      _LOG.warning(
          "Dropped an SFT example whose prompt has %d tokens (>= seq_len=%d, "
          "total %d tokens): no target token would remain; %d dropped so far.",
          num_context, self._seq_len, n, num_dropped)
    with self._lock:
      if self._kept_any:
        return
      self._dropped_indices.add(index)
      hopeless = len(self._dropped_indices) >= self._shard_size
    if hopeless:
      raise ValueError(
          f"All {self._shard_size} examples of this process' shard have "
          f"prompts of >= seq_len={self._seq_len} tokens, so every one is "
          "dropped; raise seq_len or shorten the prompts.")


def _with_index(index: int, example: Any) -> Tuple[int, Any]:
  """Pairs a record with its index in the shard (for `_TokenizeExample`)."""
  return index, example


def _rename_packed(element: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """grain's packed row ('inputs_segment_ids', ...) -> the batch format."""
  out = {key: element[key] for key in _SEQUENCE_KEYS}
  out["positions"] = element["inputs_positions"].astype(np.int32)
  out["segment_ids"] = element["inputs_segment_ids"].astype(np.int32)
  return out


def _make_batch_fn(batch_size: int, seq_len: int
                   ) -> Callable[[Sequence[Mapping[str, np.ndarray]]],
                                 Dict[str, np.ndarray]]:
  """Stacks rows into [batch_size, seq_len]; a short last batch gets all-
  padding rows (segment 0, mask 0) so shapes stay static for jit."""

  def batch_fn(rows):
    out = {}
    for key, dtype in BATCH_DTYPES.items():
      array = np.zeros((batch_size, seq_len), dtype=dtype)
      array[:len(rows)] = np.stack([row[key] for row in rows])
      out[key] = array
    return out

  return batch_fn


# ----------------------------------------------------------------------------
# Sharding.
# ----------------------------------------------------------------------------


def shard_bounds(num_examples: int, process_index: int, process_count: int,
                 drop_remainder: bool = True) -> Tuple[int, int]:
  """The contiguous [start, stop) slice of the examples one process reads.

  Args:
    num_examples: N, length of the whole dataset.
    process_index: p in [0, P).
    process_count: P >= 1.
    drop_remainder: if True every shard has N // P examples and the last
      N % P are read by nobody; if False the first N % P shards get one more.

  Returns:
    (start, stop): the shards of all processes are disjoint.

  Raises:
    ValueError: on a bad index / count, or if the shard would be empty.
  """
  if process_count < 1:
    raise ValueError(f"process_count must be >= 1, got {process_count}.")
  if not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index={process_index} is outside [0, process_count="
        f"{process_count}).")
  base, extra = divmod(num_examples, process_count)
  if drop_remainder:
    start, stop = process_index * base, (process_index + 1) * base
  else:
    start = process_index * base + min(process_index, extra)
    stop = start + base + (1 if process_index < extra else 0)
  if stop <= start:
    raise ValueError(
        f"The dataset has {num_examples} examples, too few for "
        f"process_count={process_count}: process {process_index} would read "
        "none. Use more examples or fewer processes.")
  return start, stop


def _default_process(process_index: Optional[int],
                     process_count: Optional[int]) -> Tuple[int, int]:
  """Fills in jax.process_index() / jax.process_count() where None."""
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    if process_index is None:
      process_index = jax.process_index()
    if process_count is None:
      process_count = jax.process_count()
  return int(process_index), int(process_count)


# ----------------------------------------------------------------------------
# The dataset.
# ----------------------------------------------------------------------------


def make_sft_dataset(
    examples: Any,
    tokenizer,
    *,
    seq_len: int,
    global_batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: Optional[int] = None,
    pack: bool = False,
    process_index: Optional[int] = None,
    process_count: Optional[int] = None,
    drop_remainder: bool = True,
    num_packing_bins: Optional[int] = None,
    stats: Optional[TruncationStats] = None,
    num_threads: int = 4,
    prefetch_buffer_size: int = 128,
    long_prompts: str = "drop",
) -> grain.IterDataset:
  """Builds this process' grain dataset of SFT training batches.

  Args:
    examples: random-access records (`len` and `[i]`): a list of dicts with
      'prompt' and 'target' (or 'turns'), a grain data source such as
      `tfds.data_source(...)`, or a `grain.MapDataset` of such records. Read
      lazily: tokenisation happens per example as batches are drawn.
    tokenizer: a `swirl_jax.tokenizer.Tokenizer`.
    seq_len: L, tokens per row (>= 2).
    global_batch_size: rows per step over all processes; this process yields
      global_batch_size // process_count rows per batch.
    seed: shuffle seed; epoch e uses permutation seed + e, so the order
      differs every epoch and is the same for the same seed.
    shuffle: shuffle within this process' shard (else file order).
    num_epochs: passes over the shard; None repeats forever.
    pack: if True, first-fit pack several sequences per row (grain's
      `FirstFitPackIterDataset`, bins not shuffled); else one per row.
    process_index: this process (default `jax.process_index()`).
    process_count: number of processes (default `jax.process_count()`).
    drop_remainder: drop a last partial batch of a finite dataset (else it is
      filled with all-padding rows to keep [b, L]), and make shards equal
      (see `shard_bounds`).
    num_packing_bins: rows packed together before they are emitted (default
      the per-process batch size); more bins pack tighter.
    stats: optional `TruncationStats` to count truncated / dropped examples.
    num_threads: grain read threads that tokenise ahead of the consumer.
    prefetch_buffer_size: examples tokenised ahead of the consumer.
    long_prompts: what to do with a sequence longer than seq_len: 'drop'
      keeps its start (the end of the target is cut; an example whose
      prompt alone fills seq_len is dropped); 'cut_left' first cuts the
      oldest prompt tokens (BOS kept) so the target fits (see the module
      docstring).

  Returns:
    A `grain.IterDataset` whose iterators yield batches as documented in the
    module docstring ([b, L] numpy arrays, b = global_batch_size //
    process_count).

  Raises:
    ValueError: on an empty dataset or shard, a global batch size that
      process_count does not divide, or other bad arguments (each message
      names the value).
  """
  if not isinstance(seq_len, (int, np.integer)) or seq_len < 2:
    raise ValueError(f"seq_len must be an int >= 2, got {seq_len!r}.")
  if (not isinstance(global_batch_size, (int, np.integer))
      or global_batch_size < 1):
    raise ValueError(
        f"global_batch_size must be a positive int, got "
        f"{global_batch_size!r}.")
  if num_epochs is not None and (not isinstance(num_epochs, (int, np.integer))
                                 or num_epochs < 1):
    raise ValueError(
        f"num_epochs must be a positive int or None (repeat forever), got "
        f"{num_epochs!r}.")
  if not isinstance(seed, (int, np.integer)):
    raise ValueError(f"seed must be an int, got {seed!r}.")
  process_index, process_count = _default_process(process_index,
                                                  process_count)
  if global_batch_size % process_count:
    raise ValueError(
        f"global_batch_size={global_batch_size} is not divisible by "
        f"process_count={process_count}; every process must get the same "
        "number of rows.")
  batch_size = global_batch_size // process_count
  if num_packing_bins is None:
    num_packing_bins = batch_size
  if num_packing_bins < 1:
    raise ValueError(
        f"num_packing_bins must be >= 1, got {num_packing_bins}.")
  if long_prompts not in LONG_PROMPTS:
    raise ValueError(f"long_prompts must be one of {list(LONG_PROMPTS)}, "
                     f"got {long_prompts!r}.")

  if isinstance(examples, grain.MapDataset):
    ds = examples
  else:
    if not (hasattr(examples, "__len__") and hasattr(examples, "__getitem__")):
      raise TypeError(
          f"examples must be random-access (len and [i]), got "
          f"{type(examples).__name__}.")
    ds = grain.MapDataset.source(examples)
  num_examples = len(ds)
  if num_examples == 0:
    raise ValueError("The SFT dataset is empty (0 examples); nothing to "
                     "train on.")
  start, stop = shard_bounds(num_examples, process_index, process_count,
                             drop_remainder)
  ds = ds[start:stop].map_with_index(_with_index)
  if shuffle:
    ds = ds.shuffle(seed=int(seed))
  ds = ds.repeat(num_epochs)
  ds = ds.map(_TokenizeExample(tokenizer, int(seq_len), pad=not pack,
                               stats=stats or TruncationStats(),
                               shard_size=stop - start,
                               cut_left=long_prompts == "cut_left"))
  # Dropped examples are None and are skipped by the prefetch iterator.
  it_ds = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size))
  if pack:
    it_ds = grain_experimental.FirstFitPackIterDataset(
        it_ds,
        length_struct={key: int(seq_len) for key in _SEQUENCE_KEYS},
        num_packing_bins=int(num_packing_bins),
        shuffle_bins=False,
    )
    it_ds = it_ds.map(_rename_packed)
  return it_ds.batch(batch_size, drop_remainder=drop_remainder,
                     batch_fn=_make_batch_fn(batch_size, int(seq_len)))


def make_iterator(dataset: grain.IterDataset,
                  state: Optional[Mapping[str, Any]] = None
                  ) -> grain.DatasetIterator:
  """Returns an iterator over `dataset`, optionally restored to `state`.

  The iterator has `get_state()` -> a JSON-serialisable dict and
  `set_state(state)`; a fresh iterator of the same dataset (same arguments)
  given a saved state yields exactly the batches the saved one would have.

  Args:
    dataset: a dataset from `make_sft_dataset`.
    state: a dict from `get_state()` (e.g. after `json.loads`), or None.

  Returns:
    grain.DatasetIterator yielding batch dicts.
  """
  iterator = iter(dataset)
  if state is not None:
    iterator.set_state(dict(state))
  return iterator


def measure_batches_per_second(iterator: Iterator[Any], n: int,
                               *, warmup: int = 1) -> float:
  """Times `n` batches drawn from `iterator` (after `warmup` untimed ones).

  Args:
    iterator: any batch iterator (e.g. from `make_iterator`).
    n: batches to time (>= 1).
    warmup: batches drawn first and not timed (thread start-up, first reads).

  Returns:
    float: batches per second over the n timed batches.

  Raises:
    ValueError: if n < 1 or the iterator ends before warmup + n batches.
  """
  if n < 1:
    raise ValueError(f"n must be >= 1, got {n}.")
  drawn = 0
  try:
    for _ in range(warmup):
      next(iterator)
      drawn += 1
    start = time.perf_counter()
    for _ in range(n):
      next(iterator)
      drawn += 1
    elapsed = time.perf_counter() - start
  except StopIteration:
    raise ValueError(
        f"The iterator ended after {drawn} batches; warmup={warmup} + n={n} "
        "were requested.") from None
  return n / max(elapsed, 1e-9)
