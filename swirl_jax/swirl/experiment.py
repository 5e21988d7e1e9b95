"""The SWiRL experiment: every stage of the paper, chained and resumable.

    python -m swirl_jax.main \\
        --gin_file=gin_configs/experiments/quickstart.gin \\
        --workdir=runs/quickstart

`swirl_experiment(workdir)` runs with the settings of `SwirlConfig`, each
stage in its own directory of the workdir (`swirl_jax.stages`; docs/swirl.md
lists the files of each):

  tokenizer/              the tokenizer (tiny default: trained here)
  warm_start/             SFT of a random model (CPU default only)
  synthesis_<task>/       stage 1: trajectories judged, filtered, stored
  sft_<task>/             the SFT baseline on the same filtered steps
  swirl_<task>/           stage 2: step-wise RL (`stepwise_pg`)
  swirl_<task>_<filter>/  stage 2 on another filter's data (compare_filters)
  eval_<k>_<model>/       held-out accuracy and mean process label
  report.json, report.md, *.png

Every model is evaluated on every task (in-domain and cross-task). Training
settings are gin bindings scoped by stage ('warm_start', 'sft', 'swirl'):

    swirl/swirl_jax.training.optimizer.learning_rate_schedule.peak_learning_rate = 1e-4
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Optional, Sequence

import gin

from swirl_jax import stages
from swirl_jax.data import rl_records
from swirl_jax.evaluation.swirl_report import BASE
from swirl_jax.swirl import filters

WARM_START = "warm_start"


def states_dataset_fn(data_dir: str, groups_per_step: int):
  """A trainer dataset_fn serving lists of the stored states in data_dir."""
  from swirl_jax.data import trajectories as traj_data  # pylint: disable=g-import-not-at-top
  return rl_records.records_dataset_fn(
      functools.partial(traj_data.open_data_source, data_dir),
      global_batch_size=groups_per_step, what="stored states")


@gin.configurable(module="swirl_jax.swirl")
def default_judge():
  """The rule-based process judge (gin: bind `judge_fn` to another)."""
  from swirl_jax.judges import get_judge  # pylint: disable=g-import-not-at-top
  return get_judge("rules")


@gin.configurable(module="swirl_jax.swirl")
@dataclasses.dataclass(frozen=True)
class SwirlConfig:
  """The settings of one SWiRL experiment (gin: `swirl_jax.swirl.SwirlConfig`).

  Attributes:
    model_config: the policy's TransformerConfig.
    init_from: the base ('hf:DIR', 'kaggle:DIR' or a workdir). None:
      warm-start a random model by SFT (`warm_start` stage).
    train_tasks: one SFT baseline and one SWiRL model per task.
    eval_tasks: every model is evaluated on each (held-out questions).
    judge_fn: builds the process judge of filtering, stage-2 reward and
      evaluation (default: rules; paper: `swirl_jax.judges.model_judge`).
    filter_strategy: the filter of the main SWiRL and SFT runs (none |
      process | outcome | process_and_outcome; paper: process).
    compare_filters: more filters to train SWiRL with on the same
      trajectories (reported as 'SWiRL [task, filter]').
    compare_on: the train tasks the compare_filters runs train on (None:
      all).
    compared_eval: where the compare_filters models are evaluated: 'all'
      eval tasks or 'in_domain' (their training task only).
    questions_per_task / samples_per_question: stage-1 size (paper: 5
      samples; questions None: a real dataset's whole train split).
    max_steps: query limit of an episode (None: each task's own).
    prompt_style: 'full' (the paper's prompts) or 'compact' (one line).
    max_new_tokens / max_context_tokens: per-action and per-episode budgets.
    synthesis_temperature: stage-1 sampling temperature.
    synthesis_shards: ArrayRecord shards of each stage-1 dataset.
    sft_baseline: also train the SFT-on-filtered-steps baseline.
    group_size: G, actions sampled per state in stage 2.
    groups_per_step: states per stage-2 step (G rows each).
    action_temperature: stage-2 sampling temperature.
    eval_questions: held-out questions per task (None: a real dataset's
      whole test split).
    eval_split: 'test' (the report's held-out questions) or 'validation'
      (for choosing settings).
    data_paths: task name -> real dataset: {'train': FILE, 'test': FILE},
      a TFDS directory, or one file for an evaluation-only task
      (`synthesis.split_data_path`); other tasks are generated.
    seed: base seed of every stage.
  """

  model_config: Any = gin.REQUIRED
  init_from: Optional[str] = None
  train_tasks: Sequence[str] = ("gsm8k", "hotpotqa")
  eval_tasks: Sequence[str] = ("gsm8k", "hotpotqa")
  judge_fn: Callable[[], Any] = default_judge
  filter_strategy: str = "process"
  compare_filters: Sequence[str] = ()
  compared_eval: str = "all"
  compare_on: Optional[Sequence[str]] = None
  questions_per_task: Optional[int] = 100
  samples_per_question: int = 5
  max_steps: Optional[int] = None
  prompt_style: str = "full"
  max_new_tokens: int = 64
  max_context_tokens: int = 1024
  synthesis_temperature: float = 1.0
  synthesis_shards: int = 1
  sft_baseline: bool = True
  group_size: int = 4
  groups_per_step: int = 8
  action_temperature: float = 1.0
  eval_questions: Optional[int] = 64
  eval_split: str = "test"
  data_paths: Optional[dict[str, Any]] = None
  seed: int = 0

  def __post_init__(self):
    set_ = functools.partial(object.__setattr__, self)
    for name in ("train_tasks", "eval_tasks", "compare_filters"):
      set_(name, tuple(getattr(self, name)))
    filters.check_filter(self.filter_strategy)
    if self.compared_eval not in ("all", "in_domain"):
      raise ValueError("SwirlConfig.compared_eval must be 'all' or "
                       f"'in_domain', got {self.compared_eval!r}.")
    for f in self.compare_filters:
      filters.check_filter(f)
    set_("compare_on", tuple(self.train_tasks if self.compare_on is None
                             else self.compare_on))
    unknown = [t for t in self.compare_on if t not in self.train_tasks]
    if unknown:
      raise ValueError(f"SwirlConfig.compare_on names {unknown[0]!r}, "
                       f"which is not a train task {self.train_tasks}.")
    stages.check_eval_split("SwirlConfig", self.eval_split)
    for name in ("questions_per_task", "eval_questions",
                 "samples_per_question", "groups_per_step", "group_size"):
      value = getattr(self, name)
      optional = name in ("questions_per_task", "eval_questions")
      if not ((value is None and optional) or (
          isinstance(value, int) and not isinstance(value, bool)
          and value > 0)):
        raise ValueError(f"SwirlConfig.{name} must be a positive int"
                         f"{' or None' if optional else ''}, got {value!r}.")
    if not self.train_tasks:
      raise ValueError("SwirlConfig.train_tasks is empty.")


@gin.configurable(module="swirl_jax.swirl")
def swirl_experiment(workdir: str,
                     config: Optional[SwirlConfig] = None) -> dict[str, Any]:
  """Runs the SWiRL experiment into `workdir`; returns the report payload.

  Args:
    workdir: experiment directory (one subdirectory per stage).
    config: the settings (None: `SwirlConfig()` with its gin bindings).

  Returns:
    The report payload (also in workdir/report.json).
  """
  cfg = SwirlConfig() if config is None else config
  from swirl_jax import bases  # pylint: disable=g-import-not-at-top
  from swirl_jax.data import trajectories as traj_data  # pylint: disable=g-import-not-at-top
  from swirl_jax.evaluation import swirl_report, tool_use  # pylint: disable=g-import-not-at-top
  from swirl_jax.rollout import save_jsonl  # pylint: disable=g-import-not-at-top
  from swirl_jax.swirl import stepwise, synthesis  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  exp = stages.Experiment(workdir, cfg)
  tokenizer, judge = exp.tokenizer, cfg.judge_fn()

  # The starting policy: an imported checkpoint, or the tiny warm start.
  init_from = cfg.init_from
  if init_from is None:
    from swirl_jax.data import sources  # pylint: disable=g-import-not-at-top
    exp.train_stage(WARM_START, objective="sft", dataset_fn=functools.partial(
        sources.sft_dataset, tokenizer_path=tokenizer.path))
    init_from = exp.stage_dir(WARM_START)
  base_params = exp.params(init_from, keep=True)

  common = dict(prompt_style=cfg.prompt_style,
                max_new_tokens=cfg.max_new_tokens,
                max_context_tokens=cfg.max_context_tokens,
                max_steps=cfg.max_steps,
                data_paths=dict(cfg.data_paths or {}))
  models: dict[str, str] = {BASE: init_from}  # label -> checkpoint
  trained_on: dict[str, Optional[str]] = {BASE: None}
  filter_of: dict[str, Optional[str]] = {BASE: None}
  statistics: dict[str, Any] = {}
  skipped: dict[str, str] = {}
  for i, task in enumerate(cfg.train_tasks):
    synth_stage = f"synthesis_{task}"
    statistics[task] = exp.run_stage(synth_stage, lambda d, task=task, i=i: (
        synthesis.synthesize(
            d, cfg.model_config, base_params, tokenizer, task_names=(task,),
            num_questions=cfg.questions_per_task,
            samples_per_question=cfg.samples_per_question,
            filter_strategy=cfg.filter_strategy, judge=judge,
            temperature=cfg.synthesis_temperature, seed=cfg.seed + 100 * i,
            shards=cfg.synthesis_shards, **common)))
    statistics[task].pop("seconds", None)
    synth_dir = exp.stage_dir(synth_stage)
    data_dirs = {cfg.filter_strategy: os.path.join(synth_dir, "data")}
    for f in (cfg.compare_filters if task in cfg.compare_on else ()):
      if f == cfg.filter_strategy:
        continue
      out = os.path.join(synth_dir, f"data_{f}")
      refiltered = exp.run_stage(
          f"{synth_stage}_{f}", lambda d, f=f, out=out: synthesis.refilter(
              synth_dir, out, f, shards=cfg.synthesis_shards))
      if refiltered.get("kept_nothing"):
        print(f"[{synth_stage}_{f}] the {f!r} filter kept no trajectory: "
              "no SWiRL run for it.", flush=True)
        skipped[f"SWiRL [{task}, {f}]"] = "the filter kept no trajectory"
      else:
        data_dirs[f] = out

    if cfg.sft_baseline:
      run = exp.train_stage(
          f"sft_{task}", scope="sft", objective="sft", init_from=init_from,
          dataset_fn=functools.partial(
              traj_data.filtered_steps_sft_dataset,
              data_dir=data_dirs[cfg.filter_strategy],
              tokenizer_path=tokenizer.path))
      label = f"SFT [{task}]"
      models[label], trained_on[label] = run["workdir"], task
      filter_of[label] = cfg.filter_strategy

    for f, data_dir in data_dirs.items():
      main = f == cfg.filter_strategy
      builder = stepwise.StepwiseBatchBuilder(
          cfg.model_config, tokenizer, judge, group_size=cfg.group_size,
          max_new_tokens=cfg.max_new_tokens,
          temperature=cfg.action_temperature,
          seq_len=cfg.max_context_tokens, seed=cfg.seed + 7)
      run = exp.train_stage(
          f"swirl_{task}" if main else f"swirl_{task}_{f}", scope="swirl",
          objective="stepwise_pg", batch_fn=builder, init_from=init_from,
          dataset_fn=states_dataset_fn(data_dir, cfg.groups_per_step))
      label = f"SWiRL [{task}]" if main else f"SWiRL [{task}, {f}]"
      models[label], trained_on[label], filter_of[label] = (
          run["workdir"], task, f)

  results: dict[str, Any] = {}
  for k, (label, ckpt) in enumerate(models.items()):
    compared = filter_of[label] not in (None, cfg.filter_strategy)
    tasks_here = ((trained_on[label],) if compared and
                  cfg.compared_eval == "in_domain" else cfg.eval_tasks)

    def evaluate_stage(d, ckpt=ckpt, tasks_here=tasks_here):
      result = tool_use.evaluate_policy(
          cfg.model_config, exp.params(ckpt), tokenizer,
          task_names=tasks_here, num_questions=cfg.eval_questions,
          judge=judge, seed=cfg.seed + 5000, split=cfg.eval_split, **common)
      for task, r in result.items():  # the trajectories go to jsonl files
        save_jsonl(os.path.join(d, f"trajectories_{task}.jsonl"),
                   r.pop("trajectories"))
      return {"tasks": result}
    results[label] = exp.run_stage(f"eval_{k}_{_slug(label)}",
                                   evaluate_stage)["tasks"]
  return swirl_report.write_swirl_report(
      workdir, results, trained_on, statistics, models, skipped,
      filter_of=filter_of, main_filter=cfg.filter_strategy,
      base=bases.describe(init_from), eval_split=cfg.eval_split)


def _slug(label: str) -> str:
  return "".join(c if c.isalnum() else "_" for c in label).strip("_").lower()
