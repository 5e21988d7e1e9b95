"""SCoRe data: direct-answer demonstrations (some wrong), two-turn chats,
repeated first answers."""

import pytest

from swirl_jax.data import correction_demonstrations as data
from swirl_jax.tasks import get_task
from swirl_jax.tasks import prompts


def test_demonstrations_mix_right_and_wrong_answers():
  demos = data.score_demonstrations(("math_small", "code_small"),
                                    num_per_task=100, seed=0,
                                    wrong_fraction=0.3)
  assert len(demos) == 200
  assert [d["task"] for d in demos[:4]] == ["math_small", "code_small"] * 2
  tasks = {n: get_task(n) for n in ("math_small",)}
  math = [d for d in demos if d["task"] == "math_small"]
  examples = {e.id: e for e in tasks["math_small"].generate(100, seed=0)}
  graded = [tasks["math_small"].score(examples[d["id"]], d["target"]).correct
            for d in math]
  assert graded == [d["correct"] for d in math]
  assert 0.15 < 1 - sum(graded) / len(graded) < 0.45
  with pytest.raises(ValueError, match="wrong_fraction"):
    data.score_demonstrations(wrong_fraction=1.0)
  with pytest.raises(ValueError, match="second_turn_fraction"):
    data.score_demonstrations(second_turn_fraction=1.5)


def test_two_turn_demonstrations_are_chats_with_the_instruction():
  task = get_task("math_small")
  demos = data.score_demonstrations(("math_small",), num_per_task=200,
                                    seed=1, wrong_fraction=0.5,
                                    second_turn_fraction=0.5)
  two = [d for d in demos if isinstance(d["prompt"], list)]
  assert 60 < len(two) < 140
  examples = {e.id: e for e in task.generate(200, seed=1)}
  first_right = []
  for d in two:
    (r1, x), (r2, y1), (r3, p) = d["prompt"]
    ex = examples[d["id"]]
    assert (r1, r2, r3) == ("user", "model", "user")
    assert x == task.prompt(ex) and p == prompts.MATH_CORRECTION_INSTRUCTION
    assert task.score(ex, d["target"]).correct == d["correct"]
    first_right.append(task.score(ex, y1).correct)
  # the second answer's correctness does not follow the first's
  both = sum(a and d["correct"] for a, d in zip(first_right, two))
  assert 0 < both < sum(first_right)
  with pytest.raises(ValueError, match="neither"):
    data.task_kind(get_task("gsm8k"))


def test_repeat_fraction_repeats_the_first_answer():
  kw = dict(tasks=("math_small", "code_small"), num_per_task=200, seed=2,
            wrong_fraction=0.3, second_turn_fraction=0.5)
  plain = data.score_demonstrations(**kw)
  # 0 is the default and draws nothing: the same demonstrations as before
  assert data.score_demonstrations(**kw, repeat_fraction=0.0) == plain
  rep = data.score_demonstrations(**kw, repeat_fraction=0.6)
  two = [d for d in rep if isinstance(d["prompt"], list)]
  same = [d["prompt"][1][1] == d["target"] for d in two]
  assert 0.45 < sum(same) / len(two) < 0.8
  # every repeated answer keeps the first answer's correctness
  tasks = {n: get_task(n) for n in ("math_small", "code_small")}
  examples = {n: {e.id: e for e in tasks[n].generate(200, seed=s)}
              for s, n in enumerate(("math_small", "code_small"), start=2)}
  for d, s in zip(two, same):
    if s:
      ex = examples[d["task"]][d["id"]]
      y1_right = tasks[d["task"]].score(ex, d["prompt"][1][1]).correct
      assert d["correct"] == y1_right
  all_of = data.score_demonstrations(**kw, repeat_fraction=1.0)
  assert all(d["prompt"][1][1] == d["target"] for d in all_of
             if isinstance(d["prompt"], list))
  with pytest.raises(ValueError, match="repeat_fraction must be in"):
    data.score_demonstrations(repeat_fraction=-0.1)
