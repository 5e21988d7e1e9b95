"""A model's accuracy on every task family, zero- or few-shot, with intervals.

    python -m swirl_jax.main \\
        --gin_file=gin_configs/experiments/base_accuracy_gemma3_270m.gin \\
        --workdir=runs/base_270m

What a recipe starts from: the base model, untrained, on held-out ('test'
split) generated questions of each family, graded by the family's own
verifier, each family in the loop its recipe uses:

  gsm8k     SWiRL's multi-step loop with the live calculator (greedy)
  hotpotqa  SWiRL's multi-step loop with live BM25 search over the corpus
  countdown, function_calling   R3's first attempt (one model turn)
  math, code                    SCoRe's first attempt (one model turn;
                                code runs in the sandbox on all tests)

`shots` = k > 0 puts k solved 'train'-split examples of the same family in
front of the question, inside the first user turn, as transcripts
(`FewShotTask`): the scripted ideal episode for gsm8k / hotpotqa
(`data.demonstrations`: one calculator or search call per step, real tool
results), the gold answer for countdown / function calling, the worked
solution and SCoRe's final-answer sentence for math, the reference program
for code. The demonstrations come from their own seed and split, so no
held-out question is ever shown.

Stages run shot count by shot count (all families at shots[0] first).
Each (family, shots) pair is one resumable stage `<workdir>/<family>-<k>shot`
(its per-question rows in `rows.jsonl`); `report.json` and a Markdown table
hold accuracy with its 95% Wilson interval and n.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import time
from typing import Any, Mapping, Optional, Sequence

import gin

from swirl_jax.evaluation import metrics as metrics_lib
from swirl_jax.tasks import base

log = logging.getLogger(__name__)

MULTI_STEP = ("gsm8k", "hotpotqa")
FIRST_ATTEMPT = ("countdown", "function_calling", "math", "code")
FAMILIES = MULTI_STEP + FIRST_ATTEMPT
RECIPE_LOOP = {"gsm8k": "SWiRL multi-step, calculator",
               "hotpotqa": "SWiRL multi-step, search",
               "countdown": "R3 first attempt",
               "function_calling": "R3 first attempt",
               "math": "SCoRe first attempt",
               "code": "SCoRe first attempt"}


def make_family_task(family: str, **kwargs) -> base.Task:
  """The family's task as its recipe builds it (prompt style 'full')."""
  from swirl_jax.tasks import get_task  # pylint: disable=g-import-not-at-top
  if family not in FAMILIES:
    raise ValueError(f"Unknown task family {family!r}; choose from "
                     f"{list(FAMILIES)}.")
  if family in MULTI_STEP:
    kwargs.setdefault("prompt_style", "full")
  return get_task(family, **kwargs)


def held_out_seed(seed: int, family: str) -> int:
  """The held-out questions' seed of `family`: from its name, so a run of
  a subset of the families asks the same questions."""
  return base.seed_for(seed, "base-accuracy-test", family) % (1 << 31)


def family_examples(task: base.Task, n: int, *, seed: int,
                    split: str) -> list[base.Example]:
  """`n` generated questions of `split` (R3's fast Countdown generator)."""
  from swirl_jax.tasks import compact  # pylint: disable=g-import-not-at-top
  return compact.generate_examples(task, n, seed=seed, split=split)


# ----------------------------------------------------------------------------
# Few-shot demonstrations.


def demonstration_turns(family: str, task: base.Task,
                        examples: Sequence[base.Example]
                        ) -> list[list[tuple[str, str]]]:
  """The solved conversation of each example: [(role, text), ...].

  Roles are 'user' / 'model'; the first turn is `task.prompt(example)`,
  except for the multi-step families, where it is 'Question: ...' alone:
  the instructions (about 220 tokens) come once, in the asked question's
  own prompt, rather than once per demonstration, since every step of an
  episode prefills the whole chat again.
  """
  if family in MULTI_STEP:
    from swirl_jax.data import demonstrations  # pylint: disable=g-import-not-at-top
    out = demonstrations.demonstrate(family, examples,
                                     max_steps=task.max_steps,
                                     prompt_style=task.prompt_style)
    return [[("user", f"Question: {ex.question}")] + turns[1:]
            for ex, turns in zip(examples, out)]
  out = []
  for ex in examples:
    out.append([("user", task.prompt(ex)),
                ("model", solved_answer(family, task, ex))])
  return out


def solved_answer(family: str, task: base.Task, example: base.Example) -> str:
  """The model turn that answers `example` correctly in the task's format."""
  if family in ("countdown", "function_calling"):
    from swirl_jax.data import reflection_demonstrations as reflection_demos  # pylint: disable=g-import-not-at-top
    return reflection_demos.correct_answer(task, example)
  from swirl_jax.data import correction_demonstrations as correction_demos  # pylint: disable=g-import-not-at-top
  if family == "math":
    final = correction_demos.direct_answer(task, example.answer)
    solution = example.metadata.get("solution", "").strip()
    return f"{solution}\n{final}" if solution else final
  if family == "code":
    return correction_demos.direct_answer(task, example.answer)
  raise ValueError(f"No solved answers for family {family!r}.")


_ROLE_NAMES = {"user": "User", "model": "Assistant"}


def render_demonstrations(conversations: Sequence[Sequence[tuple[str, str]]]
                          ) -> str:
  """The text put before the question: each conversation as a transcript."""
  parts = [f"Here are {len(conversations)} solved examples of this kind of "
           "task, each a complete conversation between the user and the "
           "assistant. Then comes your task."]
  for i, turns in enumerate(conversations):
    lines = [f"=== Example {i + 1} ==="]
    for role, text in turns:
      if role not in _ROLE_NAMES:
        raise ValueError(f"Unknown role {role!r} in a demonstration.")
      lines.append(f"{_ROLE_NAMES[role]}: {text.strip()}")
    parts.append("\n".join(lines))
  parts.append("=== Your task ===")
  return "\n\n".join(parts) + "\n"


class FewShotTask(base.TaskWrapper):
  """`task` with solved demonstrations in front of every prompt.

  Everything but `prompt` is the wrapped task's (tools, step limit,
  parsing, verification, corpus, ...).

  Args:
    task: the task.
    prefix: `render_demonstrations(...)`, prepended to `task.prompt(x)`.
  """

  def __init__(self, task: base.Task, prefix: str):
    super().__init__(task)
    self.prefix = prefix

  def prompt(self, example: base.Example) -> str:
    return self.prefix + self.inner.prompt(example)


def few_shot_task(family: str, task: base.Task, shots: int, *,
                  seed: int) -> base.Task:
  """`task` itself for shots == 0, else a `FewShotTask` with `shots`
  solved 'train'-split examples (their own seed)."""
  if int(shots) < 0:
    raise ValueError(f"shots must be >= 0, got {shots}.")
  if not shots:
    return task
  demos = family_examples(task, int(shots),
                          seed=base.seed_for(seed, "few-shot", family),
                          split="train")
  return FewShotTask(task, render_demonstrations(
      demonstration_turns(family, task, demos)))


# ----------------------------------------------------------------------------
# Evaluation.


def evaluate_family(sampler: Any, tokenizer: Any, family: str,
                    task: base.Task, examples: Sequence[base.Example], *,
                    max_new_tokens: int, max_context_tokens: int,
                    seed: int = 0, progress: bool = False
                    ) -> list[dict[str, Any]]:
  """Greedy answers to `examples` in the family's recipe loop, graded.

  progress: a progress bar of the multi-step episodes (stderr).

  Returns one row per example: {'id', 'correct', 'category', 'answer',
  'steps' (model turns), 'finish'}.
  """
  if family in MULTI_STEP:
    from swirl_jax.rollout import RolloutEngine  # pylint: disable=g-import-not-at-top
    from swirl_jax.swirl.synthesis import tools_for  # pylint: disable=g-import-not-at-top
    with RolloutEngine(sampler, tokenizer, tools_for(task, examples),
                       max_new_tokens=max_new_tokens, temperature=0.0,
                       max_context_tokens=max_context_tokens,
                       progress=progress) as engine:
      trajs = engine.run(task, examples, seed=seed)
    return [{"id": ex.id, "correct": bool(t.correct),
             "category": t.verdict.category if t.verdict else "",
             "answer": t.final_answer, "steps": len(t.steps),
             "finish": t.finish_reason,
             "text": t.steps[-1].action if t.steps else ""}
            for ex, t in zip(examples, trajs)]
  from swirl_jax.rollout import RolloutEngine  # pylint: disable=g-import-not-at-top
  with RolloutEngine(sampler, tokenizer, max_new_tokens=max_new_tokens,
                     temperature=0.0, max_context_tokens=max_context_tokens,
                     progress=False) as engine:
    graded = engine.first_attempts(task, examples, seed=seed)
  return [{"id": g.example.id, "correct": bool(g.verdict.correct),
           "category": g.verdict.category, "answer": g.answer, "steps": 1,
           "finish": g.turn.finish, "text": g.turn.text} for g in graded]


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """{'accuracy': proportion_ci, 'n', 'categories': {category: count}}."""
  n = len(rows)
  return {"n": n,
          "accuracy": metrics_lib.proportion_ci(
              sum(bool(r["correct"]) for r in rows), n),
          "categories": dict(collections.Counter(r["category"] for r in rows))}


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
  """Markdown: one row per (family, shots) with accuracy [95% CI] and n."""
  lines = ["| family | loop | shots | accuracy [95% CI] | n |",
           "|---|---|---|---|---|"]
  for key in sorted(results, key=lambda k: (FAMILIES.index(
      results[k]["family"]), results[k]["shots"])):
    r = results[key]
    a = r["accuracy"]
    lines.append(f"| {r['family']} | {RECIPE_LOOP[r['family']]} | "
                 f"{r['shots']} | {a['value']:.3f} [{a['low']:.3f}, "
                 f"{a['high']:.3f}] | {r['n']} |")
  return "\n".join(lines) + "\n"


@gin.configurable(denylist=["workdir"])
def base_accuracy_experiment(
    workdir: str, *,
    model_config: Any = gin.REQUIRED,
    init_from: Optional[str] = gin.REQUIRED,
    families: Sequence[str] = FAMILIES,
    shots: Sequence[int] = (0,),
    task_kwargs: Optional[Mapping[str, Mapping[str, Any]]] = None,
    num_questions: int = 100,
    max_new_tokens: int = 96,
    max_new_tokens_per_family: Optional[Mapping[str, int]] = None,
    num_questions_per_family: Optional[Mapping[str, int]] = None,
    max_context_tokens: int = 2048,
    batch_bucket: int = 16,
    seed: int = 0) -> dict[str, Any]:
  """Evaluates one model on every (family, shots); writes report.json.

  Args:
    workdir: the run directory (one stage per family and shot count).
    model_config: the TransformerConfig.
    init_from: the weights ('gguf:FILE', 'hf:DIR', a training workdir).
    families: task families (`FAMILIES`).
    shots: demonstration counts to evaluate, e.g. (0, 2).
    task_kwargs: family -> task constructor arguments.
    num_questions: held-out questions per family (the same for every shot
      count, so the shot counts compare paired; `held_out_seed`).
    max_new_tokens: budget of one model turn.
    max_new_tokens_per_family: overrides of it per family.
    num_questions_per_family: overrides of num_questions per family.
    max_context_tokens: the longest multi-step chat.
    batch_bucket: sampler batch bucket.
    seed: question, demonstration and sampling seed.
  Returns:
    The report: {'results': {'<family>-<k>shot': {...}}, 'settings', ...}.
  """
  from swirl_jax import stages  # pylint: disable=g-import-not-at-top
  from swirl_jax import sampling  # pylint: disable=g-import-not-at-top
  started = time.time()
  families = tuple(families)
  unknown = sorted(set(families) - set(FAMILIES))
  if unknown:
    raise ValueError(f"Unknown task families {unknown}; choose from "
                     f"{list(FAMILIES)}.")
  shots = tuple(int(k) for k in shots)
  if not shots or min(shots) < 0:
    raise ValueError(f"shots must be non-negative counts, got {shots}.")
  task_kwargs = {k: dict(v) for k, v in (task_kwargs or {}).items()}
  per_family = dict(max_new_tokens_per_family or {})
  questions = {f: int(num_questions) for f in families}
  questions.update({f: int(n) for f, n in
                    (num_questions_per_family or {}).items()})
  extra = sorted((set(task_kwargs) | set(per_family) | set(questions))
                 - set(families))
  if extra:
    raise ValueError(f"task_kwargs / max_new_tokens_per_family / "
                     f"num_questions_per_family name families {extra} that "
                     f"are not in families={list(families)}.")
  bad = {f: n for f, n in questions.items() if n < 1}
  if bad:
    raise ValueError(f"Question counts must be >= 1, got {bad}.")
  tokenizer = stages.experiment_tokenizer(workdir)
  sampler = sampling.chat_sampler(model_config, tokenizer,
                                  batch_bucket=batch_bucket)
  params = None
  results = {}
  held_out = {}
  for family in families:
    task = make_family_task(family, **task_kwargs.get(family, {}))
    held_out[family] = (task, family_examples(
        task, questions[family], seed=held_out_seed(seed, family),
        split="test"))
  for k in shots:  # every family at the first shot count first
    for family in families:
      task, examples = held_out[family]
      name = f"{family}-{k}shot"

      def run(stage_dir, family=family, task=task, examples=examples, k=k):
        nonlocal params
        if params is None:
          params = stages.load_policy(model_config, init_from, seed)
          sampler.update_params(params)
        t0 = time.time()
        rows = evaluate_family(
            sampler, tokenizer, family,
            few_shot_task(family, task, k, seed=seed), examples,
            max_new_tokens=int(per_family.get(family, max_new_tokens)),
            max_context_tokens=max_context_tokens, seed=seed, progress=True)
        os.makedirs(stage_dir, exist_ok=True)
        tmp = os.path.join(stage_dir, f"rows.jsonl.tmp-{os.getpid()}")
        with open(tmp, "w") as f:
          for r in rows:
            f.write(json.dumps(r, default=str) + "\n")
        os.replace(tmp, os.path.join(stage_dir, "rows.jsonl"))
        out = summarize(rows)
        out.update(family=family, shots=k, seconds=time.time() - t0)
        a = out["accuracy"]
        log.info("%s: accuracy %.3f [%.3f, %.3f] on n=%d (%.0f s)", name,
                 a["value"], a["low"], a["high"], out["n"], out["seconds"])
        return out

      results[name] = stages.run_stage(workdir, name, run)
  report = {
      "results": results,
      "settings": {"init_from": init_from, "families": list(families),
                   "shots": list(shots), "task_kwargs": task_kwargs,
                   "num_questions": questions,
                   "max_new_tokens": int(max_new_tokens),
                   "max_new_tokens_per_family": per_family,
                   "max_context_tokens": int(max_context_tokens),
                   "seed": int(seed), "temperature": 0.0,
                   "split": "test"},
      "seconds": time.time() - started,
  }
  stages.write_json_atomic(os.path.join(workdir, "report.json"), report)
  table = format_table(results)
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(table)
  print(table, flush=True)
  return report
