"""Tests of swirl_jax.tasks.math: boxed extraction, normalisation, loaders."""

import json

import pytest

from swirl_jax.tasks import base
from swirl_jax.tasks import math as math_task
from swirl_jax.tasks import prompts

TASK = math_task.MathTask()

PROBLEM = {
    "problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?",
    "level": "Level 1",
    "type": "Prealgebra",
    "solution": "We have $\\frac{1}{2} + \\frac{1}{4} = \\frac{2}{4} + "
                "\\frac{1}{4} = \\boxed{\\frac{3}{4}}$.",
}
PROBLEM2 = {
    "problem": "Find the set.",
    "level": "Level 3",
    "type": "Algebra",
    "solution": "First $\\boxed{1}$ is wrong; the set is "
                "$\\boxed{\\{x : x^{2} > 4\\}}$.",
}


@pytest.mark.parametrize("text,expected", [
    ("so $\\boxed{5}$.", "5"),
    ("\\boxed{\\frac{a}{b}} and later \\boxed{\\frac{1}{\\sqrt{2}}}",
     "\\frac{1}{\\sqrt{2}}"),
    ("\\fbox{7}", "7"),
    ("\\boxed {12}", "12"),
    ("\\boxed 5$", "5"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
    ("\\boxed{unbalanced", None),
    ("no box", None),
    ("", None),
])
def test_last_boxed(text, expected):
  assert math_task.last_boxed(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("Work... Final Answer: The final answer is $3.5$. I hope it is "
     "correct.", "3.5"),
    ("\\boxed{1} Final Answer: The final answer is $\\frac{1}{2}$. I hope "
     "it is correct.", "\\frac{1}{2}"),
    ("Final Answer: The final answer is $\\boxed{2}$. I hope it is correct.",
     "2"),
    ("Final Answer: The final answer is 10.", "10"),
    ("... so the result is \\boxed{x+1}.", "x+1"),
    ("<answer>9</answer>", "9"),
    ("I don't know.", None),
])
def test_extract_answer(text, expected):
  assert TASK.parse_answer(text) == expected


@pytest.mark.parametrize("a,b", [
    ("\\frac{1}{2}", "0.5"),
    ("\\dfrac12", "1/2"),
    ("\\tfrac{3}{4}", "\\frac34"),
    ("1,000", "1000"),
    ("5 \\text{ cm}", "5"),
    ("5\\text{ cm}^2", "5"),
    ("90^\\circ", "90"),
    ("90^{\\circ}", "90"),
    ("$7.0$", "7"),
    ("x = 3", "3"),
    ("\\left(1, 2\\right)", "(1,2)"),
    ("-\\frac{3}{4}", "\\frac{-3}{4}"),
    ("-\\frac{3}{4}", "-0.75"),
    (".5", "\\frac12"),
    ("10\\%", "10"),
    ("\\text{Monday}", "Monday"),
    ("5 dollars", "5"),
    ("\\sqrt2", "\\sqrt{2}"),
    ("\\$4.50", "4.5"),
    ("2\\!\\sqrt{3}", "2\\sqrt{3}"),
])
def test_equivalent(a, b):
  assert math_task.is_equiv(a, b), (math_task.normalize_answer(a),
                                    math_task.normalize_answer(b))


@pytest.mark.parametrize("a,b", [
    ("2", "3"),
    ("\\frac{1}{3}", "0.33"),
    ("(1,2)", "(2,1)"),
    ("\\sqrt{2}", "2"),
    ("x+1", "x-1"),
    ("", "0"),
])
def test_not_equivalent(a, b):
  assert not math_task.is_equiv(a, b)


def test_verify_categories():
  ex = base.Example("m", "q", "\\frac{3}{4}", {"split": "test"})
  assert TASK.verify(ex, "0.75").category == "correct"
  assert TASK.verify(ex, "3/4").correct
  v = TASK.verify(ex, "4/3")
  assert (v.correct, v.category) == (False, "wrong_answer")
  assert TASK.verify(ex, None).category == "no_answer"
  assert TASK.verify(ex, "  ").category == "no_answer"
  good = ("Adding, we get 3/4.\nFinal Answer: The final answer is "
          "$\\frac{3}{4}$. I hope it is correct.")
  assert TASK.score(ex, good).correct


def test_load_directory_tree(tmp_path):
  (tmp_path / "algebra").mkdir()
  (tmp_path / "prealgebra").mkdir()
  (tmp_path / "prealgebra" / "12.json").write_text(json.dumps(PROBLEM))
  (tmp_path / "algebra" / "3.json").write_text(json.dumps(PROBLEM2))
  (tmp_path / "README.txt").write_text("ignored")
  examples = TASK.load(str(tmp_path), split="test")
  assert [e.id for e in examples] == ["math-algebra/3", "math-prealgebra/12"]
  assert examples[0].answer == "\\{x : x^{2} > 4\\}"
  assert examples[1].answer == "\\frac{3}{4}"
  assert examples[1].metadata["level"] == "Level 1"
  assert examples[1].metadata["type"] == "Prealgebra"
  assert examples[1].metadata["split"] == "test"
  assert TASK.score(examples[1], PROBLEM["solution"]).correct


def test_load_json_and_jsonl(tmp_path):
  single = tmp_path / "7.json"
  single.write_text(json.dumps(PROBLEM))
  assert [e.id for e in TASK.load(str(single))] == ["math-7"]
  listed = tmp_path / "all.json"
  listed.write_text(json.dumps([PROBLEM, PROBLEM2]))
  assert [e.answer for e in TASK.load(str(listed))] == [
      "\\frac{3}{4}", "\\{x : x^{2} > 4\\}"]
  # MATH-500 style jsonl with an explicit answer and unique_id.
  rec = dict(PROBLEM, answer="\\frac34", subject="Prealgebra",
             unique_id="test/prealgebra/1.json")
  del rec["type"]
  lines = tmp_path / "test.jsonl"
  lines.write_text(json.dumps(rec) + "\n")
  (ex,) = TASK.load(str(lines))
  assert ex.id == "math-test/prealgebra/1.json"
  assert ex.answer == "\\frac34"
  assert ex.metadata["type"] == "Prealgebra"


def test_load_errors(tmp_path):
  no_box = dict(PROBLEM, solution="It is 3/4.")
  path = tmp_path / "a.jsonl"
  path.write_text(json.dumps(PROBLEM) + "\n" + json.dumps(no_box) + "\n")
  with pytest.raises(base.DataFormatError, match=r"a\.jsonl:2.*boxed"):
    TASK.load(str(path))
  missing = tmp_path / "b.json"
  missing.write_text(json.dumps([PROBLEM, {"problem": "p"}]))
  with pytest.raises(base.DataFormatError,
                     match=r"b\.json\[record 1\]: missing field 'solution'"):
    TASK.load(str(missing))
  (tmp_path / "tree").mkdir()
  (tmp_path / "tree" / "1.json").write_text("{not json")
  with pytest.raises(base.DataFormatError, match=r"1\.json:1: invalid JSON"):
    TASK.load(str(tmp_path / "tree"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="No MATH"):
    TASK.load(str(tmp_path / "empty"))


def test_generate_deterministic_disjoint_and_self_consistent():
  a = TASK.generate(40, seed=1, split="train")
  assert a == TASK.generate(40, seed=1, split="train")
  assert a != TASK.generate(40, seed=2, split="train")
  test = TASK.generate(30, seed=1, split="test")
  assert not {e.id for e in a} & {e.id for e in test}
  assert not {e.question for e in a} & {e.question for e in test}
  kinds = set()
  for ex in a + test:
    kinds.add(ex.question.split()[0])
    assert math_task.last_boxed(ex.metadata["solution"]) == ex.answer
    assert TASK.score(ex, ex.metadata["solution"]).correct
    assert not TASK.verify(ex, ex.answer + "1").correct
  assert len(kinds) >= 3


def test_prompt_and_correction_instruction():
  ex = TASK.generate(1, seed=0)[0]
  p = TASK.prompt(ex)
  assert p.endswith(ex.question)
  assert prompts.FINAL_ANSWER_FORMAT in p
  assert TASK.correction_instruction == prompts.MATH_CORRECTION_INSTRUCTION
