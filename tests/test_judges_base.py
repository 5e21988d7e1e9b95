"""Tests for swirl_jax.judges.base: results, requests and the registry."""

import gin
import pytest

from swirl_jax import judges
from swirl_jax.judges import base


def test_result_validation_and_round_trip():
  r = base.JudgeResult(base.GOOD, 1, "fine")
  assert r.good and r.reward == 1.0 and isinstance(r.reward, float)
  assert base.JudgeResult.from_dict(r.to_dict()) == r
  assert base.JudgeResult.of(False, "no") == base.JudgeResult(
      base.BAD, 0.0, "no", True)
  with pytest.raises(ValueError, match="'good'"):
    base.JudgeResult("good", 1.0)
  with pytest.raises(ValueError, match=r"\[0, 1\], got 1.5"):
    base.JudgeResult(base.GOOD, 1.5)
  with pytest.raises(ValueError, match="lacks keys"):
    base.JudgeResult.from_dict({"label": "GOOD"})


def test_request_validation():
  base.JudgeRequest("gsm8k", "q", [("user", "q")], "<answer> 1 </answer>")
  with pytest.raises(ValueError, match=r"context_turns\[0\]"):
    base.JudgeRequest("gsm8k", "q", ["user: q"], "a")
  with pytest.raises(TypeError, match="action_text"):
    base.JudgeRequest("gsm8k", "q", [], None)


def test_registry_builds_by_name_and_suggests_close_names():
  assert {"rules", "model"} <= set(judges.judge_names())
  assert isinstance(judges.get_judge("rules"), judges.RuleProcessJudge)
  assert judges.get_judge_class("model") is judges.ModelJudge
  with pytest.raises(ValueError, match="Did you mean 'rules'"):
    judges.get_judge("rule")
  with pytest.raises(ValueError, match="Known judges"):
    judges.get_judge("xyzzy")


def test_register_judge_checks_classes_and_names():
  with pytest.raises(TypeError, match="Judge subclass"):
    base.register_judge("not_a_judge")(object)
  with pytest.raises(ValueError, match="already registered"):

    @base.register_judge("rules")
    class Other(base.Judge):  # pylint: disable=unused-variable

      def judge_steps(self, requests):
        return []


def test_check_results():
  ok = [base.JudgeResult.of(True, "")]
  assert base.check_results(ok, 1, "j") == ok
  with pytest.raises(ValueError, match="returned 1 results for 2"):
    base.check_results(ok, 2, "j")
  with pytest.raises(TypeError, match="not a JudgeResult"):
    base.check_results(["GOOD"], 1, "j")


def test_get_judge_is_gin_configurable():
  gin.clear_config()
  try:
    gin.parse_config("""
        swirl_jax.judges.get_judge.name = 'rules'
        swirl_jax.judges.RuleProcessJudge.constants = (1, 2)
    """)
    judge = judges.get_judge()
    assert isinstance(judge, judges.RuleProcessJudge)
    assert judge.constants == {1, 2}
  finally:
    gin.clear_config()


def test_labels_summary():
  rs = [base.JudgeResult.of(True, ""), base.JudgeResult.of(False, "", False)]
  assert base.labels_summary(rs) == {"num": 2, "good": 1, "good_rate": 0.5,
                                     "unparsed": 1}
  assert base.labels_summary([])["good_rate"] is None
