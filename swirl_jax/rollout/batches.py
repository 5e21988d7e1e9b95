"""One RL batch builder under every recipe: sampled rows -> the train batch.

A recipe's trainer `batch_fn` is an `RLBatchBuilder` subclass that
implements `sample_rows`: the step's `Row`s (token sequences, the `Span`s
that carry loss with the sampler's log-probs, rewards, group keys).

    class MyBuilder(RLBatchBuilder):
      masks = ("action_mask",)
      def sample_rows(self, params, records, step):
        ...                                   # sample, grade
        return [Row(tokens, [Span("action_mask", s, e, logps)],
                    {"rewards": r}, group=i) ...], {"mean_reward": ...}

Batch keys: 'inputs', 'targets', 'positions', 'segment_ids' (int32 [N, L]),
one float32 [N, L] mask per name in `masks` and their union 'loss_mask',
each value key of the rows (float32 [N]), 'group_ids' (int32 [N], unique
over the processes; when rows have group keys); with `advantage`:
'advantages' [N]; with `old_logprobs`: 'old_logprobs' [N, L]; with
`reference_params`: 'ref_logprobs' [N, L]; with `shared_prefix_bucket`:
'prefix_inputs'. L is the batch's longest row rounded up to `length_bucket`
(at most `seq_len`); with `align_prefixes`, L is P + S of
`shared_prefix.align_shared_prefixes` (each group's context padded on the
left to P slots, the rows' own tokens in the S after them).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from typing import Any, Hashable, Mapping, Optional, Sequence

import jax
import numpy as np

from swirl_jax import sharding
from swirl_jax.objectives import advantages as adv_lib
from swirl_jax.objectives import shared_prefix

log = logging.getLogger(__name__)

OLD_LOGPROB_SOURCES = ("sampler", "recompute")


@dataclasses.dataclass
class Span:
  """Tokens of a row that carry loss.

  Attributes:
    mask: the batch mask the span fills ('action_mask', 'attempt1_mask').
    start / end: token positions in `Row.tokens`, end exclusive; the span's
      first token is the target at index start - 1.
    logprobs: the sampler's log-probs of the span's tokens ([end - start]),
      or None (e.g. a re-encoded turn).
  """

  mask: str
  start: int
  end: int
  logprobs: Optional[Sequence[float]] = None


@dataclasses.dataclass
class Row:
  """One training sequence.

  Attributes:
    tokens: the sequence, [T] ids (BOS first).
    spans: the spans that carry loss.
    values: per-row scalars that go into the batch ({'rewards': 1.0}).
    group: rows with equal keys share a group id (their baseline).
    episode: what the row was built from, for the builder's statistics.
  """

  tokens: list[int]
  spans: list[Span]
  values: dict[str, float]
  group: Hashable = None
  episode: Any = None


def rows_to_batch(rows: Sequence[Row], length: int, masks: Sequence[str],
                  drop_overflowing: bool = False) -> dict[str, np.ndarray]:
  """Right-padded next-token arrays of `rows`, [N, length] each.

  Row i holds tokens[:length + 1] as (inputs = seq[:-1], targets = seq[1:]);
  span (s, e) fills its mask at target indices s - 1 .. e - 2 (clipped to
  the row), and 'sampler_logprobs' there with the span's log-probs.

  Args:
    rows: the rows.
    length: L.
    masks: the mask names the spans may use (each an output key).
    drop_overflowing: a row longer than length + 1 tokens keeps no spans
      (all-zero masks; 'valid' 0) instead of clipped ones.
  Raises:
    ValueError: a span names a mask not in `masks`, or its log-probs do not
      match its length.
  Returns:
    'inputs', 'targets', 'positions', 'segment_ids' (int32 [N, L]), each
    mask, 'loss_mask' (their union), 'sampler_logprobs' (float32 [N, L])
    and 'valid' (float32 [N]: 1 where the row has a non-empty span and, with
    drop_overflowing, fits).
  """
  n, shape = len(rows), (len(rows), length)
  out = {k: np.zeros(shape, np.int32)
         for k in ("inputs", "targets", "positions", "segment_ids")}
  mask_arrays = {name: np.zeros(shape, np.float32) for name in masks}
  logp = np.zeros(shape, np.float32)
  valid = np.ones((n,), np.float32)
  for i, row in enumerate(rows):
    seq = list(row.tokens[:length + 1])
    m = len(seq) - 1
    if m < 1:
      continue
    out["inputs"][i, :m] = seq[:-1]
    out["targets"][i, :m] = seq[1:]
    out["positions"][i, :m] = np.arange(m)
    out["segment_ids"][i, :m] = 1
    if not any(span.end > span.start for span in row.spans) or (
        drop_overflowing and len(row.tokens) > length + 1):
      valid[i] = 0.0
      if drop_overflowing:
        continue
    for span in row.spans:
      if span.mask not in mask_arrays:
        raise ValueError(f"Row {i} has a span for mask {span.mask!r}; the "
                         f"builder's masks are {list(masks)}.")
      lo, hi = max(span.start - 1, 0), min(span.end - 1, m)
      if hi <= lo:
        continue
      mask_arrays[span.mask][i, lo:hi] = 1.0
      if span.logprobs is not None:
        lp = np.asarray(span.logprobs, np.float32)
        if lp.shape != (span.end - span.start,):
          raise ValueError(f"Row {i}: span {span.mask} of "
                           f"{span.end - span.start} tokens has "
                           f"{lp.shape[0]} log-probs.")
        logp[i, lo:hi] = lp[:hi - lo]
  out.update(mask_arrays)
  out["loss_mask"] = (functools.reduce(np.maximum, mask_arrays.values())
                      .copy() if mask_arrays else np.zeros(shape, np.float32))
  out["sampler_logprobs"] = logp
  out["valid"] = valid
  return out


def group_advantages(rewards: np.ndarray, groups: Any,
                     valid: Optional[np.ndarray] = None,
                     estimator: str = "grpo") -> np.ndarray:
  """Advantages of grouped rows, jitted, on numpy: [N] -> [N] float32.

  The default, GRPO's, is (r - mean) / std over each group's rows
  (`objectives.advantages.group_advantages`: population std; a group with
  std <= 1e-6 gets 0). Rows with valid 0 get 0 and are left out of their
  group's statistics.

  Args:
    rewards: [N] rewards.
    groups: [N] dense group ids 0 .. num_groups - 1, or an int G: N / G
      contiguous groups of G rows.
    valid: [N] row validity (None: all valid).
    estimator: a name in `objectives.advantages.ADVANTAGE_ESTIMATORS`.
  Raises:
    ValueError: an int `groups` does not divide N, or an unknown estimator.
  """
  fn = adv_lib.ADVANTAGE_ESTIMATORS.get(estimator)
  rewards = np.asarray(rewards, np.float32)
  if isinstance(groups, (int, np.integer)):
    if groups < 1 or rewards.shape[0] % groups:
      raise ValueError(f"{rewards.shape[0]} rewards do not split into "
                       f"groups of group_size={groups}.")
    groups = np.repeat(np.arange(rewards.shape[0] // groups), groups)
  group_ids = np.asarray(groups, np.int32)
  valid = (np.ones_like(rewards) if valid is None
           else np.asarray(valid, np.float32))
  return np.asarray(_jitted_estimator(fn)(
      rewards, group_ids, valid, num_groups=int(group_ids.max()) + 1))


@functools.lru_cache(maxsize=8)
def _jitted_estimator(fn):
  """`fn` in one jitted dispatch (not ~20 eager ops)."""
  return jax.jit(lambda r, g, m, num_groups: fn(
      r, g, num_groups=num_groups, mask=m), static_argnames=("num_groups",))


@functools.lru_cache(maxsize=8)
def logprob_fn(config):
  """A jitted (list of params, batch) -> list of [N, L] target log-probs."""
  from swirl_jax.models.transformer import Transformer  # pylint: disable=g-import-not-at-top
  from swirl_jax.objectives.common import target_logprobs  # pylint: disable=g-import-not-at-top
  model = Transformer(config)
  return jax.jit(lambda ps, b: [target_logprobs(model, p, b) for p in ps])


def select_groups(rewards: np.ndarray, group_size: int, count: int
                  ) -> list[int]:
  """Indices of `count` groups of a pool: unequal rewards first, in order.

  Args:
    rewards: [P * G] rewards of P contiguous groups of G.
    group_size: G.
    count: groups to keep (<= P).
  Returns:
    The sorted indices of the kept groups.
  """
  flat = np.asarray(rewards).reshape(-1, group_size)
  if count > flat.shape[0]:
    raise ValueError(f"Cannot keep {count} groups of a pool of "
                     f"{flat.shape[0]} records.")
  signal = flat.std(axis=1) > 0
  order = ([i for i in range(len(flat)) if signal[i]] +
           [i for i in range(len(flat)) if not signal[i]])
  return sorted(order[:count])


class RLBatchBuilder:
  """The trainer's `batch_fn` for an RL recipe (see the module docstring).

  Before every step the trainer calls `builder(params, records, step)`,
  which returns the batch of the step's `inner_updates` cycle if it has it
  (in memory or in `cache_dir`); otherwise it swaps `params` into the
  sampler, calls `sample_rows`, keeps `groups_per_step` groups, builds the
  arrays (`rows_to_batch`) and the advantages, adds the old and reference
  log-probs in ONE jitted forward over the global batch
  (`sharding.host_rows_call`), and records `last_stats` (and a JSON line in
  `log_path`).

  Subclasses declare `masks` (the span names of their rows), optionally
  `drop_overflowing` (see `rows_to_batch`) and `zero_outside_loss` (old and
  reference log-probs 0 outside 'loss_mask'), and implement `sample_rows`.

  Args:
    config: the policy's TransformerConfig.
    tokenizer: swirl_jax.tokenizer.Tokenizer.
    group_size: G, rows per group (>= 1).
    seq_len: the longest row.
    length_bucket: L's multiple (see the module docstring); None: L =
      seq_len.
    seed: base seed of the recipe's sampling.
    sampler / batch_bucket: the sampler, whose params are swapped in for
      every sampled batch (share one between builders and evaluations to
      share its compiled programs); None makes a `chat_sampler` with batch
      bucket `batch_bucket` (None: G).
    row_keyed: `self.keyed` (a `RowKeyedSampler`) gives every row the
      randomness of its global index, so several hosts sample what one
      process would; None (default): on several processes only.
    reference_params: the frozen reference, for 'ref_logprobs' (None: the
      train step computes them).
    old_logprobs: None, 'sampler' (the sampler's temperature-1 log-probs of
      the sampled ids) or 'recompute' (a training-style forward of the
      sampling params).
    advantage: None (the objective computes advantages) or a name in
      `objectives.advantages.ADVANTAGE_ESTIMATORS` ('grpo'); rows that carry
      no loss ('valid' 0 in `rows_to_batch`) are left out of it.
    groups_per_step: groups kept per batch, over all processes, those whose
      rewards differ first (`select_groups`: DAPO's dynamic sampling, by
      oversampling); None keeps every group.
    shared_prefix_bucket: > 0: the batch carries each group's shared
      context once ('prefix_inputs', a multiple of this long).
    align_prefixes: with `shared_prefix_bucket`, end every group's own
      shared context at one slot (`shared_prefix.align_shared_prefixes`, for
      mixed context lengths) instead of using the shortest group's for all
      (`shared_prefix.with_agreed_shared_prefix`).
    suffix_bucket: with `align_prefixes`, the rows' part after the shared
      slots is a multiple of this long (>= 1).
    inner_updates: mu, train steps per sampled batch (>= 1).
    cache_dir: where sampled batches are kept for an exact resume (None:
      memory only).
    log_path: a JSONL file getting `last_stats` of every sampled batch.
  Raises:
    ValueError: a setting out of range, an unknown `old_logprobs` or
      `advantage`.
  """

  masks: tuple[str, ...] = ("action_mask",)
  drop_overflowing: bool = False
  zero_outside_loss: bool = False

  def __init__(self, config, tokenizer, *, group_size: int, seq_len: int,
               length_bucket: Optional[int] = None, seed: int = 0,
               sampler: Any = None, batch_bucket: Optional[int] = None,
               row_keyed: Optional[bool] = None,
               reference_params: Any = None,
               old_logprobs: Optional[str] = None,
               advantage: Optional[str] = None,
               groups_per_step: Optional[int] = None,
               shared_prefix_bucket: int = 0, align_prefixes: bool = False,
               suffix_bucket: int = 16, inner_updates: int = 1,
               cache_dir: Optional[str] = None,
               log_path: Optional[str] = None):
    name = type(self).__name__
    if int(group_size) < 1:
      raise ValueError(f"{name}: group_size must be >= 1, got {group_size}.")
    if old_logprobs is not None and old_logprobs not in OLD_LOGPROB_SOURCES:
      raise ValueError(f"old_logprobs must be one of "
                       f"{list(OLD_LOGPROB_SOURCES)}, got {old_logprobs!r}.")
    if advantage is not None:
      adv_lib.ADVANTAGE_ESTIMATORS.get(advantage)  # an unknown name raises
    if groups_per_step is not None and int(groups_per_step) < 1:
      raise ValueError(f"groups_per_step must be >= 1 or None, got "
                       f"{groups_per_step}.")
    for arg, value, low in (("shared_prefix_bucket", shared_prefix_bucket, 0),
                            ("inner_updates", inner_updates, 1),
                            ("suffix_bucket", suffix_bucket, 1)):
      if int(value) < low:
        raise ValueError(f"{arg} must be >= {low}, got {value}.")
    self.config = config
    self.tokenizer = tokenizer
    self.group_size = int(group_size)
    self.seq_len = int(seq_len)
    self.length_bucket = None if length_bucket is None else int(length_bucket)
    self.seed = int(seed)
    if sampler is None:
      from swirl_jax.sampling import chat_sampler  # pylint: disable=g-import-not-at-top
      sampler = chat_sampler(config, tokenizer, batch_bucket=(
          self.group_size if batch_bucket is None else batch_bucket))
    from swirl_jax.sampling.sampler import RowKeyedSampler  # pylint: disable=g-import-not-at-top
    self.sampler = sampler
    self.keyed = RowKeyedSampler(sampler, enabled=(
        sharding.is_multiprocess() if row_keyed is None else bool(row_keyed)))
    self.reference_params = reference_params
    self.old_logprobs = old_logprobs
    self.advantage = advantage
    self.groups_per_step = (None if groups_per_step is None
                            else int(groups_per_step))
    self.shared_prefix_bucket = int(shared_prefix_bucket)
    self.align_prefixes = bool(align_prefixes)
    self.suffix_bucket = int(suffix_bucket)
    self.inner_updates = int(inner_updates)
    self.cache_dir = cache_dir
    self.log_path = log_path
    self.engines: dict[Any, Any] = {}
    self._cached: Optional[tuple[int, dict[str, np.ndarray]]] = None
    self.last_stats: dict[str, Any] = {}

  # -- what a recipe declares ------------------------------------------------

  def sample_rows(self, params: Any, records: Sequence[Mapping[str, Any]],
                  step: int) -> tuple[list[Row], dict[str, Any]]:
    """The step's rows, group-major, and statistics of the sampled pool."""
    raise NotImplementedError

  def batch_stats(self, batch: dict[str, np.ndarray], rows: Sequence[Row],
                  stats: dict[str, Any]) -> dict[str, Any]:
    """Statistics of the final batch (may add keys such as 'beta2')."""
    del batch, rows
    return stats

  # -- shared pieces ----------------------------------------------------------

  def engine(self, key: Any = None, **kwargs):
    """The rollout engine on `self.keyed` (one per key, made on first use)."""
    if key not in self.engines:
      from swirl_jax.rollout.engine import RolloutEngine  # pylint: disable=g-import-not-at-top
      self.engines[key] = RolloutEngine(self.keyed, self.tokenizer,
                                        progress=False, **kwargs)
    return self.engines[key]

  def row_length(self, rows: Sequence[Row]) -> int:
    """L of a batch: its longest row, rounded up to `length_bucket`."""
    return sharding.bucketed_row_length(
        max(len(r.tokens) for r in rows) - 1, self.length_bucket,
        self.seq_len)

  def _groups_kept(self, pool: int) -> Optional[int]:
    """Groups this process keeps of a pool of `pool` (one per record)."""
    if self.groups_per_step is None:
      return None
    keep = self.groups_per_step
    if sharding.is_multiprocess():
      if keep % jax.process_count():
        raise ValueError(f"groups_per_step={keep} does not divide over "
                         f"{jax.process_count()} processes; each keeps an "
                         "equal share of the groups.")
      keep //= jax.process_count()
    if keep > pool:
      raise ValueError(f"groups_per_step={keep} but the dataset gave only "
                       f"{pool} records; its batch is the pool and must be "
                       "at least groups_per_step.")
    return keep

  def _logprobs(self, params: Any, batch: dict[str, np.ndarray]) -> float:
    """Adds 'old_logprobs' / 'ref_logprobs'; returns the seconds taken."""
    start = time.perf_counter()
    sampled = batch.pop("sampler_logprobs")
    if self.old_logprobs == "sampler":
      batch["old_logprobs"] = sampled
    forwards = {}  # batch key -> the params whose log-probs fill it
    if self.old_logprobs == "recompute":
      forwards["old_logprobs"] = params
    if self.reference_params is not None:
      forwards["ref_logprobs"] = self.reference_params
    if not forwards:
      return 0.0
    keys = ("inputs", "targets", "positions", "segment_ids",
            shared_prefix.PREFIX_KEY)
    # One process: the jitted call on the numpy rows. Several: one forward
    # over the global batch, this host's rows back.
    logps = sharding.host_rows_call(
        logprob_fn(self.config), list(forwards.values()),
        {k: batch[k] for k in keys if k in batch})
    mask = batch["loss_mask"] > 0
    for key, x in zip(forwards, logps):
      x = np.asarray(x, np.float32)
      batch[key] = (np.where(mask, x, 0.0).astype(np.float32)
                    if self.zero_outside_loss else x)
    return time.perf_counter() - start

  def sample(self, params: Any, records: Sequence[Mapping[str, Any]],
             step: int) -> dict[str, np.ndarray]:
    """Samples, grades and assembles a fresh batch for `records` at `step`."""
    if not records:
      raise ValueError(f"{type(self).__name__} got an empty batch of "
                       "records.")
    keep = self._groups_kept(len(records))
    start = time.perf_counter()
    self.sampler.update_params(params)
    rows, stats = self.sample_rows(params, records, int(step))
    sample_s = time.perf_counter() - start
    if keep is not None:  # groups are contiguous runs of group_size rows
      g = self.group_size
      rows = [r for i in select_groups([r.values["rewards"] for r in rows],
                                       g, keep)
              for r in rows[i * g:(i + 1) * g]]
    batch = rows_to_batch(rows, self.row_length(rows), self.masks,
                          self.drop_overflowing)
    valid = batch.pop("valid")
    for key in dict.fromkeys(k for r in rows for k in r.values):
      batch[key] = np.array([r.values[key] for r in rows], np.float32)
    groups = {key: i for i, key in enumerate(dict.fromkeys(
        r.group for r in rows))}
    local_ids = np.array([groups[r.group] for r in rows], np.int32)
    if self.advantage is not None:
      # Rows that carry no gradient also leave the group statistics alone.
      batch["advantages"] = group_advantages(
          batch["rewards"], local_ids, valid=valid, estimator=self.advantage)
    if any(r.group is not None for r in rows):
      batch["group_ids"] = sharding.global_group_ids(local_ids)
    if self.shared_prefix_bucket and self.align_prefixes:
      batch = shared_prefix.align_shared_prefixes(
          batch, self.group_size, self.shared_prefix_bucket,
          self.suffix_bucket)
    elif self.shared_prefix_bucket:
      batch = shared_prefix.with_agreed_shared_prefix(
          batch, self.group_size, self.shared_prefix_bucket)
    sampled = batch["sampler_logprobs"]
    logprob_s = self._logprobs(params, batch)
    stats = dict(stats, _valid=valid, _sample_s=sample_s,
                 _logprob_s=logprob_s, _sampler_logprobs=sampled)
    self.last_stats = self.batch_stats(batch, rows, stats)
    for k in [k for k in self.last_stats if k.startswith("_")]:
      del self.last_stats[k]
    if self.log_path:
      os.makedirs(os.path.dirname(os.path.abspath(self.log_path)),
                  exist_ok=True)
      with open(self.log_path, "a") as f:
        f.write(json.dumps(self.last_stats) + "\n")
    return batch

  # -- the cycle cache (inner_updates) ----------------------------------------

  def cycle_start(self, step: int) -> int:
    """The step whose params sampled the batch used at `step`."""
    return int(step) - int(step) % self.inner_updates

  @staticmethod
  def _cache_suffix() -> str:
    """'' on one process; each process caches its own rows on several."""
    if not sharding.is_multiprocess():
      return ""
    return f".process{jax.process_index()}of{jax.process_count()}"

  def _cache_path(self, step: int) -> Optional[str]:
    if not self.cache_dir:
      return None
    return os.path.join(self.cache_dir,
                        f"rollout_{int(step):08d}{self._cache_suffix()}.npz")

  def _save(self, step: int, batch: dict[str, np.ndarray]) -> None:
    path = self._cache_path(step)
    if path is None:
      return
    os.makedirs(self.cache_dir, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, **batch)
    os.replace(tmp, path)
    suffix = self._cache_suffix() + ".npz"
    for name in os.listdir(self.cache_dir):  # keep only this cycle's batch
      mine = name.endswith(suffix) and (bool(self._cache_suffix()) or
                                        ".process" not in name)
      if (name.startswith("rollout_") and mine and
          os.path.join(self.cache_dir, name) != path):
        os.remove(os.path.join(self.cache_dir, name))

  def _load(self, step: int) -> Optional[dict[str, np.ndarray]]:
    path = self._cache_path(step)
    if path is None or not os.path.exists(path):
      return None
    with np.load(path) as data:
      return {k: data[k] for k in data.files}

  def __call__(self, params: Any, records: Sequence[Mapping[str, Any]],
               step: int) -> dict[str, np.ndarray]:
    """The training batch of `step` (sampled at the start of its cycle)."""
    if self.inner_updates == 1 and not self.cache_dir:
      return self.sample(params, records, step)
    start = self.cycle_start(step)
    if self._cached is not None and self._cached[0] == start:
      return dict(self._cached[1])
    batch = self._load(start)
    if sharding.is_multiprocess() and not sharding.agreed_minimum(
        int(batch is not None)):
      batch = None  # some host has no stored batch: every host resamples
    if batch is None:
      if start != step:
        log.warning("No stored batch of step %d for step %d (cache_dir=%s); "
                    "sampling a new one with the current params.", start,
                    step, self.cache_dir)
      batch = self.sample(params, records, step)
      self._save(start, batch)
    self._cached = (start, batch)
    return dict(batch)

  def close(self) -> None:
    """Shuts the rollout engines' thread pools down."""
    for engine in self.engines.values():
      engine.close()
