"""SWiRL stage 2: step-wise RL batches from the offline dataset of states.

For each state s (the context of one step of a filtered trajectory), the
current policy samples G actions; the judge scores each in its context
(reward R(a|s) in [0, 1]); the rows (s, a_j) go to the `stepwise_pg`
objective with group ids, so that an action's advantage is its reward minus
the mean of its state's G rewards (objectives/stepwise_pg.py).

    builder = StepwiseBatchBuilder(config, tokenizer, judge, group_size=4)
    batch = builder(params, records, step)       # numpy arrays, [B*G, L]

`train(..., batch_fn=builder)` calls it with the current params before
every step. Sampling randomness derives from (seed, step), so a resumed run
draws the same actions. On several processes each passes its own, equally
many states and samples with its own copy of the params; row j of state i
draws from the key of its global index (`row_keyed`), so the hosts together
draw what one process would (docs/tpu_gpu.md). Everything after the
sampling (rows, group ids, shared context, statistics) is
`rollout.batches.RLBatchBuilder`.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from swirl_jax import sharding
from swirl_jax.objectives.common import check_on_policy_sampling
from swirl_jax.rollout.batches import RLBatchBuilder, Row, Span, rows_to_batch
from swirl_jax.swirl.filters import context_turns, judge_request_for_record


def _fit(context: list[int], room: int) -> list[int]:
  """Keeps BOS and the most recent `room - 1` context tokens."""
  if len(context) <= room:
    return context
  return context[:1] + context[len(context) - room + 1:]


class StepwiseBatchBuilder(RLBatchBuilder):
  """Samples G actions per state, judges them, returns a stepwise_pg batch.

  Args:
    config: the policy's TransformerConfig.
    tokenizer: swirl_jax.tokenizer.Tokenizer.
    judge: a swirl_jax.judges Judge (rules or model).
    group_size: G, actions per state (>= 2).
    max_new_tokens: longest action.
    temperature / top_p: must be 1.0 / None (or 1.0), as the actions are
      on-policy samples whose log-probs the loss differentiates; anything
      else is a ValueError (`objectives.common.check_on_policy_sampling`).
    seq_len: the longest row; contexts are cut from the left (BOS kept) to
      leave room for max_new_tokens.
    seed: base seed; step s samples with seed (seed, s).
    length_bucket: in the plain layout (and `rows`), L is the batch's
      longest row rounded up to a multiple of this (at most seq_len);
      None: L = seq_len.
    row_keyed: action j of global state i draws from the key of row
      i * G + j, whatever the host; None: on several processes only.
    shared_prefix_bucket: > 0: the rows are re-laid so that every state's
      context ends at one slot P, a multiple of this, and its actions
      follow (rows of P + max_new_tokens slots); the train step's forwards
      then compute each context once for its G rows (the same losses up to
      float32 round-off). 0: the plain layout, each row its own context.
  """

  masks = ("action_mask",)

  def __init__(self, config, tokenizer, judge, *, group_size: int = 4,
               max_new_tokens: int = 48, temperature: float = 1.0,
               top_p: Optional[float] = None, seq_len: int = 384,
               seed: int = 0, length_bucket: Optional[int] = 128,
               row_keyed: Optional[bool] = None,
               shared_prefix_bucket: int = 64):
    check_on_policy_sampling("StepwiseBatchBuilder", temperature=temperature,
                             top_p=top_p)
    if group_size < 2:
      raise ValueError(f"group_size must be >= 2 for a group baseline, got "
                       f"{group_size}.")
    if seq_len <= max_new_tokens + 8:
      raise ValueError(f"seq_len={seq_len} leaves no room for a context "
                       f"beside max_new_tokens={max_new_tokens}.")
    super().__init__(config, tokenizer, group_size=group_size,
                     seq_len=seq_len, length_bucket=length_bucket, seed=seed,
                     batch_bucket=1, row_keyed=row_keyed,
                     shared_prefix_bucket=shared_prefix_bucket,
                     align_prefixes=True, suffix_bucket=max_new_tokens)
    self.judge = judge
    self.max_new_tokens = max_new_tokens
    self.temperature = temperature
    self.top_p = top_p

  def sample_rows(self, params: Any, records: Sequence[Mapping[str, Any]],
                  step: int) -> tuple[list[Row], dict[str, Any]]:
    del params
    g = self.group_size
    room = self.seq_len - self.max_new_tokens
    contexts = [_fit(self.tokenizer.encode_chat(context_turns(r)), room)
                for r in records]
    prompts = [c for c in contexts for _ in range(g)]
    first = sharding.process_row_offset(len(records), "states")
    with self.keyed.rows(range(first * g, (first + len(records)) * g)):
      out = self.keyed.generate(
          prompts, self.max_new_tokens, temperature=self.temperature,
          top_p=self.top_p, seed=hash((self.seed, int(step))) % (2 ** 31),
          group_size=g)
    stops = {self.tokenizer.end_of_turn_id, self.tokenizer.eos_id}
    texts = [self.tokenizer.decode([t for t in toks if t not in stops])
             for toks in out.tokens]
    results = self.judge.judge_steps(
        [judge_request_for_record(records[i // g], texts[i])
         for i in range(len(prompts))])
    rows = [_action_row(ctx, act, {"rewards": float(res.reward)}, i // g)
            for i, (ctx, act, res) in enumerate(
                zip(prompts, out.tokens, results))]
    return rows, {
        "mean_reward": float(np.mean([r.reward for r in results])),
        "good_fraction": float(np.mean([r.good for r in results])),
        "mean_action_tokens": float(np.mean([len(t) for t in out.tokens]))}

  def rows(self, contexts: Sequence[list[int]],
           actions: Sequence[list[int]]) -> dict[str, np.ndarray]:
    """Right-padded [N, L] rows of context + action with the action mask
    (L: see `length_bucket`): 'inputs', 'targets', 'positions',
    'segment_ids', and 'action_mask' (= 'loss_mask'), 1 where the target
    is an action token."""
    rows = [_action_row(c, a, {}, i) for i, (c, a) in
            enumerate(zip(contexts, actions))]
    batch = rows_to_batch(rows, self.row_length(rows), self.masks)
    del batch["sampler_logprobs"], batch["valid"]
    return batch


def _action_row(context: Sequence[int], action: Sequence[int],
                values: dict[str, float], group: int) -> Row:
  """The row context + action, loss on the action."""
  n = len(context)
  return Row(list(context) + list(action),
             [Span("action_mask", n, n + len(action))], values, group)
