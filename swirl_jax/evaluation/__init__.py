"""Evaluation: metrics with confidence intervals, each recipe's held-out
evaluation and its report.

  metrics, headline, report   intervals, paired claims, the report writer
  tool_use, swirl_report      SWiRL: multi-step accuracy, process label
  self_correction, score_report   SCoRe: two-attempt metrics, scaling
  reflect_retry, r3_report    R3: first / second attempt, error categories
  base_accuracy               every task family before any recipe
"""

from swirl_jax.evaluation.metrics import majority_vote, mean_ci, proportion_ci
from swirl_jax.evaluation.report import write_report
