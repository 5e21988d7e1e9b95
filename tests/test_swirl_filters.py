"""Tests for swirl_jax.swirl.filters on hand-built trajectories."""

import json

import pytest

from swirl_jax.judges import base
from swirl_jax.judges import rules
from swirl_jax.rollout.trajectory import Step, Trajectory
from swirl_jax.swirl import filters
from swirl_jax.tasks import Verdict
from swirl_jax.tools import format_result


def make_traj(task, example_id, actions, correct, sample_index=0,
              question="How many?", gold="42"):
  """A trajectory from (action text, tool tag or None, input, result)."""
  turns = [("user", f"Prompt. Question: {question}")]
  steps = []
  for i, (text, tool, tool_input, result) in enumerate(actions):
    turns.append(("model", text))
    steps.append(Step(index=i, action=text, action_tokens=[5, i],
                      action_logprobs=[-0.1, -0.2], tool=tool,
                      tool_input=tool_input, tool_result=result))
    if tool is not None:
      turns.append(("user", format_result(tool_input, result)))
  final = "42" if correct else "41"
  return Trajectory(task=task, example_id=example_id, question=question,
                    gold=gold, sample_index=sample_index, turns=turns,
                    steps=steps, final_answer=final,
                    verdict=Verdict(correct, "correct" if correct
                                    else "wrong_answer"),
                    finish_reason="answer")


class KeywordJudge(base.Judge):
  """GOOD unless the action contains 'oops'; counts judge_steps calls."""

  def __init__(self):
    self.calls = []

  def judge_steps(self, requests):
    self.calls.append(list(requests))
    return [base.JudgeResult.of("oops" not in r.action_text,
                                f"step {r.step_index}") for r in requests]


CALC = ("<math_exp> 6*7 </math_exp>", "math_exp", "6*7", "42")
OOPS = ("oops <math_exp> 6*8 </math_exp>", "math_exp", "6*8", "48")
ANSWER = ("<answer> 42 </answer>", None, None, None)
WRONG = ("<answer> 41 </answer>", None, None, None)


@pytest.fixture
def trajs():
  return [
      make_traj("gsm8k", "a", [CALC, ANSWER], True),            # A
      make_traj("gsm8k", "b", [CALC, WRONG], False),            # B
      make_traj("gsm8k", "c", [OOPS, CALC, ANSWER], True),      # C
      make_traj("hotpotqa", "d", [OOPS, WRONG], False),         # D
      make_traj("hotpotqa", "e", [ANSWER], True, sample_index=3),  # E
  ]


def test_judge_trajectories_makes_one_batched_call(trajs):
  judge = KeywordJudge()
  labels = filters.judge_trajectories(trajs, judge,
                                      {"c": {"template": "t"}})
  assert len(judge.calls) == 1 and len(judge.calls[0]) == 10
  assert [len(l) for l in labels] == [2, 2, 3, 2, 1]
  assert [[l.label for l in ls] for ls in labels] == [
      ["GOOD", "GOOD"], ["GOOD", "GOOD"], ["BAD", "GOOD", "GOOD"],
      ["BAD", "GOOD"], ["GOOD"]]
  req = judge.calls[0][5]  # trajectory c, step 1
  assert req.task_name == "gsm8k" and req.step_index == 1
  assert req.example_metadata == {"template": "t"}
  assert list(req.context_turns) == trajs[2].state(1)
  assert req.action_text == CALC[0] and req.gold == "42"


@pytest.mark.parametrize("strategy, kept", [
    ("none", "abcde"), ("process", "abe"), ("outcome", "ace"),
    ("process_and_outcome", "ae")])
def test_filters_keep_the_expected_trajectories(trajs, strategy, kept):
  labels = filters.judge_trajectories(trajs, KeywordJudge())
  out = filters.filter_trajectories(trajs, labels, strategy)
  assert "".join(t.example_id for t in out) == kept


def test_filter_errors(trajs):
  labels = filters.judge_trajectories(trajs, KeywordJudge())
  with pytest.raises(ValueError, match="Did you mean 'process'"):
    filters.filter_trajectories(trajs, labels, "proces")
  with pytest.raises(ValueError, match="labels for 4 trajectories"):
    filters.filter_trajectories(trajs, labels[:4], "none")
  with pytest.raises(ValueError, match="has 2 steps but 1 labels"):
    filters.filter_trajectories(trajs, [labels[0][:1]] + labels[1:], "none")


def test_statistics(trajs, tmp_path):
  labels = filters.judge_trajectories(trajs, KeywordJudge())
  kept = filters.filter_trajectories(trajs, labels, "process")
  stats = filters.filter_statistics(trajs, labels, kept, "process")
  assert stats["strategy"] == "process"
  assert stats["num_trajectories"] == 5 and stats["num_steps"] == 10
  assert stats["accuracy"] == pytest.approx(3 / 5)
  assert stats["process_label_rate"] == pytest.approx(8 / 10)
  assert stats["unparsed_labels"] == 0
  assert stats["kept"] == {"trajectories": 3, "steps": 5, "fraction": 0.6}
  per = stats["kept_per_filter"]
  assert {f: per[f]["trajectories"] for f in filters.FILTERS} == {
      "none": 5, "process": 3, "outcome": 3, "process_and_outcome": 2}
  assert per["outcome"]["steps"] == 6
  assert stats["label_rate_by_position"] == {
      "0": {"steps": 5, "good": 3, "good_rate": 0.6},
      "1": {"steps": 4, "good": 4, "good_rate": 1.0},
      "2": {"steps": 1, "good": 1, "good_rate": 1.0}}
  by_outcome = stats["label_rate_by_outcome"]
  assert by_outcome["correct"] == {"trajectories": 3, "steps": 6, "good": 5,
                                   "good_rate": pytest.approx(5 / 6)}
  assert by_outcome["incorrect"] == {"trajectories": 2, "steps": 4,
                                     "good": 3, "good_rate": 0.75}
  gsm, qa = stats["by_task"]["gsm8k"], stats["by_task"]["hotpotqa"]
  assert (gsm["trajectories"], gsm["steps"], gsm["good"]) == (3, 7, 6)
  assert gsm["accuracy"] == pytest.approx(2 / 3)
  assert gsm["kept_per_filter"] == {"none": 3, "process": 2, "outcome": 2,
                                    "process_and_outcome": 1}
  assert qa["kept_per_filter"] == {"none": 2, "process": 1, "outcome": 1,
                                   "process_and_outcome": 1}
  path = filters.write_statistics(tmp_path / "run", stats)
  assert path.endswith(filters.STATISTICS_FILENAME)
  with open(path) as f:
    assert json.load(f) == json.loads(json.dumps(stats))


def test_statistics_checks_kept(trajs):
  labels = filters.judge_trajectories(trajs, KeywordJudge())
  with pytest.raises(ValueError, match="not in trajs"):
    filters.filter_statistics(trajs, labels, [make_traj("x", "y", [], True)])
  with pytest.raises(ValueError, match="twice"):
    filters.filter_statistics(trajs, labels, [trajs[0], trajs[0]])
  empty = filters.filter_statistics([], [], [])
  assert empty["num_trajectories"] == 0 and empty["accuracy"] is None


def test_sub_trajectories(trajs):
  labels = filters.judge_trajectories(trajs, KeywordJudge())
  records = filters.sub_trajectories(trajs[2], labels[2])
  assert len(records) == 3
  for i, r in enumerate(records):
    filters.check_record(r)
    assert set(r) == set(filters.RECORD_FIELDS)
    assert r["trajectory_id"] == "gsm8k/c/0" and r["step_index"] == i
    assert filters.context_turns(r) == trajs[2].state(i)
    assert r["action"] == trajs[2].turns[2 * i + 1][1]
    assert r["num_steps"] == 3 and r["outcome"] is True
    assert (r["task"], r["question"], r["gold"]) == ("gsm8k", "How many?",
                                                     "42")
  assert [r["label"] for r in records] == ["BAD", "GOOD", "GOOD"]
  assert [r["reward"] for r in records] == [0.0, 1.0, 1.0]
  assert [r["kind"] for r in records] == ["tool", "tool", "answer"]
  assert (records[0]["tool"], records[0]["tool_input"],
          records[0]["tool_result"]) == ("math_exp", "6*8", "48")
  assert (records[2]["tool"], records[2]["tool_result"]) == ("", "")
  e = filters.sub_trajectories(trajs[4], labels[4])
  assert e[0]["trajectory_id"] == "hotpotqa/e/3"
  flat = filters.all_sub_trajectories(trajs, labels)
  assert len(flat) == 10 and flat[4:7] == records
  json.dumps(flat)


def test_check_record_names_bad_fields(trajs):
  labels = filters.judge_trajectories(trajs, KeywordJudge())
  record = filters.sub_trajectories(trajs[0], labels[0])[0]
  with pytest.raises(ValueError, match=r"lacks fields \['label'\]"):
    filters.check_record({k: v for k, v in record.items() if k != "label"})
  with pytest.raises(ValueError, match="'step_index' must be a int"):
    filters.check_record(dict(record, step_index="0"))
  with pytest.raises(ValueError, match="'outcome' must be a bool"):
    filters.check_record(dict(record, outcome=1))
  filters.check_record(dict(record, reward=1))  # ints are valid floats


def test_rule_judge_through_the_filters():
  question = "Ana has 12 boxes of 30 pens. How many pens?"
  good = make_traj("gsm8k", "g", [
      ("<math_exp> 12*30 </math_exp>", "math_exp", "12*30", "360"),
      ("<answer> 360 </answer>", None, None, None)], True, question=question,
                   gold="360")
  invented = make_traj("gsm8k", "i", [
      ("<math_exp> 12*31 </math_exp>", "math_exp", "12*31", "372"),
      ("<answer> 372 </answer>", None, None, None)], False, question=question,
                       gold="360")
  trajs = [good, invented]
  labels = filters.judge_trajectories(trajs, rules.RuleProcessJudge())
  assert [[l.label for l in ls] for ls in labels] == [
      ["GOOD", "GOOD"], ["BAD", "GOOD"]]
  assert filters.filter_trajectories(trajs, labels, "process") == [good]
  # Stage 2 judges new actions in a record's state with the same judge.
  record = filters.sub_trajectories(good, labels[0])[1]
  judge = rules.RuleProcessJudge()
  req = filters.judge_request_for_record(record)
  assert list(req.context_turns) == good.state(1)
  assert (req.task_name, req.step_index, req.gold) == ("gsm8k", 1, "360")
  assert judge.judge_step(req).good
  new = filters.judge_request_for_record(record, "<answer> 361 </answer>")
  assert not judge.judge_step(new).good
