"""Tests of swirl_jax.tasks.countdown and the reasoning-gym adapter."""

import fractions
import json
import sys

import pytest

from swirl_jax import tasks
from swirl_jax.tasks import base
from swirl_jax.tasks import countdown
from swirl_jax.tasks import reasoning_gym_task

pytest.importorskip("reasoning_gym")

F = fractions.Fraction


@pytest.fixture(scope="module")
def task():
  return countdown.CountdownTask()


@pytest.mark.parametrize("text,value,numbers", [
    ("1 + 2 * 3", F(7), [1, 2, 3]),
    ("(1 + 2) * 3", F(9), [1, 2, 3]),
    ("8 / 3 * 3", F(8), [8, 3, 3]),
    ("10 - 4 - 3", F(3), [10, 4, 3]),
    ("6 × 7 ÷ 2 − 1", F(20), [6, 7, 2, 1]),
    ("6 \\times (5 - 2)", F(18), [6, 5, 2]),
    ("$(25 + 5) * 4$", F(120), [25, 5, 4]),
    ("94*4 - 61 - 6 = 309", F(309), [94, 4, 61, 6]),
    ("((((2))))", F(2), [2]),
])
def test_evaluate_equation(text, value, numbers):
  got_value, got_numbers = countdown.evaluate_equation(text)
  assert got_value == value
  assert got_numbers == [F(n) for n in numbers]


@pytest.mark.parametrize("text,message", [
    ("", "empty"),
    ("1 +", "ends early"),
    ("(1 + 2", "unbalanced"),
    ("1 + 2)", "unexpected"),
    ("-3 + 4", "unary"),
    ("2 ** 3", "where a number"),
    ("4 / (2 - 2)", "division by zero"),
    ("__import__('os')", "unexpected character"),
    ("1 + 2 = 3 = 3", "more than one"),
    ("1 + 2 = x", "not a number"),
    ("(" * 60 + "1" + ")" * 60, "nested too deeply"),
    ("1+" * 200 + "1", "too long"),
])
def test_invalid_equations(text, message):
  with pytest.raises(countdown.EquationError, match=message):
    countdown.evaluate_equation(text)


@pytest.mark.parametrize("answer,category", [
    ("(25 - 5) * 4 + 3", "correct"),
    ("3 + 4 * (25 - 5)", "correct"),
    ("(25 - 5) * 4 + 3 = 83", "correct"),
    ("25 * 4 - 5 * 3", "missed_target"),
    ("(25 - 5) * 4", "wrong_numbers"),
    ("(25 - 5) * 4 + 3 + 3", "wrong_numbers"),
    ("(25 - 5) * 4 + 3.0", "correct"),
    ("(25 - 5) * 4 + 2 + 1", "wrong_numbers"),
    ("(25 - 5) * 4 +", "invalid_equation"),
    ("eighty-three", "invalid_equation"),
    ("", "no_answer"),
    (None, "no_answer"),
])
def test_verify_equation_categories(answer, category):
  verdict = countdown.verify_equation([25, 5, 4, 3], 83, answer)
  assert verdict.category == category, verdict
  assert verdict.correct == (category == "correct")


def test_division_is_exact():
  assert countdown.verify_equation([7, 2, 2], 7, "7 / 2 * 2").correct
  assert countdown.verify_equation([1, 3, 3], 1, "1 / 3 * 3").correct
  assert not countdown.verify_equation([7, 2, 2], 3, "7 / 2 - 2").correct


def test_generate_from_reasoning_gym(task):
  a = task.generate(6, seed=0, split="train")
  assert a == task.generate(6, seed=0, split="train")
  assert a != task.generate(6, seed=1, split="train")
  test = task.generate(6, seed=0, split="test")
  assert not {e.id for e in a} & {e.id for e in test}
  for ex in a + test:
    numbers, target = task.numbers_and_target(ex)
    assert ex.metadata["rg_dataset"] == "countdown"
    assert base.split_of(f"{sorted(numbers)}->{target}") == ex.split
    # reasoning-gym's reference expression passes our verifier and its own.
    assert task.verify(ex, ex.answer).correct, ex.answer
    assert task.score(ex, f"<answer>{ex.answer}</answer>").correct
    p = task.prompt(ex)
    assert str(target) in p and "exactly once" in p
  assert len(test) == 6 and all(e.split == "test" for e in test)


def test_config_is_passed_to_reasoning_gym():
  small = tasks.get_task("countdown", min_numbers=3, max_numbers=3,
                         min_target=10, max_target=99)
  for ex in small.generate(4, seed=0):
    numbers, target = small.numbers_and_target(ex)
    assert len(numbers) == 3 and 10 <= target <= 99
  with pytest.raises(ValueError, match="Bad config"):
    tasks.get_task("countdown", min_numbers=5, max_numbers=2)
  with pytest.raises(ValueError, match="Do not pass 'seed'"):
    tasks.get_task("countdown", seed=3)


def test_parse_answer(task):
  assert task.parse_answer("blah <answer> 1 + 2 </answer>") == "1 + 2"
  assert task.parse_answer("Let me think.\n(1 + 2) * 3\n") == "(1 + 2) * 3"
  assert task.parse_answer("I give up.") is None


def test_load_tinyzero_format(tmp_path, task):
  path = tmp_path / "cd.jsonl"
  path.write_text(json.dumps({"target": 24, "nums": [4, 6, 1]}) + "\n" +
                  json.dumps({"target": 10, "numbers": [5, 2]}) + "\n")
  a, b = task.load(str(path))
  assert task.numbers_and_target(a) == ([4, 6, 1], 24)
  assert task.numbers_and_target(b) == ([5, 2], 10)
  assert task.verify(a, "4 * 6 * 1").correct
  assert task.verify(b, "5 * 2").correct
  assert a.metadata["split"] == "test"
  listed = tmp_path / "cd.json"
  listed.write_text(json.dumps([{"target": 3, "nums": [1, 2]}]))
  assert len(task.load(str(listed))) == 1


def test_load_errors(tmp_path, task):
  path = tmp_path / "bad.jsonl"
  path.write_text(json.dumps({"target": 24, "nums": [4, 6]}) + "\n" +
                  json.dumps({"target": 24, "nums": ["4", 6]}) + "\n")
  with pytest.raises(base.DataFormatError,
                     match=r"bad\.jsonl:2: 'nums' must be a non-empty list"):
    task.load(str(path))
  path.write_text(json.dumps({"nums": [1]}) + "\n")
  with pytest.raises(base.DataFormatError,
                     match=r"bad\.jsonl:1: missing field 'target'"):
    task.load(str(path))
  obj = tmp_path / "obj.json"
  obj.write_text("{}")
  with pytest.raises(base.DataFormatError, match="expected a JSON list"):
    task.load(str(obj))


# ----------------------------------------------------------------------------
# The general adapter.


@pytest.mark.parametrize("name", ["gsm_symbolic", "basic_arithmetic",
                                  "gcd"])
def test_reasoning_gym_adapter(name):
  task = tasks.get_task(f"rg/{name}")
  assert task.name == f"rg/{name}"
  train = task.generate(4, seed=0, split="train")
  test = task.generate(4, seed=0, split="test")
  assert train == task.generate(4, seed=0, split="train")
  assert not {e.id for e in train} & {e.id for e in test}
  for ex in train + test:
    good = task.verify(ex, ex.answer)
    assert good.correct and good.score == 1.0
    bad = task.verify(ex, ex.answer + "0")
    assert not bad.correct and bad.category == "wrong_answer"
    assert task.verify(ex, None).category == "no_answer"
    assert task.score(ex, f"... <answer>{ex.answer}</answer>").correct
    assert task.prompt(ex).startswith(ex.question.rstrip())


def test_reasoning_gym_load_jsonl(tmp_path):
  task = tasks.get_task("rg/basic_arithmetic")
  entries = task.generate(2, seed=0)
  path = tmp_path / "rg.jsonl"
  path.write_text("".join(json.dumps(e.metadata["rg_entry"]) + "\n"
                          for e in entries))
  loaded = task.load(str(path))
  assert [e.id for e in loaded] == [e.id for e in entries]
  assert task.verify(loaded[0], entries[0].answer).correct
  path.write_text(json.dumps({"question": "q"}) + "\n")
  with pytest.raises(base.DataFormatError, match="missing field 'metadata'"):
    task.load(str(path))


def test_reasoning_gym_errors(monkeypatch):
  with pytest.raises(ValueError, match="Did you mean 'countdown'"):
    tasks.get_task("rg/countdwn")
  monkeypatch.setitem(sys.modules, "reasoning_gym", None)
  with pytest.raises(ImportError, match="pip install"):
    reasoning_gym_task.ReasoningGymTask("gcd")
