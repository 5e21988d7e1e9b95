"""The SCoRe experiment: warm start, Stage I, Stage II, baselines, evaluation.

    python -m swirl_jax.main \\
        --gin_file=gin_configs/experiments/score_quickstart.gin \\
        --workdir=runs/score_quickstart

`score_experiment(workdir)` runs with the settings of `ScoreConfig`, each
stage resumable in its own directory of the workdir (`swirl_jax.stages`;
docs/score.md lists the files of each):

  tokenizer/          the tokenizer (tiny default: trained on SCoRe text)
  warm_start/         SFT on direct-answer demonstrations: the base pi_ref
  stage1/, stage2/    SCoRe Stage I from the base, Stage II from Stage I
  baseline_data/      the base's two-attempt episodes (STaR, Pair-SFT data)
  star/, pair_sft/    the SFT baselines, from the base
  <ablation>/         'no_stage1' (Stage II from the base), 'no_shaping'
                      (no bonus), 'single_turn' (single-attempt REINFORCE)
  eval_<method>/      two-attempt evaluation on held-out problems
  scaling_<method>/   inference-time scaling curves
  report.json, report.md, *.png

Methods reported: 'base' (prompted with the correction instruction),
'self_refine' (base prompted for feedback, then the correction), 'star',
'pair_sft', 'score_stage1', 'score' (Stage II) and the ablations. Training
settings are gin bindings scoped by stage, e.g. `stage2/swirl_jax.
objectives.score.score_stage2_loss.alpha`; ablations train in
'stage2/<ablation>', so they inherit Stage II's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import os
from typing import Any, Mapping, Optional, Sequence

import gin
import numpy as np

from swirl_jax import stages
from swirl_jax.data import correction_demonstrations as correction_demos
from swirl_jax.data import demonstrations
from swirl_jax.data import rl_records
from swirl_jax.data import sources as data_sources
from swirl_jax.evaluation import score_report
from swirl_jax.evaluation import self_correction as sc_eval
from swirl_jax.rollout import trajectory as traj
from swirl_jax.score import batches as batches_lib
from swirl_jax.score import episodes as episodes_lib
from swirl_jax.tasks import get_task
from swirl_jax.tasks import math as math_task

log = logging.getLogger(__name__)

BASELINES = score_report.BASELINES
ABLATIONS = ("no_stage1", "no_shaping", "single_turn")
SCORE_OBJECTIVE_MODULE = "swirl_jax.objectives.score"


def _check_subset(name: str, values: Sequence[str],
                  allowed: Sequence[str]) -> tuple[str, ...]:
  values = tuple(values)
  bad = [v for v in values if v not in allowed]
  if bad:
    raise ValueError(f"{name} has unknown entries {bad}; choose from "
                     f"{list(allowed)}.")
  return values


def _vote_key(task):
  kind = correction_demos.task_kind(sc_eval.unwrap_task(task))
  if kind == correction_demos.MATH:
    return lambda a: sc_eval.answer_key(math_task.normalize_answer(a))
  return sc_eval.answer_key


class _Experiment(stages.Experiment):
  """The state shared by the stages of one `score_experiment` call."""

  def __init__(self, workdir: str, cfg: "ScoreConfig"):
    self.tasks = {name: sc_eval.CachingTask(get_task(name))
                  for name in cfg.tasks}
    for name, task in self.tasks.items():
      correction_demos.task_kind(task.wrapped)  # validates the task family
      if not task.correction_instruction:
        raise ValueError(f"Task {name!r} has no correction instruction.")
    super().__init__(workdir, cfg, corpus_fn=functools.partial(
        correction_demos.tokenizer_corpus, cfg.tasks))

  def problems(self, purpose: str, n: int) -> dict[str, list]:
    """Per task: n problems for 'rl', 'baseline', 'eval' or 'scaling', a
    seeded sample of its file in train_files / eval_files, or generated."""
    cfg = self.cfg
    split, offset = {"rl": ("train", 0), "baseline": ("train", 100),
                     "eval": (cfg.eval_split, 200),
                     "scaling": (cfg.eval_split, 300)}[purpose]
    files = (cfg.eval_files if purpose in ("eval", "scaling")
             else cfg.train_files) or {}
    problems = {}
    for i, (name, task) in enumerate(self.tasks.items()):
      seed = cfg.seed + offset + i
      if name in files:
        examples = task.wrapped.load(files[name], split=split)
        order = np.random.default_rng(seed).permutation(len(examples))[:n]
        problems[name] = [examples[j] for j in sorted(order)]
      else:
        problems[name] = task.wrapped.generate(n, seed=seed, split=split)
    return problems

  def sft_stage(self, name: str, examples, *, seq_len: int, steps: int,
                init_from: Optional[str]) -> str:
    """`steps` SFT steps of `init_from` on `examples` (one checkpoint, at
    the end); returns the stage's directory."""
    self.train_stage(
        name, objective="sft", train_steps=steps, checkpoint_every=steps,
        init_from=init_from, seed=self.cfg.seed,
        dataset_fn=data_sources.sft_dataset_fn(
            examples, self.tokenizer.path, seq_len=seq_len,
            global_batch_size=self.cfg.sft_batch_size))
    return self.stage_dir(name)

  def warm_start(self) -> Optional[str]:
    """The base model's source: the warm-start workdir, or init_from."""
    cfg = self.cfg
    if cfg.warm_start_steps <= 0:
      return cfg.init_from
    demos = correction_demos.score_demonstrations(
        tasks=cfg.tasks, num_per_task=cfg.warm_start_examples,
        seed=cfg.seed, wrong_fraction=cfg.wrong_fraction,
        second_turn_fraction=cfg.second_turn_fraction,
        repeat_fraction=cfg.repeat_fraction)
    return self.sft_stage("warm_start", demos, seq_len=cfg.sft_seq_len,
                          steps=cfg.warm_start_steps, init_from=cfg.init_from)

  def rl_records(self) -> list[dict]:
    """The RL training problems as records, the tasks interleaved."""
    problems = self.problems("rl", self.cfg.rl_problems_per_task)
    return demonstrations.interleave(
        [[{"task": name, "example": ex.to_dict()} for ex in examples]
         for name, examples in problems.items()])

  def rl_builder(self, base: Optional[str], single_turn: bool = False,
                 adaptive: bool = False) -> batches_lib.TwoAttemptBatchBuilder:
    """The batch builder of an RL stage whose reference is `base`."""
    cfg = self.cfg
    return batches_lib.TwoAttemptBatchBuilder(
        self.model_config, self.tokenizer, self.tasks,
        ref_params=self.params(base, keep=True),
        group_size=1 if single_turn and cfg.group_size < 2
        else cfg.group_size,
        base_first_attempts=0 if single_turn else cfg.base_first_attempts,
        single_turn=single_turn, max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature, seq_len=cfg.rl_seq_len,
        seed=cfg.seed,
        adaptive=cfg.adaptive_beta2 if adaptive else None,
        sampler=self.sampler)

  def rl_stage(self, name: str, *, objective: str, init_from: Optional[str],
               base: Optional[str], steps: int, single_turn: bool = False,
               adaptive: bool = False) -> dict:
    """One on-policy SCoRe training stage (resumable)."""
    if stages.stage_result(self.workdir, name) is not None:
      return self.run_stage(name, lambda d: {})
    cfg = self.cfg
    records = self.rl_records()
    builder = self.rl_builder(base, single_turn=single_turn,
                              adaptive=adaptive)
    try:
      return self.train_stage(
          name, dataset_fn=rl_records.records_dataset_fn(
              records, global_batch_size=cfg.groups_per_step,
              what="problems"),
          objective=objective, train_steps=steps,
          checkpoint_every=cfg.rl_checkpoint_every, init_from=init_from,
          batch_fn=builder, seed=cfg.seed)
    finally:
      builder.close()

  def baseline_data(self, base: Optional[str]) -> dict:
    """Base-model episodes on training problems -> STaR / Pair-SFT data."""
    cfg = self.cfg

    def fn(directory: str) -> dict:
      engine = self.engine(self.params(base), cfg.temperature)
      problems = self.problems("baseline", cfg.baseline_problems_per_task)
      episodes = []
      with engine:
        for i, (name, examples) in enumerate(problems.items()):
          episodes += engine.run_two_attempts(
              self.tasks[name], examples,
              num_samples=cfg.baseline_samples, seed=cfg.seed + 17 + i)
      traj.save_jsonl(os.path.join(directory, "episodes.jsonl"), episodes)
      star = correction_demos.star_examples(episodes)
      pairs = correction_demos.pair_sft_examples(episodes, seed=cfg.seed)
      traj.save_jsonl(os.path.join(directory, "star.jsonl"), star)
      traj.save_jsonl(os.path.join(directory, "pair_sft.jsonl"), pairs)
      r1, r2 = sc_eval.episode_outcomes(episodes)
      return {"episodes": len(episodes), "star_examples": len(star),
              "pair_sft_examples": len(pairs),
              "accuracy_t1": float(r1.mean()), "accuracy_t2": float(r2.mean())}

    return self.run_stage("baseline_data", fn)

  def sft_baseline(self, name: str, base: Optional[str]) -> Optional[str]:
    """STaR or Pair-SFT training from the base; None if it has no data."""
    path = os.path.join(self.stage_dir("baseline_data"), f"{name}.jsonl")
    examples = traj.load_jsonl(path, dict)
    if not examples:
      log.warning("%s: no training examples in %s; not trained.", name, path)
      return None
    return self.sft_stage(
        name, [{"prompt": [tuple(t) for t in e["prompt"]],
                "target": e["target"]} for e in examples],
        seq_len=self.cfg.rl_seq_len, steps=self.cfg.baseline_sft_steps,
        init_from=base)

  def engine(self, params, temperature: float):
    from swirl_jax.rollout import RolloutEngine  # pylint: disable=g-import-not-at-top
    self.sampler.update_params(params)
    return RolloutEngine(self.sampler, self.tokenizer,
                         max_new_tokens=self.cfg.max_new_tokens,
                         temperature=temperature,
                         max_context_tokens=self.cfg.eval_context_tokens,
                         progress=False, tool_workers=4)

  def evaluate(self, method: str, source: Optional[str]) -> dict:
    """Two-attempt metrics of one method on the held-out problems."""
    cfg = self.cfg

    def fn(directory: str) -> dict:
      engine = self.engine(self.params(source), cfg.eval_temperature)
      problems = self.problems("eval", cfg.eval_problems_per_task)
      episodes = []
      with engine:
        for i, (name, examples) in enumerate(problems.items()):
          task = self.tasks[name]
          seed = cfg.seed + 31 + i
          if method == "self_refine":
            episodes += episodes_lib.self_refine_episodes(engine, task,
                                                          examples, seed=seed)
          else:
            episodes += engine.run_two_attempts(task, examples, seed=seed)
      traj.save_jsonl(os.path.join(directory, "episodes.jsonl"), episodes)
      return {"method": method, "source": source,
              "metrics": sc_eval.metrics_by_task(episodes)}

    return self.run_stage(f"eval_{method}", fn)

  def outcomes(self, method: str) -> dict[str, tuple[bool, bool]]:
    """{'task/example_id': (attempt 1 right, attempt 2 right)} of a
    method's held-out episodes (eval_<method>/episodes.jsonl)."""
    episodes = traj.load_jsonl(
        os.path.join(self.stage_dir(f"eval_{method}"), "episodes.jsonl"),
        traj.TwoAttemptEpisode)
    return {f"{e.task}/{e.example_id}/{e.sample_index}":
            (e.reward1 == 1.0, e.reward2 == 1.0) for e in episodes}

  def scaling(self, method: str, source: Optional[str]) -> dict:
    """Inference-time scaling curves of one method, per task."""
    cfg = self.cfg

    def fn(directory: str) -> dict:
      del directory
      engine = self.engine(self.params(source), cfg.scaling_temperature)
      problems = self.problems("scaling", cfg.scaling_problems_per_task)
      curves = {}
      with engine:
        for i, (name, examples) in enumerate(problems.items()):
          task = self.tasks[name]
          parallel, sequential = sc_eval.sample_scaling_answers(
              engine, task, examples, max(cfg.scaling_budgets),
              seed=cfg.seed + 47 + i, key_fn=_vote_key(task))
          curves[name] = sc_eval.scaling_curve(parallel, sequential,
                                               cfg.scaling_budgets)
      return {"method": method, "curves": curves}

    return self.run_stage(f"scaling_{method}", fn)


@contextlib.contextmanager
def ablation_scope(name: str):
  """The gin scope an ablation trains in: 'stage2', plus its own switch.

  Inside, `train_stage(workdir, name)` runs in the scope 'stage2/<name>',
  so the ablation inherits Stage II's bindings; 'no_shaping' also binds
  'stage2/no_shaping/...score_stage2_loss.reward_shaping = False'.
  """
  _check_subset("ablations", (name,), ABLATIONS)
  if name == "no_shaping":
    with gin.unlock_config():
      gin.bind_parameter(f"stage2/{name}/{SCORE_OBJECTIVE_MODULE}."
                         "score_stage2_loss.reward_shaping", False)
  with gin.config_scope("stage2"):
    yield


def stage1_loss_beta2() -> float:
  """The beta2 Stage I's loss uses: its gin binding ('stage1/' scope first),
  else the function's default."""
  from swirl_jax.objectives import score as score_obj  # pylint: disable=g-import-not-at-top
  name = f"{SCORE_OBJECTIVE_MODULE}.score_stage1_loss.beta2"
  for scoped in ("stage1/" + name, name):
    try:
      return float(gin.query_parameter(scoped))
    except ValueError:
      continue
  return float(inspect.signature(score_obj.score_stage1_loss)
               .parameters["beta2"].default)


@gin.configurable(module="swirl_jax.score")
@dataclasses.dataclass(frozen=True)
class ScoreConfig:
  """The settings of one SCoRe experiment (gin: `swirl_jax.score.ScoreConfig`).

  Attributes:
    model_config: the TransformerConfig.
    tasks: registered MATH-style / code task names.
    init_from: the model to start from ('hf:DIR', 'kaggle:DIR', a workdir;
      None: random, the CPU default).
    train_files / eval_files: task name -> data file for `task.load`
      (e.g. MATH train / MATH-500); tasks without one are generated.
    seed: every seed of the experiment derives from it.
    warm_start_steps: SFT steps of the warm start (0: none; the base is
      `init_from`).
    warm_start_examples: demonstrations per task.
    wrong_fraction: fraction of wrong demonstrations.
    second_turn_fraction: fraction of two-turn demonstrations (a second
      answer after the correction instruction, independent of the first).
    repeat_fraction: fraction of the two-turn demonstrations whose second
      answer repeats the first.
    sft_seq_len / sft_batch_size: warm start (and baselines') batches.
    stage1_steps / stage2_steps: SCoRe training steps (stage1_steps 0:
      Stage II starts from the base, like the 'no_stage1' ablation).
    rl_problems_per_task: RL training problems per task.
    groups_per_step: problems per RL step (rows: x group_size).
    group_size: on-policy episodes per problem and step.
    base_first_attempts: extra episodes per problem with the base model's
      first attempt (the paper's extra second-attempt prompts).
    max_new_tokens: budget of one attempt.
    temperature: RL (and baseline data) sampling temperature.
    rl_seq_len: RL row length (and STaR / Pair-SFT rows).
    rl_checkpoint_every: RL checkpoint period.
    adaptive_beta2: an `AdaptiveBeta2` for Stage I, or None (the fixed
      beta2 of the objective's gin binding).
    baselines: subset of ('self_refine', 'star', 'pair_sft').
    baseline_problems_per_task / baseline_samples: STaR / Pair-SFT data.
    baseline_sft_steps: STaR / Pair-SFT training steps.
    ablations: subset of ('no_stage1', 'no_shaping', 'single_turn').
    eval_problems_per_task: held-out problems per task.
    eval_split: the split of the evaluation and scaling problems: 'test'
      (the report's held-out problems) or 'validation' (for choosing
      settings).
    eval_temperature: 0 for greedy two-attempt evaluation.
    eval_context_tokens: context limit of evaluation episodes.
    scaling_methods: methods whose inference-time scaling is measured.
    scaling_problems_per_task / scaling_budgets / scaling_temperature: the
      scaling experiment (budgets of 2K samples).
  """

  model_config: Any = gin.REQUIRED
  tasks: Sequence[str] = ("math_small", "code_small")
  init_from: Optional[str] = None
  train_files: Optional[Mapping[str, str]] = None
  eval_files: Optional[Mapping[str, str]] = None
  seed: int = 0
  # Warm start.
  warm_start_steps: int = 150
  warm_start_examples: int = 600
  wrong_fraction: float = 0.2
  second_turn_fraction: float = 0.3
  repeat_fraction: float = 0.0
  sft_seq_len: int = 128
  sft_batch_size: int = 16
  # SCoRe.
  stage1_steps: int = 40
  stage2_steps: int = 40
  rl_problems_per_task: int = 500
  groups_per_step: int = 8
  group_size: int = 2
  base_first_attempts: int = 0
  max_new_tokens: int = 40
  temperature: float = 1.0
  rl_seq_len: int = 256
  rl_checkpoint_every: int = 20
  adaptive_beta2: Optional[batches_lib.AdaptiveBeta2] = None
  # Baselines and ablations.
  baselines: Sequence[str] = BASELINES
  baseline_problems_per_task: int = 200
  baseline_samples: int = 4
  baseline_sft_steps: int = 40
  ablations: Sequence[str] = ()
  # Evaluation.
  eval_problems_per_task: int = 100
  eval_split: str = "test"
  eval_temperature: float = 0.0
  eval_context_tokens: int = 512
  scaling_methods: Sequence[str] = ("base", "score")
  scaling_problems_per_task: int = 32
  scaling_budgets: Sequence[int] = (2, 4, 8, 16, 32)
  scaling_temperature: float = 1.0

  def __post_init__(self):
    set_ = functools.partial(object.__setattr__, self)
    set_("tasks", tuple(self.tasks))
    set_("baselines", _check_subset("baselines", self.baselines, BASELINES))
    set_("ablations", _check_subset("ablations", self.ablations, ABLATIONS))
    set_("scaling_methods", tuple(self.scaling_methods))
    set_("scaling_budgets", tuple(int(b) for b in self.scaling_budgets))
    if self.stage2_steps < 1:
      raise ValueError(f"stage2_steps must be >= 1, got {self.stage2_steps}.")
    if self.stage1_steps < 0:
      raise ValueError(f"stage1_steps must be >= 0, got {self.stage1_steps}.")
    stages.check_eval_split("ScoreConfig", self.eval_split)


@gin.configurable(denylist=["workdir"])
def score_experiment(workdir: str,
                     config: Optional[ScoreConfig] = None) -> dict[str, Any]:
  """Runs (or resumes) the whole SCoRe experiment in `workdir`.

  Args:
    workdir: the experiment directory.
    config: the settings (None: `ScoreConfig()` with its gin bindings).
  Returns:
    {'report': paths, 'results': method -> task -> metrics, 'headline'}.
  """
  cfg = ScoreConfig() if config is None else config
  if cfg.adaptive_beta2 is not None:
    cfg = dataclasses.replace(cfg, adaptive_beta2=cfg.adaptive_beta2
                              .with_beta2(stage1_loss_beta2()))
  exp = _Experiment(workdir, cfg)
  base = exp.warm_start()
  sources: dict[str, Optional[str]] = {"base": base}
  if cfg.stage1_steps:
    exp.rl_stage("stage1", objective="score_stage1", init_from=base,
                 base=base, steps=cfg.stage1_steps,
                 adaptive=cfg.adaptive_beta2 is not None)
    sources["score_stage1"] = exp.stage_dir("stage1")
  stage2_from = sources.get("score_stage1", base)
  exp.rl_stage("stage2", objective="score_stage2", init_from=stage2_from,
               base=base, steps=cfg.stage2_steps)
  sources["score"] = exp.stage_dir("stage2")

  if "self_refine" in cfg.baselines:
    sources["self_refine"] = base
  if {"star", "pair_sft"} & set(cfg.baselines):
    exp.baseline_data(base)
    for name in ("star", "pair_sft"):
      if name in cfg.baselines:
        trained = exp.sft_baseline(name, base)
        if trained is not None:
          sources[name] = trained

  for name in cfg.ablations:
    with ablation_scope(name):
      single_turn = name == "single_turn"
      exp.rl_stage(
          name, objective="score_stage2", base=base,
          init_from=stage2_from if name == "no_shaping" else base,
          steps=(cfg.stage1_steps + cfg.stage2_steps if single_turn
                 else cfg.stage2_steps),
          single_turn=single_turn)
    sources[name] = exp.stage_dir(name)

  methods = [m for m in ("base", "self_refine", "star", "pair_sft",
                         "score_stage1", "score", *cfg.ablations)
             if m in sources]
  results = {m: exp.evaluate(m, sources[m])["metrics"] for m in methods}
  curves = {}
  for method in cfg.scaling_methods:
    if method in sources:
      r = exp.scaling(method, sources[method])
      for task_name, curve in r["curves"].items():
        curves[f"{method}/{task_name}"] = curve
  headline = score_report.score_headline(
      {m: exp.outcomes(m) for m in results})
  paths = score_report.write_score_report(
      workdir, results, headline, curves,
      ["stage1", "stage2", *cfg.ablations], extra={
          "eval_split": cfg.eval_split,
          "methods": {m: sources[m] for m in methods},
          "missing_methods": [m for m in ("star", "pair_sft")
                              if m in cfg.baselines and m not in sources],
          "stage_seconds": stages.stage_seconds(workdir),
          "this_call_seconds": exp.seconds(),
          "config": stages.settings_of(cfg)})
  return {"report": paths, "results": results, "headline": headline}
