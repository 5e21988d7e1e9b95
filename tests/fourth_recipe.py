"""A fourth recipe, declared over the shared machinery: single-attempt GRPO.

The model answers a Countdown query once; the task's verifier gives the
reward; G answers per query form a GRPO group; only the answer's tokens
carry loss. What the recipe declares is its settings (`Config`), its
records (generated training queries), its episode script (one graded turn,
`SCRIPT`, data that the engine plays), the span that carries loss and its stages
(GRPO, then a held-out evaluation). Sampling with the current params,
advantages, padded rows, old log-probs, row-keyed randomness on several
hosts, the records pipeline, training, checkpoints and resume come from
the shared modules.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

from swirl_jax import sharding
from swirl_jax import stages
from swirl_jax.data import rl_records
from swirl_jax.evaluation import headline
from swirl_jax.rollout.batches import RLBatchBuilder, Row, Span
from swirl_jax.rollout import scripts
from swirl_jax.rollout.engine import RolloutEngine
from swirl_jax.tasks import base
from swirl_jax.tasks import compact

ANSWER_MASK = "action_mask"
# The episode: [user: task.prompt(x), model: y], y graded; G per query.
SCRIPT = scripts.single_attempt


@dataclasses.dataclass(frozen=True)
class Config:
  """The recipe's settings (gin can bind a dataclass like any callable)."""

  task_kwargs: Mapping[str, Any]
  group_size: int = 4            # G answers per query
  groups_per_step: int = 2      # groups per batch
  train_steps: int = 3
  train_queries: int = 16
  eval_queries: int = 16
  max_new_tokens: int = 16
  seq_len: int = 128
  seed: int = 0


def answer_row(played, group: int) -> Row:
  """[context, answer]; the answer's tokens carry loss (sampler log-probs)."""
  turn = played.turns["y"]
  context = turn.context_ids
  return Row(list(context) + list(turn.tokens),
             [Span(ANSWER_MASK, len(context), len(context) + len(turn.tokens),
                   turn.logprobs)],
             {"rewards": float(played.verdicts["y"].correct)}, group=group,
             episode=played)


class SingleAttemptBuilder(RLBatchBuilder):
  """The episode script: [user: task.prompt(x), model: y], y graded."""

  masks = (ANSWER_MASK,)

  def __init__(self, model_config, tokenizer, task: base.Task, cfg: Config,
               **kwargs):
    super().__init__(model_config, tokenizer, group_size=cfg.group_size,
                     seq_len=cfg.seq_len, length_bucket=32, seed=cfg.seed,
                     advantage="grpo", old_logprobs="sampler", **kwargs)
    self.task, self.cfg = task, cfg

  def sample_rows(self, params, records, step):
    del params  # in the sampler already
    g, first = self.group_size, sharding.process_row_offset(len(records))
    engine = self.engine(max_new_tokens=self.cfg.max_new_tokens,
                         temperature=1.0, max_context_tokens=self.seq_len)
    with self.keyed.rows(range(first * g, (first + len(records)) * g)):
      played = engine.play(
          self.task, [base.Example.from_dict(r["example"]) for r in records],
          SCRIPT(g),
          seed=base.seed_for(self.seed, "single-attempt", step) % 2**31)
    rows = [answer_row(x, i // g) for i, x in enumerate(played)]
    return rows, {"step": int(step), "mean_reward": sum(
        r.values["rewards"] for r in rows) / len(rows)}


def evaluate(model_config, tokenizer, source: Optional[str], task,
             examples: Sequence[base.Example], cfg: Config) -> dict:
  """Greedy single attempts of the policy in `source` on `examples`."""
  from swirl_jax.sampling import chat_sampler  # pylint: disable=g-import-not-at-top
  sampler = chat_sampler(model_config, tokenizer, batch_bucket=8)
  sampler.update_params(stages.load_policy(model_config, source, cfg.seed))
  with RolloutEngine(sampler, tokenizer, max_new_tokens=cfg.max_new_tokens,
                     temperature=0.0, max_context_tokens=cfg.seq_len,
                     progress=False) as engine:
    played = engine.play(task, examples, SCRIPT(), seed=cfg.seed)
  return {"correct": {r.example.id: bool(r.verdicts["y"].correct)
                      for r in played}}


def run(workdir: str, model_config, tokenizer, cfg: Config,
        init_from: Optional[str] = None) -> dict:
  """GRPO stage, then both policies on held-out test queries; resumable."""
  task = compact.make_task("countdown", **cfg.task_kwargs)
  train = [{"example": ex.to_dict()} for ex in compact.generate_examples(
      task, cfg.train_queries, seed=cfg.seed, split="train")]
  builder = SingleAttemptBuilder(model_config, tokenizer, task, cfg)
  try:
    stages.train_stage(
        workdir, "grpo", model_config=model_config, objective="grpo",
        train_steps=cfg.train_steps, init_from=init_from, seed=cfg.seed,
        batch_fn=builder, dataset_fn=rl_records.records_dataset_fn(
            train, global_batch_size=cfg.groups_per_step, what="queries"))
  finally:
    builder.close()
  held_out = compact.generate_examples(task, cfg.eval_queries,
                                       seed=cfg.seed + 1, split="test")
  evals = {label: stages.run_stage(
      workdir, f"eval_{label}", lambda _, s=source: evaluate(
          model_config, tokenizer, s, task, held_out, cfg))
           for label, source in (("base", init_from),
                                 ("trained", stages.stage_dir(workdir,
                                                              "grpo")))}
  diff = headline.paired(evals["trained"]["correct"],
                         evals["base"]["correct"])
  return {"headline": [headline.claim(
      "single-attempt GRPO answers more held-out Countdown queries than its "
      "base", "accuracy difference (trained - base)", diff,
      holds=diff["low"] > 0)],
          "last_stats": builder.last_stats}
