"""SCoRe tasks and data: math_small / code_small, direct-answer
demonstrations (some wrong), the prompt dataset."""

import random

import pytest

from swirl_jax.score import data
from swirl_jax.score import tasks as score_tasks
from swirl_jax.tasks import get_task
from swirl_jax.tasks import prompts


def test_math_small_problems_splits_and_grading():
  task = get_task("math_small")
  train = task.generate(300, seed=0, split="train")
  test = task.generate(100, seed=0, split="test")
  assert not {e.question for e in train} & {e.question for e in test}
  assert [e.id for e in task.generate(5, seed=0)] == [e.id for e in train[:5]]
  for ex in train[:50]:
    a, d = [int(x) for x in __import__("re").findall(r"\d+", ex.question)]
    want = {"add": a + d, "sub": a - d}.get(ex.metadata["type"])
    if ex.metadata["type"] == "linear":  # x + d = a
      d, a = a, d
      want = a - d
    assert ex.answer == str(want), ex.question
    assert ex.metadata["working"].format(ex.answer) in ex.metadata["solution"]
  ex = train[0]
  assert task.prompt(ex) == prompts.math_prompt(ex.question)
  assert task.correction_instruction == prompts.MATH_CORRECTION_INSTRUCTION
  # the demonstration format parses back to its answer and grades
  text = data.direct_answer(task, ex.answer, ex.metadata["working"])
  assert text.endswith(f"Final Answer: The final answer is ${ex.answer}$. I "
                       "hope it is correct.")
  assert task.score(ex, text).correct
  wrong = data.wrong_answer(task, ex, random.Random(0))
  assert not task.verify(ex, wrong).correct
  with pytest.raises(ValueError, match="max_digit"):
    score_tasks.SmallMathTask(max_digit=12)
  with pytest.raises(ValueError, match="'mul'"):
    score_tasks.SmallMathTask(families=("mul",))


def test_code_small_prompt_and_sandboxed_grading():
  task = get_task("code_small")
  ex = task.generate(1, seed=3)[0]
  assert task.name == "code_small" and ex.id.startswith("code-small-")
  prompt = task.prompt(ex)
  assert prompt == score_tasks.CODE_SMALL_PROMPT.format(question=ex.question)
  assert "assert" not in prompt and ex.metadata["tests"]
  assert task.correction_instruction == prompts.CODE_CORRECTION_INSTRUCTION
  right = data.direct_answer(task, ex.answer)
  wrong = data.direct_answer(task, data.wrong_answer(task, ex,
                                                     random.Random(1)))
  assert right.startswith("```python\n") and right.endswith("```")
  verdicts = task.verify_batch([ex, ex], [task.parse_answer(right),
                                          task.parse_answer(wrong)])
  assert [v.correct for v in verdicts] == [True, False]


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


def test_examples_dataset_batches_and_resumes():
  records = data.task_records(("math_small", "code_small"), 5, seed=0)
  assert len(records) == 10 and records[1]["task"] == "code_small"
  ds = data.examples_dataset(records, global_batch_size=4, seed=1)
  it = iter(ds)
  first = next(it)
  assert len(first) == 4 and all("example" in r for r in first)
  state = it.get_state()
  later = [next(it) for _ in range(3)]
  again = iter(ds)
  again.set_state(state)
  assert [next(again) for _ in range(3)] == later
  with pytest.raises(ValueError, match="divisible"):
    data.examples_dataset(records, global_batch_size=3, seed=0,
                          process_count=2)
