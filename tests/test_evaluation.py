"""Metric functions on constructed cases, and the report writer."""

import json
import math

import pytest

from swirl_jax.evaluation import majority_vote, mean_ci, proportion_ci, write_report


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
