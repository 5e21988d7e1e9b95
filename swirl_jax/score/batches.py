"""SCoRe training batches: on-policy two-attempt episodes -> objective rows.

    builder = TwoAttemptBatchBuilder(config, tokenizer, tasks,
                                     ref_params=base_params, group_size=2)
    batch = builder(params, records, step)     # numpy arrays, [N, L]

Used as `train(..., objective='score_stage1' | 'score_stage2',
batch_fn=builder)` on records ({'task', 'example'} dicts from
`swirl_jax.data.rl_records.records_dataset`): it samples `group_size`
episodes per record with the rollout engine (y1 ~ pi(.|x), the task's
correction instruction p, y2 ~ pi(.|x, y1, p)), grades both attempts with
the task's verifier and returns one row per episode: the chat [x, y1, p, y2]
(`y2.context_ids + y2.tokens`) in `RLBatchBuilder`'s keys, and

  'attempt1_mask', 'attempt2_mask'  [N, L]  1.0 where the target is a
      token of y1 / y2 (its <end_of_turn> included);
  'reward1', 'reward2'  [N]  binary verifier rewards of each attempt
      (discount 0: each attempt is pushed by its own reward);
  'group_ids'  [N]  rows of the same record (and source) share an id, so
      the objective's leave-one-out baseline is per prompt;
  'ref_logprobs'  [N, L]  (with `ref_params`) the reference model's, so the
      KL terms are to the base model even from a Stage I checkpoint;
  'beta2'  [N]  (with `adaptive`) Stage I's first-attempt KL coefficient
      for this step.

Sampling randomness derives from (seed, step, task): a resumed run draws the
same episodes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import gin
import numpy as np

from swirl_jax import sharding
from swirl_jax.objectives.common import check_on_policy_sampling
from swirl_jax.rollout import trajectory as traj
from swirl_jax.rollout.batches import RLBatchBuilder, Row, Span
from swirl_jax.score import episodes as episodes_lib
from swirl_jax.tasks import base as task_base

MASKS = ("attempt1_mask", "attempt2_mask")


def adaptive_beta2(kl: float, beta2: float, target_kl: float,
                   max_ratio: float = 10.0) -> float:
  """Stage I's first-attempt KL coefficient for a measured KL.

      beta2_t = beta2 * clip(kl / target_kl, 1 / max_ratio, max_ratio)

  A proportional controller without state: the penalty relaxes while the
  first attempt stays within `target_kl` of the base model and grows when it
  drifts past it.

  Args:
    kl: measured mean per-token KL(pi || pi_ref) on first-attempt tokens.
    beta2: the nominal coefficient (>= 0; paper: 0.1 MATH, 0.25 MBPP).
    target_kl: the KL at which beta2_t = beta2 (> 0).
    max_ratio: bound of the multiplier (>= 1).
  Raises:
    ValueError: an argument out of range.
  """
  if target_kl <= 0:
    raise ValueError(f"target_kl must be > 0, got {target_kl}.")
  if max_ratio < 1:
    raise ValueError(f"max_ratio must be >= 1, got {max_ratio}.")
  if beta2 < 0:
    raise ValueError(f"beta2 must be >= 0, got {beta2}.")
  ratio = float(np.clip(max(kl, 0.0) / target_kl, 1.0 / max_ratio,
                        max_ratio))
  return float(beta2 * ratio)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class AdaptiveBeta2:
  """Settings of `adaptive_beta2`; gin: @swirl_jax.score.batches.AdaptiveBeta2()

  Called with a measured KL, returns that step's beta2 (ValueError while
  beta2 is None).

  Attributes:
    beta2: nominal coefficient; None (the default): the Stage I loss's own
      `score_stage1_loss.beta2` binding, filled in by the experiment
      (`with_beta2`), so turning adaptation on never changes the nominal value.
    target_kl: per-token first-attempt KL (k3 estimate) at which beta2 is
      used as is.
    max_ratio: bound of the multiplier.
  """

  beta2: Optional[float] = None
  target_kl: float = 0.02
  max_ratio: float = 10.0

  def with_beta2(self, beta2: float) -> "AdaptiveBeta2":
    """These settings with `beta2` as the nominal value if none was set."""
    return self if self.beta2 is not None else dataclasses.replace(
        self, beta2=float(beta2))

  def __call__(self, kl: float) -> float:
    if self.beta2 is None:
      raise ValueError("AdaptiveBeta2.beta2 is None: set it, or let the "
                       "experiment fill in score_stage1_loss.beta2 "
                       "(AdaptiveBeta2.with_beta2).")
    return adaptive_beta2(kl, self.beta2, self.target_kl, self.max_ratio)


def k3(logp: np.ndarray, ref_logp: np.ndarray) -> np.ndarray:
  """Per-token k3 estimate of KL(pi || pi_ref) from sampled-token log-probs."""
  delta = np.asarray(ref_logp, np.float64) - np.asarray(logp, np.float64)
  return np.exp(delta) - delta - 1.0


def episode_row(episode: traj.TwoAttemptEpisode, end_of_turn_id: int,
                train_first: bool = True) -> Row:
  """The sequence [x, y1, p, y2] of an episode and its attempt spans.

  The sequence is `y2.context_ids + y2.tokens`: exactly what y2 was sampled
  from, then y2. y1 lies in it right after `y1.context_ids` (the engine
  builds the chat by appending turns). Where the engine's re-encoding of
  y1's text differs from the sampled ids (a non-canonical segmentation, or
  the role line's newline merged into the first piece, e.g. '\n```'), the
  re-encoded span up to its <end_of_turn> carries y1's loss, without
  log-probs (its first-attempt KL is then not measured).

  Args:
    episode: a two-attempt episode.
    end_of_turn_id: the <end_of_turn> id.
    train_first: give y1's tokens a span (False: the base model's y1).
  Returns:
    A `Row` with an 'attempt1_mask' span (unless train_first is False or y1
    is empty) and an 'attempt2_mask' span (unless y2 is empty); no values.
  """
  ctx1, ctx2 = list(episode.y1.context_ids), list(episode.y2.context_ids)
  tokens = ctx2 + list(episode.y2.tokens)
  spans = []
  if train_first and episode.y1.tokens:
    start = len(ctx1)
    sampled = list(episode.y1.tokens)
    if (ctx2[:start] == ctx1 and
        ctx2[start:start + len(sampled)] == sampled):
      spans.append(Span(MASKS[0], start, start + len(sampled),
                        list(episode.y1.logprobs)))
    else:  # re-encoded: from where the contexts part to its <end_of_turn>
      common = 0
      while (common < min(len(ctx1), len(ctx2)) and
             ctx1[common] == ctx2[common]):
        common += 1
      if common < start - 1:
        raise ValueError(
            f"Episode {episode.example_id}/{episode.sample_index}: the "
            f"second attempt's context departs from the first attempt's at "
            f"token {common} of {start}; was it built by appending turns?")
      end = common
      while end < len(ctx2) and ctx2[end] != end_of_turn_id:
        end += 1
      spans.append(Span(MASKS[0], common, min(end + 1, len(ctx2))))
  if episode.y2.tokens:
    spans.append(Span(MASKS[1], len(ctx2), len(tokens),
                      list(episode.y2.logprobs) or None))
  return Row(tokens, spans, {}, episode=episode)


def first_attempt_row(turn: traj.ModelTurn) -> Row:
  """The sequence [x, y1] of a single attempt, y1 spanned."""
  tokens = list(turn.context_ids) + list(turn.tokens)
  spans = ([Span(MASKS[0], len(turn.context_ids), len(tokens),
                 list(turn.logprobs) or None)] if turn.tokens else [])
  return Row(tokens, spans, {})


class TwoAttemptBatchBuilder(RLBatchBuilder):
  """Samples two-attempt episodes with the current policy; returns rows.

  Arguments not listed are `RLBatchBuilder`'s; here group_size is the
  on-policy episodes per record (>= 2 for a per-prompt baseline), and
  shared_prefix_bucket (default 0; for long shared prompts) applies only
  when every record has exactly group_size > 1 rows (no
  base_first_attempts).

  Args:
    tasks: task name -> task (records name their task).
    ref_params: the reference (base) model: its log-probs go into the batch
      and it samples `base_first_attempts`. None: the trainer's reference.
    base_first_attempts: k more episodes per record whose first attempt is
      the base model's and whose second is the policy's (the paper's extra
      prompts for the second attempt). Their y1 is off-policy, so it gets
      no loss (attempt1_mask 0); their r1 still enters Stage II's shaping
      bonus.
    single_turn: the single-turn training ablation: rows hold only y1
      (attempt2_mask 0, reward2 0), so `score_stage2` reduces to
      single-attempt REINFORCE with a beta1 KL.
    max_new_tokens: budget of one attempt.
    temperature: sampling temperature; must be 1.0, since the SCoRe loss
      differentiates the episodes as on-policy samples of pi; another value
      raises ValueError (`objectives.common.check_on_policy_sampling`).
    seq_len: L; the engine keeps every episode within L + 1 tokens.
    seed: base seed; step s of task t samples with seed (seed, s, t).
    adaptive: an `AdaptiveBeta2` (needs ref_params), or None: each step's
      beta2 follows the first-attempt KL measured on that step's episodes
      (every host's, on several processes), so a resumed run repeats it.
    group_baseline: give the rows of one record a common group id (else
      the batch has no 'group_ids': the baseline is over the whole batch).
    instruction: the correction instruction (None: each task's).
  Raises:
    ValueError: a bad setting or combination (base_first_attempts or
      adaptive without ref_params, single_turn with base_first_attempts).
  """

  masks = MASKS

  def __init__(self, config, tokenizer, tasks: Mapping[str, Any], *,
               ref_params: Any = None, group_size: int = 2,
               base_first_attempts: int = 0, single_turn: bool = False,
               max_new_tokens: int = 40, temperature: float = 1.0,
               seq_len: int = 256, seed: int = 0,
               adaptive: Optional[AdaptiveBeta2] = None,
               group_baseline: bool = True,
               instruction: Optional[str] = None, sampler: Any = None,
               length_bucket: Optional[int] = 64,
               row_keyed: Optional[bool] = None,
               shared_prefix_bucket: int = 0):
    check_on_policy_sampling("TwoAttemptBatchBuilder",
                             temperature=temperature)
    if int(base_first_attempts) < 0:
      raise ValueError(f"base_first_attempts must be >= 0, got "
                       f"{base_first_attempts}.")
    if (base_first_attempts or adaptive is not None) and ref_params is None:
      raise ValueError("base_first_attempts and adaptive beta2 need "
                       "ref_params (the base model).")
    if single_turn and base_first_attempts:
      raise ValueError("single_turn training has no second attempt; set "
                       "base_first_attempts=0.")
    if seq_len <= max_new_tokens:
      raise ValueError(f"seq_len={seq_len} must exceed max_new_tokens="
                       f"{max_new_tokens}.")
    if not tasks:
      raise ValueError("TwoAttemptBatchBuilder needs at least one task.")
    super().__init__(config, tokenizer, group_size=group_size,
                     seq_len=seq_len, length_bucket=length_bucket, seed=seed,
                     sampler=sampler, batch_bucket=8, row_keyed=row_keyed,
                     reference_params=ref_params,
                     shared_prefix_bucket=(
                         shared_prefix_bucket if group_size > 1 and
                         not base_first_attempts else 0))
    self.tasks = dict(tasks)
    self.base_first_attempts = int(base_first_attempts)
    self.single_turn = bool(single_turn)
    self.adaptive = adaptive
    self.group_baseline = bool(group_baseline)
    self.instruction = instruction
    self.rollout = self.engine(
        max_new_tokens=max_new_tokens, temperature=temperature,
        max_context_tokens=self.seq_len + 1, tool_workers=4)
    self.last_episodes: list[traj.TwoAttemptEpisode] = []

  def _row_ids(self, first: int, records: Sequence[int], offset: int,
               count: int) -> list[int]:
    """Global ids of `count` rows per record (its samples offset..)."""
    per = self.group_size + self.base_first_attempts
    return [(first + i) * per + offset + s for i in records
            for s in range(count)]

  def sample_rows(self, params: Any, records: Sequence[Mapping[str, Any]],
                  step: int) -> tuple[list[Row], dict[str, Any]]:
    first = sharding.process_row_offset(len(records), "records")
    eot = self.tokenizer.end_of_turn_id
    by_task: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
      name = rec.get("task")
      if name not in self.tasks:
        raise KeyError(f"Record {i} names task {name!r}; the builder has "
                       f"{sorted(self.tasks)}.")
      by_task.setdefault(name, []).append(i)
    slots: list[list[Row]] = [[] for _ in records]  # per record, in order

    def add(row, i, r1, r2, source):
      row.values = {"reward1": float(r1), "reward2": float(r2)}
      row.group = (i, source) if self.group_baseline else None
      slots[i].append(row)

    episodes: list[traj.TwoAttemptEpisode] = []
    g, k = self.group_size, self.base_first_attempts
    for name, idx in sorted(by_task.items()):
      task = self.tasks[name]
      examples = [task_base.Example.from_dict(records[i]["example"])
                  for i in idx]
      seed = task_base.seed_for(self.seed, "score-batch", int(step),
                                name) % (1 << 31)
      with self.keyed.rows(self._row_ids(first, idx, 0, g)):
        if self.single_turn:
          for j, (_, turn, _, verdict) in enumerate(
              episodes_lib.first_attempts(self.rollout, task, examples, g,
                                          seed=seed)):
            add(first_attempt_row(turn), idx[j // g], verdict.reward, 0.0, 0)
          continue
        eps = self.rollout.run_two_attempts(
            task, examples, instruction=self.instruction, num_samples=g,
            seed=seed)
      for j, ep in enumerate(eps):
        add(episode_row(ep, eot), idx[j // g], ep.reward1, ep.reward2, 0)
      episodes += eps
      if k:
        base_ids = self._row_ids(first, idx, g, k)
        self.sampler.update_params(self.reference_params)
        try:
          with self.keyed.rows(base_ids):
            firsts = episodes_lib.first_attempts(self.rollout, task,
                                                 examples, k, seed=seed + 1)
        finally:
          self.sampler.update_params(params)
        with self.keyed.rows(base_ids):
          extra = episodes_lib.two_attempts_from_first(
              self.rollout, task, firsts, seed=seed + 2,
              instruction=self.instruction, sample_offset=g)
        for j, ep in enumerate(extra):
          add(episode_row(ep, eot, train_first=False), idx[j // k],
              ep.reward1, ep.reward2, 1)
        episodes += extra
    self.last_episodes = episodes
    rows = [row for per_record in slots for row in per_record]
    reencoded = sum(s.mask == MASKS[0] and s.logprobs is None
                    for r in rows for s in r.spans)
    return rows, {
        "reward1": float(np.mean([r.values["reward1"] for r in rows])),
        "reward2": float(np.mean([r.values["reward2"] for r in rows])),
        "rows": float(len(rows)), "y1_reencoded": float(reencoded)}

  def batch_stats(self, batch: dict[str, np.ndarray], rows: Sequence[Row],
                  stats: dict[str, Any]) -> dict[str, Any]:
    """Adds the first attempt's KL to the reference ('kl1', k3 on the
    sampled y1 tokens) and, with `adaptive`, the step's 'beta2'."""
    if self.reference_params is None:
      return stats
    policy_logp = stats["_sampler_logprobs"]
    on_policy = (batch["attempt1_mask"] > 0) & (policy_logp != 0)
    kl = k3(policy_logp[on_policy], batch["ref_logprobs"][on_policy])
    # Several processes: the KL of every host's first attempts (what one
    # process with the whole batch measures), so every host gets the same
    # beta2.
    total, count = (sharding.global_sums([np.sum(kl), np.sum(on_policy)])
                    if sharding.is_multiprocess()
                    else (np.sum(kl), np.sum(on_policy)))
    if count > 0:
      stats["kl1"] = float(total / count)
    if self.adaptive is not None:
      beta2 = self.adaptive(stats.get("kl1", 0.0))
      batch["beta2"] = np.full((len(rows),), beta2, np.float32)
      stats["beta2"] = beta2
    return stats
