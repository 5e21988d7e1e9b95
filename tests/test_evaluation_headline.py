"""Headline claims: entries, paired and independent differences, and the
SWiRL quickstart's claims on constructed evaluation results."""

import pytest

from swirl_jax.evaluation import headline as hl
from swirl_jax.evaluation.metrics import proportion_ci
from swirl_jax.evaluation.swirl_report import swirl_headline

KEYS = {"claim", "metric", "value", "low", "high", "n", "holds"}


def _result(correct, steps_good, steps):
  return {"accuracy": proportion_ci(sum(correct.values()), len(correct)),
          "process_label": proportion_ci(steps_good, steps),
          "correct": correct}


def _correct(n, right):
  return {f"q{i}": i in right for i in range(n)}


def test_paired_needs_the_same_questions():
  with pytest.raises(ValueError, match="1 ids differ"):
    hl.paired({"a": True}, {"a": True, "b": False})
  r = hl.paired(_correct(4, {0, 1}), _correct(4, {0}))
  assert r["value"] == pytest.approx(0.25) and r["n"] == 4


def test_independent_difference_adds_the_variances():
  a, b = proportion_ci(60, 100), proportion_ci(40, 100)
  r = hl.independent_difference(a, b)
  assert r["value"] == pytest.approx(0.2)
  half_a, half_b = (a["high"] - a["low"]) / 2, (b["high"] - b["low"]) / 2
  assert r["high"] - r["value"] == pytest.approx((half_a**2 + half_b**2)**.5)


def test_swirl_headline_claims_and_rules():
  n = 200
  base = {"gsm8k": _result(_correct(n, set(range(40))), 50, 400),
          "hotpotqa": _result(_correct(n, set(range(30))), 40, 400)}
  swirl = {"gsm8k": _result(_correct(n, set(range(80))), 200, 400),
           "hotpotqa": _result(_correct(n, set(range(31))), 60, 400)}
  sft = {"gsm8k": _result(_correct(n, set(range(85))), 150, 400),
         "hotpotqa": _result(_correct(n, set(range(30))), 40, 400)}
  compared = {"gsm8k": _result(_correct(n, set(range(10))), 10, 400)}
  results = {"base": base, "SWiRL [gsm8k]": swirl, "SFT [gsm8k]": sft,
             "SWiRL [gsm8k, none]": compared}
  trained_on = {"base": None, "SWiRL [gsm8k]": "gsm8k",
                "SFT [gsm8k]": "gsm8k", "SWiRL [gsm8k, none]": "gsm8k"}
  filter_of = {"base": None, "SWiRL [gsm8k]": "process",
               "SFT [gsm8k]": "process", "SWiRL [gsm8k, none]": "none"}
  claims = swirl_headline(results, trained_on, filter_of, "process")
  assert all(set(c) == KEYS for c in claims)
  by = {c["claim"]: c for c in claims}
  assert by["the base answers between 10% and 60% on gsm8k"]["holds"]
  assert by["the base answers between 10% and 60% on gsm8k"]["value"] == 0.2
  inside = by["SWiRL [gsm8k] above the base in-domain on gsm8k (95% "
              "interval above 0)"]
  assert inside["value"] == pytest.approx(0.2) and inside["low"] > 0
  assert inside["holds"] and inside["n"] == n
  versus_sft = by["SWiRL [gsm8k] at least as good as SFT [gsm8k] on gsm8k"]
  assert versus_sft["value"] == pytest.approx(-0.025)
  assert not versus_sft["holds"]
  cross = by["SWiRL [gsm8k] above the base cross-task on hotpotqa"]
  assert cross["value"] == pytest.approx(0.005) and cross["holds"]
  assert by["SWiRL [gsm8k] raises the mean process label on gsm8k"]["holds"]
  # Only the main filter's model makes claims.
  assert not [c for c in claims if "none" in c["claim"]]
  assert len(claims) == 2 + 4
  assert not hl.all_hold(claims)
