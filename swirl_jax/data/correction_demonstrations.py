"""SCoRe's warm-start data: direct answers, some wrong, some second turns.

* `direct_answer(task, answer)`: the model turn a perfect direct answer is
  written as (math: SCoRe's 'Final Answer: The final answer is $X$. I hope
  it is correct.'; code: one ```python block).
* `wrong_answer(task, example, rng)`: a plausible wrong answer (math: the
  gold value moved by a small offset; code: one integer constant of the
  reference program changed), for imperfect demonstrations.
* `score_demonstrations`: {'prompt', 'target'} SFT examples (gin
  configurable): generated training problems of each task answered directly,
  a `wrong_fraction` of them wrongly, so the warm-started model is
  imperfect, as the base models SCoRe starts from are.
* `star_examples` / `pair_sft_examples`: the STaR and Pair-SFT baselines'
  SFT data from the base model's two-attempt episodes.
* `tokenizer_corpus`: what the tiny tokenizer is trained on (prompts, answers,
  correction instructions).
"""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING, Any, Optional, Sequence

import gin
import numpy as np

from swirl_jax.data.demonstrations import interleave
from swirl_jax.tasks import base as task_base
from swirl_jax.tasks import code as code_task
from swirl_jax.tasks import get_task
from swirl_jax.tasks import math as math_task

if TYPE_CHECKING:
  from swirl_jax.rollout import trajectory as traj

MATH = "math"
CODE = "code"


def task_kind(task: task_base.Task) -> str:
  """'math' for MATH-style tasks, 'code' for code tasks; else ValueError."""
  if isinstance(task, math_task.MathTask):
    return MATH
  if isinstance(task, code_task.CodeTask):
    return CODE
  raise ValueError(f"SCoRe supports MATH-style and code tasks; task "
                   f"{task.name!r} ({type(task).__name__}) is neither.")


def direct_answer(task: task_base.Task, answer: str,
                  working: Optional[str] = None) -> str:
  """The model turn that states `answer` directly in the task's format.

  Math: SCoRe's final-answer sentence, after the one-line computation
  `working.format(answer)` when a working template is given (e.g.
  '$54 + 5 = {}$' of `math_small` problems).
  """
  if task_kind(task) == MATH:
    final = (f"Final Answer: The final answer is ${answer}$. I hope it is "
             "correct.")
    return f"{working.format(answer)}. {final}" if working else final
  code = answer if answer.endswith("\n") else answer + "\n"
  return f"```python\n{code}```"


_INT_RE = re.compile(r"(?<![\w.])\d+(?![\w.])")


def wrong_answer(task: task_base.Task, example: task_base.Example,
                 rng: random.Random) -> str:
  """A plausible wrong answer to `example` (never equal to the gold one).

  Math: an integer gold answer moved by +-1..3 (else a random integer).
  Code: one integer literal of the reference program moved by +-1..3.
  """
  offsets = (-3, -2, -1, 1, 2, 3)
  if task_kind(task) == MATH:
    value = math_task.answer_value(example.answer)
    if value is not None and value.denominator == 1:
      return str(int(value) + rng.choice(offsets))
    return str(rng.randint(-20, 20))
  program = example.answer
  spots = list(_INT_RE.finditer(program))
  if not spots:
    return program.rstrip("\n") + " + 1\n"
  m = rng.choice(spots)
  new = max(0, int(m.group(0)) + rng.choice(offsets))
  if new == int(m.group(0)):
    new += 4
  return program[:m.start()] + str(new) + program[m.end():]


@gin.configurable
def score_demonstrations(tasks: Sequence[str] = ("math_small", "code_small"),
                         num_per_task: int = 600, seed: int = 0,
                         wrong_fraction: float = 0.2,
                         second_turn_fraction: float = 0.0,
                         repeat_fraction: float = 0.0,
                         split: str = "train") -> list[dict[str, Any]]:
  """Direct-answer SFT examples for the warm start, tasks interleaved.

  A math demonstration is the problem's one-line computation (when its
  metadata has a 'working' template) and SCoRe's final-answer sentence; a
  code demonstration is the program in one ```python block. Each answer is
  wrong with probability `wrong_fraction` (`wrong_answer`).

  A `second_turn_fraction` of the examples are two-turn: the chat [x, y1,
  the task's correction instruction] as the prompt and a second answer y2
  as the target, y1 and y2 each drawn as above, independently. They teach
  the model the format of a second attempt, not to correct: whether y2 is
  right does not depend on y1 (an instruction-following base model that
  cannot self-correct, as in the paper). A `repeat_fraction` of the
  two-turn examples instead repeat y1 as y2 unchanged: the base model then
  often leaves its answer as it is, the behaviour SCoRe's Stage I works
  against (the paper's minimal-edit collapse). The prompt is a list of
  turns, so it is encoded as one chat, exactly as the rollout engine
  encodes it.

  Args:
    tasks: registered MATH-style or code task names.
    num_per_task: generated problems per task.
    seed: problem generation and answer noise.
    wrong_fraction: probability that an answer is wrong (in [0, 1)).
    second_turn_fraction: fraction of two-turn examples (in [0, 1]).
    repeat_fraction: fraction of the two-turn examples whose second answer
      repeats the first (in [0, 1]).
    split: the generator split the problems come from.
  Returns:
    list of {'prompt', 'target', 'task', 'id', 'correct'} dicts ('prompt'
    a string, or a list of (role, text) turns for two-turn examples;
    'correct' is the target's correctness).
  """
  if not 0.0 <= wrong_fraction < 1.0:
    raise ValueError(f"wrong_fraction must be in [0, 1), got "
                     f"{wrong_fraction}.")
  if not 0.0 <= second_turn_fraction <= 1.0:
    raise ValueError(f"second_turn_fraction must be in [0, 1], got "
                     f"{second_turn_fraction}.")
  if not 0.0 <= repeat_fraction <= 1.0:
    raise ValueError(f"repeat_fraction must be in [0, 1], got "
                     f"{repeat_fraction}.")
  per_task = []
  for i, name in enumerate(tasks):
    task = get_task(name)
    rng = random.Random(task_base.seed_for(seed, "score-demos", name))

    def draw(ex):
      wrong = rng.random() < wrong_fraction
      answer = wrong_answer(task, ex, rng) if wrong else ex.answer
      return direct_answer(task, answer, ex.metadata.get("working")), wrong

    rows = []
    for ex in task.generate(num_per_task, seed=seed + i, split=split):
      two_turn = rng.random() < second_turn_fraction
      prompt: Any = task.prompt(ex)
      target, wrong = draw(ex)
      if two_turn:
        first = target
        # (no draw when 0: the default keeps its demonstrations)
        if repeat_fraction and rng.random() < repeat_fraction:
          second = first
        else:
          second, wrong = draw(ex)
        prompt = [("user", prompt), ("model", first),
                  ("user", task.correction_instruction)]
        target = second
      rows.append({"prompt": prompt, "target": target, "task": name,
                   "id": ex.id, "correct": not wrong})
    per_task.append(rows)
  return interleave(per_task)


@gin.configurable
def tokenizer_corpus(tasks: Sequence[str] = ("math_small", "code_small"),
                 num_per_task: int = 300, seed: int = 12345
                 ) -> list[str]:
  """Texts the experiment's tiny tokenizer is trained on.

  Prompts and direct answers of generated problems of every task, plus the
  tasks' correction instructions, so that the long instruction costs few
  tokens.
  """
  texts = []
  for name in tasks:
    task = get_task(name)
    texts += [task.correction_instruction or ""] * 20
    for ex in task.generate(num_per_task, seed=seed, split="train"):
      texts += [task.prompt(ex), direct_answer(task, ex.answer,
                                               ex.metadata.get("working"))]
  return [t for t in texts if t]


def star_examples(episodes: Sequence[traj.TwoAttemptEpisode]
                  ) -> list[dict[str, Any]]:
  """STaR data: successful corrections (y1 wrong, y2 right).

  Returns:
    {'prompt': [x, y1, p] turns, 'target': y2 text, 'task', 'example_id'}.
  """
  return [{"prompt": [list(t) for t in e.turns[:3]], "target": e.y2.text,
           "task": e.task, "example_id": e.example_id}
          for e in episodes if e.reward1 == 0.0 and e.reward2 == 1.0]


def pair_sft_examples(episodes: Sequence[traj.TwoAttemptEpisode],
                      seed: int = 0) -> list[dict[str, Any]]:
  """Pair-SFT data: each wrong response paired with a right one.

  Over all attempts (first and second) of a problem's episodes, every
  distinct wrong response becomes [x, wrong, p] -> a right response of the
  same problem (drawn at random when there are several).
  """
  rng = np.random.default_rng(seed)
  by_problem: dict[tuple[str, str], list[traj.TwoAttemptEpisode]] = {}
  for e in episodes:
    by_problem.setdefault((e.task, e.example_id), []).append(e)
  out = []
  for (task, example_id), eps in by_problem.items():
    attempts = [(t.text, r) for e in eps
                for t, r in ((e.y1, e.reward1), (e.y2, e.reward2))]
    right = sorted({text for text, r in attempts if r == 1.0})
    wrong = sorted({text for text, r in attempts if r == 0.0 and text})
    if not right:
      continue
    for text in wrong:
      e = eps[0]
      out.append({"prompt": [["user", e.prompt], ["model", text],
                             ["user", e.instruction]],
                  "target": right[int(rng.integers(len(right)))],
                  "task": task, "example_id": example_id})
  return out
