"""Tests of swirl_jax.tasks.base and prompts: examples, splits, registry, IO."""

import gzip
import json

import pytest

from swirl_jax import tasks
from swirl_jax.tasks import base
from swirl_jax.tasks import prompts

ALL_NAMES = ("code", "countdown", "function_calling", "gsm8k", "hotpotqa",
             "humaneval", "math", "mbpp")


def test_example_round_trip_and_hash():
  ex = base.Example("a-1", "q?", "42", {"split": "test", "x": [1, 2]})
  assert ex.split == "test"
  again = base.Example.from_dict(json.loads(json.dumps(ex.to_dict())))
  assert again == ex
  assert hash(again) == hash(ex)
  assert len({ex, again}) == 1
  with pytest.raises(ValueError, match="lacks keys"):
    base.Example.from_dict({"id": "x"})


def test_verdict_reward():
  assert base.Verdict(True, "correct").reward == 1.0
  assert base.Verdict(False, "wrong_answer", "x", 0.5).reward == 0.0


def test_split_of_is_deterministic_and_proportioned():
  keys = [f"instance {i}" for i in range(4000)]
  splits = [base.split_of(k) for k in keys]
  assert splits == [base.split_of(k) for k in keys]
  frac = {s: splits.count(s) / len(keys) for s in base.SPLITS}
  assert abs(frac["train"] - 0.7) < 0.04
  assert abs(frac["validation"] - 0.1) < 0.03
  assert abs(frac["test"] - 0.2) < 0.03


def test_split_share_matches_split_of():
  # The proportions themselves: test_split_of_is_deterministic_and_proportioned.
  assert [base.split_share(s) for s in base.SPLITS] == pytest.approx(
      [0.7, 0.1, 0.2])
  with pytest.raises(ValueError, match="tset"):
    base.split_share("tset")


def test_content_id_and_seed_for_are_stable():
  assert base.content_id("p", "a", 1) == base.content_id("p", "a", 1)
  assert base.content_id("p", "a", 1) != base.content_id("p", "a1")
  assert base.content_id("p", "x").startswith("p-")
  assert base.seed_for(0, "a") == base.seed_for(0, "a")
  assert base.seed_for(0, "a") != base.seed_for(1, "a")


def test_take_split_filters_dedupes_and_reports_exhaustion():
  def cands():
    for i in range(200):
      yield f"k{i % 50}", base.Example(f"id{i % 50}", "q", "a")
  out = base.take_split(cands(), 5, "train", 1000, "toy")
  assert len(out) == 5 and len({e.id for e in out}) == 5
  assert all(base.split_of(f"k{e.id[2:]}") == "train" for e in out)
  assert all(e.metadata["split"] == "train" for e in out)
  with pytest.raises(ValueError, match="ran out"):
    base.take_split(cands(), 45, "train", 1000, "toy")
  with pytest.raises(ValueError, match="too small"):
    base.take_split(cands(), 45, "train", 20, "toy")
  with pytest.raises(ValueError, match="Unknown split"):
    base.take_split(cands(), 1, "dev", 20, "toy")


def test_registry_lists_every_family():
  names = tasks.task_names()
  for name in ALL_NAMES:
    assert name in names
  assert "rg/<name>" in names
  for name in ALL_NAMES:
    task = tasks.get_task(name)
    assert isinstance(task, base.Task)
    assert task.name == name


def test_registry_errors_name_the_closest_match():
  with pytest.raises(ValueError, match=r"Unknown task 'gsm8kk'.*'gsm8k'"):
    tasks.get_task("gsm8kk")
  with pytest.raises(ValueError, match=r"Known tasks: \[.*'hotpotqa'"):
    tasks.get_task("zzz")
  with pytest.raises(ValueError, match="already registered"):
    base.register_task("gsm8k")(lambda: None)
  with pytest.raises(ValueError, match="non-empty"):
    base.register_task("")


def test_task_attributes():
  assert tasks.get_task("gsm8k").max_steps == 10
  assert tasks.get_task("gsm8k").tools == ("math_exp",)
  assert tasks.get_task("hotpotqa").max_steps == 5
  assert tasks.get_task("hotpotqa").tools == ("search_query",)
  assert tasks.get_task("gsm8k", max_steps=3).max_steps == 3
  assert "Final Answer" in tasks.get_task("math").correction_instruction
  assert tasks.get_task("code").correction_instruction.endswith(
      "Only output the final correct Python program!")
  assert tasks.get_task("function_calling").reflection_instruction == (
      prompts.REFLECTION_INSTRUCTION)
  assert tasks.get_task("countdown").reflection_instruction == (
      prompts.COUNTDOWN_REFLECTION_INSTRUCTION)


def test_swirl_prompts():
  p = prompts.swirl_search_prompt("Who?", 5)
  assert "I will allow you to make up to 5 sequential queries" in p
  assert ("Please either issue a search query or answer the question, but "
          "not both.") in p
  assert "<search_query> QUERY </search_query>" in p
  assert "<answer> ANSWER </answer>" in p
  assert p.endswith("Question: Who?")
  c = prompts.swirl_calculator_prompt("2+2?", 10)
  assert "make up to 10 sequential queries" in c
  assert "<math_exp> EXPRESSION </math_exp>" in c
  assert "but not both." in c
  assert prompts.tool_result_message(" 2*3 ", "6") == "2*3 -> 6"


def test_score_and_r3_prompts():
  assert prompts.MATH_CORRECTION_INSTRUCTION.startswith(
      "There might be an error in the solution above because of lack of "
      "understanding of the question. Please correct the error, if any, and "
      "rewrite the solution. Only output the final solution! At the end of "
      "the solution, when you give your final answer, write it in the form "
      "\"Final Answer: The final answer is $answer$. I hope it is correct.\"")
  assert prompts.CODE_CORRECTION_INSTRUCTION.endswith(
      "Only output the final correct Python program!")
  assert prompts.REFLECTION_INSTRUCTION == (
      "You tried to perform the task but did not produce the correct tool "
      "call. Reflect on what went wrong and write a short explanation that "
      "helps you do better next time.")
  assert "exactly once" in prompts.countdown_prompt([1, 2], 3)
  assert "[1, 2]" in prompts.countdown_prompt([1, 2], 3)


def test_read_jsonl_names_file_and_line(tmp_path):
  path = tmp_path / "d.jsonl"
  path.write_text('{"a": 1}\n\n{"a": 2\n')
  it = base.read_jsonl(str(path))
  assert next(it) == (1, {"a": 1})
  with pytest.raises(base.DataFormatError, match=r"d\.jsonl:3: invalid JSON"):
    next(it)
  gz = tmp_path / "d.jsonl.gz"
  with gzip.open(gz, "wt") as f:
    f.write('{"a": 1}\n')
  assert list(base.read_jsonl(str(gz))) == [(1, {"a": 1})]
  with pytest.raises(FileNotFoundError, match="nope.jsonl"):
    list(base.read_jsonl(str(tmp_path / "nope.jsonl")))


def test_read_json_and_require(tmp_path):
  path = tmp_path / "d.json"
  path.write_text('[\n{"a": 1},\n{"a": }\n]')
  with pytest.raises(base.DataFormatError, match=r"d\.json:3: invalid JSON"):
    base.read_json(str(path))
  with pytest.raises(base.DataFormatError, match=r"f:7: missing field 'b'"):
    base.require({"a": 1}, "b", str, "f:7")
  with pytest.raises(base.DataFormatError, match="should be str, got int"):
    base.require({"a": 1}, "a", str, "f:7")
  with pytest.raises(base.DataFormatError, match="expected a JSON object"):
    base.require([1], "a", str, "f:7")
