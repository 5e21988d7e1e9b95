"""R3 tasks and scripted demonstrations: the fast Countdown generator, the
compact prompts, corruptions of each error category, the SFT examples."""

import json
import random
import re

import pytest

from swirl_jax.data import reflection_demonstrations as demos
from swirl_jax.tasks import compact
from swirl_jax.tasks import countdown as countdown_lib
from swirl_jax.tasks import function_calling as fc_lib
from swirl_jax.tasks import prompts

CD_KW = dict(min_numbers=3, max_numbers=3, min_value=1, max_value=10,
             min_target=1, max_target=50)


@pytest.fixture(scope="module")
def countdown():
  return compact.make_task("countdown", **CD_KW)


@pytest.fixture(scope="module")
def fc():
  return compact.make_task("function_calling", num_distractors=2)


@pytest.mark.parametrize("numbers, ops, text", [
    ([6, 7, 4], ["-", "*"], "(6 - 7)*4"),
    ([3, 6, 3], ["*", "+"], "3*6 + 3"),
    ([8, 2, 4], ["/", "-"], "8/2 - 4"),
    ([1, 2, 3, 4], ["+", "*", "-"], "(1 + 2)*3 - 4"),
])
def test_format_chain(numbers, ops, text):
  assert compact.format_chain(numbers, ops) == text
  # left-to-right evaluation equals the printed expression's value
  value, used = countdown_lib.evaluate_equation(text)
  acc = numbers[0]
  for op, n in zip(ops, numbers[1:]):
    acc = {"+": acc + n, "-": acc - n, "*": acc * n, "/": acc / n}[op]
  assert value == acc and sorted(used) == sorted(numbers)


def test_countdown_shuffle_false_shows_the_solution_order():
  task = compact.make_task("countdown", shuffle=False, **CD_KW)
  for ex in compact.generate_countdown(task, 50, seed=0):
    numbers, _ = task.numbers_and_target(ex)
    assert [int(n) for n in re.findall(r"\d+", ex.answer)] == numbers


def test_countdown_generator_valid_deterministic_and_split(countdown):
  train = compact.generate_countdown(countdown, 200, seed=3, split="train")
  again = compact.generate_countdown(countdown, 200, seed=3, split="train")
  test = compact.generate_countdown(countdown, 100, seed=3, split="test")
  assert [e.id for e in train] == [e.id for e in again]
  assert len({e.id for e in train}) == 200
  assert not {e.id for e in train} & {e.id for e in test}
  for ex in train + test:
    numbers, target = countdown.numbers_and_target(ex)
    assert len(numbers) == 3 and all(1 <= n <= 10 for n in numbers)
    assert 1 <= target <= 50
    assert countdown.verify(ex, ex.answer).correct, ex
  assert {e.split for e in test} == {"test"}
  with pytest.raises(ValueError, match="instance space is too small"):
    compact.generate_countdown(
        compact.make_task("countdown", min_numbers=2, max_numbers=2,
                           min_value=1, max_value=2, min_target=1,
                           max_target=4), 50, split="train")


def test_compact_prompts_keep_the_task(countdown):
  cd = compact.make_task("countdown", prompt_style="compact", **CD_KW)
  ex = compact.generate_examples(cd, 1, seed=0)[0]
  numbers, target = cd.numbers_and_target(ex)
  text = cd.prompt(ex)
  assert text.startswith(f"Numbers: {' '.join(map(str, numbers))}. Target: "
                         f"{target}.")
  assert len(text) < len(countdown.prompt(ex)) / 2
  assert cd.reflection_instruction == prompts.COUNTDOWN_REFLECTION_INSTRUCTION
  assert cd.verify(ex, ex.answer).correct

  task = compact.make_task("function_calling", prompt_style="compact",
                            num_distractors=2)
  ex = task.generate(1, seed=0)[0]
  text = task.prompt(ex)
  for spec in ex.metadata["tools"]:
    assert spec["name"] + "(" in text
  assert ex.question in text and "<tool_call>" in text
  assert task.reflection_instruction == prompts.REFLECTION_INSTRUCTION
  gold = demos.correct_answer(task, ex)
  assert task.score(ex, gold).correct
  with pytest.raises(ValueError, match="prompt_style"):
    compact.make_task("countdown", prompt_style="tiny")
  with pytest.raises(ValueError, match="no reflection_instruction"):
    compact.make_task("gsm8k")


def test_function_signature():
  from swirl_jax.tools import functions as functions_lib
  spec = functions_lib.as_specs([fc_lib.API_SPECS["get_weather"]])[
      "get_weather"]
  assert compact.function_signature(spec) == (
      'get_weather(city: str, unit: str = "celsius")')


@pytest.mark.parametrize("name, categories", [
    ("countdown", demos.COUNTDOWN_ERRORS),
    ("function_calling", demos.FUNCTION_CALLING_ERRORS)])
def test_corruptions_have_the_requested_category(name, categories, countdown,
                                                 fc):
  task = countdown if name == "countdown" else fc
  rng = random.Random(0)
  examples = compact.generate_examples(task, 30, seed=1)
  for category in categories:
    made = 0
    for ex in examples:
      text = demos.corrupt_answer(task, ex, category, rng)
      if text is not None:
        assert task.score(ex, text).category == category
        made += 1
    assert made >= 25, (category, made)
  with pytest.raises(ValueError, match="Unknown"):
    demos.corrupt_answer(task, examples[0], "typo", rng)


def test_demonstration_episodes(countdown):
  rng = random.Random(0)
  ex = compact.generate_examples(countdown, 1, seed=0)[0]
  gold = f"<answer> {ex.answer} </answer>"
  correct = demos.demonstration(countdown, ex, rng, first_attempt_accuracy=1.0)
  assert correct["kind"] == "correct"
  assert correct["turns"] == [("user", countdown.prompt(ex)), ("model", gold)]
  episode = demos.demonstration(countdown, ex, rng, first_attempt_accuracy=0.0,
                                reflection_accuracy=1.0)
  assert episode["kind"] == "reflection"
  roles = [r for r, _ in episode["turns"]]
  assert roles == ["user", "model"] * 3
  (_, prompt), (_, failed), (_, instruction), (_, reflection), (
      _, retry_instruction), (_, retry) = episode["turns"]
  # The episode of the rollout engine: R3's reflection instruction after
  # the failed answer, then the retry instruction.
  assert prompt == countdown.prompt(ex)
  assert not countdown.score(ex, failed).correct
  assert instruction == prompts.COUNTDOWN_REFLECTION_INSTRUCTION
  assert retry_instruction == prompts.RETRY_INSTRUCTION
  assert ex.answer in reflection and retry == gold  # accuracy 1.0 plan
  with pytest.raises(ValueError, match="first_attempt_accuracy"):
    demos.demonstration(countdown, ex, rng, first_attempt_accuracy=1.5)


def test_demonstration_accuracies_and_diagnoses(fc):
  rows = demos.r3_demonstrations(
      tasks=("function_calling",), task_kwargs={
          "function_calling": {"num_distractors": 2}},
      num_per_task=300, seed=0, first_attempt_accuracy=0.3,
      reflection_accuracy=0.7)
  examples = {e.id: e for e in fc.generate(300, seed=0)}
  kinds = [r["kind"] for r in rows]
  assert 0.2 < kinds.count("correct") / 300 < 0.4
  episodes = [r for r in rows if r["kind"] == "reflection"]
  ok_retry = sum(fc.score(examples[r["id"]], r["turns"][5][1]).correct
                 for r in episodes)
  assert 0.6 < ok_retry / len(episodes) < 0.8
  for r in rows:
    if r["kind"] == "correct":
      assert fc.score(examples[r["id"]], r["turns"][1][1]).correct
  # The diagnosis names the real error of the failed attempt.
  for r in episodes[:60]:
    failed, reflection = r["turns"][1][1], r["turns"][3][1]
    verdict = fc.score(examples[r["id"]], failed)
    assert not verdict.correct
    if verdict.category == fc_lib.WRONG_TOOL:
      assert "but the request needs" in reflection
    elif verdict.category == fc_lib.FORMAT_ERROR:
      assert "JSON" in reflection
    else:
      assert "wrong arguments" in reflection
  texts = demos.corpus_texts(rows[:3])
  assert rows[0]["turns"][-1][1] in texts
  json.dumps(rows[:3])  # JSON-able
