"""Scripted demonstrations for warm-starting models by SFT: SWiRL's tool use.

The warm-start data of the three recipes lives in this layer, one module
each, over the two helpers here (`interleave`, `corpus_texts`):
SWiRL's tool-use episodes (this module), SCoRe's direct answers
(`correction_demonstrations`) and R3's failed answers with reflections and
retries (`reflection_demonstrations`).

For procedurally generated problems we know a correct plan, so we can write
the episode an ideal policy would produce, in exactly the chat format the
rollout engine uses: the task prompt as the first user turn, then per step a
model turn (one short thought and ONE tool call) and a user turn
`QUERY -> RESULT` with the real tool's output, and a final model turn with
`<answer> ... </answer>`.

* gsm8k: the generator's solution lists its calculations
  (`<<EXPR=VALUE>>`); each becomes one `<math_exp>` call.
* hotpotqa: the generator's question records its entity path; each entity is
  searched for in turn over the task's corpus with the real search tool.

`tool_use_demonstrations` returns `{'turns': [...]}` dicts that
`swirl_jax.data.sft.tokenize_example` understands.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Sequence

import gin

from swirl_jax.tasks import get_task
from swirl_jax.tasks.base import Example, Task
from swirl_jax.tasks.prompts import tool_result_message

_CALC = re.compile(r"<<([^=<>]+)=([^<>]+)>>")

Turns = list[tuple[str, str]]


def calculator_demonstration(task: Task, example: Example,
                             calculator=None) -> Turns:
  """The ideal calculator episode for a generated gsm8k example."""
  from swirl_jax.tools import calculator as calc_lib  # pylint: disable=g-import-not-at-top
  evaluate = calculator or calc_lib.evaluate
  solution = example.metadata.get("solution", "")
  steps = _CALC.findall(solution)
  if not steps:
    raise ValueError(f"Example {example.id} has no <<EXPR=VALUE>> steps in "
                     "metadata['solution']; only generated gsm8k examples "
                     "can be demonstrated.")
  turns: Turns = [("user", task.prompt(example))]
  for i, (expr, _) in enumerate(steps):
    expr = expr.strip()
    thought = "First I compute" if i == 0 else "Next I compute"
    turns.append(("model", f"{thought} {expr}. <math_exp> {expr} </math_exp>"))
    turns.append(("user", tool_result_message(expr, evaluate(expr))))
  answer = example.answer
  turns.append(("model", f"So the answer is {answer}. <answer> {answer} "
                         "</answer>"))
  return turns


def search_demonstration(task: Task, example: Example, search_tool) -> Turns:
  """The ideal search episode for a generated hotpotqa example."""
  path = example.metadata.get("path")
  if not path:
    raise ValueError(f"Example {example.id} has no metadata['path']; only "
                     "generated hotpotqa examples can be demonstrated.")
  turns: Turns = [("user", task.prompt(example))]
  for i, entity in enumerate(path):
    thought = "I should look up" if i == 0 else "Now I look up"
    turns.append(("model", f"{thought} {entity}. <search_query> {entity} "
                           "</search_query>"))
    turns.append(("user", tool_result_message(entity,
                                              search_tool.execute(entity))))
  answer = example.answer
  turns.append(("model", f"So the answer is {answer}. <answer> {answer} "
                         "</answer>"))
  return turns


def demonstrate(task_name: str, examples: Sequence[Example],
                search_tool=None, **task_kwargs) -> list[Turns]:
  """Demonstrations for examples of one task ('gsm8k' or 'hotpotqa')."""
  task = get_task(task_name, **task_kwargs)
  if task_name == "gsm8k":
    return [calculator_demonstration(task, ex) for ex in examples]
  if task_name == "hotpotqa":
    if search_tool is None:
      from swirl_jax.tools import SearchTool  # pylint: disable=g-import-not-at-top
      search_tool = SearchTool(task.corpus(list(examples)))
    return [search_demonstration(task, ex, search_tool) for ex in examples]
  raise ValueError(f"No scripted demonstrations for task {task_name!r}; "
                   "available: ['gsm8k', 'hotpotqa'].")


@gin.configurable
def tool_use_demonstrations(tasks: Sequence[str] = ("gsm8k", "hotpotqa"),
                            num_per_task: int = 1000, seed: int = 0,
                            split: str = "train",
                            max_steps: Optional[int] = None,
                            prompt_style: str = "full"
                            ) -> list[dict[str, Any]]:
  """Generated problems of each task, each with its scripted episode.

  Returns a list of {'turns', 'task', 'id'} dicts, tasks interleaved.
  `max_steps` drops demonstrations with more tool calls than that;
  `prompt_style` is passed to the tasks ('full' or 'compact').
  """
  per_task = []
  for name in tasks:
    task = get_task(name, prompt_style=prompt_style)
    examples = task.generate(num_per_task, seed=seed, split=split)
    rows = []
    for ex, turns in zip(examples, demonstrate(name, examples,
                                               prompt_style=prompt_style)):
      if max_steps is not None and (len(turns) - 2) // 2 > max_steps:
        continue
      rows.append({"turns": turns, "task": name, "id": ex.id})
    per_task.append(rows)
  return interleave(per_task)


def interleave(per_task: Sequence[Sequence[Any]]) -> list[Any]:
  """The tasks' lists merged round-robin: [a0, b0, a1, b1, ...] (a list
  that runs out is skipped), so that every prefix mixes the tasks."""
  out = []
  for i in range(max((len(r) for r in per_task), default=0)):
    out.extend(rows[i] for rows in per_task if i < len(rows))
  return out


def corpus_texts(demonstrations: Sequence[Mapping[str, Any]]) -> list[str]:
  """Every turn's text of {'turns': ...} demonstrations, for training a
  tokenizer on what the model will see."""
  return [text for d in demonstrations for _, text in d["turns"]]
