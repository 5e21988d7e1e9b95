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

    builder = ReflectionBatchBuilder(config, tokenizer, group_size=4,
                                     inner_updates=2, cache_dir=...)
    train(..., objective='grpo', batch_fn=builder)

Groups with a learning signal (`groups_per_step`): a group whose G
retries all succeed or all fail has advantages 0 and teaches nothing (only
the KL term and Adam's momentum would move the policy). With a pool of
records larger than `groups_per_step` (the dataset's batch), every record
of the pool gets its G reflections, and the batch keeps `groups_per_step`
groups, those with unequal rewards first (in pool order), then the others
(DAPO's "dynamic sampling", by oversampling instead of resampling, so the
cost of a step is fixed). A pool of exactly `groups_per_step` records
keeps every group: plain GRPO.

Several GRPO updates per batch (`inner_updates` = mu): the batch is sampled
at steps 0, mu, 2 mu, ... with the params of that step, and reused for the
next mu - 1 steps; its 'old_logprobs' are those of the sampling policy, so
the clipped ratio pi / pi_old measures how far the inner updates moved.
Resume determinism: every sampled batch is also written to `cache_dir`
(`rollout_<step>.npz`, atomically, before its first update), so a run
resumed in the middle of a cycle reloads the batch its cycle was sampled
with instead of sampling a different one from the newer params; sampling
randomness derives from (seed, step). With `failures_dataset_fn(repeat_each=
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
(`sharding.host_rows_call`); `groups_per_step` is the global number of
groups, each host keeping groups_per_step / process_count of its own pool;
each host caches its own batch (`rollout_<step>.process<p>of<P>.npz`), and
the hosts reload a cycle's batches only if every one of them has its own
(see docs/tpu_gpu.md).

Retries are sampled at `retry_temperature` (greedy in the CPU default): the
retry is not trained, and decoding it greedily makes a reflection's reward
depend on the reflection, not on sampling noise in the retry. Rows are
right-padded to the batch's longest row rounded up to `length_bucket`
(at most `seq_len`), so a batch of short Countdown episodes does not pay for
the length of function-calling ones (the train step compiles once per
length). Everything after the sampling (rows, group selection, advantages,
old and reference log-probs, the cycle cache, the statistics' log) is
`rollout.batches.RLBatchBuilder`.
"""

from __future__ import annotations

import collections
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from swirl_jax import sharding
from swirl_jax.objectives.common import check_on_policy_sampling
from swirl_jax.data import failures as failure_records
from swirl_jax.r3 import failures as failures_lib
from swirl_jax.tasks import compact
from swirl_jax.rollout import batches as rl_batches
from swirl_jax.rollout.batches import RLBatchBuilder, Row, Span
from swirl_jax.tasks import base

OLD_LOGPROB_SOURCES = rl_batches.OLD_LOGPROB_SOURCES


def reflection_row(episode: Any, group: Any = None) -> Row:
  """The row of a reflection: its exact sampling context, then its ids,
  the ids (and the end-of-turn id that closed them) spanned with their
  sampler log-probs; 'rewards' the retry's reward."""
  ctx, act = (list(episode.reflection.context_ids),
              list(episode.reflection.tokens))
  return Row(ctx + act, [Span("action_mask", len(ctx), len(ctx) + len(act),
                              list(episode.reflection.logprobs))],
             {"rewards": float(episode.reward)}, group, episode)


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
  batch = rl_batches.rows_to_batch([reflection_row(e) for e in episodes],
                                   seq_len, ReflectionBatchBuilder.masks,
                                   drop_overflowing=True)
  batch["old_logprobs"] = batch.pop("sampler_logprobs")
  batch["fits"] = batch.pop("valid")
  return batch


class ReflectionBatchBuilder(RLBatchBuilder):
  """`batch_fn` of the trainer for R3 (see the module docstring).

  Args:
    config: the policy's TransformerConfig.
    tokenizer: swirl_jax.tokenizer.Tokenizer.
    task_kwargs: per task name, constructor arguments (`tasks.compact.make_task`).
    group_size: G, reflections per failed query (>= 2).
    groups_per_step: groups in a training batch (None: every record
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

  masks = ("action_mask",)
  drop_overflowing = True
  zero_outside_loss = True

  def __init__(self, config, tokenizer, *,
               task_kwargs: Optional[Mapping[str, Any]] = None,
               group_size: int = 4,
               groups_per_step: Optional[int] = None,
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
    if int(group_size) < 2:
      raise ValueError(f"group_size must be >= 2 for a group baseline, "
                       f"got {group_size}.")
    if old_logprobs not in OLD_LOGPROB_SOURCES:
      raise ValueError(f"old_logprobs must be one of "
                       f"{list(OLD_LOGPROB_SOURCES)}, got {old_logprobs!r}.")
    if int(seq_len) <= int(max_new_tokens):
      raise ValueError(f"seq_len={seq_len} leaves no room for a context "
                       f"beside max_new_tokens={max_new_tokens}.")
    if retry_temperature is not None and retry_temperature < 0:
      raise ValueError(f"retry_temperature must be >= 0, got "
                       f"{retry_temperature}.")
    super().__init__(
        config, tokenizer, group_size=group_size, seq_len=seq_len,
        length_bucket=length_bucket, seed=seed, sampler=sampler,
        row_keyed=row_keyed, reference_params=reference_params,
        old_logprobs=old_logprobs, advantage="grpo",
        groups_per_step=groups_per_step,
        shared_prefix_bucket=shared_prefix_bucket,
        inner_updates=inner_updates, cache_dir=cache_dir, log_path=log_path)
    self.task_kwargs = {k: dict(v) for k, v in (task_kwargs or {}).items()}
    self.max_new_tokens = int(max_new_tokens)
    self.temperature = float(temperature)
    self.retry_temperature = (self.temperature if retry_temperature is None
                              else float(retry_temperature))
    self.top_p = top_p
    self.max_context_tokens = int(max_context_tokens or config.max_seq_len)
    self._tasks: dict[str, base.Task] = {}

  def _task(self, name: str) -> base.Task:
    if name not in self._tasks:
      self._tasks[name] = compact.make_task(
          name, **self.task_kwargs.get(name, {}))
    return self._tasks[name]

  def episodes(self, params: Any, records: Sequence[Mapping[str, Any]],
               seed: int) -> list[Any]:
    """G reflection episodes per record, record-major (record order kept).

    Records of the same task go through one `run_reflect_retry` call (two
    sampler calls: reflections, then retries at `retry_temperature`).
    """
    self.sampler.update_params(params)
    return self._episodes(records, seed)

  def _episodes(self, records: Sequence[Mapping[str, Any]], seed: int
                ) -> list[Any]:
    """`episodes` with the sampler's current params."""
    first = sharding.process_row_offset(len(records), "records")
    by_task: dict[str, list[int]] = collections.defaultdict(list)
    for i, rec in enumerate(records):
      by_task[rec["task"]].append(i)
    out: list[Optional[list[Any]]] = [None] * len(records)
    g = self.group_size
    for t, (name, idx) in enumerate(sorted(by_task.items())):
      task = self._task(name)
      engine = self.engine(
          name, max_new_tokens=self.max_new_tokens,
          temperature=self.temperature, top_p=self.top_p,
          max_context_tokens=self.max_context_tokens, tool_workers=1)
      with self.keyed.rows([(first + i) * g + j for i in idx
                            for j in range(g)]):
        eps = engine.run_reflect_retry(
            task, [failure_records.example_of(records[i]) for i in idx],
            group_size=g,
            first_attempts=[failures_lib.attempt_of(records[i]) for i in idx],
            seed=base.seed_for(seed, "task", t),
            retry_temperature=self.retry_temperature)
      if len(eps) != len(idx) * g:
        correct = [records[i]["failure_id"] for i in idx if not any(
            e.example_id == records[i]["example_id"] for e in eps)]
        raise ValueError(f"Stored failures {correct} are graded correct by "
                         f"task {name!r} now; the failure dataset does not "
                         "match the task's verifier.")
      for j, i in enumerate(idx):
        out[i] = eps[j * g:(j + 1) * g]
    return [e for group in out for e in group]

  def select_groups(self, rewards: np.ndarray, count: int) -> list[int]:
    """Indices of `count` groups of G: unequal rewards first, in pool
    order (`rollout.batches.select_groups`)."""
    return rl_batches.select_groups(rewards, self.group_size, count)

  def sample_rows(self, params: Any, records: Sequence[Mapping[str, Any]],
                  step: int) -> tuple[list[Row], dict[str, Any]]:
    g = self.group_size
    del params  # in the sampler already
    eps = self._episodes(records,
                         base.seed_for(self.seed, "r3-grpo", int(step)))
    pool = np.array([e.reward for e in eps], np.float32)
    per_task: dict[str, list[float]] = collections.defaultdict(list)
    for i, rec in enumerate(records):
      per_task[rec["task"]].extend(pool[i * g:(i + 1) * g].tolist())
    return [reflection_row(e, i // g) for i, e in enumerate(eps)], {
        "step": int(step), "pool": len(records),
        # Pool statistics: the policy's retry success before selection.
        "mean_reward": float(pool.mean()),
        "reward_by_task": {k: float(np.mean(v)) for k, v in per_task.items()},
        "groups_with_signal": float(np.mean(
            pool.reshape(-1, g).std(axis=1) > 0))}

  def batch_stats(self, batch: dict[str, np.ndarray], rows: Sequence[Row],
                  stats: dict[str, Any]) -> dict[str, Any]:
    """The training batch's statistics after the pool's."""
    rewards = batch["rewards"]
    g = self.group_size
    return dict(
        stats, queries=len(rows) // g, rows=len(rows),
        batch_mean_reward=float(rewards.mean()),
        batch_groups_with_signal=float(np.mean(
            rewards.reshape(-1, g).std(axis=1) > 0)),
        rows_fitting=float(stats["_valid"].mean()),
        mean_reflection_tokens=float(np.mean(
            [len(r.episode.reflection.tokens) for r in rows])),
        retry_categories=dict(collections.Counter(
            r.episode.retry_verdict.category for r in rows)),
        sample_seconds=round(stats["_sample_s"], 3),
        logprob_seconds=round(stats["_logprob_s"], 3))
