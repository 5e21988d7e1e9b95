"""SWiRL stage 2: step-wise RL batches from the offline dataset of states.

For each state s (the context of one step of a filtered trajectory), the
current policy samples G actions; the judge scores each action in its context
(reward R(a|s) in [0, 1]); the rows (s, a_j) go to the `stepwise_pg`
objective with group ids, so that its advantage is the reward minus the mean
of the G rewards of the same state (see swirl_jax/objectives/stepwise_pg.py
for the choices the paper leaves open).

    builder = StepwiseBatchBuilder(config, tokenizer, judge, num_samples=4)
    batch = builder(params, records, step)       # numpy arrays, [B*G, L]

Used as `train(..., batch_fn=builder)`: the trainer calls it with the current
params before every step. Sampling randomness derives from (seed, step), so a
resumed run draws the same actions.

Several processes: every process calls the builder at each step with its own
(equally many) states; each host samples its actions on its own copy of the
params (`Sampler.update_params`), row j of state i drawing the randomness of
its global index (`row_keyed`), so two hosts draw what one process with the
whole batch would (see docs/tpu_gpu.md).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from swirl_jax import sharding
from swirl_jax.objectives import shared_prefix
from swirl_jax.objectives.common import check_on_policy_sampling
from swirl_jax.swirl.filters import context_turns, judge_request_for_record


def _fit(context: list[int], room: int) -> list[int]:
  """Keeps BOS and the most recent `room - 1` context tokens."""
  if len(context) <= room:
    return context
  return context[:1] + context[len(context) - room + 1:]


class StepwiseBatchBuilder:
  """Samples G actions per state, judges them, returns a stepwise_pg batch.

  Args:
    config: the policy's TransformerConfig.
    tokenizer: swirl_jax.tokenizer.Tokenizer.
    judge: a swirl_jax.judges Judge (rules or model).
    num_samples: G, actions per state.
    max_new_tokens: longest action.
    temperature / top_p: sampling of actions; must be 1.0 / None (or 1.0):
      the actions are on-policy samples of pi, whose log-probs the
      `stepwise_pg` loss differentiates, so any other value is refused
      with a ValueError (see `objectives.common.check_on_policy_sampling`).
    seq_len: the longest row; contexts are cut from the left (BOS kept) to
      leave room for max_new_tokens.
    seed: base seed; step s samples with seed (seed, s).
    length_bucket: a batch's rows have L = its longest row rounded up to a
      multiple of this (at most seq_len), so a batch of short states does not
      pay for seq_len tokens; None: L = seq_len always.
    row_keyed: action j of global state i draws from the key of row
      i * G + j (`Sampler.generate(row_ids=...)`), whatever the host; None
      (default): on several processes only (one process keeps the batch's
      [N, B] draw, as before).
    shared_prefix_bucket: > 0: the batch carries 'prefix_inputs' so that
      the train step's forwards (the policy's and the reference's) compute
      the G rows' shared context once per state, its length a multiple of
      this (`swirl_jax.objectives.shared_prefix`; the same losses up to
      float32 round-off). 0 (default): off. One length serves the whole
      batch, the shortest state's context, and each new length compiles
      the train step again: on the quickstart's states of mixed lengths it
      made the step slower (benchmarks/recipe_step.py --shared_prefix).
  """

  def __init__(self, config, tokenizer, judge, *, num_samples: int = 4,
               max_new_tokens: int = 48, temperature: float = 1.0,
               top_p: Optional[float] = None, seq_len: int = 384,
               seed: int = 0, length_bucket: Optional[int] = 128,
               row_keyed: Optional[bool] = None,
               shared_prefix_bucket: int = 0):
    check_on_policy_sampling("StepwiseBatchBuilder", temperature=temperature,
                             top_p=top_p)
    if num_samples < 2:
      raise ValueError(f"num_samples must be >= 2 for a group baseline, got "
                       f"{num_samples}.")
    if seq_len <= max_new_tokens + 8:
      raise ValueError(f"seq_len={seq_len} leaves no room for a context "
                       f"beside max_new_tokens={max_new_tokens}.")
    from swirl_jax.sampling import chat_sampler  # pylint: disable=g-import-not-at-top
    self.tokenizer = tokenizer
    self.judge = judge
    self.num_samples = num_samples
    self.max_new_tokens = max_new_tokens
    self.temperature = temperature
    self.top_p = top_p
    self.seq_len = seq_len
    self.seed = seed
    self.length_bucket = length_bucket
    self.sampler = chat_sampler(config, tokenizer, batch_bucket=1)
    self.row_keyed = row_keyed
    if shared_prefix_bucket < 0:
      raise ValueError(f"shared_prefix_bucket must be >= 0, got "
                       f"{shared_prefix_bucket}.")
    self.shared_prefix_bucket = int(shared_prefix_bucket)
    self.last_stats: dict[str, float] = {}

  def __call__(self, params: Any, records: Sequence[Mapping[str, Any]],
               step: int) -> dict[str, np.ndarray]:
    if not records:
      raise ValueError("StepwiseBatchBuilder got an empty batch of states.")
    g = self.num_samples
    room = self.seq_len - self.max_new_tokens
    contexts = [_fit(self.tokenizer.encode_chat(context_turns(r)), room)
                for r in records]
    prompts = [c for c in contexts for _ in range(g)]
    first = sharding.process_row_offset(len(records), "states")
    keyed = (sharding.is_multiprocess() if self.row_keyed is None
             else self.row_keyed)
    self.sampler.update_params(params)
    out = self.sampler.generate(
        prompts, self.max_new_tokens, temperature=self.temperature,
        top_p=self.top_p, seed=hash((self.seed, int(step))) % (2 ** 31),
        group_size=g,
        **({"row_ids": range(first * g, (first + len(records)) * g)}
           if keyed else {}))
    stops = {self.tokenizer.end_of_turn_id, self.tokenizer.eos_id}
    texts = [self.tokenizer.decode([t for t in toks if t not in stops])
             for toks in out.tokens]
    requests = [judge_request_for_record(records[i // g], texts[i])
                for i in range(len(prompts))]
    results = self.judge.judge_steps(requests)
    rewards = np.array([r.reward for r in results], np.float32)
    batch = self.rows(prompts, out.tokens)
    batch["rewards"] = rewards
    batch["group_ids"] = sharding.global_group_ids(
        np.repeat(np.arange(len(records), dtype=np.int32), g))
    if self.shared_prefix_bucket:
      batch = shared_prefix.with_agreed_shared_prefix(
          batch, g, self.shared_prefix_bucket)
    self.last_stats = {"mean_reward": float(rewards.mean()),
                       "good_fraction": float(np.mean(
                           [r.good for r in results])),
                       "mean_action_tokens": float(np.mean(
                           [len(t) for t in out.tokens]))}
    return batch

  def rows(self, contexts: Sequence[list[int]],
           actions: Sequence[list[int]]) -> dict[str, np.ndarray]:
    """Right-padded [N, L] rows of context + action with the action mask
    (L: see `length_bucket`).

    'inputs' are the tokens, 'targets' the next tokens; 'action_mask' (and
    'loss_mask', the same) is 1 where the target is an action token.
    """
    n = len(contexts)
    length = sharding.bucketed_row_length(
        max(len(c) + len(a) for c, a in zip(contexts, actions)) - 1,
        self.length_bucket, self.seq_len)
    inputs = np.zeros((n, length), np.int32)
    targets = np.zeros((n, length), np.int32)
    mask = np.zeros((n, length), np.float32)
    segments = np.zeros((n, length), np.int32)
    positions = np.zeros((n, length), np.int32)
    for i, (ctx, act) in enumerate(zip(contexts, actions)):
      seq = (list(ctx) + list(act))[:length + 1]
      m = len(seq) - 1
      inputs[i, :m] = seq[:-1]
      targets[i, :m] = seq[1:]
      start = len(ctx) - 1  # target index of the first action token
      mask[i, start:m] = 1.0
      segments[i, :m] = 1
      positions[i, :m] = np.arange(m)
    return {"inputs": inputs, "targets": targets, "action_mask": mask,
            "loss_mask": mask.copy(), "segment_ids": segments,
            "positions": positions}
