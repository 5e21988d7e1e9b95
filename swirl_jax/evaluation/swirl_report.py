"""The SWiRL report: accuracy and mean process label with intervals, the
headline claims, the filters' statistics and the learning curves.

`write_swirl_report` writes workdir/report.json, report.md and PNGs from the
evaluation results of every model (`evaluation.tool_use.evaluate_policy`
per model and task); `swirl_headline` gives the quickstart's claims
(`evaluation.headline`).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from swirl_jax.evaluation import headline as hl
from swirl_jax.evaluation import report

BASE = "base"  # the starting policy's label among the models

BASE_RANGE = (0.10, 0.60)


def swirl_headline(results: Mapping[str, Any],
                   trained_on: Mapping[str, Optional[str]],
                   filter_of: Mapping[str, Optional[str]],
                   main_filter: str) -> list[dict[str, Any]]:
  """The SWiRL quickstart's claims (`evaluation.headline`), from the
  evaluation results of every model on the same held-out questions.

  Per evaluation task: the base answers between 10% and 60%. Per training
  task T, for the model trained with `main_filter`: in-domain accuracy above
  the base (paired 95% interval above 0); at least as good as the SFT
  baseline on the same data (point estimate >= 0); above the base on every
  other task (cross-task, point estimate > 0); the mean process label above
  the base's in-domain (point estimate > 0).
  """
  out = []
  base = results.get(BASE, {})
  for task, r in base.items():
    lo, hi = BASE_RANGE
    out.append(hl.claim(
        f"the base answers between {lo:.0%} and {hi:.0%} on {task}",
        "accuracy (base)", r["accuracy"],
        lo <= r["accuracy"]["value"] <= hi))
  for label, task in trained_on.items():
    if task is None or not label.startswith("SWiRL") or (
        filter_of.get(label) != main_filter):
      continue
    mine = results[label]
    diff = hl.paired(mine[task]["correct"], base[task]["correct"])
    out.append(hl.claim(
        f"{label} above the base in-domain on {task} (95% interval above 0)",
        "accuracy difference (SWiRL - base), paired", diff, diff["low"] > 0))
    sft = f"SFT [{task}]"
    if sft in results:
      diff = hl.paired(mine[task]["correct"], results[sft][task]["correct"])
      out.append(hl.claim(
          f"{label} at least as good as {sft} on {task}",
          "accuracy difference (SWiRL - SFT), paired", diff,
          diff["value"] >= 0))
    for other in mine:
      if other != task:
        diff = hl.paired(mine[other]["correct"], base[other]["correct"])
        out.append(hl.claim(
            f"{label} above the base cross-task on {other}",
            "accuracy difference (SWiRL - base), paired", diff,
            diff["value"] > 0))
    diff = hl.independent_difference(mine[task]["process_label"],
                                     base[task]["process_label"])
    out.append(hl.claim(
        f"{label} raises the mean process label on {task}",
        "mean process label difference (SWiRL - base), over steps", diff,
        diff["value"] > 0))
  return out


def write_swirl_report(workdir: str, results: dict[str, Any],
                       trained_on: dict[str, Optional[str]],
                       statistics: dict[str, Any],
                       models: dict[str, str],
                       skipped: Optional[dict[str, str]] = None,
                       filter_of: Optional[Mapping[str, Optional[str]]] = None,
                       main_filter: str = "process",
                       base: Optional[dict[str, Any]] = None,
                       eval_split: str = "test") -> dict[str, Any]:
  """report.json / report.md / PNGs of the SWiRL experiment; prints a table.

  filter_of: model label -> the filter its training data passed (None for
  the base); with main_filter it gives the headline (`swirl_headline`).
  base: what the starting policy was (`bases.describe`), when a base.
  eval_split: the split the evaluation questions came from.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from swirl_jax.swirl import filters  # pylint: disable=g-import-not-at-top
  accuracy = {m: {t: r[t]["accuracy"] for t in r} for m, r in results.items()}
  process = {m: {t: r[t]["process_label"] for t in r}
             for m, r in results.items()}
  curves = {}
  for key, ylabel in (("loss", "training loss"),
                      ("mean_reward", "mean judge reward of sampled actions")):
    series = report.metric_curves(
        {label: d for label, d in models.items() if label != BASE}, key)
    if series and jax.process_index() == 0:
      curves[key] = report.curve_plot(
          series, f"learning curves: {ylabel}",
          os.path.join(workdir, f"learning_curve_{key}.png"), ylabel=ylabel)
  settings = {m: {t: ("base" if trained_on[m] is None else
                      "in-domain" if trained_on[m] == t else "cross-task")
                  for t in results[m]} for m in results}
  filter_table = {
      task: {f: s["kept_per_filter"][f] for f in filters.FILTERS}
      for task, s in statistics.items()}
  filter_of = dict(filter_of or {})
  headline = swirl_headline(results, trained_on, filter_of, main_filter)
  extra = {"headline": headline,
           "trained_on": {m: None if t is None else
                          {"task": t, "filter": filter_of.get(m)}
                          for m, t in trained_on.items()},
           "settings": settings, "base": base, "eval_split": eval_split,
           "filter_statistics": filter_table,
           "stage1_accuracy": {t: s.get("accuracy")
                               for t, s in statistics.items()},
           "stage1_process_label_rate": {
               t: s.get("process_label_rate") for t, s in statistics.items()},
           "learning_curves": {k: os.path.basename(v)
                               for k, v in curves.items()},
           "checkpoints": models, "skipped": dict(skipped or {})}
  payload = {"tables": {"accuracy": accuracy, "mean process label": process},
             **extra}
  if jax.process_index() != 0:  # one writer on a pod
    return payload
  paths = report.write_report(
      workdir, {"accuracy": accuracy, "mean process label": process},
      extra=extra, title="SWiRL: multi-step tool use, base vs SFT vs SWiRL")
  with open(paths["md"], "a") as f:
    for key, path in curves.items():
      f.write(f"![learning curve {key}]({os.path.basename(path)})\n")
  with open(paths["md"], "a") as f:
    f.write(hl.markdown(headline))
  print(report.markdown_table(accuracy, "accuracy (95% interval)"))
  print("\n".join(hl.summary_lines(headline)))
  print(report.markdown_table(process, "mean process label (95% interval)"))
  print(f"report: {paths['md']} (and report.json, "
        f"{', '.join(os.path.basename(p) for p in list(paths.values())[2:])}"
        f"{', ' if curves else ''}"
        f"{', '.join(os.path.basename(p) for p in curves.values())})")
  return payload
