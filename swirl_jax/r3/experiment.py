"""The R3 experiment, stage by stage (resumable), driven by gin.

    python -m swirl_jax.main \\
        --gin_file=gin_configs/experiments/r3_quickstart.gin \\
        --workdir=runs/r3_quickstart

Stages (each in its own directory of the workdir; `swirl_jax.stages` skips
finished ones and resumes a killed training stage from its checkpoint):

1. tokenizer: `workdir/tokenizer/spm.model`, trained on R3 text (or the gin
   `tokenizer_path_for.path`, e.g. a real Gemma tokenizer).
2. sft: the warm start, next-token loss on imperfect scripted answers,
   reflections and retries (`data.reflection_demonstrations`), from
   `init_from` (random for the CPU default). `sft_steps=0` skips it: the
   vanilla model is then `init_from` itself (e.g. an instruction-tuned
   checkpoint).
3. failures: the vanilla model samples up to `max_samples_per_query`
   answers per training query; the failed queries (with the failed
   attempt) become a TFDS dataset (`r3.failures`).
4. grpo: GRPO on reflections (`r3.batches`, objective 'grpo'): G
   reflections per failed query, reward = the retry is correct, only
   reflection tokens in the loss, clipped ratio over `inner_updates`
   updates per sampled batch, KL to the vanilla model.
5. eval_vanilla / eval_trained: first- and second-attempt accuracy and the
   error categories on held-out test queries.
6. report: workdir/report.json, report.md and PNG plots (always rewritten).

Learning rates, checkpoint periods and the GRPO loss are ordinary gin
bindings, scoped by stage: `sft/swirl_jax.training.optimizer.
learning_rate_schedule.peak_learning_rate`, `grpo/swirl_jax.objectives.grpo.
grpo_loss.beta`, `grpo/swirl_jax.training.trainer.train.checkpoint_every`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from typing import Any, Mapping, Optional, Sequence

import gin

from swirl_jax import stages
from swirl_jax.data import reflection_demonstrations as reflection_demos
from swirl_jax.data import failures as failure_records
from swirl_jax.r3 import failures as failures_lib
from swirl_jax.tasks import compact

log = logging.getLogger(__name__)

EVAL_STAGES = {"vanilla": "eval_vanilla", "trained": "eval_trained"}


def _load_avg() -> list[float]:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return []


def _held_out(tasks: Sequence[str], task_kwargs: Mapping[str, Any], n: int,
              seed: int, split: str = "test") -> dict[str, tuple[Any, list]]:
  out = {}
  for i, name in enumerate(tasks):
    task = compact.make_task(name, **dict(task_kwargs.get(name, {})))
    out[name] = (task, compact.generate_examples(
        task, n, seed=seed + 104729 * (i + 1), split=split))
  return out


def evaluate_stage(workdir: str, stage: str, config, tokenizer,
                   init_from: Optional[str], held_out, *,
                   max_new_tokens: int, temperature: float, seed: int,
                   sampler=None) -> dict:
  """Runs (or reuses) one evaluation stage; returns its summaries."""
  from swirl_jax.evaluation import reflect_retry as evaluation  # pylint: disable=g-import-not-at-top
  from swirl_jax.rollout import save_jsonl  # pylint: disable=g-import-not-at-top

  def fn(directory: str) -> dict:
    params = stages.load_policy(config, init_from)
    summaries, rows = evaluation.evaluate_model(
        config, params, tokenizer, held_out, max_new_tokens=max_new_tokens,
        temperature=temperature, seed=seed, sampler=sampler)
    for task_name, task_rows in rows.items():
      save_jsonl(os.path.join(directory, f"{task_name}.jsonl"), task_rows)
    return {"summaries": summaries, "init_from": init_from or "random"}

  return stages.run_stage(workdir, stage, fn)


@gin.configurable(module="swirl_jax.r3")
@dataclasses.dataclass(frozen=True)
class R3Config:
  """The settings of one R3 experiment (gin: `swirl_jax.r3.R3Config`).

  Attributes:
    model_config: the policy's TransformerConfig.
    tasks: R3 task names.
    task_kwargs: per task, constructor arguments (`tasks.compact.make_task`,
      e.g. {'countdown': {'prompt_style': 'compact', 'min_numbers': 3}}).
    init_from: the starting checkpoint (None: random; 'hf:DIR', 'kaggle:DIR'
      or a training workdir).
    sft_steps: SFT warm-start steps (0: no warm start).
    sft_examples_per_task: generated instances per task for SFT (three
      examples each: answer, reflection, retry).
    sft_batch_size / sft_seq_len: SFT rows per step and packed row length.
    first_attempt_accuracy / reflection_accuracy: how often the scripted
      answers and reflection plans are correct.
    failure_queries_per_task: training queries sampled for the failure
      dataset.
    max_samples_per_query: N, answers sampled per query at most (paper 64).
    samples_per_round: answers per query per sampler call.
    grpo_steps: GRPO updates.
    groups_per_step: failed queries (groups of G reflections) per training
      batch.
    query_pool: failed queries sampled per batch (>= groups_per_step;
      None: groups_per_step); the batch keeps the groups whose rewards
      differ first (`r3.batches`).
    group_size: G, reflections per failed query.
    inner_updates: mu, GRPO updates per sampled batch.
    grpo_seq_len: length of a GRPO training row (context + reflection).
    old_logprobs: 'sampler' or 'recompute' (see `r3.batches`).
    reference_in_batch: compute the reference log-probs once per sampled
      batch (else the train step does, at every update).
    max_new_tokens: budget of an answer, a reflection, a retry.
    temperature: sampling temperature of the failure search and of the
      GRPO reflections.
    retry_temperature: of the GRPO retries (None: `temperature`; 0:
      greedy, so that a reflection's reward does not depend on sampling
      noise in a turn that is not trained).
    eval_queries_per_task: held-out test queries per task.
    eval_split: the split of the evaluation queries: 'test' (the held-out
      queries of the report) or 'validation' (for choosing settings without
      looking at the test queries; the report says which).
    eval_temperature: sampling temperature of the evaluation (0: greedy).
    seed: the experiment's seed.
  """

  model_config: Any = gin.REQUIRED
  tasks: Sequence[str] = compact.R3_TASKS
  task_kwargs: Optional[Mapping[str, Mapping[str, Any]]] = None
  init_from: Optional[str] = None
  sft_steps: int = 300
  sft_examples_per_task: int = 1000
  sft_batch_size: int = 16
  sft_seq_len: int = 384
  first_attempt_accuracy: float = 0.5
  reflection_accuracy: float = 0.5
  failure_queries_per_task: int = 128
  max_samples_per_query: int = 64
  samples_per_round: int = 8
  grpo_steps: int = 100
  groups_per_step: int = 8
  query_pool: Optional[int] = None
  group_size: int = 4
  inner_updates: int = 1
  grpo_seq_len: int = 320
  old_logprobs: str = "sampler"
  reference_in_batch: bool = True
  max_new_tokens: int = 64
  temperature: float = 1.0
  retry_temperature: Optional[float] = 0.0
  eval_queries_per_task: int = 200
  eval_split: str = "test"
  eval_temperature: float = 0.0
  seed: int = 0

  def __post_init__(self):
    set_ = functools.partial(object.__setattr__, self)
    set_("tasks", tuple(self.tasks))
    set_("task_kwargs", {k: dict(v)
                         for k, v in (self.task_kwargs or {}).items()})
    unknown = sorted(set(self.task_kwargs) - set(self.tasks))
    if unknown:
      raise ValueError(f"task_kwargs names tasks {unknown} that are not in "
                       f"tasks={list(self.tasks)}.")
    for name in self.tasks:  # fail on a bad task before any stage runs
      self.task(name)
    stages.check_eval_split("R3Config", self.eval_split)
    if self.pool < self.groups_per_step:
      raise ValueError(f"query_pool={self.query_pool} must be >= "
                       f"groups_per_step={self.groups_per_step}.")

  @property
  def pool(self) -> int:
    """Failed queries sampled per batch (query_pool, or groups_per_step)."""
    return (self.groups_per_step if self.query_pool is None
            else int(self.query_pool))

  def task(self, name: str):
    """The task `name` made with its `task_kwargs`."""
    return compact.make_task(name, **self.task_kwargs.get(name, {}))


@gin.configurable(denylist=["workdir"])
def r3_experiment(workdir: str, config: Optional[R3Config] = None) -> dict:
  """Runs the R3 recipe in `workdir` (see the module docstring).

  Args:
    workdir: the experiment directory.
    config: the settings (None: `R3Config()` with its gin bindings).
  Returns:
    The report's content (also in workdir/report.json).
  """
  cfg = R3Config() if config is None else config
  from swirl_jax.data import sources  # pylint: disable=g-import-not-at-top
  from swirl_jax.r3 import batches as batches_lib  # pylint: disable=g-import-not-at-top
  from swirl_jax.evaluation import reflect_retry as evaluation  # pylint: disable=g-import-not-at-top
  from swirl_jax.evaluation import r3_report as report_lib  # pylint: disable=g-import-not-at-top
  from swirl_jax.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  started, load_start = time.time(), _load_avg()
  cpu_start = time.process_time()
  workdir = os.path.abspath(workdir)
  grading = {}  # task -> its verifier's grading, for the report
  for name in cfg.tasks:
    task = cfg.task(name)
    if getattr(task, "grading", None):
      grading[name] = task.grading
  # The held-out queries, made now: a split too small for
  # cfg.eval_queries_per_task fails here, not after the training stages.
  held_out = _held_out(cfg.tasks, cfg.task_kwargs, cfg.eval_queries_per_task,
                       cfg.seed, cfg.eval_split)

  # 1. Tokenizer.
  tokenizer_path = sources.tokenizer_path_for(
      workdir, corpus_fn=functools.partial(
          reflection_demos.tokenizer_corpus, cfg.tasks, cfg.task_kwargs))
  tokenizer = Tokenizer(tokenizer_path)

  # 2. SFT warm start.
  if cfg.sft_steps > 0:
    examples_fn = functools.partial(
        reflection_demos.r3_demonstrations, cfg.tasks, cfg.task_kwargs,
        cfg.sft_examples_per_task, cfg.seed, "train",
        cfg.first_attempt_accuracy, cfg.reflection_accuracy)
    stages.train_stage(
        workdir, "sft", model_config=cfg.model_config, objective="sft",
        train_steps=cfg.sft_steps, init_from=cfg.init_from, seed=cfg.seed,
        dataset_fn=sources.sft_dataset_fn(
            examples_fn, tokenizer_path, seq_len=cfg.sft_seq_len,
            global_batch_size=cfg.sft_batch_size))
    vanilla = stages.stage_dir(workdir, "sft")
  else:
    vanilla = cfg.init_from

  # One sampler for the failure search and both evaluations: the shapes
  # they share compile once.
  from swirl_jax.sampling import chat_sampler  # pylint: disable=g-import-not-at-top
  sampler = chat_sampler(cfg.model_config, tokenizer, batch_bucket=16)

  # 3. Failure dataset of the vanilla model.
  failure_dir = stages.stage_dir(workdir, "failures")
  failure_stats = stages.run_stage(
      workdir, "failures", lambda d: failures_lib.build_failure_dataset(
          d, cfg.model_config,
          stages.load_policy(cfg.model_config, vanilla, cfg.seed),
          tokenizer, tasks=cfg.tasks, task_kwargs=cfg.task_kwargs,
          num_queries=cfg.failure_queries_per_task,
          max_samples=cfg.max_samples_per_query,
          samples_per_round=cfg.samples_per_round,
          max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
          seed=cfg.seed, sampler=sampler))

  # 4. GRPO on reflections.
  grpo_dir = stages.stage_dir(workdir, "grpo")
  if stages.stage_result(workdir, "grpo") is None:
    reference = (stages.load_policy(cfg.model_config, vanilla, cfg.seed)
                 if cfg.reference_in_batch else None)
    builder = batches_lib.ReflectionBatchBuilder(
        cfg.model_config, tokenizer, task_kwargs=cfg.task_kwargs,
        group_size=cfg.group_size, groups_per_step=cfg.groups_per_step,
        inner_updates=cfg.inner_updates,
        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
        retry_temperature=cfg.retry_temperature, seq_len=cfg.grpo_seq_len,
        seed=cfg.seed,
        cache_dir=os.path.join(grpo_dir, "rollouts"),
        reference_params=reference, old_logprobs=cfg.old_logprobs,
        log_path=os.path.join(grpo_dir, "rollouts.jsonl"))
    stages.train_stage(
        workdir, "grpo", model_config=cfg.model_config, objective="grpo",
        train_steps=cfg.grpo_steps, init_from=vanilla, seed=cfg.seed,
        batch_fn=builder, dataset_fn=failure_records.failures_dataset_fn(
            os.path.join(failure_dir, "data"), global_batch_size=cfg.pool,
            repeat_each=cfg.inner_updates))

  # 5. Evaluation of both models on the same held-out queries.
  evals = {}
  for label, source in (("vanilla", vanilla), ("trained", grpo_dir)):
    evals[label] = evaluate_stage(
        workdir, EVAL_STAGES[label], cfg.model_config, tokenizer, source,
        held_out, max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.eval_temperature, seed=cfg.seed,
        sampler=sampler)["summaries"]

  # 6. Report (paired on the same held-out queries, per task and pooled).
  paired, rows_all = {}, {"vanilla": [], "trained": []}
  for name in cfg.tasks:
    rows = {label: read_eval_rows(stages.stage_dir(workdir, stage), name)
            for label, stage in EVAL_STAGES.items()}
    paired[name] = evaluation.paired_comparison(rows["vanilla"],
                                                rows["trained"])
    for label in rows_all:
      rows_all[label] += [dict(r, id=f"{name}/{r['id']}")
                          for r in rows[label]]
  paired["all"] = evaluation.paired_comparison(rows_all["vanilla"],
                                               rows_all["trained"])
  timings = {name: (stages.stage_result(workdir, name) or {}).get("seconds")
             for name in ("sft", "failures", "grpo", *EVAL_STAGES.values())}
  return report_lib.write_r3_report(
      workdir, evals, failure_stats=failure_stats,
      rollout_log=os.path.join(grpo_dir, "rollouts.jsonl"), paired=paired,
      eval_dirs={label: stages.stage_dir(workdir, stage)
                 for label, stage in EVAL_STAGES.items()},
      settings={"tasks": list(cfg.tasks), "task_kwargs": cfg.task_kwargs,
                "sft_steps": cfg.sft_steps, "grpo_steps": cfg.grpo_steps,
                "groups_per_step": cfg.groups_per_step,
                "query_pool": cfg.pool,
                "group_size": cfg.group_size,
                "inner_updates": cfg.inner_updates,
                "temperature": cfg.temperature,
                "retry_temperature": cfg.retry_temperature,
                "max_samples_per_query": cfg.max_samples_per_query,
                "eval_queries_per_task": cfg.eval_queries_per_task,
                "eval_split": cfg.eval_split,
                "eval_temperature": cfg.eval_temperature, "seed": cfg.seed},
      timings=dict(timings, this_run=round(time.time() - started, 1),
                   this_run_cpu=round(time.process_time() - cpu_start, 1)),
      load={"start": load_start, "end": _load_avg()}, grading=grading,
      headline=report_lib.r3_headline(rows_all["vanilla"],
                                      rows_all["trained"]),
      eval_split=cfg.eval_split)


def read_eval_rows(eval_dir: str, task_name: str) -> list[dict]:
  """The per-query rows an evaluation stage stored for a task."""
  path = os.path.join(eval_dir, f"{task_name}.jsonl")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
