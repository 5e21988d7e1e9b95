"""Any reasoning-gym procedural dataset as a `Task` (names 'rg/<dataset>').

`ReasoningGymTask('gsm_symbolic')`, or `get_task('rg/gsm_symbolic')`, makes
instances with reasoning-gym's generator and grades answers with the
dataset's own `score_answer` (correct iff the score is 1.0; the score itself
is kept in `Verdict.score`). The model answers inside `<answer> </answer>`.

Splits: each generated entry is assigned to train / validation / test by a
hash of its content (the question text, or a dataset-specific key such as
Countdown's numbers and target), so splits never share an instance whatever
the seeds. reasoning-gym is imported lazily (it is the optional 'tasks'
extra).
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable, Iterator, Mapping, Optional

from swirl_jax.tasks import answers as answers_lib
from swirl_jax.tasks import base
from swirl_jax.tasks import prompts

ANSWER_INSTRUCTION = (
    "Think step by step, then give only the final answer inside "
    "<answer> </answer> tags.")


def import_reasoning_gym():
  """The reasoning_gym module, or an ImportError saying how to install it."""
  try:
    import reasoning_gym  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "This task needs the reasoning-gym package, which is not installed: "
        "pip install 'swirl_jax[tasks]' (or reasoning-gym==0.1.25).") from e
  return reasoning_gym


def dataset_names() -> list[str]:
  """The names reasoning-gym can generate."""
  import_reasoning_gym()
  from reasoning_gym import factory  # pylint: disable=g-import-not-at-top
  return sorted(factory.DATASETS)


@functools.lru_cache(maxsize=64)
def _scorer_dataset(name: str, config_json: str):
  """A dataset object used only for `score_answer` (cheap, cached)."""
  rg = import_reasoning_gym()
  return rg.create_dataset(name, seed=0, size=1, **json.loads(config_json))


def _default_key(entry: Mapping[str, Any]) -> str:
  return str(entry["question"])


class ReasoningGymTask(base.Task):
  """A reasoning-gym dataset as a task.

  Args:
    dataset_name: a reasoning-gym dataset ('countdown', 'gsm_symbolic',
      'basic_arithmetic', ...).
    split_key: maps an entry to the text that decides its split and id
      (default: the question).
    **config: fields of the dataset's config class (not 'seed' / 'size').
  """

  max_steps = 1

  def __init__(self, dataset_name: str,
               split_key: Optional[Callable[[Mapping[str, Any]], str]] = None,
               **config):
    for reserved in ("seed", "size"):
      if reserved in config:
        raise ValueError(
            f"Do not pass {reserved!r} to ReasoningGymTask: generate(n, "
            "seed, split) chooses them.")
    rg = import_reasoning_gym()
    from reasoning_gym import factory  # pylint: disable=g-import-not-at-top
    if dataset_name not in factory.DATASETS:
      import difflib  # pylint: disable=g-import-not-at-top
      close = difflib.get_close_matches(dataset_name, list(factory.DATASETS),
                                        n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise ValueError(
          f"Unknown reasoning-gym dataset {dataset_name!r}.{hint} Known: "
          f"{sorted(factory.DATASETS)}")
    self.dataset_name = dataset_name
    self.name = f"rg/{dataset_name}"
    self.config = dict(config)
    self._split_key = split_key or _default_key
    try:
      self._config_json = json.dumps(self.config, sort_keys=True)
    except TypeError as e:
      raise ValueError(
          f"reasoning-gym config for {dataset_name!r} must be JSON-like: "
          f"{config!r}") from e
    # Fail early on a bad config (validate() runs in the constructor).
    try:
      rg.create_dataset(dataset_name, seed=0, size=1, **self.config)
    except (TypeError, AssertionError, ValueError) as e:
      raise ValueError(
          f"Bad config for reasoning-gym dataset {dataset_name!r}: "
          f"{self.config!r}: {e}") from e

  # -- data ------------------------------------------------------------------

  def _entry_example(self, entry: Mapping[str, Any],
                     split: str) -> base.Example:
    key = self._split_key(entry)
    answer = entry.get("answer")
    return base.Example(
        id=base.content_id(f"rg-{self.dataset_name}", key),
        question=str(entry["question"]),
        answer="" if answer is None else str(answer),
        metadata={"split": split, "rg_dataset": self.dataset_name,
                  "rg_config": dict(self.config), "rg_entry": dict(entry)})

  def generate(self, n: int, seed: int = 0,
               split: str = "train") -> list[base.Example]:
    base.check_split(split)
    rg = import_reasoning_gym()
    max_candidates = 20 * n + 100
    ds = rg.create_dataset(
        self.dataset_name, seed=base.seed_for(seed, self.name, split),
        size=max_candidates, **self.config)

    def candidates() -> Iterator[tuple[str, base.Example]]:
      for idx in range(max_candidates):
        entry = ds[idx]
        yield self._split_key(entry), self._entry_example(entry, split)

    return base.take_split(candidates(), n, split, max_candidates, self.name)

  def load(self, path: str, split: str = "test") -> list[base.Example]:
    """Reads reasoning-gym entries saved as jsonl ({question, answer,
    metadata} per line, as the datasets yield them)."""
    path = os.fspath(path)
    out = []
    for lineno, rec in base.read_jsonl(path):
      where = f"{path}:{lineno}"
      base.require(rec, "question", str, where)
      base.require(rec, "metadata", dict, where)
      out.append(self._entry_example(rec, split))
    return out

  # -- prompting and grading -------------------------------------------------

  def prompt(self, example: base.Example) -> str:
    return f"{example.question.rstrip()}\n\n{ANSWER_INSTRUCTION}"

  def parse_answer(self, text: str) -> Optional[str]:
    return answers_lib.extract_tagged(text, prompts.ANSWER_TAG)

  def entry(self, example: base.Example) -> dict[str, Any]:
    """The reasoning-gym entry an example came from."""
    entry = example.metadata.get("rg_entry")
    if entry is None:
      entry = {"question": example.question, "answer": example.answer,
               "metadata": {}}
    return dict(entry)

  def verify(self, example: base.Example,
             answer: Optional[str]) -> base.Verdict:
    if answer is None or not answer.strip():
      return base.Verdict(False, base.NO_ANSWER, "no answer given", score=0.0)
    scorer = _scorer_dataset(self.dataset_name, self._config_json)
    try:
      score = float(scorer.score_answer(answer, self.entry(example)))
    except Exception as e:  # pylint: disable=broad-except
      # A scorer crash on hostile text is a wrong answer, not a host crash.
      return base.Verdict(False, base.WRONG_ANSWER,
                          f"score_answer raised {type(e).__name__}: {e}",
                          score=0.0)
    if score == 1.0:
      return base.Verdict(True, base.CORRECT, "score 1.0", score=score)
    return base.Verdict(False, base.WRONG_ANSWER, f"score {score:.3g}",
                        score=score)


base.register_task_prefix("rg", ReasoningGymTask)
