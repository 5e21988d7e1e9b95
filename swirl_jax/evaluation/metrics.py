"""Metric functions shared by the recipes' evaluations (pure, numpy only).

* `proportion_ci`: accuracy-type rates with a Wilson score interval, which
  behaves at 0 and 1 and for small n where the normal interval does not.
* `mean_ci`: a mean with a normal-approximation interval (Student t for
  small n), for rewards and label rates averaged over steps.
* `majority_vote`: the most frequent answer (ties: the first reached).
"""

from __future__ import annotations

import collections
import math
from typing import Hashable, Optional, Sequence

import numpy as np

_Z = {0.90: 1.6448536, 0.95: 1.9599640, 0.99: 2.5758293}


def _z(level: float) -> float:
  if level not in _Z:
    raise ValueError(f"Confidence level {level} not supported; use one of "
                     f"{sorted(_Z)}.")
  return _Z[level]


def proportion_ci(successes: int, n: int, level: float = 0.95
                  ) -> dict[str, float]:
  """Rate successes / n with its Wilson score interval.

  Returns {'value', 'low', 'high', 'n'}; for n == 0 the value is NaN and the
  interval [0, 1].
  """
  if n < 0 or successes < 0 or successes > n:
    raise ValueError(f"Need 0 <= successes <= n, got successes={successes}, "
                     f"n={n}.")
  if n == 0:
    return {"value": float("nan"), "low": 0.0, "high": 1.0, "n": 0}
  z = _z(level)
  p = successes / n
  denom = 1 + z * z / n
  centre = (p + z * z / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
  return {"value": p, "low": max(0.0, centre - half),
          "high": min(1.0, centre + half), "n": n}


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
  """Mean of values with a t (n < 30) or normal interval."""
  x = np.asarray(values, np.float64)
  n = int(x.size)
  if n == 0:
    return {"value": float("nan"), "low": float("nan"),
            "high": float("nan"), "n": 0}
  mean = float(x.mean())
  if n == 1:
    return {"value": mean, "low": mean, "high": mean, "n": 1}
  sem = float(x.std(ddof=1)) / math.sqrt(n)
  if n < 30:
    from scipy import stats  # pylint: disable=g-import-not-at-top
    crit = float(stats.t.ppf(0.5 + level / 2, df=n - 1))
  else:
    crit = _z(level)
  return {"value": mean, "low": mean - crit * sem, "high": mean + crit * sem,
          "n": n}


def majority_vote(answers: Sequence[Optional[Hashable]]
                  ) -> Optional[Hashable]:
  """The most common non-None answer; ties go to the earliest; None if none."""
  counts = collections.Counter(a for a in answers if a is not None)
  if not counts:
    return None
  best = max(counts.values())
  for a in answers:
    if a is not None and counts[a] == best:
      return a
  return None
