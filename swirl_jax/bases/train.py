"""Trains a tiny base by SFT on scripted demonstrations and exports it.

    python -m swirl_jax.main --gin_file=gin_configs/experiments/tiny_base.gin \\
        --workdir=runs/tiny_base

Stages (each resumable): tokenizer -> warm_start (SFT of the random tiny
model on `demonstrations.tool_use_demonstrations`; gin scope 'warm_start'
for its steps, learning rate and batch) -> validation (greedy multi-step
accuracy on the tasks' 'validation' split, never their 'test' split) ->
export (a base directory, `swirl_jax.bases`, in `<workdir>/export`).
Start a recipe from it with `init_from='base:<workdir>/export'` and the same
value for `swirl_jax.data.sources.tokenizer_path_for.path`; copy it to
`swirl_jax/bases/<name>/` to ship it as `base:<name>`.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any, Sequence

import gin

from swirl_jax import bases
from swirl_jax import stages

WARM_START = "warm_start"


@gin.configurable(denylist=["workdir"])
def train_base(workdir: str, model_config: Any = gin.REQUIRED,
               eval_tasks: Sequence[str] = ("gsm8k", "hotpotqa"),
               eval_questions: int = 100, prompt_style: str = "compact",
               max_new_tokens: int = 48, max_context_tokens: int = 768,
               seed: int = 0) -> dict[str, Any]:
  """Runs the base's stages into `workdir`; returns workdir/report.json's
  payload: {'export', 'train_steps', 'train_seconds', 'validation'}.

  eval_tasks / eval_questions: the validation accuracy recorded in
  base.json (n questions per task, greedy, the recipes' multi-step loop).
  """
  from swirl_jax.data import sources  # pylint: disable=g-import-not-at-top
  from swirl_jax.evaluation import tool_use as evaluate  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  tokenizer = stages.experiment_tokenizer(workdir)

  trained = stages.train_stage(
      workdir, WARM_START, model_config=model_config,
      dataset_fn=functools.partial(sources.sft_dataset,
                                   tokenizer_path=tokenizer.path),
      objective="sft")
  checkpoint = trained["workdir"]
  params = stages.load_policy(model_config, checkpoint, seed)

  def validate(directory):
    del directory
    result = evaluate.evaluate_policy(
        model_config, params, tokenizer, task_names=tuple(eval_tasks),
        num_questions=eval_questions, prompt_style=prompt_style,
        max_new_tokens=max_new_tokens, max_context_tokens=max_context_tokens,
        split="validation", seed=seed + 7000)
    return {task: {k: r[k] for k in ("accuracy", "process_label")}
            for task, r in result.items()}

  validation = dict(stages.run_stage(workdir, "validation", validate))
  validation_seconds = validation.pop("seconds", None)
  export_dir = os.path.join(workdir, "export")
  info = {
      "command": " ".join(["python -m swirl_jax.main"] + sys.argv[1:])
                 if sys.argv and "swirl_jax" in " ".join(sys.argv[:1])
                 else None,
      "train_steps": trained["last_step"],
      "train_seconds": trained.get("seconds"),  # this run's wall time
      "final_metrics": trained["final_metrics"],
      "validation": validation,
      "validation_seconds": validation_seconds,
      "validation_settings": {
          "split": "validation", "seed": seed + 7000,
          "questions_per_task": eval_questions, "prompt_style": prompt_style,
          "max_new_tokens": max_new_tokens,
          "max_context_tokens": max_context_tokens, "greedy": True},
      "gin_config": gin.operative_config_str(),
  }
  if not os.path.isdir(export_dir):
    bases.export(export_dir, model_config, params, tokenizer.path, info)
  report = {"export": export_dir, **{k: info[k] for k in (
      "train_steps", "train_seconds", "validation")}}
  with open(os.path.join(workdir, "report.json"), "w") as f:
    json.dump(report, f, indent=1, sort_keys=True)
  return report
