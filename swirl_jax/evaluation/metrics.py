"""Metric functions shared by the recipes' evaluations (pure, numpy only).

* `proportion_ci`: accuracy-type rates with a Wilson score interval, which
  behaves at 0 and 1 and for small n where the normal interval does not.
* `mean_ci`: a mean with a normal-approximation interval (Student t for
  small n), for rewards and label rates averaged over steps.
* `paired_difference`: two models' accuracy on the same questions, the
  difference with Newcombe's score interval for paired proportions and the
  exact sign test on the discordant questions (`sign_test_p`).
* `majority_vote`: the most frequent answer (ties: the first reached).
"""

from __future__ import annotations

import collections
import math
from typing import Hashable, Optional, Sequence

import numpy as np

_Z = {0.90: 1.6448536, 0.95: 1.9599640, 0.99: 2.5758293}


def z_value(level: float) -> float:
  """The two-sided normal quantile of a confidence level (0.90/0.95/0.99)."""
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
  z = z_value(level)
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
    crit = z_value(level)
  return {"value": mean, "low": mean - crit * sem, "high": mean + crit * sem,
          "n": n}


def sign_test_p(a_only: int, b_only: int) -> float:
  """Exact two-sided binomial (sign / McNemar) test of a_only vs b_only,
  the questions only one of two models gets right (1.0 when both are 0)."""
  if a_only < 0 or b_only < 0:
    raise ValueError(f"Need counts >= 0, got {a_only}, {b_only}.")
  k, n = min(a_only, b_only), a_only + b_only
  if n == 0:
    return 1.0
  tail = sum(math.comb(n, j) for j in range(k + 1)) / 2.0 ** n
  return min(1.0, 2.0 * tail)


def paired_difference(a: Sequence[bool], b: Sequence[bool],
                      level: float = 0.95) -> dict[str, float]:
  """Accuracy of A minus accuracy of B on the same n questions.

  a[i], b[i]: whether A and B answered question i correctly.
  The interval is Newcombe's (1998, method 10): the Wilson intervals of the
  two rates combined with the correlation of the paired outcomes; unlike
  the normal interval it stays inside [-1, 1] and does not collapse to a
  point when one model is never right alone.

  Returns {'value', 'low', 'high', 'n', 'a_only', 'b_only', 'p_value'}:
  p_value is the exact two-sided sign test of a_only vs b_only.
  """
  a = np.asarray(a, bool)
  b = np.asarray(b, bool)
  if a.shape != b.shape or a.ndim != 1:
    raise ValueError(f"Need two equal-length 1-D outcome lists, got shapes "
                     f"{a.shape} and {b.shape}.")
  n = int(a.size)
  a_only, b_only = int(np.sum(a & ~b)), int(np.sum(b & ~a))
  if n == 0:
    return {"value": float("nan"), "low": -1.0, "high": 1.0, "n": 0,
            "a_only": 0, "b_only": 0, "p_value": 1.0}
  both, neither = int(np.sum(a & b)), int(np.sum(~a & ~b))
  ra, rb = proportion_ci(int(a.sum()), n, level), proportion_ci(
      int(b.sum()), n, level)
  pa, pb = ra["value"], rb["value"]
  denom = math.sqrt(float((both + a_only) * (b_only + neither) *
                          (both + b_only) * (a_only + neither)))
  phi = (both * neither - a_only * b_only) / denom if denom else 0.0
  low_gap = math.sqrt(max(0.0, (pa - ra["low"]) ** 2 - 2 * phi *
                          (pa - ra["low"]) * (rb["high"] - pb) +
                          (rb["high"] - pb) ** 2))
  high_gap = math.sqrt(max(0.0, (ra["high"] - pa) ** 2 - 2 * phi *
                           (ra["high"] - pa) * (pb - rb["low"]) +
                           (pb - rb["low"]) ** 2))
  diff = pa - pb
  return {"value": diff, "low": max(-1.0, diff - low_gap),
          "high": min(1.0, diff + high_gap), "n": n, "a_only": a_only,
          "b_only": b_only, "p_value": sign_test_p(a_only, b_only)}


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
