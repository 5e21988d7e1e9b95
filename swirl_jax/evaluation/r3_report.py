"""The R3 report: accuracy tables with CIs, error analysis, training curve.

`write_r3_report` writes workdir/report.json and workdir/report.md with
PNG plots beside them:

* accuracy@t1, accuracy@t2 and the retry success rate, vanilla vs trained,
  per task and pooled over tasks ('all'), with 95% Wilson intervals
  (`swirl_jax.evaluation.report.write_report` tables and bar plots);
* the error analysis: per task, the share of each verifier category after
  attempt 1 and after attempt 2, vanilla and trained (tables and
  errors_<task>.png);
* the GRPO reward per sampled batch (grpo_reward.png), the failure
  dataset's statistics, one reflection episode per task, stage timings and
  the machine load;
* the grading each task's verifier used (function calling: 'strict', R3's
  rule, or 'lenient'; `swirl_jax.tasks.function_calling.GRADINGS`).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Optional, Sequence

from swirl_jax.evaluation import headline as hl
from swirl_jax.evaluation import metrics as metrics_lib
from swirl_jax.evaluation import report as report_lib

METHODS = ("vanilla", "trained")
ACCURACY_TABLES = {"accuracy@t1": "accuracy_t1", "accuracy@t2": "accuracy_t2",
                   "retry success": "retry_success"}


def _pooled(summaries: Mapping[str, Mapping[str, Any]], key: str
            ) -> dict[str, float]:
  """Pooled proportion over tasks of a proportion_ci entry."""
  k = sum(round(s[key]["value"] * s[key]["n"]) for s in summaries.values()
          if s[key]["n"])
  n = sum(s[key]["n"] for s in summaries.values())
  return metrics_lib.proportion_ci(int(k), int(n))


def accuracy_tables(evals: Mapping[str, Mapping[str, Mapping[str, Any]]]
                    ) -> dict[str, dict[str, dict[str, Any]]]:
  """metric -> method -> task (and 'all') -> proportion_ci."""
  tables = {}
  for title, key in ACCURACY_TABLES.items():
    tables[title] = {}
    for method in METHODS:
      if method not in evals:
        continue
      per_task = {t: s[key] for t, s in evals[method].items()}
      per_task["all"] = _pooled(evals[method], key)
      tables[title][method] = per_task
  return tables


def error_table(evals: Mapping[str, Mapping[str, Mapping[str, Any]]],
                task: str) -> tuple[list[str], dict[str, dict[str, float]]]:
  """(categories, column -> category -> share) for one task.

  Columns: 'vanilla@1', 'vanilla@2', 'trained@1', 'trained@2'.
  """
  columns = {}
  for method in METHODS:
    if method not in evals or task not in evals[method]:
      continue
    s = evals[method][task]
    n = max(s["n"], 1)
    for t in (1, 2):
      counts = s[f"categories_t{t}"]
      columns[f"{method}@{t}"] = {c: v / n for c, v in counts.items()}
  categories = sorted({c for col in columns.values() for c in col},
                      key=lambda c: (c != "correct", c))
  return categories, columns


def _error_markdown(task: str, categories, columns, n) -> str:
  lines = [f"### Error categories: {task} (share of {n} held-out queries)",
           "", "| category | " + " | ".join(columns) + " |",
           "|---|" + "---|" * len(columns)]
  for c in categories:
    cells = [f"{columns[col].get(c, 0.0):.3f}" for col in columns]
    lines.append(f"| {c} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def read_rollout_log(path: Optional[str]) -> list[dict[str, Any]]:
  """The GRPO builder's per-batch statistics (last line per step wins)."""
  if not path or not os.path.exists(path):
    return []
  by_step = {}
  with open(path) as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        by_step[row["step"]] = row
  return [by_step[k] for k in sorted(by_step)]


def _reward_plot(rows, path: str) -> str:
  """Retry success per GRPO batch and its moving mean, one colour per task."""
  curves, styles = {}, {}
  tasks = sorted({t for r in rows for t in r["reward_by_task"]})
  for i, task in enumerate(tasks):
    xs, ys = zip(*[(r["step"], r["reward_by_task"][task]) for r in rows
                   if task in r["reward_by_task"]])
    k = max(1, len(ys) // 8)
    smooth = [sum(ys[max(0, j - k + 1):j + 1]) / len(ys[max(0, j - k + 1):
                                                       j + 1])
              for j in range(len(ys))]
    curves[f"_{task}"] = (xs, ys)
    styles[f"_{task}"] = {"marker": ".", "linestyle": "", "alpha": 0.35,
                          "color": f"C{i}"}
    curves[f"{task} (moving mean of {k})"] = (xs, smooth)
    styles[f"{task} (moving mean of {k})"] = {"color": f"C{i}"}
  return report_lib.curve_plot(curves, "", path, xlabel="GRPO step",
                               ylabel="retry success of a reflection",
                               styles=styles, ylim=(0, 1), legend=7)


def _example_markdown(eval_dir: Optional[str], task: str) -> str:
  path = os.path.join(eval_dir or "", f"{task}.jsonl")
  if not eval_dir or not os.path.exists(path):
    return ""
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  retried = [r for r in rows if r["reflection"]]
  if not retried:
    return ""
  row = next((r for r in retried if r["correct2"]), retried[0])
  return (f"**{task}** (query {row['id']}):\n\n"
          f"- attempt 1 ({row['category1']}): `{row['attempt1'][:300]}`\n"
          f"- reflection: `{row['reflection'][:300]}`\n"
          f"- attempt 2 ({row['category2']}): `{row['attempt2'][:300]}`\n")


def _grading_markdown(grading: Mapping[str, str]) -> list[str]:
  """'## Grading' lines: each task's grading and what it means."""
  # pylint: disable-next=g-import-not-at-top
  from swirl_jax.tasks import function_calling as fc_lib
  lines = ["", "## Grading", ""]
  for task, rule in sorted(grading.items()):
    meaning = fc_lib.GRADINGS.get(rule)
    lines.append(f"- {task}: `{rule}`" + (f" ({meaning})" if meaning else ""))
  return lines


def _fmt(r: Mapping[str, float]) -> str:
  if math.isnan(r["value"]):
    return "n/a"
  return f"{r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"


MIN_POOLED_QUERIES = 400
SIGN_TEST_LEVEL = 0.05


def r3_headline(vanilla_rows: Sequence[Mapping[str, Any]],
                trained_rows: Sequence[Mapping[str, Any]]
                ) -> list[dict[str, Any]]:
  """R3's claims (`evaluation.headline`) on the held-out queries of every
  task pooled (`evaluate_task` rows with task-unique ids).

  The trained model's second attempt is above the vanilla model's (paired
  difference > 0 with the exact sign test p < 0.05, on at least 400
  queries); its first attempt is not lower beyond the interval (the upper
  end of the paired 95% interval of the difference >= 0).
  """
  def correct(rows, key):
    return {r["id"]: bool(r[key]) for r in rows}

  d2 = hl.paired(correct(trained_rows, "correct2"),
                 correct(vanilla_rows, "correct2"))
  d1 = hl.paired(correct(trained_rows, "correct1"),
                 correct(vanilla_rows, "correct1"))
  return [
      hl.claim(f"the trained model's second attempt is above the vanilla "
               f"model's, pooled (sign test p = {d2['p_value']:.3g} < "
               f"{SIGN_TEST_LEVEL}, n >= {MIN_POOLED_QUERIES})",
               "Acc@t2 difference (trained - vanilla), paired", d2,
               d2["value"] > 0 and d2["p_value"] < SIGN_TEST_LEVEL
               and d2["n"] >= MIN_POOLED_QUERIES),
      hl.claim("the trained model's first attempt is not lower beyond its "
               "interval, pooled",
               "Acc@t1 difference (trained - vanilla), paired", d1,
               d1["high"] >= 0)]


def write_r3_report(workdir: str,
                    evals: Mapping[str, Mapping[str, Mapping[str, Any]]], *,
                    failure_stats: Optional[Mapping[str, Any]] = None,
                    rollout_log: Optional[str] = None,
                    eval_dirs: Optional[Mapping[str, str]] = None,
                    paired: Optional[Mapping[str, Any]] = None,
                    settings: Optional[Mapping[str, Any]] = None,
                    timings: Optional[Mapping[str, Any]] = None,
                    load: Optional[Mapping[str, Any]] = None,
                    grading: Optional[Mapping[str, str]] = None,
                    headline: Optional[Sequence[Mapping[str, Any]]] = None,
                    eval_split: str = "test",
                    plots: bool = True) -> dict[str, Any]:
  """Writes report.json / report.md / plots into `workdir`.

  Args:
    workdir: where to write.
    evals: method ('vanilla', 'trained') -> task -> `evaluation.summarize`.
    failure_stats: the failure stage's statistics.
    rollout_log: the GRPO builder's JSONL log.
    eval_dirs: method -> evaluation stage dir (for example episodes).
    paired: task -> `evaluation.paired_comparison` of vanilla (a) and
      trained (b) at attempt 2.
    settings / timings / load: recorded as given.
    grading: task -> the grading its verifier used (e.g.
      {'function_calling': 'strict'}), in report.json as 'grading' and in a
      'Grading' section of report.md.
    headline: the claims (`r3_headline`), in report.json as 'headline'
      and as a table in report.md.
    eval_split: the split the evaluation queries came from.
    plots: write PNGs.
  Returns:
    The report.json content.
  """
  tables = accuracy_tables(evals)
  tasks = sorted({t for m in evals.values() for t in m})
  errors = {t: error_table(evals, t) for t in tasks}
  rollouts = read_rollout_log(rollout_log)
  verdict = {}
  for task in tasks + ["all"]:
    t2 = tables["accuracy@t2"]
    if "vanilla" in t2 and "trained" in t2:
      v, tr = t2["vanilla"][task], t2["trained"][task]
      verdict[task] = {
          "vanilla_t2": v["value"], "trained_t2": tr["value"],
          "difference": tr["value"] - v["value"],
          "trained_above_vanilla": bool(tr["value"] > v["value"]),
          "intervals_overlap": bool(tr["low"] <= v["high"] and
                                    v["low"] <= tr["high"])}
  extra = {
      "headline": [dict(c) for c in headline or ()],
      "eval_split": eval_split,
      "second_attempt_comparison": verdict,
      "second_attempt_paired": dict(paired or {}),
      "error_categories": {t: cols for t, (_, cols) in errors.items()},
      "failure_dataset": dict(failure_stats or {}),
      "grpo_batches": {"count": len(rollouts),
                       "first": rollouts[:1], "last": rollouts[-1:]},
      "grading": dict(grading or {}),
      "settings": dict(settings or {}), "timings_s": dict(timings or {}),
      "load_average": dict(load or {})}
  paths = report_lib.write_report(workdir, tables, extra=extra,
                                  title="R3: reflect, retry, reward",
                                  plots=plots)
  parts = [hl.markdown(headline)] if headline else []
  parts += _grading_markdown(grading) if grading else []
  parts += ["", "## Second attempt, trained vs vanilla", "",
           "| task | vanilla@2 | trained@2 | difference | CIs overlap |",
           "|---|---|---|---|---|"]
  t2 = tables["accuracy@t2"]
  for task, v in verdict.items():
    parts.append(f"| {task} | {_fmt(t2['vanilla'][task])} | "
                 f"{_fmt(t2['trained'][task])} | {v['difference']:+.3f} | "
                 f"{'yes' if v['intervals_overlap'] else 'no'} |")
  if paired:
    parts += ["", "Paired on the same queries (attempt 2): queries only the "
              "vanilla / only the trained model gets right, and the exact "
              "sign-test p-value.", "",
              "| task | both | neither | vanilla only | trained only | p |",
              "|---|---|---|---|---|---|"]
    for task, p in paired.items():
      parts.append(f"| {task} | {p['both']} | {p['neither']} | "
                   f"{p['a_only']} | {p['b_only']} | {p['p_value']:.3f} |")
  parts += ["", "## Error analysis", ""]
  for task, (categories, columns) in errors.items():
    n = next(iter(evals.values()))[task]["n"]
    parts.append(_error_markdown(task, categories, columns, n))
    if plots and columns:
      png = report_lib.bar_chart(
          categories, {col: [shares.get(c, 0.0) for c in categories]
                       for col, shares in columns.items()},
          f"{task}: verdict after attempt 1 / 2",
          os.path.join(workdir, f"errors_{task}.png"), rotation=20)
      paths[f"errors_{task}"] = png
      parts.append(f"![errors {task}]({os.path.basename(png)})\n")
  if rollouts:
    parts += ["## GRPO", "",
              f"{len(rollouts)} sampled batches; mean retry reward "
              f"{rollouts[0]['mean_reward']:.3f} (first) -> "
              f"{rollouts[-1]['mean_reward']:.3f} (last).", ""]
    if plots:
      png = _reward_plot(rollouts, os.path.join(workdir, "grpo_reward.png"))
      paths["grpo_reward"] = png
      parts.append(f"![GRPO reward]({os.path.basename(png)})\n")
  examples = [_example_markdown((eval_dirs or {}).get("trained"), t)
              for t in tasks]
  if any(examples):
    parts += ["## Example reflections (trained model)", ""]
    parts += [e for e in examples if e]
  with open(paths["md"], "a") as f:
    f.write("\n".join(parts) + "\n")
  with open(paths["json"]) as f:
    payload = json.load(f)
  payload["files"] = {k: os.path.basename(v) for k, v in paths.items()}
  tmp = paths["json"] + ".tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=2, sort_keys=True)
  os.replace(tmp, paths["json"])
  if headline:
    print("\n".join(hl.summary_lines(headline)), flush=True)
  return payload
