"""Self-correction metrics, majority-vote scaling curves and cached verifying
on constructed outcome tables."""

import os

import numpy as np
import pytest

from swirl_jax.evaluation import self_correction as sc
from swirl_jax.tasks import base as task_base


def test_metrics_on_a_constructed_table():
  # 10 problems: 3 right->right, 1 right->wrong, 2 wrong->right, 4 w->w.
  r1 = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
  r2 = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
  m = sc.self_correction_metrics(r1, r2)
  assert set(m) == set(sc.METRICS)
  assert m["accuracy_t1"]["value"] == pytest.approx(0.4)
  assert m["accuracy_t2"]["value"] == pytest.approx(0.5)
  assert m["delta"]["value"] == pytest.approx(0.1)
  assert m["delta_i_to_c"]["value"] == pytest.approx(0.2)
  assert m["delta_c_to_i"]["value"] == pytest.approx(0.1)
  assert all(r["n"] == 10 for r in m.values())
  # Wilson interval of 4/10 by hand: centre (0.4 + z^2/20) / (1 + z^2/10)
  z = 1.959964
  centre = (0.4 + z * z / 20) / (1 + z * z / 10)
  half = z * np.sqrt(0.024 + z * z / 400) / (1 + z * z / 10)
  assert m["accuracy_t1"]["low"] == pytest.approx(centre - half, abs=1e-6)
  assert m["accuracy_t1"]["high"] == pytest.approx(centre + half, abs=1e-6)
  # paired t interval of the differences d = r2 - r1 (n = 10 < 30)
  d = np.array(r2) - np.array(r1)
  half_t = 2.262157 * d.std(ddof=1) / np.sqrt(10)
  assert m["delta"]["low"] == pytest.approx(0.1 - half_t, abs=1e-5)
  assert m["delta"]["high"] == pytest.approx(0.1 + half_t, abs=1e-5)


def test_delta_is_i_to_c_minus_c_to_i():
  rng = np.random.default_rng(0)
  r1, r2 = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
  m = sc.self_correction_metrics(r1, r2)
  assert m["delta"]["value"] == pytest.approx(
      m["delta_i_to_c"]["value"] - m["delta_c_to_i"]["value"])
  assert m["delta"]["value"] == pytest.approx(
      m["accuracy_t2"]["value"] - m["accuracy_t1"]["value"])


def test_metric_errors():
  with pytest.raises(ValueError, match="binary"):
    sc.self_correction_metrics([0, 0.5], [1, 1])
  with pytest.raises(ValueError, match="same length"):
    sc.self_correction_metrics([0, 1], [1])


class _Ep:
  def __init__(self, task, r1, r2):
    self.task, self.reward1, self.reward2 = task, r1, r2


def test_metrics_by_task_and_tables():
  eps = ([_Ep("math", 1, 1), _Ep("math", 0, 1)] +
         [_Ep("code", 1, 0), _Ep("code", 0, 0), _Ep("code", 0, 0)])
  by_task = sc.metrics_by_task(eps)
  assert by_task["math"]["delta_i_to_c"]["value"] == 0.5
  assert by_task["code"]["delta_c_to_i"]["value"] == pytest.approx(1 / 3)
  tables = sc.metric_tables({"base": by_task, "score": by_task})
  assert list(tables) == [sc.METRIC_TITLES[m] for m in sc.METRICS]
  assert tables["Accuracy@t2"]["score"]["math"]["value"] == 1.0


def test_voted_correct_and_scaling_curve():
  # majority on the key; a tie goes to the first answer reached
  assert sc.voted_correct([("3", False), ("4", True), ("4", True)])
  assert not sc.voted_correct([("3", False), ("4", True)])
  assert not sc.voted_correct([(None, False), (None, False)])
  # problem A: parallel samples mostly wrong, corrections right
  par_a = [("1", False)] * 3 + [("2", True)] * 1
  seq_a = [("2", True), ("2", True)]
  # problem B: parallel right by majority, corrections wrong
  par_b = [("5", True), ("5", True), ("6", False), ("5", True)]
  seq_b = [("6", False), ("5", True)]
  curve = sc.scaling_curve([par_a, par_b], [seq_a, seq_b], budgets=(2, 4))
  assert curve["budgets"] == [2, 4]
  # B=2: parallel votes A:'1' (wrong), B:'5' (right) -> 1/2; sequential
  # K=1: A:'2' right, B:'6' wrong -> 1/2
  assert curve["parallel"][0]["value"] == 0.5
  assert curve["sequential"][0]["value"] == 0.5
  # B=4: parallel A:'1' wrong, B:'5' right; sequential K=2: A:'2' right,
  # B: tie '6','5' -> '6' wrong
  assert curve["parallel"][1]["value"] == 0.5
  assert curve["sequential"][1]["value"] == 0.5
  with pytest.raises(ValueError, match="even"):
    sc.scaling_curve([par_a], [seq_a], budgets=(3,))
  with pytest.raises(ValueError, match="needs 8"):
    sc.scaling_curve([par_a], [seq_a], budgets=(8,))


def test_plot_scaling_writes_png(tmp_path):
  curve = sc.scaling_curve([[("1", True)] * 4], [[("1", True)] * 2],
                           budgets=(2, 4))
  path = sc.plot_scaling({"score/math": curve},
                         str(tmp_path / "s" / "scaling.png"))
  assert os.path.getsize(path) > 1000


class _CountingTask:
  name = "count"
  correction_instruction = "fix it"

  def __init__(self):
    self.calls = 0

  def parse_answer(self, text):
    return text.strip()

  def verify(self, example, answer):
    self.calls += 1
    return task_base.Verdict(answer == example.answer, "x")

  def verify_batch(self, examples, answers):
    return [self.verify(e, a) for e, a in zip(examples, answers)]


def test_caching_task_verifies_each_pair_once():
  inner = _CountingTask()
  task = sc.CachingTask(inner)
  ex = task_base.Example("e1", "q", "7")
  assert task.verify(ex, "7").correct and not task.verify(ex, "8").correct
  assert task.verify(ex, "7").correct
  verdicts = task.verify_batch([ex, ex, ex], ["7", "9", "9"])
  assert [v.correct for v in verdicts] == [True, False, False]
  assert inner.calls == 3  # '7', '8', '9'
  assert (task.hits, task.misses) == (3, 3)
  assert task.name == "count" and task.correction_instruction == "fix it"
  assert task.score(ex, " 7 ").correct
  assert sc.unwrap_task(task) is inner
