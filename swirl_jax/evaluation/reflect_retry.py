"""R3 evaluation: first- and second-attempt accuracy and error categories.

On held-out queries, the model answers once (attempt 1); on a failure it
reflects (the task's reflection instruction) and retries with the
reflection in context (attempt 2), as in training. Per query:

    correct@1 = attempt 1 is correct
    correct@2 = attempt 1 is correct, or its retry is      (R3's "second
                                                            attempt")

Accuracies come with 95% Wilson intervals (`evaluation.metrics.
proportion_ci`). The error analysis counts the verifier's categories of the
answer that stands after each attempt (Countdown: invalid_equation /
wrong_numbers / missed_target / no_answer; function calling: format_error /
wrong_tool / wrong_arguments), so 'before' and 'after' reflection compare
directly.
"""

from __future__ import annotations

import collections
from typing import Any, Mapping, Sequence

from swirl_jax.evaluation import headline
from swirl_jax.evaluation import metrics as metrics_lib
from swirl_jax.tasks import base


def evaluate_task(sampler: Any, tokenizer: Any, task: base.Task,
                  examples: Sequence[base.Example], *,
                  max_new_tokens: int = 64, temperature: float = 0.0,
                  max_context_tokens: int = 1024, seed: int = 0
                  ) -> list[dict[str, Any]]:
  """Two attempts (with a reflection between) on every example.

  Args:
    sampler: a sampler holding the params to evaluate.
    tokenizer: the tokenizer.
    task: the task.
    examples: held-out instances.
    max_new_tokens: budget of an answer, a reflection, a retry.
    temperature: sampling temperature of all turns (0: greedy).
    max_context_tokens: the longest chat.
    seed: sampling randomness.
  Returns:
    One dict per example: 'id', 'attempt1', 'answer1', 'category1',
    'correct1', 'reflection', 'attempt2', 'answer2', 'category2' (the
    retry's, or '' when there was none), 'correct2' (correct@2) and
    'final_category' (the category standing after attempt 2).
  """
  from swirl_jax.rollout import RolloutEngine  # pylint: disable=g-import-not-at-top
  with RolloutEngine(sampler, tokenizer, max_new_tokens=max_new_tokens,
                     temperature=temperature,
                     max_context_tokens=max_context_tokens, progress=False,
                     tool_workers=1) as engine:
    first = engine.first_attempts(
        task, examples, seed=base.seed_for(seed, "r3-eval", task.name)
        % (1 << 31))
    firsts = [g.turn for g in first]
    graded = [(g.answer, g.verdict) for g in first]
    episodes = engine.run_reflect_retry(
        task, examples, group_size=1, first_attempts=firsts,
        seed=base.seed_for(seed, "r3-eval-retry", task.name))
  failed = [i for i, (_, v) in enumerate(graded) if not v.correct]
  if len(episodes) != len(failed):
    raise RuntimeError(f"{task.name}: {len(failed)} failed first attempts "
                       f"but {len(episodes)} reflection episodes.")
  retry = dict(zip(failed, episodes))
  out = []
  for i, (ex, turn, (answer, verdict)) in enumerate(zip(examples, firsts,
                                                        graded)):
    row = {"id": ex.id, "attempt1": turn.text, "answer1": answer,
           "category1": verdict.category, "correct1": bool(verdict.correct),
           "reflection": "", "attempt2": "", "answer2": None,
           "category2": "", "correct2": bool(verdict.correct),
           "final_category": verdict.category}
    if i in retry:
      ep = retry[i]
      v2 = ep.retry_verdict
      row.update(reflection=ep.reflection.text, attempt2=ep.retry.text,
                 answer2=ep.retry_answer, category2=v2.category,
                 correct2=bool(v2.correct), final_category=v2.category)
    out.append(row)
  return out


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """Accuracies with 95% CIs and category counts of one model on one task.

  Returns:
    {'accuracy_t1', 'accuracy_t2', 'delta_i_to_c' (share of queries wrong
    at attempt 1 and right at attempt 2), 'retry_success' (share of failed
    first attempts fixed by the retry): proportion_ci dicts;
    'categories_t1', 'categories_t2': category -> count; 'n'}.
  """
  n = len(rows)
  c1 = sum(r["correct1"] for r in rows)
  c2 = sum(r["correct2"] for r in rows)
  fixed = sum(r["correct2"] and not r["correct1"] for r in rows)
  return {
      "n": n,
      "accuracy_t1": metrics_lib.proportion_ci(c1, n),
      "accuracy_t2": metrics_lib.proportion_ci(c2, n),
      "delta_i_to_c": metrics_lib.proportion_ci(fixed, n),
      "retry_success": metrics_lib.proportion_ci(fixed, n - c1),
      "categories_t1": dict(collections.Counter(r["category1"]
                                                for r in rows)),
      "categories_t2": dict(collections.Counter(r["final_category"]
                                                for r in rows)),
  }


def paired_comparison(rows_a: Sequence[Mapping[str, Any]],
                      rows_b: Sequence[Mapping[str, Any]],
                      key: str = "correct2") -> dict[str, Any]:
  """Two models on the same queries: who is right where (McNemar).

  Args:
    rows_a / rows_b: `evaluate_task` rows of models A and B, with the same
      query ids (in any order).
    key: 'correct1' or 'correct2'.
  Returns:
    {'n', 'both', 'neither', 'a_only', 'b_only', 'p_value'}: the counts of
    queries each model alone gets right and the exact two-sided binomial
    (sign) test p-value of a_only vs b_only (1.0 when both are 0).
  """
  a = {r["id"]: bool(r[key]) for r in rows_a}
  b = {r["id"]: bool(r[key]) for r in rows_b}
  diff = headline.paired(a, b)  # checks that the ids agree
  return {"n": diff["n"], "both": sum(a[i] and b[i] for i in a),
          "neither": sum(not a[i] and not b[i] for i in a),
          "a_only": diff["a_only"], "b_only": diff["b_only"],
          "p_value": diff["p_value"]}


def evaluate_model(config, params, tokenizer, examples_by_task: Mapping[
    str, tuple[base.Task, Sequence[base.Example]]], *,
                   max_new_tokens: int = 64, temperature: float = 0.0,
                   seed: int = 0, sampler: Any = None
                   ) -> tuple[dict[str, Any], dict[str, list[dict]]]:
  """`evaluate_task` and `summarize` for every task; (summaries, rows)."""
  if sampler is None:
    from swirl_jax.sampling import chat_sampler  # pylint: disable=g-import-not-at-top
    sampler = chat_sampler(config, tokenizer, batch_bucket=16)
  sampler.update_params(params)
  summaries, rows = {}, {}
  for name, (task, examples) in examples_by_task.items():
    rows[name] = evaluate_task(
        sampler, tokenizer, task, examples, max_new_tokens=max_new_tokens,
        temperature=temperature, max_context_tokens=config.max_seq_len,
        seed=seed)
    summaries[name] = summarize(rows[name])
  return summaries, rows
