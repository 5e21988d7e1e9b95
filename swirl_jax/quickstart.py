"""`make quickstart`: the embedded CPU default, end to end, for real.

    python -m swirl_jax.quickstart --workdir runs/quickstart

1. Trains the tiny sentencepiece tokenizer on procedurally generated
   tool-use text (workdir/tokenizer/spm.model).
2. Warm-starts the tiny Gemma 2-style model by SFT on scripted tool-use
   demonstrations (gin_configs/experiments/sft_tiny.gin, workdir/sft).
3. Runs batched multi-step tool-use rollouts (calculator for math, search
   for multi-hop QA) on held-out questions with the KV-cache sampler, for the
   randomly initialised base model and the SFT model, prints one trajectory
   step by step and the accuracies, and writes workdir/summary.json.

Every stage resumes: a rerun reuses the tokenizer, continues SFT from its
latest checkpoint (or skips it when finished) and redoes only the rollouts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _banner(text: str) -> None:
  print(f"\n=== {text} ===", flush=True)


def run_sft(workdir: str, tokenizer_path: str, steps: int) -> str:
  """Runs the sft_tiny experiment in a child process (clean gin state)."""
  sft_dir = os.path.join(workdir, "sft")
  cmd = [sys.executable, "-m", "swirl_jax.main",
         "--gin_file=gin_configs/experiments/sft_tiny.gin",
         f"--workdir={sft_dir}",
         f"--gin.swirl_jax.data.sources.tokenizer_path_for.path="
         f"'{tokenizer_path}'",
         f"--gin.TRAIN_STEPS={steps}"]
  subprocess.run(cmd, cwd=ROOT, check=True)
  return sft_dir


def evaluate_rollouts(params, config, tokenizer, examples_by_task, *,
                      seed: int = 0):
  """Greedy multi-step rollouts; returns (trajectories, accuracy per task)."""
  from swirl_jax.rollout import RolloutEngine  # pylint: disable=g-import-not-at-top
  from swirl_jax.sampling import Sampler  # pylint: disable=g-import-not-at-top
  from swirl_jax.tasks import get_task  # pylint: disable=g-import-not-at-top
  from swirl_jax.tools import SearchTool, get_tool  # pylint: disable=g-import-not-at-top
  sampler = Sampler(config, params, pad_id=tokenizer.pad_id,
                    stop_tokens=(tokenizer.end_of_turn_id, tokenizer.eos_id),
                    prompt_bucket=128, batch_bucket=8)
  results, accuracy, well_formed = {}, {}, {}
  for name, examples in examples_by_task.items():
    task = get_task(name, prompt_style="compact")
    if name == "hotpotqa":
      tools = {"search_query": SearchTool(task.corpus(examples))}
    else:
      tools = {"math_exp": get_tool("calculator")}
    engine = RolloutEngine(sampler, tokenizer, tools, max_new_tokens=48,
                           temperature=0.0, max_context_tokens=768,
                           progress=False)
    with engine:
      trajs = engine.run(task, examples, num_samples=1, seed=seed)
    results[name] = trajs
    accuracy[name] = sum(t.verdict.correct for t in trajs) / len(trajs)
    steps = [s for t in trajs for s in t.steps]
    well_formed[name] = sum(not s.malformed for s in steps) / max(len(steps),
                                                                   1)
    print(f"  {name:9s} accuracy {accuracy[name]:.3f}, well-formed actions "
          f"{well_formed[name]:.3f} over {len(trajs)} questions "
          f"({engine.last_stats.summary()})", flush=True)
  return results, {"accuracy": accuracy, "well_formed_actions": well_formed}


def print_trajectory(traj) -> None:
  print(f"task={traj.task} id={traj.example_id} gold={traj.gold!r} "
        f"finish={traj.finish_reason} answer={traj.final_answer!r} "
        f"correct={traj.verdict.correct}")
  for step in traj.steps:
    print(f"  step {step.index}: action: {step.action.strip()[:160]!r}")
    if step.tool_result is not None:
      print(f"           result: {step.tool_result.strip()[:160]!r}")
    if step.malformed:
      print(f"           malformed: {step.malformed}")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="runs/quickstart")
  parser.add_argument("--sft_steps", type=int, default=80)
  parser.add_argument("--eval_questions", type=int, default=16)
  args = parser.parse_args(argv)
  workdir = os.path.abspath(args.workdir)
  os.makedirs(workdir, exist_ok=True)
  start = time.time()

  _banner("1/3 tokenizer")
  from swirl_jax.data import sources  # pylint: disable=g-import-not-at-top
  tokenizer_path = sources.tokenizer_path_for(workdir)
  from swirl_jax.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  tokenizer = Tokenizer(tokenizer_path)
  print(f"  {tokenizer_path} ({tokenizer.vocab_size} pieces)")

  _banner("2/3 SFT warm start of the tiny model")
  sft_dir = run_sft(workdir, tokenizer_path, args.sft_steps)

  _banner("3/3 multi-step tool-use rollouts on held-out questions")
  import jax  # pylint: disable=g-import-not-at-top
  from swirl_jax import models  # pylint: disable=g-import-not-at-top
  from swirl_jax.tasks import get_task  # pylint: disable=g-import-not-at-top
  from swirl_jax.training.trainer import load_initial_params  # pylint: disable=g-import-not-at-top
  config = models.get_config("tiny")
  examples = {name: get_task(name).generate(args.eval_questions, seed=7,
                                            split="test")
              for name in ("gsm8k", "hotpotqa")}
  summary = {"workdir": workdir, "tokenizer": tokenizer_path}
  for label, init_from in (("base", None), ("sft", sft_dir)):
    print(f"- {label} model")
    params = load_initial_params(init_from, config, jax.random.key(0), None)
    trajs, acc = evaluate_rollouts(params, config, tokenizer, examples)
    summary[label] = acc
    if label == "sft":
      print("\nOne SFT-model trajectory, step by step:")
      print_trajectory(trajs["gsm8k"][0])
      from swirl_jax.rollout import save_jsonl  # pylint: disable=g-import-not-at-top
      for name, ts in trajs.items():
        save_jsonl(os.path.join(workdir, f"trajectories_{name}.jsonl"), ts)
  summary["seconds"] = round(time.time() - start, 1)
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  _banner("done")
  for key in ("accuracy", "well_formed_actions"):
    print(f"  {key}: base {summary['base'][key]} -> sft "
          f"{summary['sft'][key]}")
  print(f"  summary: {os.path.join(workdir, 'summary.json')}; metrics: "
        f"{os.path.join(sft_dir, 'metrics.jsonl')}; {summary['seconds']} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
