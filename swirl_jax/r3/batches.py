"""R3's online GRPO batches: G reflections per failed query, retry rewards.

For each failure record (a query and the model's failed attempt), the
current policy writes G reflections and, after each, retries the task with
the reflection in context. Reflection i gets reward r_i = 1 if the task's
verifier grades its retry correct, else 0, and advantage (r_i - mean(r)) /
std(r) over its query's G reflections (0 for a group of equal rewards). Its
row is its exact sampling context (prompt, failed attempt, reflection
instruction) followed by its sampled ids; only those ids (and the
end-of-turn id that closed them) carry loss, never the failed attempt, the
instructions or the retry.

    builder = ReflectionBatchBuilder(config, tokenizer, group_size=4,
                                     inner_updates=2, cache_dir=...)
    train(..., objective='grpo', batch_fn=builder)

Retries are not trained; sampled at `retry_temperature` 0 (the CPU
default), a reflection's reward measures the reflection, not the sampling
noise of its retry. Sampling randomness derives from (seed, step); with
`failures_dataset_fn(repeat_each=inner_updates)` the records of a cycle come
from one dataset element, so no record is skipped. The rest (selection by
`groups_per_step`, old and reference log-probs, the cycle cache, several
processes) is `rollout.batches.RLBatchBuilder`.
"""

from __future__ import annotations

import collections
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from swirl_jax import sharding
from swirl_jax.data import failures as failure_records
from swirl_jax.objectives.common import check_on_policy_sampling
from swirl_jax.r3 import failures as failures_lib
from swirl_jax.rollout import batches as rl_batches
from swirl_jax.rollout.batches import RLBatchBuilder, Row, Span
from swirl_jax.tasks import base
from swirl_jax.tasks import compact


def reflection_row(episode: Any, group: Any = None) -> Row:
  """A reflection's row: its sampling context, then its ids (spanned, with
  their sampler log-probs); 'rewards' is the retry's reward."""
  ctx, act = (list(episode.reflection.context_ids),
              list(episode.reflection.tokens))
  return Row(ctx + act, [Span("action_mask", len(ctx), len(ctx) + len(act),
                              list(episode.reflection.logprobs))],
             {"rewards": float(episode.reward)}, group, episode)


def reflection_rows(episodes: Sequence[Any], seq_len: int
                    ) -> dict[str, np.ndarray]:
  """`rows_to_batch` of reflections' rows, [N, seq_len] each.

  Args:
    episodes: `ReflectionEpisode`s (anything with a `.reflection` ModelTurn).
    seq_len: L.
  Returns:
    'inputs', 'targets', 'positions', 'segment_ids' (int32 [N, L]),
    'action_mask', 'loss_mask', 'old_logprobs' (the sampler's, float32
    [N, L]) and 'fits' (float32 [N]: 0 for a row that does not fit L + 1
    ids or whose reflection is empty; its masks are all zero).
  """
  batch = rl_batches.rows_to_batch([reflection_row(e) for e in episodes],
                                   seq_len, ReflectionBatchBuilder.masks,
                                   drop_overflowing=True)
  batch["old_logprobs"] = batch.pop("sampler_logprobs")
  batch["fits"] = batch.pop("valid")
  return batch


class ReflectionBatchBuilder(RLBatchBuilder):
  """`batch_fn` of the trainer for R3 (see the module docstring).

  Arguments not listed are `RLBatchBuilder`'s; here group_size (G,
  reflections per failed query) must be >= 2, the advantage is 'grpo', and
  shared_prefix_bucket defaults to 16 (the G rows of a query share its
  context).

  Args:
    task_kwargs: per task name, constructor arguments
      (`tasks.compact.make_task`).
    max_new_tokens: budget of a reflection and of a retry.
    temperature / top_p: sampling of the reflections; must be 1.0 / None
      (or 1.0): GRPO takes the reflections as on-policy samples, with the
      sampler's temperature-1 log-probs as old_logprobs, so another value
      raises ValueError (`objectives.common.check_on_policy_sampling`).
      top_p would also filter the retries.
    retry_temperature: sampling of the retries (>= 0; None: `temperature`).
    max_context_tokens: the longest chat the rollout engine may build
      (default: the model's max_seq_len).
  Raises:
    ValueError: group_size < 2, old_logprobs None, seq_len <=
      max_new_tokens, or a bad sampling setting.
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
    if old_logprobs is None:
      raise ValueError("old_logprobs must be 'sampler' or 'recompute': "
                       "GRPO's clipped ratio needs the sampling policy's.")
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
    """G reflection episodes per record, record-major, sampled with
    `params`: one `run_reflect_retry` call per task (two sampler calls:
    reflections, then retries at `retry_temperature`)."""
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
