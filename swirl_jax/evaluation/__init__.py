"""Evaluation metrics with confidence intervals, and report writers."""

from swirl_jax.evaluation.metrics import majority_vote, mean_ci, proportion_ci
from swirl_jax.evaluation.report import write_report
