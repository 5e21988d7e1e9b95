"""R3's online GRPO batches: G reflections per failed query, retry rewards.

For each failure record (a query and the model's failed attempt), the
current policy writes G reflections; after each, it retries the task with
the reflection in context; the retry is graded by the task's binary
verifier. Reflection i gets reward r_i = 1 if its retry is correct, else 0,
and advantage A_i = (r_i - mean(r)) / std(r) over the G reflections of the
same query (0 for a group whose rewards are all equal). The training row of
reflection i is its exact sampling context (prompt, failed attempt,
reflection instruction) followed by its sampled ids; only the reflection ids
(and the end-of-turn id that closed them) are in the action mask, so only
they carry gradient: the failed attempt, the instructions and the retry
never do.

    builder = ReflectionBatchBuilder(config, tokenizer, num_reflections=4,
                                     inner_updates=2, cache_dir=...)
    train(..., objective='grpo', batch_fn=builder)

Groups with a learning signal (`queries_per_step`): a group whose G
retries all succeed or all fail has advantages 0 and teaches nothing (only
the KL term and Adam's momentum would move the policy). With a pool of
records larger than `queries_per_step` (the dataset's batch), every record
of the pool gets its G reflections, and the batch keeps `queries_per_step`
groups, those with unequal rewards first (in pool order), then the others
(DAPO's "dynamic sampling", by oversampling instead of resampling, so the
cost of a step is fixed). A pool of exactly `queries_per_step` records
keeps every group: plain GRPO.

Several GRPO updates per batch (`inner_updates` = mu): the batch is sampled
at steps 0, mu, 2 mu, ... with the params of that step, and reused for the
next mu - 1 steps; its 'old_logprobs' are those of the sampling policy, so
the clipped ratio pi / pi_old measures how far the inner updates moved.
Resume determinism: every sampled batch is also written to `cache_dir`
(`rollout_<step>.npz`, atomically, before its first update), so a run
resumed in the middle of a cycle reloads the batch its cycle was sampled
with instead of sampling a different one from the newer params; sampling
randomness derives from (seed, step). With `failures_dataset(repeat_each=
mu)` the records of a cycle come from one dataset element, so no record is
skipped.

'old_logprobs' come from the sampler (`old_logprobs='sampler'`, free: the
sampler returns the log-probabilities of the model's temperature-1
distribution at every sampled id) or from a training-style forward pass of
the current params (`'recompute'`, fused in one jitted call with the
reference pass). With `reference_params`, 'ref_logprobs' are computed once
per sampled batch here instead of at every inner update by the train step.

Several processes: every process calls the builder at each step with its own
(equally many) records; each host samples on its own copy of the params,
every row drawing the randomness of its global index (`row_keyed`); the
old / reference log-probs are one forward over the global batch
(`sharding.host_rows_call`); `queries_per_step` is the global number of
groups, each host keeping queries_per_step / process_count of its own pool;
each host caches its own batch (`rollout_<step>.process<p>of<P>.npz`), and
the hosts reload a cycle's batches only if every one of them has its own
(see docs/tpu_gpu.md).

Retries are sampled at `retry_temperature` (greedy in the CPU default): the
retry is not trained, and decoding it greedily makes a reflection's reward
depend on the reflection, not on sampling noise in the retry. Rows are
right-padded to the batch's longest row rounded up to `length_bucket`
(at most `seq_len`), so a batch of short Countdown episodes does not pay for
the length of function-calling ones (the train step compiles once per
length).
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import os
import time
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from swirl_jax import sharding
from swirl_jax.objectives import shared_prefix
from swirl_jax.objectives.common import check_on_policy_sampling
from swirl_jax.r3 import failures as failures_lib
from swirl_jax.r3 import tasks as r3_tasks
from swirl_jax.tasks import base

log = logging.getLogger(__name__)

OLD_LOGPROB_SOURCES = ("sampler", "recompute")


def reflection_rows(episodes: Sequence[Any], seq_len: int
                    ) -> dict[str, np.ndarray]:
  """Right-padded training rows of reflections, [N, seq_len] each.

  Row i holds `ep.reflection.context_ids + ep.reflection.tokens` as next-token
  pairs (inputs = seq[:-1], targets = seq[1:]). 'action_mask' is 1 exactly
  where the target is a reflection id (its first one at position
  len(context) - 1); 'old_logprobs' holds the sampler's log-probability of
  each reflection id there, 0 elsewhere. A row that does not fit seq_len + 1
  ids, or whose reflection is empty, gets an all-zero mask ('fits' 0): it is
  in the batch but carries no gradient.

  Args:
    episodes: `ReflectionEpisode`s (anything with `.reflection` ModelTurn).
    seq_len: L.
  Returns:
    dict of numpy arrays: 'inputs', 'targets', 'positions', 'segment_ids'
    (int32 [N, L]), 'action_mask', 'loss_mask' (same), 'old_logprobs'
    (float32 [N, L]) and 'fits' (float32 [N]).
  """
  n = len(episodes)
  out = {k: np.zeros((n, seq_len), np.int32) for k in
         ("inputs", "targets", "positions", "segment_ids")}
  mask = np.zeros((n, seq_len), np.float32)
  old = np.zeros((n, seq_len), np.float32)
  fits = np.zeros((n,), np.float32)
  for i, ep in enumerate(episodes):
    ctx, act = list(ep.reflection.context_ids), list(ep.reflection.tokens)
    seq = ctx + act
    m = min(len(seq), seq_len + 1) - 1
    out["inputs"][i, :m] = seq[:m]
    out["targets"][i, :m] = seq[1:m + 1]
    out["segment_ids"][i, :m] = 1
    out["positions"][i, :m] = np.arange(m)
    if act and len(seq) <= seq_len + 1:
      start = len(ctx) - 1
      mask[i, start:start + len(act)] = 1.0
      lp = np.asarray(ep.reflection.logprobs, np.float32)
      if lp.shape != (len(act),):
        raise ValueError(f"Episode {i}: {len(act)} reflection ids but "
                         f"{lp.shape[0]} log-probs.")
      old[i, start:start + len(act)] = lp
      fits[i] = 1.0
  out.update(action_mask=mask, loss_mask=mask.copy(), old_logprobs=old,
             fits=fits)
  return out


def group_advantages(rewards: np.ndarray, group_size: int,
                     valid: Optional[np.ndarray] = None) -> np.ndarray:
  """(r - mean) / std per consecutive group of `group_size` rows: [B] -> [B].

  Uses `swirl_jax.objectives.advantages.group_advantages` (population std;
  a group with std <= 1e-6 gets 0), returned as numpy.

  Args:
    rewards: [B] rewards, B a multiple of group_size, groups contiguous.
    group_size: G.
    valid: optional [B] row validity; invalid rows get 0 and are left out
      of their group's mean and std.
  Returns:
    [B] float32 advantages.
  """
  rewards = np.asarray(rewards, np.float32)
  if group_size < 1 or rewards.shape[0] % group_size:
    raise ValueError(f"{rewards.shape[0]} rewards do not split into groups "
                     f"of group_size={group_size}.")
  groups = np.repeat(np.arange(rewards.shape[0] // group_size), group_size)
  valid = (np.ones_like(rewards) if valid is None
           else np.asarray(valid, np.float32))
  return np.asarray(_jitted_group_advantages()(
      rewards, groups, valid, num_groups=rewards.shape[0] // group_size))


@functools.lru_cache(maxsize=1)
def _jitted_group_advantages():
  """`advantages.group_advantages`, jitted: one dispatch instead of ~20
  eager ops (~5 ms per batch on the CPU)."""
  import jax  # pylint: disable=g-import-not-at-top
  from swirl_jax.objectives import advantages as adv_lib  # pylint: disable=g-import-not-at-top
  return jax.jit(lambda r, g, m, num_groups: adv_lib.group_advantages(
      r, g, num_groups=num_groups, mask=m), static_argnames=("num_groups",))


class TurnTemperatures:
  """A sampler whose i-th `generate` call uses temperatures[i].

  The rollout engine samples every turn at its one temperature; this
  adapter gives each call of an episode batch its own (the last value
  repeats). `reset()` before each batch.

  Args:
    sampler: the wrapped sampler.
    temperatures: per call.
  """

  def __init__(self, sampler: Any, temperatures: Sequence[float]):
    if not temperatures or min(temperatures) < 0:
      raise ValueError(f"temperatures must be >= 0, got {temperatures}.")
    self.sampler = sampler
    self.temperatures = tuple(float(t) for t in temperatures)
    self.calls = 0

  def reset(self) -> None:
    self.calls = 0

  def update_params(self, params: Any) -> None:
    self.sampler.update_params(params)

  def generate(self, prompts_, max_new_tokens, temperature=None, **kwargs):
    del temperature  # replaced by this call's
    t = self.temperatures[min(self.calls, len(self.temperatures) - 1)]
    self.calls += 1
    return self.sampler.generate(prompts_, max_new_tokens, temperature=t,
                                 **kwargs)


class ReflectionBatchBuilder:
  """`batch_fn` of the trainer for R3 (see the module docstring).

  Args:
    config: the policy's TransformerConfig.
    tokenizer: swirl_jax.tokenizer.Tokenizer.
    task_kwargs: per task name, constructor arguments (`r3.tasks.make_task`).
    num_reflections: G, reflections per failed query (>= 2).
    queries_per_step: groups in a training batch (None: every record
      given); records beyond it form the pool the groups with a learning
      signal are chosen from.
    inner_updates: mu, GRPO updates per sampled batch.
    max_new_tokens: budget of a reflection and of a retry.
    temperature / top_p: sampling of the reflections; must be 1.0 / None
      (or 1.0): the reflections are GRPO's on-policy samples, whose
      sampler log-probs (temperature 1) are its old_logprobs, so another
      value is refused with a ValueError (see
      `objectives.common.check_on_policy_sampling`). top_p would also
      filter the retries.
    retry_temperature: sampling of the retries (None: `temperature`). The
      retry carries no gradient; decoding it greedily (0.0) makes its
      reward measure the reflection rather than the noise of sampling the
      retry.
    seq_len: the longest training row (context + reflection).
    length_bucket: rows are padded to the batch's longest, rounded up to a
      multiple of this (None: always seq_len).
    max_context_tokens: the longest chat the rollout engine may build
      (default: the model's max_seq_len).
    seed: base seed; the batch of step s is sampled with (seed, s).
    cache_dir: where sampled batches are kept for resume (None: memory
      only; then a resume in the middle of a cycle samples afresh).
    reference_params: the frozen reference; given, 'ref_logprobs' are
      computed once per sampled batch.
    old_logprobs: 'sampler' or 'recompute'.
    log_path: a JSONL file getting one line of statistics per sampled batch.
    sampler: the sampler to use (default: a KV-cache `Sampler`).
    shared_prefix_bucket: the G rows of a failed query share its context;
      the batch carries it once per group ('prefix_inputs', its length a
      multiple of this), so every forward on the batch (reference, old and
      policy log-probs) computes it once instead of G times (see
      `swirl_jax.objectives.shared_prefix`; same results). 0 turns it off.
    row_keyed: reflection / retry j of global record i draws from the key
      of row i * G + j (`RowKeyedSampler`), so several hosts sample what
      one process would; None (default): on several processes only (one
      process keeps each call's [N, B] draw).
  """

  def __init__(self, config, tokenizer, *,
               task_kwargs: Optional[Mapping[str, Any]] = None,
               num_reflections: int = 4,
               queries_per_step: Optional[int] = None,
               inner_updates: int = 1,
               max_new_tokens: int = 64, temperature: float = 1.0,
               retry_temperature: Optional[float] = None,
               top_p: Optional[float] = None, seq_len: int = 256,
               length_bucket: Optional[int] = 64,
               max_context_tokens: Optional[int] = None, seed: int = 0,
               cache_dir: Optional[str] = None,
               reference_params: Any = None, old_logprobs: str = "sampler",
               log_path: Optional[str] = None, sampler: Any = None,
               shared_prefix_bucket: int = 16,
               row_keyed: Optional[bool] = None):
    check_on_policy_sampling("ReflectionBatchBuilder", temperature=temperature,
                             top_p=top_p)
    if int(num_reflections) < 2:
      raise ValueError(f"num_reflections must be >= 2 for a group baseline, "
                       f"got {num_reflections}.")
    if int(inner_updates) < 1:
      raise ValueError(f"inner_updates must be >= 1, got {inner_updates}.")
    if queries_per_step is not None and int(queries_per_step) < 1:
      raise ValueError(f"queries_per_step must be >= 1 or None, got "
                       f"{queries_per_step}.")
    if old_logprobs not in OLD_LOGPROB_SOURCES:
      raise ValueError(f"old_logprobs must be one of "
                       f"{list(OLD_LOGPROB_SOURCES)}, got {old_logprobs!r}.")
    if int(seq_len) <= int(max_new_tokens):
      raise ValueError(f"seq_len={seq_len} leaves no room for a context "
                       f"beside max_new_tokens={max_new_tokens}.")
    self.config = config
    self.tokenizer = tokenizer
    self.task_kwargs = {k: dict(v) for k, v in (task_kwargs or {}).items()}
    self.num_reflections = int(num_reflections)
    self.queries_per_step = (None if queries_per_step is None
                             else int(queries_per_step))
    self.inner_updates = int(inner_updates)
    self.max_new_tokens = int(max_new_tokens)
    self.temperature = float(temperature)
    self.retry_temperature = (self.temperature if retry_temperature is None
                              else float(retry_temperature))
    self.top_p = top_p
    self.seq_len = int(seq_len)
    self.length_bucket = None if length_bucket is None else int(
        length_bucket)
    self.max_context_tokens = int(max_context_tokens or config.max_seq_len)
    self.seed = int(seed)
    self.cache_dir = cache_dir
    self.reference_params = reference_params
    self.old_logprobs = old_logprobs
    self.log_path = log_path
    if int(shared_prefix_bucket) < 0:
      raise ValueError(f"shared_prefix_bucket must be >= 0, got "
                       f"{shared_prefix_bucket}.")
    self.shared_prefix_bucket = int(shared_prefix_bucket)
    if sampler is None:
      from swirl_jax.sampling import chat_sampler  # pylint: disable=g-import-not-at-top
      sampler = chat_sampler(config, tokenizer,
                             batch_bucket=self.num_reflections)
    self.sampler = sampler
    from swirl_jax.sampling.sampler import RowKeyedSampler  # pylint: disable=g-import-not-at-top
    self._keyed = RowKeyedSampler(
        sampler, enabled=(sharding.is_multiprocess() if row_keyed is None
                          else bool(row_keyed)))
    # Reflections, then retries: the two sampler calls of a
    # run_reflect_retry with given first attempts.
    self._turn_sampler = TurnTemperatures(
        self._keyed, (self.temperature, self.retry_temperature))
    self._engines: dict[str, Any] = {}
    self._tasks: dict[str, base.Task] = {}
    self._logprob_fn = None
    self._cached: Optional[tuple[int, dict[str, np.ndarray]]] = None
    self.last_stats: dict[str, Any] = {}

  # -- pieces ---------------------------------------------------------------

  def _task(self, name: str) -> base.Task:
    if name not in self._tasks:
      self._tasks[name] = r3_tasks.make_task(
          name, **self.task_kwargs.get(name, {}))
    return self._tasks[name]

  def _engine(self, name: str):
    if name not in self._engines:
      from swirl_jax.rollout import RolloutEngine  # pylint: disable=g-import-not-at-top
      self._engines[name] = RolloutEngine(
          self._turn_sampler, self.tokenizer, max_new_tokens=self.max_new_tokens,
          temperature=self.temperature, top_p=self.top_p,
          max_context_tokens=self.max_context_tokens, progress=False,
          tool_workers=1)
    return self._engines[name]

  def cycle_start(self, step: int) -> int:
    """The step whose params sampled the batch used at `step`."""
    return int(step) - int(step) % self.inner_updates

  @staticmethod
  def _cache_suffix() -> str:
    """'' on one process; each process caches its own rows on several."""
    if not sharding.is_multiprocess():
      return ""
    import jax  # pylint: disable=g-import-not-at-top
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

  def _logprobs(self, params_list: Sequence[Any], batch: Mapping[str, Any]
                ) -> list[np.ndarray]:
    """Per-token log-probs of the targets under each params, one jit call."""
    import jax  # pylint: disable=g-import-not-at-top
    from swirl_jax.models.transformer import Transformer  # pylint: disable=g-import-not-at-top
    from swirl_jax.objectives.common import target_logprobs  # pylint: disable=g-import-not-at-top
    if self._logprob_fn is None:
      model = Transformer(self.config)
      self._logprob_fn = jax.jit(
          lambda ps, b: [target_logprobs(model, p, b) for p in ps])
    keys = ("inputs", "targets", "positions", "segment_ids",
            shared_prefix.PREFIX_KEY)
    # One process: the jitted call on the numpy rows. Several: one forward
    # over the global batch, this host's rows back.
    out = sharding.host_rows_call(self._logprob_fn, list(params_list),
                                  {k: batch[k] for k in keys if k in batch})
    return [np.asarray(x) for x in out]

  # -- sampling -------------------------------------------------------------

  def episodes(self, params: Any, records: Sequence[Mapping[str, Any]],
               seed: int) -> list[Any]:
    """G reflection episodes per record, record-major (record order kept).

    Records of the same task go through one `run_reflect_retry` call (two
    sampler calls: reflections, then retries).
    """
    first = sharding.process_row_offset(len(records), "records")
    self.sampler.update_params(params)
    by_task: dict[str, list[int]] = collections.defaultdict(list)
    for i, rec in enumerate(records):
      by_task[rec["task"]].append(i)
    out: list[Optional[list[Any]]] = [None] * len(records)
    for t, (name, idx) in enumerate(sorted(by_task.items())):
      task = self._task(name)
      examples = [failures_lib.example_of(records[i]) for i in idx]
      firsts = [failures_lib.attempt_of(records[i]) for i in idx]
      self._turn_sampler.reset()
      g = self.num_reflections
      with self._keyed.rows([(first + i) * g + j for i in idx
                             for j in range(g)]):
        eps = self._engine(name).run_reflect_retry(
            task, examples, num_reflections=g, first_attempts=firsts,
            seed=base.seed_for(seed, "task", t))
      if self._turn_sampler.calls != 2:
        raise RuntimeError(f"Expected 2 sampler calls (reflections, "
                           f"retries), saw {self._turn_sampler.calls}.")
      if len(eps) != len(idx) * self.num_reflections:
        correct = [records[i]["failure_id"] for i in idx if not any(
            e.example_id == records[i]["example_id"] for e in eps)]
        raise ValueError(f"Stored failures {correct} are graded correct by "
                         f"task {name!r} now; the failure dataset does not "
                         "match the task's verifier.")
      g = self.num_reflections
      for j, i in enumerate(idx):
        out[i] = eps[j * g:(j + 1) * g]
    return [e for group in out for e in group]

  def row_length(self, episodes: Sequence[Any]) -> int:
    """L of a batch: its longest row, rounded up to `length_bucket`."""
    longest = max(len(e.reflection.context_ids) + len(e.reflection.tokens) - 1
                  for e in episodes)
    return sharding.bucketed_row_length(longest, self.length_bucket,
                                        self.seq_len)

  def select_groups(self, rewards: np.ndarray, count: int) -> list[int]:
    """Indices of `count` groups: unequal rewards first, in pool order.

    Args:
      rewards: [P * G] rewards of P groups (record-major).
      count: groups to keep (<= P).
    Returns:
      Sorted group indices.
    """
    flat = np.asarray(rewards).reshape(-1, self.num_reflections)
    if count > flat.shape[0]:
      raise ValueError(f"Cannot keep {count} groups of a pool of "
                       f"{flat.shape[0]} records.")
    signal = flat.std(axis=1) > 0
    order = ([i for i in range(len(flat)) if signal[i]] +
             [i for i in range(len(flat)) if not signal[i]])
    return sorted(order[:count])

  def sample(self, params: Any, records: Sequence[Mapping[str, Any]],
             step: int) -> dict[str, np.ndarray]:
    """Samples and scores a fresh batch for `records` at `step`."""
    if not records:
      raise ValueError("ReflectionBatchBuilder got an empty list of "
                       "failure records.")
    keep = len(records) if self.queries_per_step is None else (
        self.queries_per_step)
    if self.queries_per_step is not None and sharding.is_multiprocess():
      import jax  # pylint: disable=g-import-not-at-top
      if keep % jax.process_count():
        raise ValueError(f"queries_per_step={keep} does not divide over "
                         f"{jax.process_count()} processes; each keeps an "
                         "equal share of the groups.")
      keep //= jax.process_count()
    if keep > len(records):
      raise ValueError(f"queries_per_step={keep} but the dataset gave only "
                       f"{len(records)} records; its batch is the pool and "
                       "must be at least queries_per_step.")
    start = time.perf_counter()
    seed = base.seed_for(self.seed, "r3-grpo", int(step))
    eps = self.episodes(params, records, seed)
    gen_s = time.perf_counter() - start
    g = self.num_reflections
    pool_rewards = np.array([e.reward for e in eps], np.float32)
    chosen = self.select_groups(pool_rewards, keep)
    eps = [e for i in chosen for e in eps[i * g:(i + 1) * g]]
    kept_records = [records[i] for i in chosen]
    rewards = np.array([e.reward for e in eps], np.float32)
    batch = reflection_rows(eps, self.row_length(eps))
    fits = batch.pop("fits")
    # Rows that carry no gradient also leave the group statistics alone.
    batch["advantages"] = group_advantages(rewards, g, valid=fits)
    batch["rewards"] = rewards
    batch["group_ids"] = sharding.global_group_ids(
        np.repeat(np.arange(keep, dtype=np.int32), g))
    if self.shared_prefix_bucket:
      batch = shared_prefix.with_agreed_shared_prefix(
          batch, g, self.shared_prefix_bucket)
    start = time.perf_counter()
    params_list = []
    if self.old_logprobs == "recompute":
      params_list.append(params)
    if self.reference_params is not None:
      params_list.append(self.reference_params)
    if params_list:
      logps = self._logprobs(params_list, batch)
      mask = batch["action_mask"] > 0
      if self.old_logprobs == "recompute":
        batch["old_logprobs"] = np.where(mask, logps.pop(0), 0.0).astype(
            np.float32)
      if self.reference_params is not None:
        batch["ref_logprobs"] = np.where(mask, logps.pop(0), 0.0).astype(
            np.float32)
    logprob_s = time.perf_counter() - start
    self.last_stats = self._stats(step, records, pool_rewards, kept_records,
                                  eps, rewards, fits, gen_s, logprob_s)
    if self.log_path:
      os.makedirs(os.path.dirname(os.path.abspath(self.log_path)),
                  exist_ok=True)
      with open(self.log_path, "a") as f:
        f.write(json.dumps(self.last_stats) + "\n")
    return batch

  def _stats(self, step, pool, pool_rewards, records, eps, rewards, fits,
             gen_s, logprob_s):
    g = self.num_reflections
    per_task: dict[str, list[float]] = collections.defaultdict(list)
    for rec, i in zip(pool, range(0, len(pool_rewards), g)):
      per_task[rec["task"]].extend(pool_rewards[i:i + g].tolist())
    return {
        "step": int(step), "pool": len(pool), "queries": len(records),
        "rows": len(eps),
        # Pool statistics: the policy's retry success before selection.
        "mean_reward": float(pool_rewards.mean()),
        "reward_by_task": {k: float(np.mean(v)) for k, v in per_task.items()},
        "groups_with_signal": float(np.mean(
            pool_rewards.reshape(-1, g).std(axis=1) > 0)),
        # The training batch.
        "batch_mean_reward": float(rewards.mean()),
        "batch_groups_with_signal": float(np.mean(
            rewards.reshape(-1, g).std(axis=1) > 0)),
        "rows_fitting": float(fits.mean()),
        "mean_reflection_tokens": float(np.mean(
            [len(e.reflection.tokens) for e in eps])),
        "retry_categories": dict(collections.Counter(
            e.retry_verdict.category for e in eps)),
        "sample_seconds": round(gen_s, 3),
        "logprob_seconds": round(logprob_s, 3)}

  # -- the trainer's batch_fn -------------------------------------------------

  def __call__(self, params: Any, records: Sequence[Mapping[str, Any]],
               step: int) -> dict[str, np.ndarray]:
    """The training batch of `step` (sampled at the start of its cycle)."""
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
