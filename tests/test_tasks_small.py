"""math_small and code_small: problems a tiny CPU model learns, their
splits, and grading by the math normaliser and the code sandbox."""

import random

import pytest

# direct and wrong answers in the format
from swirl_jax.data import correction_demonstrations as data
from swirl_jax.tasks import small as small_tasks
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
    small_tasks.SmallMathTask(max_digit=12)
  with pytest.raises(ValueError, match="'mul'"):
    small_tasks.SmallMathTask(families=("mul",))


def test_code_small_prompt_and_sandboxed_grading():
  task = get_task("code_small")
  ex = task.generate(1, seed=3)[0]
  assert task.name == "code_small" and ex.id.startswith("code-small-")
  prompt = task.prompt(ex)
  assert prompt == small_tasks.CODE_SMALL_PROMPT.format(question=ex.question)
  assert "assert" not in prompt and ex.metadata["tests"]
  assert task.correction_instruction == prompts.CODE_CORRECTION_INSTRUCTION
  right = data.direct_answer(task, ex.answer)
  wrong = data.direct_answer(task, data.wrong_answer(task, ex,
                                                     random.Random(1)))
  assert right.startswith("```python\n") and right.endswith("```")
  verdicts = task.verify_batch([ex, ex], [task.parse_answer(right),
                                          task.parse_answer(wrong)])
  assert [v.correct for v in verdicts] == [True, False]
