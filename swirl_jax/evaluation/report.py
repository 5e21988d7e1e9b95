"""report.json, report.md and bar plots of method x task results.

A result is {'value', 'low', 'high', 'n'} (see metrics.py); a table maps
method -> task -> result for one metric.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Optional

Table = Mapping[str, Mapping[str, Mapping[str, float]]]


def _fmt(r: Mapping[str, float]) -> str:
  if r is None or math.isnan(r.get("value", float("nan"))):
    return "n/a"
  return f"{r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}] (n={r['n']})"


def markdown_table(table: Table, title: str) -> str:
  """A markdown table: one row per method, one column per task."""
  tasks = sorted({t for per_task in table.values() for t in per_task})
  lines = [f"### {title}", "", "| method | " + " | ".join(tasks) + " |",
           "|---|" + "---|" * len(tasks)]
  for method, per_task in table.items():
    cells = [_fmt(per_task.get(t)) for t in tasks]
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def bar_plot(table: Table, title: str, path: str) -> str:
  """Grouped bars (tasks x methods) with 95% interval whiskers, as PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  methods = list(table)
  tasks = sorted({t for per_task in table.values() for t in per_task})
  width = 0.8 / max(len(methods), 1)
  fig, ax = plt.subplots(figsize=(1.5 + 1.6 * len(tasks), 3.2))
  for i, m in enumerate(methods):
    vals, lo, hi = [], [], []
    for t in tasks:
      r = table[m].get(t) or {"value": float("nan"), "low": 0, "high": 0}
      v = 0.0 if math.isnan(r["value"]) else r["value"]
      vals.append(v)
      lo.append(max(v - r["low"], 0.0))
      hi.append(max(r["high"] - v, 0.0))
    x = np.arange(len(tasks)) + (i - (len(methods) - 1) / 2) * width
    ax.bar(x, vals, width, yerr=[lo, hi], capsize=3, label=m)
  ax.set_xticks(np.arange(len(tasks)))
  ax.set_xticklabels(tasks)
  ax.set_ylim(0, 1)
  ax.set_title(title)
  ax.legend(fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def curve_plot(curves: Mapping[str, tuple[Any, Any]], title: str,
               path: str, xlabel: str = "step", ylabel: str = "") -> str:
  """One line per label from {label: (xs, ys)}, as PNG (learning curves)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5.0, 3.2))
  for label, (xs, ys) in curves.items():
    ax.plot(list(xs), list(ys), marker=".", label=label)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  if curves:
    ax.legend(fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def write_report(workdir: str, tables: Mapping[str, Table],
                 extra: Optional[Mapping[str, Any]] = None,
                 title: str = "Report", plots: bool = True) -> dict[str, str]:
  """Writes workdir/report.json, workdir/report.md and one PNG per table.

  Args:
    tables: metric name -> table (method -> task -> result).
    extra: more JSON-serialisable content for report.json (and listed in
      report.md as a JSON block).
  Returns:
    {'json', 'md', and one entry per plot} paths.
  """
  os.makedirs(workdir, exist_ok=True)
  paths = {"json": os.path.join(workdir, "report.json"),
           "md": os.path.join(workdir, "report.md")}
  payload = {"tables": tables, **(dict(extra) if extra else {})}
  tmp = paths["json"] + ".tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=2, sort_keys=True, default=float)
  os.replace(tmp, paths["json"])
  parts = [f"# {title}", "",
           "Values with 95% confidence intervals [low, high] and the number "
           "of items n.", ""]
  for name, table in tables.items():
    parts.append(markdown_table(table, name))
    if plots:
      png = os.path.join(workdir, f"{name.replace(' ', '_')}.png")
      paths[name] = bar_plot(table, name, png)
      parts.append(f"![{name}]({os.path.basename(png)})\n")
  if extra:
    parts += ["```json", json.dumps(extra, indent=2, sort_keys=True,
                                    default=float), "```", ""]
  with open(paths["md"], "w") as f:
    f.write("\n".join(parts))
  return paths
