"""A report's headline: the claims a recipe makes, each with its evidence.

Every quickstart's report.json carries `"headline"`, a list of

    {"claim": str, "metric": str, "value": float, "low": float,
     "high": float, "n": int, "holds": bool}

where value / low / high are the effect (a difference with its 95%
interval, or a rate for a claim about one model) and n the number of
held-out items behind it. `holds` applies the claim's own rule (interval
above 0, point estimate >= 0, rate inside a range), stated in the claim.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from swirl_jax.evaluation import metrics

Z95 = metrics.z_value(0.95)


def claim(text: str, metric: str, result: Mapping[str, Any],
          holds: bool) -> dict[str, Any]:
  """One headline entry from a {'value', 'low', 'high', 'n'} result."""
  return {"claim": text, "metric": metric, "value": float(result["value"]),
          "low": float(result["low"]), "high": float(result["high"]),
          "n": int(result["n"]), "holds": bool(holds)}


def paired(correct_a: Mapping[str, bool], correct_b: Mapping[str, bool]
           ) -> dict[str, Any]:
  """`metrics.paired_difference` of A minus B over the questions both
  answered ({question id: correct} maps of the same evaluation).

  Raises:
    ValueError: the two maps cover different items (questions, queries).
  """
  if set(correct_a) != set(correct_b):
    raise ValueError(f"The two evaluations cover different items "
                     f"({len(set(correct_a) ^ set(correct_b))} ids differ).")
  ids = sorted(correct_a)
  return metrics.paired_difference([correct_a[i] for i in ids],
                                   [correct_b[i] for i in ids])


def independent_difference(a: Mapping[str, Any], b: Mapping[str, Any]
                           ) -> dict[str, Any]:
  """A minus B for two rates measured on different items (e.g. mean process
  labels over the steps each model took), with the normal interval from
  the two results' own half-widths; n is A's."""
  se = math.hypot((a["high"] - a["low"]) / (2 * Z95),
                  (b["high"] - b["low"]) / (2 * Z95))
  value = a["value"] - b["value"]
  return {"value": value, "low": value - Z95 * se, "high": value + Z95 * se,
          "n": a["n"]}


def all_hold(headline: Sequence[Mapping[str, Any]]) -> bool:
  return all(c["holds"] for c in headline)


def markdown(headline: Sequence[Mapping[str, Any]]) -> str:
  """The headline as a markdown section (one row per claim)."""
  rows = ["", "## Headline", "",
          "| claim | metric | value [95% interval] | n | holds |",
          "|---|---|---|---|---|"]
  for c in headline:
    rows.append(f"| {c['claim']} | {c['metric']} | {c['value']:+.3f} "
                f"[{c['low']:+.3f}, {c['high']:+.3f}] | {c['n']} | "
                f"{'yes' if c['holds'] else 'no'} |")
  return "\n".join(rows) + "\n"


def summary_lines(headline: Sequence[Mapping[str, Any]]) -> list[str]:
  """One printed line per claim: HOLDS / fails, the claim, its figures."""
  return [f"{'HOLDS' if c['holds'] else 'fails'}: {c['claim']}: "
          f"{c['value']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}], "
          f"n={c['n']}" for c in headline]
