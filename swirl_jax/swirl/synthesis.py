"""SWiRL stage 1: synthesise, judge, filter and store tool-use trajectories.

    synthesize(workdir, config, params, tokenizer, task_names=('gsm8k',),
               num_questions=100, samples_per_question=5,
               filter_strategy='process')

1. samples `samples_per_question` trajectories (paper: 5) for each of
   `num_questions` training questions per task, tools live;
2. judges every step (one batched call to the judge);
3. keeps the trajectories the filter accepts (`filters.FILTERS`);
4. writes the kept trajectories' sub-trajectory records as a TFDS
   ArrayRecord dataset in workdir/data, the raw trajectories as
   workdir/trajectories.jsonl and the filtering statistics as
   workdir/filter_statistics.json.

`data.rl_records.records_dataset` then serves the stored states to stage 2.
"""

from __future__ import annotations

import json
import logging
import os
import random
from typing import Any, Mapping, Optional, Sequence

from swirl_jax.swirl import filters

log = logging.getLogger(__name__)


def tools_for(task, examples) -> dict[str, Any]:
  """The live tools a task's episodes need, by tag."""
  from swirl_jax.tools import SearchTool, get_tool  # pylint: disable=g-import-not-at-top
  tools = {}
  for tag in task.tools:
    if tag == "search_query":
      tools[tag] = SearchTool(task.corpus(list(examples)))
    elif tag == "math_exp":
      tools[tag] = get_tool("calculator")
    else:
      raise ValueError(f"No tool for tag {tag!r} of task {task.name!r}.")
  return tools


def split_data_path(data_path, split: str, task_name: str) -> str:
  """The file or directory that holds `split` of a task's real data.

  `data_path`: a {'train': ..., 'test': ...} mapping, or one path: a
  prepared TFDS directory (both splits), or a single file, accepted for the
  test split only (stage 1 would otherwise train on the test questions).
  """
  if isinstance(data_path, Mapping):
    if split not in data_path:
      raise ValueError(f"data_paths[{task_name!r}] = {dict(data_path)!r} has "
                       f"no {split!r} entry.")
    return os.fspath(data_path[split])
  data_path = os.fspath(data_path)
  if split != "test" and not os.path.isdir(data_path):
    raise ValueError(
        f"data_paths[{task_name!r}] = {data_path!r} is one file, and the "
        f"{split!r} split would read the same questions as the evaluation. "
        f"Give {{'train': TRAIN_FILE, 'test': TEST_FILE}} (or a prepared "
        "TFDS directory, which holds both splits).")
  return data_path


def task_examples(task, n: Optional[int], *, seed: int, split: str,
                  data_path=None) -> list:
  """`n` questions of `split`: a seeded sample of `n` (all when None) of the
  real dataset at `data_path` (`task.load`, via `split_data_path`), else
  generated."""
  if data_path:
    examples = task.load(split_data_path(data_path, split, task.name),
                         split=split)
    if n is not None and n < len(examples):
      examples = random.Random(seed).sample(examples, n)
    return list(examples)
  if n is None:
    raise ValueError(f"Task {task.name!r} is procedural here: give a number "
                     "of questions or a data path.")
  return task.generate(n, seed=seed, split=split)


def synthesize(workdir: str, config, params, tokenizer, *,
               task_names: Sequence[str] = ("gsm8k",),
               num_questions: int = 100, samples_per_question: int = 5,
               filter_strategy: str = "process", judge=None,
               prompt_style: str = "full", max_new_tokens: int = 64,
               temperature: float = 1.0, max_context_tokens: int = 1024,
               max_steps: Optional[int] = None, seed: int = 0,
               shards: int = 1,
               data_paths: Optional[dict[str, Any]] = None
               ) -> dict[str, Any]:
  """Runs stage 1 into `workdir`; returns the filtering statistics.

  `max_steps` overrides the tasks' query limits; `data_paths` maps task
  names to real datasets (`task_examples`). A finished dataset in
  workdir/data (with its statistics) is reused.
  """
  from swirl_jax.data import trajectories as traj_data  # pylint: disable=g-import-not-at-top
  from swirl_jax.judges import get_judge  # pylint: disable=g-import-not-at-top
  from swirl_jax.rollout import RolloutEngine, save_jsonl  # pylint: disable=g-import-not-at-top
  from swirl_jax.sampling import chat_sampler  # pylint: disable=g-import-not-at-top
  from swirl_jax.tasks import get_task  # pylint: disable=g-import-not-at-top
  filters.check_filter(filter_strategy)
  data_dir = os.path.join(workdir, "data")
  stats_path = os.path.join(workdir, filters.STATISTICS_FILENAME)
  try:
    traj_data.find_dataset_dir(data_dir)
    if os.path.exists(stats_path):
      log.info("Stage 1 output found in %s; reusing it.", data_dir)
      with open(stats_path) as f:
        return json.load(f)
  except (FileNotFoundError, traj_data.TrajectoryDataError):
    pass
  judge = judge or get_judge("rules")
  sampler = chat_sampler(config, tokenizer, params)
  trajs = []
  for i, name in enumerate(task_names):
    task = get_task(name, prompt_style=prompt_style)
    examples = task_examples(task, num_questions, seed=seed + i,
                             split="train",
                             data_path=(data_paths or {}).get(name))
    with RolloutEngine(sampler, tokenizer, tools_for(task, examples),
                       max_new_tokens=max_new_tokens, temperature=temperature,
                       max_context_tokens=max_context_tokens) as engine:
      trajs.extend(engine.run(task, examples,
                              num_samples=samples_per_question,
                              max_steps=max_steps, seed=seed + 1000 * i))
      log.info("%s: %s", name, engine.last_stats.summary())
  labels = filters.judge_trajectories(trajs, judge)
  os.makedirs(workdir, exist_ok=True)
  save_jsonl(os.path.join(workdir, "trajectories.jsonl"), trajs)
  traj_data.save_labels(os.path.join(workdir, traj_data.LABELS_FILENAME),
                        trajs, labels)
  records, stats = traj_data.records_from_run(trajs, labels, filter_strategy)
  if not records:
    raise ValueError(
        f"The {filter_strategy!r} filter kept no trajectory of {len(trajs)} "
        f"(kept per filter: {stats.get('kept_per_filter')}); train the "
        "policy longer, sample more, or use a looser filter.")
  traj_data.prepare_dataset(records, data_dir, shards=shards, overwrite=True)
  filters.write_statistics(workdir, stats)
  return stats


def refilter(synthesis_dir: str, data_dir: str, filter_strategy: str, *,
             shards: int = 1) -> dict[str, Any]:
  """Rebuilds a dataset with another filter from a finished stage-1 run.

  Reads synthesis_dir's trajectories and labels (no sampling, no judging),
  so filters are compared on the same trajectories. Returns the filter
  statistics, with 'kept_nothing': True (no dataset written) when the
  filter keeps no trajectory.
  """
  from swirl_jax.data import trajectories as traj_data  # pylint: disable=g-import-not-at-top
  from swirl_jax.rollout import load_jsonl  # pylint: disable=g-import-not-at-top
  filters.check_filter(filter_strategy)
  trajs = load_jsonl(os.path.join(synthesis_dir, "trajectories.jsonl"))
  labels = traj_data.load_labels(
      os.path.join(synthesis_dir, traj_data.LABELS_FILENAME), trajs)
  records, stats = traj_data.records_from_run(trajs, labels, filter_strategy)
  if not records:
    return {**stats, "kept_nothing": True}
  traj_data.prepare_dataset(records, data_dir, shards=shards, overwrite=True)
  return stats
