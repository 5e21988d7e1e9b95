"""Metric functions on constructed cases, and the report writer."""

import json
import math

import pytest

from swirl_jax.evaluation import majority_vote, mean_ci, proportion_ci, write_report
from swirl_jax.evaluation.metrics import paired_difference, sign_test_p


def test_wilson_interval_known_values():
  r = proportion_ci(8, 10)
  # Wilson 95% for 8/10: [0.4902, 0.9433].
  assert r["value"] == 0.8
  assert r["low"] == pytest.approx(0.4902, abs=1e-3)
  assert r["high"] == pytest.approx(0.9433, abs=1e-3)
  zero = proportion_ci(0, 20)
  assert zero["low"] == 0.0 and 0.0 < zero["high"] < 0.2
  assert math.isnan(proportion_ci(0, 0)["value"])
  with pytest.raises(ValueError, match="successes=5, n=3"):
    proportion_ci(5, 3)
  with pytest.raises(ValueError, match="0.5"):
    proportion_ci(1, 2, level=0.5)


def test_mean_ci():
  r = mean_ci([1.0, 2.0, 3.0, 4.0])
  assert r["value"] == 2.5
  # t(0.975, 3) = 3.182; sem = 1.291 / 2.
  assert r["high"] - r["value"] == pytest.approx(3.182 * 1.2910 / 2, rel=1e-3)
  assert mean_ci([])["n"] == 0
  big = mean_ci([0.0, 1.0] * 50)
  assert big["high"] - big["value"] == pytest.approx(
      1.96 * 0.50252 / 10, rel=1e-3)


def _outcomes(both, a_only, b_only, neither):
  a = [1] * both + [1] * a_only + [0] * b_only + [0] * neither
  b = [1] * both + [0] * a_only + [1] * b_only + [0] * neither
  return a, b


def test_paired_difference_matches_the_paired_normal_interval_at_large_n():
  # Strongly correlated outcomes: the interval must use the pairing (the
  # independent-samples interval would be about 6x wider here).
  both, a_only, b_only, neither = 900, 20, 60, 1020
  n = both + a_only + b_only + neither
  r = paired_difference(*_outcomes(both, a_only, b_only, neither))
  diff = (a_only - b_only) / n
  half = 1.96 * math.sqrt(((a_only + b_only) / n - diff ** 2) / n)
  assert r["value"] == pytest.approx(diff)
  assert r["low"] == pytest.approx(diff - half, abs=2e-3)
  assert r["high"] == pytest.approx(diff + half, abs=2e-3)
  assert (r["n"], r["a_only"], r["b_only"]) == (n, a_only, b_only)
  assert r["p_value"] < 1e-4


def test_paired_difference_small_and_degenerate_cases():
  r = paired_difference(*_outcomes(3, 5, 0, 12))
  # One model never right alone: the interval keeps a width and holds 0
  # only when the evidence is weak.
  assert r["low"] < r["value"] < r["high"]
  assert r["low"] > 0.0
  swapped = paired_difference(*reversed(_outcomes(3, 5, 0, 12)))
  assert swapped["value"] == -r["value"]
  assert swapped["low"] == pytest.approx(-r["high"])
  assert swapped["high"] == pytest.approx(-r["low"])
  same = paired_difference([1, 0, 1], [1, 0, 1])
  assert same["value"] == 0.0 and same["low"] <= 0.0 <= same["high"]
  assert same["p_value"] == 1.0
  assert -1.0 <= paired_difference([1] * 4, [0] * 4)["low"]
  with pytest.raises(ValueError, match="shapes"):
    paired_difference([1, 0], [1])


def test_sign_test_p_known_values():
  assert sign_test_p(0, 0) == 1.0
  assert sign_test_p(5, 0) == pytest.approx(2 / 32)
  # 16 vs 10 discordant: the R3 README's p = 0.33.
  assert sign_test_p(16, 10) == pytest.approx(0.3269, abs=1e-3)
  assert sign_test_p(10, 16) == sign_test_p(16, 10)


def test_majority_vote():
  assert majority_vote(["3", "4", "4", None, "3"]) == "3"  # tie: earliest
  assert majority_vote(["5", "4", "4"]) == "4"
  assert majority_vote([None, None]) is None


def test_write_report(tmp_path):
  table = {"base": {"gsm8k": proportion_ci(3, 10),
                    "hotpotqa": proportion_ci(1, 10)},
           "swirl": {"gsm8k": proportion_ci(6, 10)}}
  paths = write_report(str(tmp_path), {"accuracy": table},
                       extra={"seconds": 12.5}, title="SWiRL")
  payload = json.load(open(paths["json"]))
  assert payload["tables"]["accuracy"]["swirl"]["gsm8k"]["value"] == 0.6
  assert payload["seconds"] == 12.5
  md = open(paths["md"]).read()
  assert "| swirl | 0.600 [" in md and "n/a" in md
  png = open(paths["accuracy"], "rb").read()
  assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_and_metric_curves(tmp_path):
  from swirl_jax.evaluation import report
  png = b"\x89PNG\r\n\x1a\n"
  bars = report.bar_chart(["a", "b"], {"x": [0.2, 0.5], "y": [0.1, 0.9]},
                          "t", str(tmp_path / "sub" / "bars.png"),
                          errors={"x": ([0.1, 0.1], [0.2, 0.2])},
                          rotation=20)
  assert open(bars, "rb").read()[:8] == png
  stage = tmp_path / "stage"
  stage.mkdir()
  with open(stage / "metrics.jsonl", "w") as f:
    for step, loss in ((1, 2.0), (2, 1.5)):
      f.write(json.dumps({"step": step, "loss": loss}) + "\n")
    f.write(json.dumps({"step": 2, "mean_reward": 0.5}) + "\n")
  curves = report.metric_curves({"run": str(stage),
                                 "none": str(tmp_path / "missing")}, "loss")
  assert curves == {"run": ([1, 2], [2.0, 1.5])}
  path = report.curve_plot(dict(curves, _hidden=([1, 2], [0, 1])), "c",
                           str(tmp_path / "c.png"),
                           styles={"_hidden": {"linestyle": "--"}})
  assert open(path, "rb").read()[:8] == png
  with pytest.raises(ZeroDivisionError):  # a failed drawing writes no file
    with report.figure(str(tmp_path / "bad.png"), (2, 2)):
      _ = 1 / 0
  assert not (tmp_path / "bad.png").exists()
