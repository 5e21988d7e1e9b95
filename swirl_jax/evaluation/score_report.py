"""The SCoRe report: the five two-attempt metrics per method and task, the
headline claims, the inference-time scaling and training-reward curves.

`write_score_report` writes workdir/report.json, report.md and PNGs;
`score_headline` gives the quickstart's claims (`evaluation.headline`) from
the held-out outcomes of every method.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence

from swirl_jax import stages
from swirl_jax.evaluation import headline as hl
from swirl_jax.evaluation import report as report_lib
from swirl_jax.evaluation import self_correction as sc_eval

BASELINES = ("self_refine", "star", "pair_sft")

BASE_DELTA_MAX = 0.02


def score_headline(outcomes: Mapping[str, Mapping[str, tuple[bool, bool]]]
                   ) -> list[dict[str, Any]]:
  """SCoRe's claims (`evaluation.headline`) over the held-out problems of
  every task pooled, from method -> {problem id: (t1 right, t2 right)}.

  The base model's Delta(t1, t2) is at most +0.02 (point estimate);
  SCoRe's Delta is above 0 (paired 95% interval above 0); SCoRe's
  Delta_i->c is above its Delta_c->i (the same paired counts, read as
  flips: value = Delta_i->c - Delta_c->i > 0); SCoRe's Acc@t2 is at least
  each baseline's (paired difference of the second attempts on the same
  problems, point estimate >= 0). Claims whose methods were not run are
  left out.
  """
  out = []

  def attempt(method, k):
    return {i: o[k] for i, o in outcomes[method].items()}

  if "base" in outcomes:
    d = hl.paired(attempt("base", 1), attempt("base", 0))
    out.append(hl.claim(
        f"the base model's Delta(t1, t2) is at most {BASE_DELTA_MAX:+.2f}",
        "Delta = Acc@t2 - Acc@t1 (base), paired", d,
        d["value"] <= BASE_DELTA_MAX))
  if "score" not in outcomes:
    return out
  d = hl.paired(attempt("score", 1), attempt("score", 0))
  out.append(hl.claim("SCoRe's Delta(t1, t2) is above 0 (95% interval "
                      "above 0)", "Delta = Acc@t2 - Acc@t1 (SCoRe), paired",
                      d, d["low"] > 0))
  n = d["n"]
  flips = {"value": (d["a_only"] - d["b_only"]) / n, "low": d["low"],
           "high": d["high"], "n": n}
  out.append(hl.claim(
      f"SCoRe's Delta_i->c ({d['a_only'] / n:.3f}) is above its "
      f"Delta_c->i ({d['b_only'] / n:.3f})",
      "Delta_i->c - Delta_c->i (SCoRe; equals Delta), paired", flips,
      d["a_only"] > d["b_only"]))
  for baseline in BASELINES:
    if baseline in outcomes:
      d = hl.paired(attempt("score", 1), attempt(baseline, 1))
      out.append(hl.claim(
          f"SCoRe's Acc@t2 is at least {baseline}'s",
          f"Acc@t2 difference (SCoRe - {baseline}), paired", d,
          d["value"] >= 0))
  return out


def plot_learning_curves(workdir: str, stage_names: Sequence[str],
                         path: str) -> Optional[str]:
  """reward1 / reward2 of the training batches per step of RL stages (PNG).

  Returns the path, or None when no stage has logged metrics.
  """
  dirs = {name: stages.stage_dir(workdir, name) for name in stage_names}
  second = report_lib.metric_curves(dirs, "reward2")
  if not second:
    return None
  first = report_lib.metric_curves(dirs, "reward1")
  curves, styles = {}, {}
  for i, (name, points) in enumerate(second.items()):
    for turn, pts, line in (("t1", first.get(name), "--"),
                            ("t2", points, "-")):
      if pts:
        curves[f"{name}: reward {turn}"] = pts
        styles[f"{name}: reward {turn}"] = {"linestyle": line,
                                            "color": f"C{i}"}
  return report_lib.curve_plot(
      curves, "SCoRe training rewards (sampled at the RL temperature)", path,
      ylabel="mean reward of the batch", styles=styles, legend=6)


def format_summary(results: Mapping[str, Mapping[str, Mapping[str, dict]]]
                   ) -> str:
  """A plain-text table: method x task -> the five metrics (values)."""
  lines = [f"{'method':14s} {'task':12s} " + " ".join(
      f"{sc_eval.METRIC_TITLES[m]:>13s}" for m in sc_eval.METRICS)]
  for method, per_task in results.items():
    for task_name, metrics in per_task.items():
      lines.append(f"{method:14s} {task_name:12s} " + " ".join(
          f"{metrics[m]['value']:13.3f}" for m in sc_eval.METRICS))
  return "\n".join(lines)


def write_score_report(workdir: str,
                       results: Mapping[str, Mapping[str, Mapping[str, dict]]],
                       headline: Sequence[Mapping[str, Any]],
                       curves: Mapping[str, Any], rl_stages: Sequence[str],
                       extra: Mapping[str, Any]) -> dict[str, str]:
  """report.json / report.md / PNGs of the SCoRe experiment; prints a table.

  Args:
    workdir: where to write.
    results: method -> task -> the five metrics (`sc_eval.metrics_by_task`).
    headline: the claims (`score_headline`).
    curves: 'method/task' -> inference-time scaling curve.
    rl_stages: the RL stages whose training rewards are plotted.
    extra: more report.json entries (settings, timings, sources).
  Returns:
    name -> path of every file written.
  """
  extra = dict(extra, headline=list(headline),
               inference_scaling=dict(curves))
  paths = report_lib.write_report(workdir, sc_eval.metric_tables(results),
                                  extra=extra, title="SCoRe self-correction")
  with open(paths["md"], "a") as f:
    f.write(hl.markdown(headline))
  if curves:
    paths["inference_scaling"] = sc_eval.plot_scaling(
        curves, os.path.join(workdir, "inference_scaling.png"))
  learning = plot_learning_curves(
      workdir, rl_stages, os.path.join(workdir, "learning_curves.png"))
  if learning:
    paths["learning_curves"] = learning
  with open(paths["md"], "a") as f:
    for key, title in (("inference_scaling", "Inference-time scaling: K "
                        "samples + one self-correction each vs 2K parallel "
                        "samples, majority vote"),
                       ("learning_curves", "Training rewards")):
      if key in paths:
        f.write(f"\n### {title}\n\n![{key}]({os.path.basename(paths[key])})"
                "\n")
  print(format_summary(results), flush=True)
  print("\n".join(hl.summary_lines(headline)), flush=True)
  return paths
