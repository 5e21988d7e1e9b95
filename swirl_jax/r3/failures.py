"""R3's failure dataset: sample the model, keep the queries it fails.

Answers to every query are sampled in rounds of `samples_per_round` until
one fails the task's binary verifier or `max_samples` were drawn (paper:
64). A query with a failure is kept with its first failed attempt; a query
answered correctly every time is dropped. The kept queries are a TFDS
ArrayRecord dataset (format, reader and GRPO dataset_fn:
`swirl_jax.data.failures`):

    stats = build_failure_dataset(out_dir, config, params, tokenizer,
                                  tasks=('countdown', 'function_calling'),
                                  num_queries=64, max_samples=8)
    source = data.failures.open_failures(os.path.join(out_dir, 'data'))
    len(source), source[0]['attempt'], source[0]['category']

`find_failures` samples with any sampler (the `generate` interface of
`swirl_jax.sampling.Sampler`), so it is testable with a fake one.
"""

from __future__ import annotations

import collections
import json
import logging
import os
from typing import Any, Mapping, Optional, Sequence

from swirl_jax import stages
from swirl_jax.data.failures import FailureDataError
from swirl_jax.data.failures import open_failures
from swirl_jax.data.failures import prepare_failure_dataset
from swirl_jax.rollout import trajectory as traj
from swirl_jax.rollout.engine import RolloutEngine
from swirl_jax.tasks import base

log = logging.getLogger(__name__)

STATS_FILE = "failure_statistics.json"


def attempt_of(record: Mapping[str, Any]) -> traj.ModelTurn:
  """The failed attempt of a record as a `ModelTurn` (given, not sampled:
  its context is rebuilt by the rollout engine)."""
  return traj.ModelTurn(text=record["attempt"],
                        tokens=[int(t) for t in record["attempt_tokens"]],
                        logprobs=[float(x) for x in
                                  record["attempt_logprobs"]],
                        context_ids=[], finish=traj.TURN_GIVEN)


def find_failures(sampler: Any, tokenizer: Any, task: base.Task,
                  examples: Sequence[base.Example], *, max_samples: int = 64,
                  samples_per_round: int = 8, max_new_tokens: int = 64,
                  temperature: float = 1.0, seed: int = 0,
                  max_context_tokens: int = 2048
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """Samples up to `max_samples` answers per query, stopping at a failure.

  Each round samples `samples_per_round` answers (fewer in the last round)
  for every query that has neither failed nor used up its budget, in one
  sampler call; round r uses the seed derived from (seed, r).

  Args:
    sampler / tokenizer: the policy's sampler and the tokenizer.
    task / examples: the task and its queries.
    max_samples: N, the most answers sampled per query.
    samples_per_round: answers per query per round.
    max_new_tokens / temperature: sampling of an answer (to the
      `RolloutEngine` chat [user: task.prompt(x)]).
    max_context_tokens: the longest prompt + answer.
    seed: randomness.
  Returns:
    (records, stats): one `FAILURE_FIELDS` record per failed query, in
    query order; stats with 'queries', 'failed_queries', 'samples',
    'correct_samples', 'sample_accuracy', 'first_sample_accuracy' and
    'categories' (of the kept failed attempts).
  """
  if int(max_samples) < 1 or int(samples_per_round) < 1:
    raise ValueError(f"max_samples and samples_per_round must be >= 1, got "
                     f"{max_samples} and {samples_per_round}.")
  n = len(examples)
  drawn, correct = [0] * n, [0] * n  # answers sampled, correct ones
  first_correct = [None] * n
  failure: list[Optional[dict[str, Any]]] = [None] * n
  active = list(range(n))
  rnd = 0
  engine = RolloutEngine(sampler, tokenizer, max_new_tokens=max_new_tokens,
                         temperature=temperature,
                         max_context_tokens=max_context_tokens,
                         progress=False)
  with engine:
    while active:
      k = min(int(samples_per_round), int(max_samples) - drawn[active[0]])
      graded = engine.first_attempts(
          task, [examples[i] for i in active], k,
          seed=base.seed_for(seed, "r3-failures", task.name, rnd) % (1 << 31))
      for j, i in enumerate(active):
        for _, turn, answer, verdict in graded[j * k:(j + 1) * k]:
          if first_correct[i] is None:
            first_correct[i] = verdict.correct
          if failure[i] is not None:
            continue  # already failed earlier in this round
          drawn[i] += 1
          if verdict.correct:
            correct[i] += 1
            continue
          failure[i] = {
              "task": task.name, "example_id": examples[i].id,
              "failure_id": f"{task.name}/{examples[i].id}",
              "example": json.dumps(examples[i].to_dict(),
                                    ensure_ascii=False),
              "prompt": task.prompt(examples[i]), "attempt": turn.text,
              "attempt_tokens": list(turn.tokens),
              "attempt_logprobs": list(turn.logprobs),
              "answer": answer or "", "category": verdict.category,
              "detail": verdict.detail, "sample_index": drawn[i] - 1}
      active = [i for i in active
                if failure[i] is None and drawn[i] < int(max_samples)]
      rnd += 1
  records = [dict(failure[i], num_samples=drawn[i], num_correct=correct[i])
             for i in range(n) if failure[i] is not None]
  samples = sum(drawn)
  stats = {
      "queries": n, "failed_queries": len(records),
      "kept_fraction": len(records) / n if n else 0.0,
      "samples": samples, "correct_samples": sum(correct),
      "sample_accuracy": sum(correct) / samples if samples else 0.0,
      "first_sample_accuracy": (sum(bool(c) for c in first_correct) / n
                                if n else 0.0),
      "categories": dict(collections.Counter(r["category"] for r in records)),
      "rounds": rnd}
  return records, stats


def build_failure_dataset(out_dir: str, config, params, tokenizer, *,
                          tasks: Sequence[str],
                          task_kwargs: Optional[Mapping[str, Any]] = None,
                          num_queries: int = 64, max_samples: int = 64,
                          samples_per_round: int = 8,
                          max_new_tokens: int = 64,
                          temperature: float = 1.0, seed: int = 0,
                          shards: int = 1, sampler: Any = None
                          ) -> dict[str, Any]:
  """Samples the model on training queries and stores the failed ones.

  Writes out_dir/data (the TFDS dataset), out_dir/failures.jsonl (the same
  records, readable) and out_dir/failure_statistics.json; returns the
  statistics (per task, see `find_failures`, and 'total_failures'). A
  finished dataset with its statistics is reused.

  Args:
    out_dir: the stage directory.
    config / params / tokenizer: the policy.
    tasks: task names; task_kwargs: per task, constructor arguments.
    num_queries: training queries per task.
    max_samples / samples_per_round / max_new_tokens / temperature: see
      `find_failures`.
    seed: query generation and sampling.
    shards: ArrayRecord shards.
    sampler: the sampler (default: a `chat_sampler` bucketing batches by
      16); it gets `params` through `update_params`.
  """
  from swirl_jax.tasks import compact  # pylint: disable=g-import-not-at-top
  stats_path = os.path.join(out_dir, STATS_FILE)
  data_dir = os.path.join(out_dir, "data")
  if os.path.exists(stats_path):
    try:
      open_failures(data_dir)
      with open(stats_path) as f:
        return json.load(f)
    except (FailureDataError, ValueError):
      pass
  if sampler is None:
    from swirl_jax.sampling import chat_sampler  # pylint: disable=g-import-not-at-top
    sampler = chat_sampler(config, tokenizer, batch_bucket=16)
  sampler.update_params(params)
  records, stats = [], {}
  for i, name in enumerate(tasks):
    task = compact.make_task(name, **(task_kwargs or {}).get(name, {}))
    examples = compact.generate_examples(task, num_queries,
                                          seed=seed + 7919 * (i + 1),
                                          split="train")
    recs, task_stats = find_failures(
        sampler, tokenizer, task, examples, max_samples=max_samples,
        samples_per_round=samples_per_round, max_new_tokens=max_new_tokens,
        temperature=temperature, seed=seed + i)
    log.info("failures %s: %s", name, task_stats)
    records.extend(recs)
    stats[name] = task_stats
  stats["total_failures"] = len(records)
  if not records:
    raise ValueError(f"The model solved every one of the {num_queries} "
                     f"queries per task in all {max_samples} samples: no "
                     "failure to train on. Use more queries or harder "
                     "instances.")
  os.makedirs(out_dir, exist_ok=True)
  traj.save_jsonl(os.path.join(out_dir, "failures.jsonl"), records)
  prepare_failure_dataset(records, data_dir, shards=shards, overwrite=True)
  stages.write_json_atomic(stats_path, stats)
  return stats

