"""report.json, report.md and the plots of every recipe's report.

A result is {'value', 'low', 'high', 'n'} (see metrics.py); a table maps
method -> task -> result for one metric.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from typing import Any, Iterator, Mapping, Optional, Sequence

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


@contextlib.contextmanager
def figure(path: str, figsize: tuple[float, float], title: str = "",
           xlabel: str = "", ylabel: str = "", ylim=None, legend: int = 8,
           dpi: int = 120) -> Iterator[Any]:
  """Yields the axes of a new figure, then saves it to `path` as PNG.

  Every plot of the reports is drawn inside one of these: the backend
  (Agg: no display), labels, limits, legend (its font size; 0: none), the
  layout and the file are set here once.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=figsize)
  try:
    yield ax
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
      ax.set_ylim(*ylim)
    if legend and ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=legend)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
  finally:
    plt.close(fig)


def bar_chart(groups: Sequence[str], bars: Mapping[str, Sequence[float]],
              title: str, path: str,
              errors: Optional[Mapping[str, tuple[Sequence[float],
                                                  Sequence[float]]]] = None,
              rotation: int = 0) -> str:
  """Grouped bars: one group per entry of `groups`, one bar per series of
  `bars` ({label: one value per group}), optional (below, above) whiskers
  per series, y in [0, 1]; as PNG."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  width = 0.8 / max(len(bars), 1)
  with figure(path, (1.5 + 1.6 * len(groups), 3.2), title=title,
              ylim=(0, 1)) as ax:
    for i, (label, values) in enumerate(bars.items()):
      x = np.arange(len(groups)) + (i - (len(bars) - 1) / 2) * width
      yerr = (errors or {}).get(label)
      ax.bar(x, list(values), width, label=label,
             **({"yerr": [list(e) for e in yerr], "capsize": 3}
                if yerr else {}))
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels(groups, rotation=rotation,
                       fontsize=8 if rotation else None)
  return path


def bar_plot(table: Table, title: str, path: str) -> str:
  """Grouped bars (tasks x methods) with 95% interval whiskers, as PNG."""
  tasks = sorted({t for per_task in table.values() for t in per_task})
  bars, errors = {}, {}
  for method, per_task in table.items():
    rows = [per_task.get(t) or {"value": float("nan"), "low": 0, "high": 0}
            for t in tasks]
    vals = [0.0 if math.isnan(r["value"]) else r["value"] for r in rows]
    bars[method] = vals
    errors[method] = ([max(v - r["low"], 0.0) for v, r in zip(vals, rows)],
                      [max(r["high"] - v, 0.0) for v, r in zip(vals, rows)])
  return bar_chart(tasks, bars, title, path, errors=errors)


def metric_curves(stage_dirs: Mapping[str, str], key: str
                  ) -> dict[str, tuple[list[Any], list[Any]]]:
  """{label: (steps, values)} of `key` in each training stage's
  metrics.jsonl (stages without it, or without that metric, left out)."""
  from swirl_jax.training.metrics import read_metrics  # pylint: disable=g-import-not-at-top
  out = {}
  for label, directory in stage_dirs.items():
    if os.path.exists(os.path.join(directory, "metrics.jsonl")):
      rows = [r for r in read_metrics(directory) if key in r]
      if rows:
        out[label] = ([r["step"] for r in rows], [r[key] for r in rows])
  return out


def curve_plot(curves: Mapping[str, tuple[Any, Any]], title: str,
               path: str, xlabel: str = "step", ylabel: str = "",
               styles: Optional[Mapping[str, Mapping[str, Any]]] = None,
               ylim=None, legend: int = 8) -> str:
  """One line per label from {label: (xs, ys)}, as PNG (learning curves).

  styles: per label, matplotlib `plot` keywords (default a dot marker); a
  label starting with '_' stays out of the legend.
  """
  with figure(path, (5.0, 3.2), title=title, xlabel=xlabel, ylabel=ylabel,
              ylim=ylim, legend=legend) as ax:
    for label, (xs, ys) in curves.items():
      ax.plot(list(xs), list(ys), label=label,
              **dict((styles or {}).get(label, {"marker": "."})))
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
