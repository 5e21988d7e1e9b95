"""SWiRL evaluation: multi-step tool-use accuracy and mean process label.

    results = evaluate_policy(config, params, tokenizer,
                              task_names=('gsm8k', 'hotpotqa'),
                              num_questions=64, judge=get_judge('rules'))

For each task, held-out ('test' split) generated questions are answered by
the same multi-step loop as in training (greedy, tools live, the task's step
limit); the result holds the accuracy with its Wilson 95% interval and the
mean process label of the generated steps (the fraction the judge calls
GOOD, the paper's "mean process label") with its interval.
"""

from __future__ import annotations

import zlib
from typing import Any, Optional, Sequence

from swirl_jax.evaluation.metrics import mean_ci, proportion_ci
from swirl_jax.swirl import filters
from swirl_jax.swirl.synthesis import task_examples, tools_for


def _label_ci(rewards):
  """Wilson interval for GOOD/BAD (0/1) labels, t interval for graded ones."""
  if all(r in (0.0, 1.0) for r in rewards):
    return proportion_ci(int(sum(rewards)), len(rewards))
  return mean_ci(rewards)


def task_seed(seed: int, task_name: str) -> int:
  """The question seed of one task: fixed by the task's name, so a model
  evaluated on a subset of the tasks gets the same questions per task as
  one evaluated on all (paired comparisons)."""
  return seed + zlib.crc32(task_name.encode()) % 1000


def evaluate_policy(config, params, tokenizer, *,
                    task_names: Sequence[str] = ("gsm8k", "hotpotqa"),
                    num_questions: int = 64, judge=None,
                    prompt_style: str = "full", max_new_tokens: int = 64,
                    max_context_tokens: int = 1024,
                    max_steps: Optional[int] = None, seed: int = 0,
                    split: str = "test",
                    data_paths: Optional[dict[str, Any]] = None
                    ) -> dict[str, dict[str, Any]]:
  """{task: {'accuracy', 'process_label', 'correct', 'trajectories'}}.

  split: the held-out split ('test'); 'validation' for choosing settings
    without looking at the test questions.
  data_paths: task name -> real dataset read with `task.load` (its `split`,
    `synthesis.split_data_path`); tasks without one are generated.

  A result is {'value', 'low', 'high', 'n'}; 'correct' maps each question's
  id to whether it was answered right (for paired comparisons of models on
  the same questions); 'trajectories' are the generated Trajectory objects
  (for reports and notebooks).
  """
  from swirl_jax.judges import get_judge  # pylint: disable=g-import-not-at-top
  from swirl_jax.rollout import RolloutEngine  # pylint: disable=g-import-not-at-top
  from swirl_jax.sampling import chat_sampler  # pylint: disable=g-import-not-at-top
  from swirl_jax.tasks import get_task  # pylint: disable=g-import-not-at-top
  judge = judge or get_judge("rules")
  sampler = chat_sampler(config, tokenizer, params)
  out = {}
  for name in task_names:
    task = get_task(name, prompt_style=prompt_style)
    examples = task_examples(task, num_questions, seed=task_seed(seed, name),
                             split=split,
                             data_path=(data_paths or {}).get(name))
    with RolloutEngine(sampler, tokenizer, tools_for(task, examples),
                       max_new_tokens=max_new_tokens, temperature=0.0,
                       max_context_tokens=max_context_tokens,
                       progress=False) as engine:
      trajs = engine.run(task, examples, max_steps=max_steps, seed=seed)
    labels = filters.judge_trajectories(trajs, judge)
    step_rewards = [l.reward for ls in labels for l in ls]
    out[name] = {
        "accuracy": proportion_ci(sum(t.correct for t in trajs), len(trajs)),
        "process_label": _label_ci(step_rewards),
        "correct": {t.example_id: bool(t.correct) for t in trajs},
        "trajectories": trajs,
    }
  return out
