"""The SWiRL experiment: every stage of the paper, chained and resumable.

    python -m swirl_jax.main \\
        --gin_file=gin_configs/experiments/quickstart.gin \\
        --workdir=runs/quickstart

`swirl_experiment(workdir)` runs, with the settings of `SwirlConfig` (gin
binds its fields: `swirl_jax.swirl.SwirlConfig.seed = 1`), each stage in
its own directory of the workdir (see swirl_jax/stages.py; a rerun skips
finished stages and resumes a killed training stage from its checkpoint):

  tokenizer/                  the experiment's tokenizer (tiny default:
                              trained here on procedural tool-use text)
  warm_start/                 SFT of a randomly initialised model on scripted
                              demonstrations (CPU default only; at paper
                              scale `init_from` names the imported Gemma)
  synthesis_<task>/           stage 1 per training task: N trajectories per
                              question, judged, filtered, TFDS shards in
                              data/, filter_statistics.json
  sft_<task>/                 baseline: SFT on the same filtered steps
  swirl_<task>/               stage 2: step-wise RL (`stepwise_pg`) on the
                              stored states, G actions per state scored by
                              the judge
  swirl_<task>_<filter>/      (compare_filters) stage 2 on the data another
                              filter keeps, from the same trajectories
  eval_<model>/               held-out multi-step accuracy and mean process
                              label on every evaluation task
  report.json, report.md, *.png

One SWiRL model is trained per training task and evaluated on every task, so
the table holds in-domain (trained and evaluated on the same task) and
cross-task results (trained on multi-hop QA, evaluated on math, and the
reverse), next to the base model and the SFT baseline.

Training hyperparameters come from gin, scoped by stage, e.g.

    warm_start/swirl_jax.training.trainer.train.train_steps = 300
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


def _steps_sft_dataset_fn(data_dir: str, tokenizer_path: str):
  from swirl_jax.data import trajectories  # pylint: disable=g-import-not-at-top
  return functools.partial(trajectories.filtered_steps_sft_dataset,
                           data_dir=data_dir, tokenizer_path=tokenizer_path)


def _result_json(result: dict[str, Any]) -> dict[str, Any]:
  """evaluate_policy's result without the trajectory objects."""
  return {task: {k: v for k, v in r.items() if k != "trajectories"}
          for task, r in result.items()}


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
    init_from: the starting checkpoint ('hf:DIR', 'kaggle:DIR' or a
      swirl_jax workdir). None: warm-start a randomly initialised model by
      SFT on scripted demonstrations (`warm_start` stage; gin scope
      'warm_start' for its steps and learning rate).
    train_tasks: one SFT baseline and one SWiRL model per task.
    eval_tasks: every model is evaluated on each (held-out questions).
    judge_fn: builds the process judge (filtering, stage-2 reward and
      evaluation); default the rule-based judge, at paper scale the model
      judge (`swirl_jax.judges.model.model_judge`).
    filter_strategy: the filter of the main SWiRL and SFT runs
      (none | process | outcome | process_and_outcome; paper: process).
    compare_filters: more filters to train SWiRL with on the same
      trajectories (reported as 'SWiRL [task, filter]').
    compare_on: the train tasks whose data the compare_filters runs train
      on (None: every train task; e.g. only the task where the filters
      keep different trajectories, for a budget).
    compared_eval: where the compare_filters models are evaluated: 'all'
      (every eval task) or 'in_domain' (their training task only, for a
      budget).
    questions_per_task / samples_per_question: stage-1 size (paper: 5
      samples per question; questions_per_task None: the whole train split
      of a real dataset).
    max_steps: query limit of an episode; None: each task's own (paper: 10
      for math, 5 for multi-hop QA).
    prompt_style: 'full' (the paper's prompts) or 'compact' (one-line
      prompts for the tiny CPU default).
    max_new_tokens / max_context_tokens: per-action and per-episode budgets.
    synthesis_temperature: stage-1 sampling temperature.
    synthesis_shards: ArrayRecord shards of each stage-1 dataset.
    sft_baseline: also train the SFT-on-filtered-steps baseline.
    group_size: G, actions sampled per state in stage 2.
    groups_per_step: states per stage-2 step (G rows each).
    action_temperature: stage-2 sampling temperature.
    eval_questions: held-out questions per evaluation task (None: the
      whole test split of a real dataset).
    eval_split: the split every model is evaluated on: 'test' (the held-out
      questions of the report) or 'validation' (for choosing settings
      without looking at the test questions; the report says which).
    data_paths: task name -> real dataset in its published format: a
      {'train': FILE, 'test': FILE} dict, a TFDS directory (both splits,
      e.g. {'gsm8k': '/data/tfds'}), or one file for an evaluation-only
      task (`synthesis.split_data_path`); tasks without one are generated.
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
      if (value is None and optional) or (
          isinstance(value, int) and not isinstance(value, bool)
          and value > 0):
        continue
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
  from swirl_jax.evaluation import tool_use  # pylint: disable=g-import-not-at-top
  from swirl_jax.swirl import stepwise, synthesis  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  tokenizer = stages.experiment_tokenizer(workdir)
  judge = cfg.judge_fn()

  # The starting policy: an imported checkpoint, or the tiny warm start.
  init_from = cfg.init_from
  if init_from is None:
    from swirl_jax.data import sources  # pylint: disable=g-import-not-at-top
    stages.train_stage(
        workdir, WARM_START, model_config=cfg.model_config,
        dataset_fn=functools.partial(sources.sft_dataset,
                                     tokenizer_path=tokenizer.path),
        objective="sft")
    init_from = stages.stage_dir(workdir, WARM_START)
  base_params = stages.load_policy(cfg.model_config, init_from, cfg.seed)

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
    synth = stages.run_stage(
        workdir, f"synthesis_{task}", lambda d, task=task, i=i: (
            synthesis.synthesize(
                d, cfg.model_config, base_params, tokenizer,
                task_names=(task,),
                num_questions=cfg.questions_per_task,
                samples_per_question=cfg.samples_per_question,
                filter_strategy=cfg.filter_strategy, judge=judge,
                temperature=cfg.synthesis_temperature,
                seed=cfg.seed + 100 * i,
                shards=cfg.synthesis_shards, **common)))
    statistics[task] = synth
    synth.pop("seconds", None)
    synth_dir = stages.stage_dir(workdir, f"synthesis_{task}")
    data_dirs = {cfg.filter_strategy: os.path.join(synth_dir, "data")}
    for f in (cfg.compare_filters if task in cfg.compare_on else ()):
      if f != cfg.filter_strategy:
        out = os.path.join(synth_dir, f"data_{f}")
        refiltered = stages.run_stage(
            workdir, f"synthesis_{task}_{f}",
            lambda d, f=f, src=synth_dir, out=out: synthesis.refilter(
                src, out, f, shards=cfg.synthesis_shards))
        if refiltered.get("kept_nothing"):
          print(f"[synthesis_{task}_{f}] the {f!r} filter kept no "
                "trajectory: no SWiRL run for it.", flush=True)
          skipped[f"SWiRL [{task}, {f}]"] = "the filter kept no trajectory"
        else:
          data_dirs[f] = out

    if cfg.sft_baseline:
      label = f"SFT [{task}]"
      run = stages.train_stage(
          workdir, f"sft_{task}", scope="sft",
          model_config=cfg.model_config,
          dataset_fn=_steps_sft_dataset_fn(data_dirs[cfg.filter_strategy],
                                           tokenizer.path),
          objective="sft", init_from=init_from)
      models[label], trained_on[label] = run["workdir"], task
      filter_of[label] = cfg.filter_strategy

    for f, data_dir in data_dirs.items():
      main = f == cfg.filter_strategy
      name = f"swirl_{task}" if main else f"swirl_{task}_{f}"
      label = (f"SWiRL [{task}]" if main
               else f"SWiRL [{task}, {f}]")
      builder = stepwise.StepwiseBatchBuilder(
          cfg.model_config, tokenizer, judge, group_size=cfg.group_size,
          max_new_tokens=cfg.max_new_tokens,
          temperature=cfg.action_temperature,
          seq_len=cfg.max_context_tokens, seed=cfg.seed + 7)
      run = stages.train_stage(
          workdir, name, scope="swirl", model_config=cfg.model_config,
          dataset_fn=states_dataset_fn(data_dir, cfg.groups_per_step),
          objective="stepwise_pg", batch_fn=builder, init_from=init_from)
      models[label], trained_on[label] = run["workdir"], task
      filter_of[label] = f

  results: dict[str, Any] = {}
  for k, (label, ckpt) in enumerate(models.items()):
    compared = filter_of[label] not in (None, cfg.filter_strategy)
    tasks_here = ((trained_on[label],) if compared and
                  cfg.compared_eval == "in_domain" else cfg.eval_tasks)

    def evaluate_stage(d, ckpt=ckpt, tasks_here=tasks_here):
      params = (base_params if ckpt == init_from
                else stages.load_policy(cfg.model_config, ckpt, cfg.seed))
      result = tool_use.evaluate_policy(
          cfg.model_config, params, tokenizer, task_names=tasks_here,
          num_questions=cfg.eval_questions, judge=judge,
          seed=cfg.seed + 5000, split=cfg.eval_split, **common)
      from swirl_jax.rollout import save_jsonl  # pylint: disable=g-import-not-at-top
      for task, r in result.items():
        save_jsonl(os.path.join(d, f"trajectories_{task}.jsonl"),
                   r["trajectories"])
      return {"tasks": _result_json(result)}
    results[label] = stages.run_stage(
        workdir, f"eval_{k}_{_slug(label)}", evaluate_stage)["tasks"]
  from swirl_jax import bases  # pylint: disable=g-import-not-at-top
  from swirl_jax.evaluation import swirl_report  # pylint: disable=g-import-not-at-top
  return swirl_report.write_swirl_report(
      workdir, results, trained_on, statistics, models, skipped,
      filter_of=filter_of, main_filter=cfg.filter_strategy,
      base=bases.describe(init_from), eval_split=cfg.eval_split)


def _slug(label: str) -> str:
  return "".join(c if c.isalnum() else "_" for c in label).strip("_").lower()
