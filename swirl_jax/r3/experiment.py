"""The R3 experiment, stage by stage (resumable), driven by gin.

    python -m swirl_jax.main \\
        --gin_file=gin_configs/experiments/r3_quickstart.gin \\
        --workdir=runs/r3_quickstart

`r3_experiment(workdir)` runs with the settings of `R3Config`, each stage in
its own directory of the workdir (`swirl_jax.stages`; docs/r3.md lists what
each holds):

1. tokenizer/: trained on R3 text (or the gin `tokenizer_path_for.path`).
2. sft/: the warm start on imperfect scripted answers, reflections and
   retries, from `init_from` (`sft_steps` 0: the vanilla model is
   `init_from`).
3. failures/: the training queries the vanilla model fails, with the
   failed attempt (`r3.failures`).
4. grpo/: GRPO on reflections (`r3.batches`), KL to the vanilla model.
5. eval_vanilla/, eval_trained/: both models on the same held-out queries.
6. report.json, report.md and plots (always rewritten).

Training settings are gin bindings scoped by stage ('sft', 'grpo'), e.g.
`grpo/swirl_jax.objectives.grpo.grpo_loss.beta`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Mapping, Optional, Sequence

import gin

from swirl_jax import stages
from swirl_jax.data import reflection_demonstrations as reflection_demos
from swirl_jax.data import failures as failure_records
from swirl_jax.r3 import failures as failures_lib
from swirl_jax.tasks import compact

EVAL_STAGES = {"vanilla": "eval_vanilla", "trained": "eval_trained"}


@gin.configurable(module="swirl_jax.r3")
@dataclasses.dataclass(frozen=True)
class R3Config:
  """The settings of one R3 experiment (gin: `swirl_jax.r3.R3Config`).

  Attributes:
    model_config: the policy's TransformerConfig.
    tasks: R3 task names.
    task_kwargs: per task, constructor arguments (`tasks.compact.make_task`,
      e.g. {'countdown': {'prompt_style': 'compact', 'min_numbers': 3}}).
    init_from: the starting checkpoint ('hf:DIR', 'kaggle:DIR' or a
      training workdir; None: random).
    sft_steps: SFT warm-start steps (0: no warm start).
    sft_examples_per_task: generated instances per task for SFT (three
      examples each: answer, reflection, retry).
    sft_batch_size / sft_seq_len: SFT rows per step and packed row length.
    first_attempt_accuracy / reflection_accuracy: how often the scripted
      answers and reflection plans are correct.
    failure_queries_per_task: training queries of the failure search.
    max_samples_per_query: N, the most answers sampled per query (paper 64).
    samples_per_round: answers per query per sampler call.
    grpo_steps: GRPO updates.
    groups_per_step: failed queries (groups of G reflections) per batch.
    query_pool: failed queries sampled per batch (>= groups_per_step; None:
      groups_per_step); the batch keeps the groups whose rewards differ
      first (`r3.batches`).
    group_size: G, reflections per failed query.
    inner_updates: mu, GRPO updates per sampled batch.
    grpo_seq_len: length of a GRPO row (context + reflection).
    old_logprobs: 'sampler' or 'recompute' (see `r3.batches`).
    reference_in_batch: reference log-probs once per sampled batch (else
      the train step computes them at every update).
    max_new_tokens: budget of an answer, a reflection, a retry.
    temperature: of the failure search and of the GRPO reflections.
    retry_temperature: of the GRPO retries (None: `temperature`; 0: greedy,
      so a reflection's reward does not depend on an untrained turn's
      sampling noise).
    eval_queries_per_task: held-out queries per task.
    eval_split: 'test' (the report's held-out queries) or 'validation' (for
      choosing settings).
    eval_temperature: of the evaluation (0: greedy).
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
  """Runs (or resumes) the R3 recipe in `workdir`.

  Args:
    workdir: the experiment directory.
    config: the settings (None: `R3Config()` with its gin bindings).
  Returns:
    The report's content (also in workdir/report.json).
  """
  cfg = R3Config() if config is None else config
  from swirl_jax.data import sources  # pylint: disable=g-import-not-at-top
  from swirl_jax.evaluation import r3_report as report_lib  # pylint: disable=g-import-not-at-top
  from swirl_jax.evaluation import reflect_retry as evaluation  # pylint: disable=g-import-not-at-top
  from swirl_jax.r3 import batches as batches_lib  # pylint: disable=g-import-not-at-top
  from swirl_jax.rollout import save_jsonl  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(workdir)
  # The held-out queries first: a split too small for eval_queries_per_task
  # fails here, before any stage.
  held_out = {}
  for i, name in enumerate(cfg.tasks):
    task = cfg.task(name)
    held_out[name] = (task, compact.generate_examples(
        task, cfg.eval_queries_per_task, seed=cfg.seed + 104729 * (i + 1),
        split=cfg.eval_split))
  corpus = functools.partial(reflection_demos.tokenizer_corpus, cfg.tasks,
                             cfg.task_kwargs)
  # One sampler (batches bucketed by 16) for the failure search and both
  # evaluations.
  exp = stages.Experiment(workdir, cfg, corpus, batch_bucket=16)
  tokenizer = exp.tokenizer

  vanilla = cfg.init_from
  if cfg.sft_steps > 0:
    examples_fn = functools.partial(
        reflection_demos.r3_demonstrations, cfg.tasks, cfg.task_kwargs,
        cfg.sft_examples_per_task, cfg.seed, "train",
        cfg.first_attempt_accuracy, cfg.reflection_accuracy)
    exp.train_stage(
        "sft", objective="sft", train_steps=cfg.sft_steps,
        init_from=cfg.init_from, seed=cfg.seed,
        dataset_fn=sources.sft_dataset_fn(
            examples_fn, tokenizer.path, seq_len=cfg.sft_seq_len,
            global_batch_size=cfg.sft_batch_size))
    vanilla = exp.stage_dir("sft")

  failure_stats = exp.run_stage(
      "failures", lambda d: failures_lib.build_failure_dataset(
          d, cfg.model_config, exp.params(vanilla), tokenizer,
          tasks=cfg.tasks, task_kwargs=cfg.task_kwargs,
          num_queries=cfg.failure_queries_per_task,
          max_samples=cfg.max_samples_per_query,
          samples_per_round=cfg.samples_per_round,
          max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
          seed=cfg.seed, sampler=exp.sampler))

  grpo_dir = exp.stage_dir("grpo")
  if stages.stage_result(workdir, "grpo") is None:
    builder = batches_lib.ReflectionBatchBuilder(
        cfg.model_config, tokenizer, task_kwargs=cfg.task_kwargs,
        group_size=cfg.group_size, groups_per_step=cfg.groups_per_step,
        inner_updates=cfg.inner_updates,
        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
        retry_temperature=cfg.retry_temperature, seq_len=cfg.grpo_seq_len,
        seed=cfg.seed, cache_dir=os.path.join(grpo_dir, "rollouts"),
        reference_params=(exp.params(vanilla) if cfg.reference_in_batch
                          else None),
        old_logprobs=cfg.old_logprobs,
        log_path=os.path.join(grpo_dir, "rollouts.jsonl"))
    try:
      exp.train_stage(
          "grpo", objective="grpo", train_steps=cfg.grpo_steps,
          init_from=vanilla, seed=cfg.seed, batch_fn=builder,
          dataset_fn=failure_records.failures_dataset_fn(
              os.path.join(exp.stage_dir("failures"), "data"),
              global_batch_size=cfg.pool, repeat_each=cfg.inner_updates))
    finally:
      builder.close()  # the rollout engines' thread pools

  evals = {}
  for label, source in (("vanilla", vanilla), ("trained", grpo_dir)):

    def evaluate(directory: str, source=source) -> dict:
      # Random params (no source) from seed 0, whatever cfg.seed.
      summaries, rows = evaluation.evaluate_model(
          cfg.model_config, stages.load_policy(cfg.model_config, source),
          tokenizer, held_out, max_new_tokens=cfg.max_new_tokens,
          temperature=cfg.eval_temperature, seed=cfg.seed,
          sampler=exp.sampler)
      for task_name, task_rows in rows.items():
        save_jsonl(os.path.join(directory, f"{task_name}.jsonl"), task_rows)
      return {"summaries": summaries, "init_from": source or "random"}
    evals[label] = exp.run_stage(EVAL_STAGES[label], evaluate)["summaries"]

  # The report: paired on the same held-out queries, per task and pooled.
  paired, rows_all = {}, {"vanilla": [], "trained": []}
  for name in cfg.tasks:
    rows = {label: read_eval_rows(exp.stage_dir(stage), name)
            for label, stage in EVAL_STAGES.items()}
    paired[name] = evaluation.paired_comparison(rows["vanilla"],
                                                rows["trained"])
    for label in rows_all:
      rows_all[label] += [dict(r, id=f"{name}/{r['id']}")
                          for r in rows[label]]
  paired["all"] = evaluation.paired_comparison(rows_all["vanilla"],
                                               rows_all["trained"])
  timings = stages.stage_seconds(
      workdir, ("sft", "failures", "grpo", *EVAL_STAGES.values()))
  return report_lib.write_r3_report(
      workdir, evals, failure_stats=failure_stats,
      rollout_log=os.path.join(grpo_dir, "rollouts.jsonl"), paired=paired,
      eval_dirs={label: exp.stage_dir(stage)
                 for label, stage in EVAL_STAGES.items()},
      settings=stages.settings_of(cfg, query_pool=cfg.pool),
      timings=dict(timings, this_run=exp.seconds(),
                   this_run_cpu=exp.cpu_seconds()),
      load={"start": exp.load_started, "end": stages.load_average()},
      grading={name: task.grading for name, (task, _) in held_out.items()
               if getattr(task, "grading", None)},
      headline=report_lib.r3_headline(rows_all["vanilla"],
                                      rows_all["trained"]),
      eval_split=cfg.eval_split)


def read_eval_rows(eval_dir: str, task_name: str) -> list[dict]:
  """The per-query rows an evaluation stage stored for a task."""
  from swirl_jax.rollout import load_jsonl  # pylint: disable=g-import-not-at-top
  return load_jsonl(os.path.join(eval_dir, f"{task_name}.jsonl"), dict)
