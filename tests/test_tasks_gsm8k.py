"""Tests of swirl_jax.tasks.gsm8k: loaders, generator, parsing, verifier."""

import importlib
import importlib.util
import importlib.resources
import json
import re
import sys

import pytest

from swirl_jax.tasks import base
from swirl_jax.tasks import gsm8k
from swirl_jax.tools import calculator

TASK = gsm8k.GSM8KTask()

ROWS = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then "
                 "she sold half as many clips in May. How many clips did "
                 "Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold "
               "48+24 = <<48+24=72>>72 clips altogether in April and May.\n"
               "#### 72"},
    {"question": "A shop sold 1,200 pens at $2 each. How many dollars?",
     "answer": "1200*2=<<1200*2=2400>>2400\n#### 2,400"},
]


def _write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def test_load_jsonl(tmp_path):
  examples = TASK.load(_write_jsonl(tmp_path / "test.jsonl", ROWS),
                       split="test")
  assert [e.answer for e in examples] == ["72", "2400"]
  assert examples[0].id == "gsm8k-test-0"
  assert examples[0].question.startswith("Natalia")
  assert examples[0].metadata["solution"].endswith("#### 72")
  assert examples[1].metadata["split"] == "test"
  assert TASK.verify(examples[1], "2,400").correct


def test_load_errors_name_file_and_line(tmp_path):
  bad_json = tmp_path / "a.jsonl"
  bad_json.write_text(json.dumps(ROWS[0]) + "\n{oops\n")
  with pytest.raises(base.DataFormatError, match=r"a\.jsonl:2"):
    TASK.load(str(bad_json))
  no_final = tmp_path / "b.jsonl"
  _write_jsonl(no_final, [ROWS[0], {"question": "q", "answer": "no marker"}])
  with pytest.raises(base.DataFormatError, match=r"b\.jsonl:2.*####"):
    TASK.load(str(no_final))
  missing = tmp_path / "c.jsonl"
  _write_jsonl(missing, [{"question": "q"}])
  with pytest.raises(base.DataFormatError,
                     match=r"c\.jsonl:1: missing field 'answer'"):
    TASK.load(str(missing))
  not_number = tmp_path / "d.jsonl"
  _write_jsonl(not_number, [{"question": "q", "answer": "x\n#### many"}])
  with pytest.raises(base.DataFormatError, match="not a number"):
    TASK.load(str(not_number))


def test_tfds_without_prepared_files_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="No prepared TFDS 'gsm8k'"):
    TASK.load(str(tmp_path))


@pytest.mark.skipif(importlib.util.find_spec("tensorflow_datasets") is None,
                    reason="tensorflow-datasets not installed")
def test_tfds_prepared_dataset(tmp_path, monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  if importlib.util.find_spec("importlib_resources") is None:
    # TFDS's writer wants the importlib_resources backport; the stdlib module
    # has the same API on Python >= 3.10 (the reader does not need it).
    monkeypatch.setitem(sys.modules, "importlib_resources",
                        importlib.resources)
  keys = ("question", "answer", "annotation", "short_answer")
  rows = []
  for r in ROWS:
    annotation, short = r["answer"].split("#### ")
    rows.append({"question": r["question"], "answer": r["answer"],
                 "annotation": annotation, "short_answer": short})
  features = tfds.features.FeaturesDict(
      {k: tfds.features.Text() for k in keys})
  tfds.dataset_builders.store_as_tfds_dataset(
      name="gsm8k", version="1.0.0", features=features,
      split_datasets={"train": list(enumerate(rows)),
                      "test": list(enumerate(rows[:1]))},
      data_dir=str(tmp_path))
  test = TASK.load(str(tmp_path), split="test")
  assert [(e.question, e.answer) for e in test] == [(ROWS[0]["question"],
                                                     "72")]
  train = TASK.load_tfds(split="train", data_dir=str(tmp_path))
  assert sorted(e.answer for e in train) == ["2400", "72"]
  with pytest.raises(ValueError, match="no split 'validation'"):
    TASK.load_tfds(split="validation", data_dir=str(tmp_path))


def test_generate_is_deterministic_and_splits_are_disjoint():
  a = TASK.generate(60, seed=3, split="train")
  assert a == TASK.generate(60, seed=3, split="train")
  assert a != TASK.generate(60, seed=4, split="train")
  assert len({e.id for e in a}) == 60
  test_ids = {e.id for s in (3, 4) for e in TASK.generate(40, seed=s,
                                                          split="test")}
  train_ids = {e.id for s in (3, 4) for e in TASK.generate(120, seed=s,
                                                           split="train")}
  assert not test_ids & train_ids
  assert all(base.split_of(e.question) == "test"
             for e in TASK.generate(10, seed=0, split="test"))


def test_generated_problems_need_the_calculator_and_are_consistent():
  templates = set()
  for ex in TASK.generate(120, seed=0, split="train"):
    templates.add(ex.metadata["template"])
    assert 2 <= ex.metadata["num_operations"] <= 4
    answer = int(ex.answer)
    assert answer > 0
    steps = re.findall(r"<<([^=]+)=(\d+)>>", ex.metadata["solution"])
    assert len(steps) == ex.metadata["num_operations"]
    for expr, value in steps:  # every step is exact integer arithmetic
      assert calculator.evaluate(expr) == value, (ex.question, expr)
    assert steps[-1][1] == ex.answer
    assert ex.metadata["solution"].endswith(f"#### {answer}")
    # At least one multi-digit multiplication or division.
    assert any(re.search(r"\d\d\s*[*/]\s*\d\d|\d\d\d\s*[*/]", e)
               for e, _ in steps), ex.question
    assert TASK.score(ex, ex.metadata["solution"]).correct
  assert templates == {t.__name__.removeprefix("_t_")
                       for t in gsm8k.TEMPLATES}


def test_prompt_is_the_swirl_calculator_prompt():
  ex = TASK.generate(1, seed=0)[0]
  p = TASK.prompt(ex)
  assert "make up to 10 sequential queries" in p
  assert "<math_exp>" in p and p.endswith(ex.question)


@pytest.mark.parametrize("text,expected", [
    ("I think... <answer> 1,234 </answer>", "1,234"),
    ("<answer>3</answer> then <answer>4</answer>", "4"),
    ("So 5+5=10\n#### 10", "10"),
    ("The answer is $42.", "42"),
    ("We get 7 apples and then 9 pears", "9"),
    ("no digits here", None),
    ("", None),
])
def test_parse_answer(text, expected):
  assert TASK.parse_answer(text) == expected


@pytest.mark.parametrize("answer,category", [
    ("2400", "correct"),
    ("2,400", "correct"),
    ("$2,400", "correct"),
    ("2400.0", "correct"),
    ("2400 dollars", "correct"),
    ("2400.", "correct"),
    ("2401", "wrong_answer"),
    ("24", "wrong_answer"),
    ("-2400", "wrong_answer"),
    ("about two thousand", "not_a_number"),
    ("12 and 2400", "not_a_number"),
    ("", "no_answer"),
    (None, "no_answer"),
])
def test_verify(answer, category):
  ex = base.Example("x", "q", "2400", {"split": "test"})
  verdict = TASK.verify(ex, answer)
  assert verdict.category == category
  assert verdict.correct == (category == "correct")
