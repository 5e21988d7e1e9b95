"""R3's warm-start data: imperfect scripted answers, reflections, retries.

A small model has to learn the format of the R3 episode before RL can
improve its reflections: answer, and after a failure reflect and retry. For
generated Countdown and function-calling instances we know a correct answer,
so we script whole episodes, with errors on purpose (the paper starts from
instruction-tuned models that fail often; a warm start that imitated perfect
answers would leave RL nothing to do). Per instance, one episode:

* with probability `first_attempt_accuracy`: the correct answer, and
  nothing more;
* otherwise a failed episode, as the rollout engine builds it: a corrupted
  answer of a random error category (Countdown: invalid equation / wrong
  numbers / missed target; function calling: format error / wrong tool /
  wrong arguments; checked with the task's verifier to have that category),
  the task's reflection instruction, a reflection (a diagnosis of the real
  error, from the verifier's verdict, and a plan: the correct answer with
  probability `reflection_accuracy`, else another corrupted one), the retry
  instruction, and the retry (the plan's answer).

Every model turn of an episode is supervised (`{'turns': ...}`, tokenised
by `swirl_jax.data.sft.tokenize_multiturn`): the wrong first answers are
part of the imitated behaviour, so the warm-started model fails about as
often as its demonstrations. One sequence per episode also keeps the SFT
cost low (no context is encoded twice).

    examples = r3_demonstrations(tasks=..., num_per_task=1500, seed=0)
    texts = corpus_texts(examples)   # to train the tokenizer
"""

from __future__ import annotations

import copy
import json
import random
import re
from typing import Any, Mapping, Optional, Sequence

import gin

from swirl_jax.data.demonstrations import corpus_texts
from swirl_jax.data.demonstrations import interleave
from swirl_jax.tasks import compact
from swirl_jax.tasks import answers as answers_lib
from swirl_jax.tasks import base
from swirl_jax.tasks import countdown as countdown_lib
from swirl_jax.tasks import function_calling as fc_lib
from swirl_jax.tasks import prompts
from swirl_jax.tools import functions as functions_lib


COUNTDOWN_ERRORS = (countdown_lib.INVALID_EQUATION, countdown_lib.WRONG_NUMBERS,
                    countdown_lib.MISSED_TARGET)
FUNCTION_CALLING_ERRORS = (fc_lib.FORMAT_ERROR, fc_lib.WRONG_TOOL,
                           fc_lib.WRONG_ARGUMENTS)
_MAX_TRIES = 50
_NUMBER_RE = re.compile(r"\d+")


def error_categories(task_name: str) -> tuple[str, ...]:
  """The error categories of R3's error analysis for a task."""
  if task_name == compact.COUNTDOWN:
    return COUNTDOWN_ERRORS
  if task_name == compact.FUNCTION_CALLING:
    return FUNCTION_CALLING_ERRORS
  raise ValueError(f"No R3 demonstrations for task {task_name!r}; choose one "
                   f"of {list(compact.R3_TASKS)}.")


# ----------------------------------------------------------------------------
# Answers as the model writes them.


def answer_text(task_name: str, content: str) -> str:
  """A model answer around `content` (an expression, or calls as JSON)."""
  if task_name == compact.COUNTDOWN:
    return f"<{prompts.ANSWER_TAG}> {content} </{prompts.ANSWER_TAG}>"
  return f"<{fc_lib.TOOL_CALL_TAG}>{content}</{fc_lib.TOOL_CALL_TAG}>"


def correct_answer(task: base.Task, example: base.Example) -> str:
  """The answer text of the example's gold solution."""
  if task.name == compact.COUNTDOWN:
    return answer_text(task.name, example.answer)
  return answer_text(task.name, json.dumps(json.loads(example.answer)))


# ----------------------------------------------------------------------------
# Corruptions of the gold answer, one per error category.


def _countdown_candidate(category: str, expression: str, numbers: Sequence[int],
                         rng: random.Random) -> str:
  if category == countdown_lib.INVALID_EQUATION:
    choice = rng.randrange(3)
    if choice == 0:
      return expression + rng.choice([" +", " *", " -"])
    if choice == 1:
      return rng.choice(["(", ""]) + expression.replace(")", "", 1) + "("
    return expression.replace(" ", " + ", 1) if " " in expression else (
        expression + " /")
  if category == countdown_lib.WRONG_NUMBERS:
    spans = list(_NUMBER_RE.finditer(expression))
    span = rng.choice(spans)
    old = int(span.group())
    if rng.random() < 0.5 and len(numbers) > 1:  # repeat another number
      new = rng.choice([n for n in numbers if n != old] or [old + 1])
    else:
      new = max(1, old + rng.choice([-2, -1, 1, 2]))
    return expression[:span.start()] + str(new) + expression[span.end():]
  if category == countdown_lib.MISSED_TARGET:
    ops = [m for m in re.finditer(r"[-+*/]", expression)]
    op = rng.choice(ops)
    new = rng.choice([o for o in "+-*/" if o != op.group()])
    return expression[:op.start()] + new + expression[op.end():]
  raise ValueError(f"Unknown Countdown error category {category!r}; choose "
                   f"one of {list(COUNTDOWN_ERRORS)}.")


def _mutate_value(value: Any, rng: random.Random) -> Any:
  if isinstance(value, bool):
    return not value
  if isinstance(value, int):
    return value + rng.choice([-10, -2, -1, 1, 2, 10])
  if isinstance(value, float):
    return round(value + rng.choice([-1.0, 1.0, 0.5, 10.0]), 2)
  if isinstance(value, str) and value:
    words = value.split()
    if len(words) > 1 and rng.random() < 0.5:
      return " ".join(words[:-1])
    return value[:-1] if len(value) > 2 else value + "x"
  return "unknown"


def _fc_candidate(category: str, example: base.Example,
                  rng: random.Random) -> str:
  calls = json.loads(example.answer)
  if category == fc_lib.FORMAT_ERROR:
    text = json.dumps(calls)
    choice = rng.randrange(3)
    if choice == 0:  # unbalanced JSON
      return answer_text(compact.FUNCTION_CALLING,
                         text[:-1 - rng.randrange(2)])
    if choice == 1:  # a Python-style call, not JSON
      c = calls[0]
      args = ", ".join(f"{k}={v!r}" for k, v in c["arguments"].items())
      return answer_text(compact.FUNCTION_CALLING, f"{c['name']}({args})")
    return answer_text(compact.FUNCTION_CALLING,
                       json.dumps([{"function": c["name"],
                                    "args": c["arguments"]} for c in calls]))
  calls = copy.deepcopy(calls)
  call = rng.choice(calls)
  if category == fc_lib.WRONG_TOOL:
    gold = {c["name"] for c in calls}
    others = [t["name"] for t in example.metadata.get("tools", [])
              if t.get("name") not in gold]
    if not others:
      others = [n for n in fc_lib.API_SPECS if n not in gold]
    call["name"] = rng.choice(others)
    return answer_text(compact.FUNCTION_CALLING, json.dumps(calls))
  if category == fc_lib.WRONG_ARGUMENTS:
    args = call["arguments"]
    choice = rng.randrange(3)
    if choice == 0 and args:  # change a value
      key = rng.choice(sorted(args))
      args[key] = _mutate_value(args[key], rng)
    elif choice == 1 and len(args) > 1:  # drop an argument
      del args[rng.choice(sorted(args))]
    else:  # rename an argument
      key = rng.choice(sorted(args)) if args else "value"
      value = args.pop(key, "x")
      args[key.split("_")[0] + "_value"] = value
    return answer_text(compact.FUNCTION_CALLING, json.dumps(calls))
  raise ValueError(f"Unknown function-calling error category {category!r}; "
                   f"choose one of {list(FUNCTION_CALLING_ERRORS)}.")


def corrupt_answer(task: base.Task, example: base.Example, category: str,
                   rng: random.Random) -> Optional[str]:
  """A wrong answer text that the task's verifier puts in `category`.

  Args:
    task: the Countdown or function-calling task.
    example: the instance.
    category: one of `error_categories(task.name)`.
    rng: randomness.
  Returns:
    The answer text, or None if no corruption of that category was found
    (e.g. no operator to change).
  """
  error_categories(task.name)  # checks the task
  for _ in range(_MAX_TRIES):
    if task.name == compact.COUNTDOWN:
      numbers, _ = task.numbers_and_target(example)
      text = answer_text(task.name, _countdown_candidate(
          category, example.answer, numbers, rng))
    else:
      text = _fc_candidate(category, example, rng)
    if task.score(example, text).category == category:
      return text
  return None


def random_wrong_answer(task: base.Task, example: base.Example,
                        rng: random.Random) -> tuple[str, base.Verdict]:
  """A corrupted answer of a random error category, and its verdict."""
  categories = list(error_categories(task.name))
  rng.shuffle(categories)
  for category in categories:
    text = corrupt_answer(task, example, category, rng)
    if text is not None:
      return text, task.score(example, text)
  raise ValueError(f"No wrong answer could be made for example {example.id} "
                   f"of {task.name}.")


# ----------------------------------------------------------------------------
# Reflections.


def _join_numbers(numbers: Sequence[int]) -> str:
  items = [str(n) for n in numbers]
  return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else (
      items[0])


def _describe_call(call: Mapping[str, Any]) -> str:
  args = call.get("arguments") or {}
  parts = [f"{k} {json.dumps(v)}" for k, v in args.items()]
  with_args = " with " + " and ".join(parts) if parts else ""
  return f"{call.get('name')}{with_args}"


def diagnosis(task: base.Task, example: base.Example, answer_text_: str,
              verdict: base.Verdict) -> str:
  """One sentence on what went wrong with a failed answer."""
  category = verdict.category
  if task.name == compact.COUNTDOWN:
    numbers, target = task.numbers_and_target(example)
    if category == countdown_lib.INVALID_EQUATION:
      return "My equation was not a valid expression."
    if category == countdown_lib.WRONG_NUMBERS:
      return (f"My equation did not use {_join_numbers(numbers)} exactly "
              "once each.")
    if category == countdown_lib.MISSED_TARGET:
      expr = task.parse_answer(answer_text_)
      value, _ = countdown_lib.evaluate_equation(expr)
      return (f"My equation equals {answers_lib.format_number(value)}, "
              f"not {target}.")
    return "I did not give an equation inside <answer> tags."
  if category == fc_lib.WRONG_TOOL:
    calls = functions_lib.parse_calls(task.parse_answer(answer_text_))
    wrong = sorted({c["name"] for c in calls})
    gold = sorted({c["name"] for c in task.gold_calls(example)})
    return (f"I called {' and '.join(wrong)} but the request needs "
            f"{' and '.join(gold)}.")
  if category == fc_lib.WRONG_ARGUMENTS:
    name = verdict.detail.split(":")[0]
    return f"I called {name} with the wrong arguments."
  return ("My answer was not a JSON list of calls with name and arguments "
          "inside <tool_call> tags.")


def plan(task: base.Task, example: base.Example, answer: str) -> str:
  """One sentence stating the answer to try next."""
  if task.name == compact.COUNTDOWN:
    numbers, target = task.numbers_and_target(example)
    expr = task.parse_answer(answer) or ""
    return (f"I will use {_join_numbers(numbers)} to make {target}: "
            f"{expr.strip()}.")
  calls = functions_lib.parse_calls(task.parse_answer(answer) or "")
  if functions_lib.is_parse_error(calls):
    return "I will write the call as JSON inside <tool_call> tags."
  return "I should call " + ", then ".join(_describe_call(c)
                                           for c in calls) + "."


# ----------------------------------------------------------------------------
# Episodes.


def demonstration(task: base.Task, example: base.Example, rng: random.Random,
                  first_attempt_accuracy: float = 0.5,
                  reflection_accuracy: float = 0.5) -> dict[str, Any]:
  """One scripted episode of an instance (see the module docstring).

  Returns:
    {'turns': [(role, text), ...], 'task', 'id', 'kind'} with kind
    'correct' ([user, model]) or 'reflection' (six turns: prompt, failed
    answer, reflection instruction, reflection, retry instruction, retry).
  """
  for name, p in (("first_attempt_accuracy", first_attempt_accuracy),
                  ("reflection_accuracy", reflection_accuracy)):
    if not 0.0 <= p <= 1.0:
      raise ValueError(f"{name} must be in [0, 1], got {p!r}.")
  prompt = task.prompt(example)
  gold = correct_answer(task, example)
  meta = {"task": task.name, "id": example.id}
  if rng.random() < first_attempt_accuracy:
    return dict(meta, kind="correct",
                turns=[("user", prompt), ("model", gold)])
  failed, verdict = random_wrong_answer(task, example, rng)
  proposal = gold if rng.random() < reflection_accuracy else (
      random_wrong_answer(task, example, rng)[0])
  reflection = (f"{diagnosis(task, example, failed, verdict)} "
                f"{plan(task, example, proposal)}")
  return dict(meta, kind="reflection", turns=[
      ("user", prompt), ("model", failed),
      ("user", task.reflection_instruction), ("model", reflection),
      ("user", prompts.RETRY_INSTRUCTION), ("model", proposal)])


@gin.configurable
def r3_demonstrations(tasks: Sequence[str] = compact.R3_TASKS,
                      task_kwargs: Optional[Mapping[str, Mapping[str, Any]]]
                      = None,
                      num_per_task: int = 1000, seed: int = 0,
                      split: str = "train",
                      first_attempt_accuracy: float = 0.5,
                      reflection_accuracy: float = 0.5
                      ) -> list[dict[str, Any]]:
  """SFT examples for generated instances of each task, tasks interleaved.

  Args:
    tasks: task names (R3: 'countdown', 'function_calling').
    task_kwargs: per task, constructor arguments (e.g. {'countdown':
      {'min_numbers': 3, 'max_numbers': 3}}).
    num_per_task: instances (episodes) per task.
    seed: instance and corruption randomness.
    split: the instances' split.
    first_attempt_accuracy: share of episodes whose first answer is
      correct.
    reflection_accuracy: share of reflections whose plan is correct.
  Returns:
    list of {'turns', 'task', 'id', 'kind'} dicts
    (`swirl_jax.data.sft.tokenize_example` format).
  """
  task_kwargs = dict(task_kwargs or {})
  per_task = []
  for i, name in enumerate(tasks):
    task = compact.make_task(name, **dict(task_kwargs.get(name, {})))
    rng = random.Random(base.seed_for(seed, "r3-demonstrations", name))
    rows = []
    for ex in compact.generate_examples(task, num_per_task, seed=seed + i,
                                         split=split):
      rows.append(demonstration(task, ex, rng, first_attempt_accuracy,
                                reflection_accuracy))
    per_task.append(rows)
  return interleave(per_task)


@gin.configurable
def tokenizer_corpus(tasks: Sequence[str] = compact.R3_TASKS,
                     task_kwargs: Optional[Mapping[str, Mapping[str, Any]]]
                     = None,
                     num_per_task: int = 400, seed: int = 12345
                     ) -> list[str]:
  """Texts to train the experiment's tokenizer on (R3 demonstrations)."""
  return corpus_texts(r3_demonstrations(tasks, task_kwargs, num_per_task,
                                        seed))
