"""Self-correction evaluation (SCoRe): two-attempt metrics, test-time scaling.

Metrics of N problems, each answered by a first attempt y1 and, after the
self-correction instruction, a second attempt y2 with binary outcomes
r1, r2 in {0, 1} ([N] each):

  accuracy_t1   mean r1                      Wilson interval
  accuracy_t2   mean r2                      Wilson interval
  delta         mean (r2 - r1)               paired t / normal interval
  delta_i_to_c  mean [r1 = 0 and r2 = 1]     Wilson interval
  delta_c_to_i  mean [r1 = 1 and r2 = 0]     Wilson interval

(delta = delta_i_to_c - delta_c_to_i exactly.) Each is a result dict
{'value', 'low', 'high', 'n'} as in `swirl_jax.evaluation.metrics`, so the
tables go straight to `write_report`.

Inference-time scaling (the paper's Figure: a budget of B = 2K samples per
problem): 'sequential' draws K first attempts, self-corrects each once and
majority-votes over the K second-attempt answers; 'parallel' draws 2K first
attempts and majority-votes over them. `scaling_curve` computes both from
sampled answers for every budget (pure), `sample_scaling_answers` samples
them with a rollout engine, `plot_scaling` draws the curves.

`CachingTask` wraps a task so that repeated (example, answer) pairs are
verified once: small models repeat programs, and each code verification is
a sandboxed subprocess.
"""

from __future__ import annotations

import threading
from typing import Any, Hashable, Mapping, Optional, Sequence

import numpy as np

from swirl_jax.evaluation.metrics import majority_vote, mean_ci, proportion_ci

METRICS = ("accuracy_t1", "accuracy_t2", "delta", "delta_i_to_c",
           "delta_c_to_i")
METRIC_TITLES = {
    "accuracy_t1": "Accuracy@t1",
    "accuracy_t2": "Accuracy@t2",
    "delta": "Delta(t1,t2)",
    "delta_i_to_c": "Delta_i->c",
    "delta_c_to_i": "Delta_c->i",
}


def _binary(values: Any, name: str) -> np.ndarray:
  x = np.asarray(values, np.float64).reshape(-1)
  if x.size and not np.all((x == 0.0) | (x == 1.0)):
    bad = x[(x != 0.0) & (x != 1.0)][0]
    raise ValueError(f"{name} must hold binary outcomes (0 or 1), got "
                     f"{bad!r}.")
  return x


def self_correction_metrics(reward1: Sequence[float],
                            reward2: Sequence[float],
                            level: float = 0.95) -> dict[str, dict]:
  """The five SCoRe metrics with confidence intervals.

  Args:
    reward1: [N] first-attempt outcomes (0 / 1).
    reward2: [N] second-attempt outcomes (0 / 1), aligned with reward1.
    level: confidence level (0.90, 0.95 or 0.99).
  Returns:
    {metric: {'value', 'low', 'high', 'n'}} for `METRICS`.
  """
  r1, r2 = _binary(reward1, "reward1"), _binary(reward2, "reward2")
  if r1.shape != r2.shape:
    raise ValueError(f"reward1 and reward2 must have the same length, got "
                     f"{r1.size} and {r2.size}.")
  n = int(r1.size)
  return {
      "accuracy_t1": proportion_ci(int(r1.sum()), n, level),
      "accuracy_t2": proportion_ci(int(r2.sum()), n, level),
      "delta": mean_ci(r2 - r1, level),
      "delta_i_to_c": proportion_ci(int(np.sum((r1 == 0) & (r2 == 1))), n,
                                    level),
      "delta_c_to_i": proportion_ci(int(np.sum((r1 == 1) & (r2 == 0))), n,
                                    level),
  }


def episode_outcomes(episodes: Sequence[Any]) -> tuple[np.ndarray,
                                                       np.ndarray]:
  """([N] reward1, [N] reward2) of `TwoAttemptEpisode`s."""
  return (np.array([e.reward1 for e in episodes], np.float64),
          np.array([e.reward2 for e in episodes], np.float64))


def metrics_by_task(episodes: Sequence[Any], level: float = 0.95
                    ) -> dict[str, dict[str, dict]]:
  """{task: self_correction_metrics} over episodes grouped by `.task`."""
  by_task: dict[str, list] = {}
  for e in episodes:
    by_task.setdefault(e.task, []).append(e)
  return {t: self_correction_metrics(*episode_outcomes(eps), level=level)
          for t, eps in sorted(by_task.items())}


def metric_tables(results: Mapping[str, Mapping[str, Mapping[str, dict]]]
                  ) -> dict[str, dict[str, dict[str, dict]]]:
  """method -> task -> metric -> result  =>  title -> method -> task -> result.

  The shape `write_report` takes: one table (and bar plot) per metric.
  """
  return {METRIC_TITLES[m]: {method: {task: per_metric[m]
                                      for task, per_metric in tasks.items()}
                             for method, tasks in results.items()}
          for m in METRICS}


# ----------------------------------------------------------------------------
# Cached verification.


class CachingTask:
  """A task whose `verify` remembers its verdicts by (example id, answer).

  Everything else (prompt, parse_answer, name, correction_instruction, ...)
  is the wrapped task's. Thread-safe: the rollout engine verifies on a
  thread pool (two threads may still verify the same new pair once each).

  Attributes:
    hits / misses: cache statistics.
  """

  def __init__(self, task: Any):
    self._task = task
    self._cache: dict[tuple[str, Optional[str]], Any] = {}
    self._lock = threading.Lock()
    self.hits = 0
    self.misses = 0

  def __getattr__(self, name: str) -> Any:
    return getattr(self._task, name)

  @property
  def wrapped(self) -> Any:
    return self._task

  def verify(self, example: Any, answer: Optional[str]) -> Any:
    key = (example.id, answer)
    with self._lock:
      if key in self._cache:
        self.hits += 1
        return self._cache[key]
    verdict = self._task.verify(example, answer)
    with self._lock:
      self._cache[key] = verdict
      self.misses += 1
    return verdict

  def verify_batch(self, examples: Sequence[Any],
                   answers: Sequence[Optional[str]]) -> list[Any]:
    """Grades many answers; the distinct new pairs in one inner batch."""
    if len(examples) != len(answers):
      raise ValueError(f"{len(examples)} examples but {len(answers)} "
                       "answers")
    keys = [(ex.id, a) for ex, a in zip(examples, answers)]
    with self._lock:
      todo = {}
      for ex, a, key in zip(examples, answers, keys):
        if key not in self._cache and key not in todo:
          todo[key] = (ex, a)
      self.hits += len(keys) - len(todo)
    if todo:
      pairs = list(todo.values())
      verdicts = self._task.verify_batch([p[0] for p in pairs],
                                         [p[1] for p in pairs])
      with self._lock:
        self._cache.update(zip(todo, verdicts))
        self.misses += len(todo)
    with self._lock:
      return [self._cache[k] for k in keys]

  def score(self, example: Any, response: str) -> Any:
    return self.verify(example, self._task.parse_answer(response))


def unwrap_task(task: Any) -> Any:
  """The task inside a `CachingTask` (or `task` itself)."""
  return task.wrapped if isinstance(task, CachingTask) else task


# ----------------------------------------------------------------------------
# Inference-time scaling.

Sample = tuple[Optional[Hashable], bool]  # (vote key, correct)


def answer_key(answer: Optional[str]) -> Optional[str]:
  """The vote key of an answer: text with whitespace runs collapsed.

  Math answers should be normalised by the caller first (e.g. with
  `swirl_jax.tasks.math.normalize_answer`); None stays None.
  """
  if answer is None:
    return None
  key = " ".join(str(answer).split())
  return key or None


def voted_correct(samples: Sequence[Sample]) -> bool:
  """Whether the majority-vote answer of (key, correct) samples is correct.

  Ties go to the answer reached first; no answer at all is wrong.
  """
  winner = majority_vote([k for k, _ in samples])
  if winner is None:
    return False
  return any(c for k, c in samples if k == winner)


def scaling_curve(parallel: Sequence[Sequence[Sample]],
                  sequential: Sequence[Sequence[Sample]],
                  budgets: Sequence[int] = (2, 4, 8, 16, 32),
                  level: float = 0.95) -> dict[str, Any]:
  """Majority-vote accuracy per sample budget, parallel vs sequential.

  Args:
    parallel: per problem, >= max(budgets) first-attempt samples.
    sequential: per problem, >= max(budgets) / 2 second-attempt samples,
      each the self-correction of its own first attempt.
    budgets: even sample budgets B; parallel votes over its first B
      samples, sequential over its first B / 2.
    level: confidence level.
  Returns:
    {'budgets': [...], 'parallel': [result, ...], 'sequential': [...]}.
  """
  if len(parallel) != len(sequential):
    raise ValueError(f"parallel has {len(parallel)} problems, sequential "
                     f"{len(sequential)}.")
  budgets = [int(b) for b in budgets]
  for b in budgets:
    if b < 2 or b % 2:
      raise ValueError(f"Budgets must be even and >= 2, got {b}.")
  need_p, need_s = max(budgets), max(budgets) // 2
  for i, (p, s) in enumerate(zip(parallel, sequential)):
    if len(p) < need_p or len(s) < need_s:
      raise ValueError(
          f"Problem {i} has {len(p)} parallel and {len(s)} sequential "
          f"samples; budget {need_p} needs {need_p} and {need_s}.")
  n = len(parallel)
  out = {"budgets": budgets, "parallel": [], "sequential": []}
  for b in budgets:
    p_ok = sum(voted_correct(p[:b]) for p in parallel)
    s_ok = sum(voted_correct(s[:b // 2]) for s in sequential)
    out["parallel"].append(proportion_ci(p_ok, n, level))
    out["sequential"].append(proportion_ci(s_ok, n, level))
  return out


def sample_scaling_answers(engine: Any, task: Any,
                           examples: Sequence[Any], max_budget: int,
                           seed: int = 0, key_fn=answer_key
                           ) -> tuple[list[list[Sample]], list[list[Sample]]]:
  """Samples what `scaling_curve` needs with a rollout engine.

  Runs `max_budget / 2` two-attempt episodes per example (the sequential
  samples, and the first half of the parallel ones: their first attempts)
  and `max_budget / 2` more two-attempt episodes whose first attempts
  complete the parallel samples (their second attempts are not used).

  Args:
    engine: a `RolloutEngine` (its temperature should be > 0).
    task: the task.
    examples: the problems.
    max_budget: the largest budget (even).
    seed: sampling seed.
    key_fn: answer -> vote key (default `answer_key`).
  Returns:
    (parallel, sequential): per example, lists of (key, correct).
  """
  if max_budget < 2 or max_budget % 2:
    raise ValueError(f"max_budget must be even and >= 2, got {max_budget}.")
  k = max_budget // 2
  examples = list(examples)
  first = engine.run_two_attempts(task, examples, num_samples=k, seed=seed)
  extra = engine.run_two_attempts(task, examples, num_samples=k,
                                  seed=seed + 7919)
  parallel, sequential = [], []
  for i in range(len(examples)):
    mine = first[i * k:(i + 1) * k]
    more = extra[i * k:(i + 1) * k]
    parallel.append([(key_fn(e.answer1), e.reward1 > 0) for e in mine + more])
    sequential.append([(key_fn(e.answer2), e.reward2 > 0) for e in mine])
  return parallel, sequential


def plot_scaling(curves: Mapping[str, Mapping[str, Any]], path: str,
                 title: str = "Inference-time scaling") -> str:
  """One line per (label, mode): accuracy vs budget (log2 axis), as PNG.

  Args:
    curves: label (e.g. 'score/math_small') -> `scaling_curve` output.
    path: the PNG to write.
  """
  from swirl_jax.evaluation import report  # pylint: disable=g-import-not-at-top
  names = {"sequential": "K + self-correction", "parallel": "2K parallel"}
  with report.figure(path, (5.5, 3.6), title=title,
                     xlabel="samples per problem (2K)",
                     ylabel="majority-vote accuracy", ylim=(0, 1),
                     legend=6) as ax:
    for i, (label, curve) in enumerate(curves.items()):
      for mode, style in (("sequential", "-o"), ("parallel", "--s")):
        vals = [r["value"] for r in curve[mode]]
        lo = [r["value"] - r["low"] for r in curve[mode]]
        hi = [r["high"] - r["value"] for r in curve[mode]]
        ax.errorbar(curve["budgets"], vals, yerr=[lo, hi], fmt=style,
                    color=f"C{i}", capsize=2, markersize=4,
                    alpha=1.0 if mode == "sequential" else 0.7,
                    label=f"{label}: {names[mode]}")
    ax.set_xscale("log", base=2)
  return path
