"""Host data pipeline throughput vs the train step that consumes it.

    python benchmarks/data_pipeline.py                  # CPU defaults
    python benchmarks/data_pipeline.py --data_dir=RUN/data --tokenizer=SPM \\
        --seq 1024 --batch 32 --preset gemma3-1b

Measures, in one run and one after the other (never concurrently, so each
has the machine to itself):

1. the host pipeline: SFT batches of the stored SWiRL steps
   (`swirl_jax.data.trajectories.filtered_steps_sft_dataset`: read the
   TFDS ArrayRecord shards through the TF-free data source, chat-format,
   tokenise, pad or first-fit pack, batch), in batches/s, for padding and
   for packing;
2. the jitted train step of the model (objective 'sft', AdamW) on a batch
   of the same shape [batch, seq] taken from the pipeline, in steps/s
   (median step time of --steps timed steps after one compiling step);

and prints both with their ratio (the goal: pipeline >= 10x the step), the
1-minute load average before and after, and the CPUs this process may use.

Without --data_dir the records are the scripted tool-use demonstrations
(`swirl_jax.data.demonstrations`, compact prompts as in the CPU default
experiment) split into sub-trajectories (one record per model turn), written
as a TFDS dataset in a temporary directory; without --tokenizer the tiny
CPU-default tokenizer is trained on the default demonstration corpus
(`swirl_jax.data.sources.tokenizer_path_for`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Optional, Sequence

import numpy as np

if __package__ in (None, ""):  # run as a script: make swirl_jax importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

# pylint: disable=g-import-not-at-top
from swirl_jax.data import pipeline
from swirl_jax.data import trajectories
from swirl_jax.swirl import filters
# pylint: enable=g-import-not-at-top

TOOL_TAGS = ("math_exp", "search_query")


def demonstration_trajectories(num_per_task: int, seed: int = 0,
                               prompt_style: str = "compact") -> list[Any]:
  """Scripted gsm8k / hotpotqa episodes as (correct) `Trajectory`s.

  Every model turn is one step; a tool call's result is the text after
  ' -> ' in the user turn that answers it.
  """
  from swirl_jax.data import demonstrations  # pylint: disable=g-import-not-at-top
  from swirl_jax.rollout import actions  # pylint: disable=g-import-not-at-top
  from swirl_jax.rollout import trajectory as traj_lib  # pylint: disable=g-import-not-at-top
  from swirl_jax.tasks.base import Verdict  # pylint: disable=g-import-not-at-top
  out = []
  for demo in demonstrations.tool_use_demonstrations(
      num_per_task=num_per_task, seed=seed, prompt_style=prompt_style):
    turns = [(str(r), str(t)) for r, t in demo["turns"]]
    steps, answer = [], None
    for i in range(1, len(turns), 2):
      parsed = actions.parse_action(turns[i][1], TOOL_TAGS)
      result = None
      if parsed.kind == actions.TOOL and i + 1 < len(turns):
        result = turns[i + 1][1].split(" -> ", 1)[-1]
      if parsed.kind == actions.ANSWER:
        answer = parsed.content
      steps.append(traj_lib.Step(
          index=i // 2, action=turns[i][1], action_tokens=[],
          action_logprobs=[],
          tool=parsed.tag if parsed.kind == actions.TOOL else None,
          tool_input=parsed.content if parsed.kind == actions.TOOL else None,
          tool_result=result, malformed=parsed.reason))
    out.append(traj_lib.Trajectory(
        task=demo["task"], example_id=str(demo["id"]),
        question=turns[0][1], gold=answer or "", sample_index=0, turns=turns,
        steps=steps, final_answer=answer,
        verdict=Verdict(correct=True, category="correct"),
        finish_reason=traj_lib.FINISH_ANSWER))
  return out


def demonstration_records(num_per_task: int, seed: int = 0
                          ) -> list[dict[str, Any]]:
  """`demonstration_trajectories` split into records, every step GOOD."""
  from swirl_jax.judges.base import JudgeResult  # pylint: disable=g-import-not-at-top
  trajs = demonstration_trajectories(num_per_task, seed)
  labels = [[JudgeResult.of(True, "scripted")] * t.num_steps for t in trajs]
  return filters.all_sub_trajectories(trajs, labels)


def time_train_step(preset: str, vocab_size: int,
                    batch: dict[str, np.ndarray], steps: int,
                    model_overrides: Optional[dict[str, Any]] = None
                    ) -> float:
  """Median seconds of the jitted SFT train step on `batch` ([b, L])."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from swirl_jax import models  # pylint: disable=g-import-not-at-top
  from swirl_jax.objectives import get_objective  # pylint: disable=g-import-not-at-top
  from swirl_jax.training.train_state import TrainState  # pylint: disable=g-import-not-at-top
  from swirl_jax.training.train_step import make_train_step  # pylint: disable=g-import-not-at-top
  config = models.get_config(preset, vocab_size=vocab_size,
                             **(model_overrides or {}))
  model = models.Transformer(config)
  params = models.init_params(config, jax.random.key(0))
  tx = optax.adamw(1e-4)
  state = TrainState.create(params, tx, jax.random.key_data(jax.random.key(1)))
  step = jax.jit(make_train_step(model, get_objective("sft"), tx,
                                 optax.constant_schedule(1e-4)),
                 donate_argnums=(0,))
  device_batch = jax.device_put(batch)
  state, metrics = step(state, device_batch, None)  # compiles
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = step(state, device_batch, None)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return float(statistics.median(times))


def _cpus() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def run(*, data_dir: Optional[str] = None, tokenizer: Optional[str] = None,
        workdir: Optional[str] = None, num_per_task: int = 150,
        seq: int = 384, batch: int = 8, preset: str = "tiny",
        modes: Sequence[str] = ("pad", "pack"), batches: int = 200,
        warmup: int = 20, steps: int = 10, threads: int = 4,
        prefetch: int = 128,
        model_overrides: Optional[dict[str, Any]] = None) -> dict[str, Any]:
  """Runs the benchmark; returns the measured figures.

  `model_overrides` replaces fields of the preset's config (tests use a
  one-layer model to compile faster).

  Returns:
    dict with 'load_before' / 'load_after' (1-min load averages), 'cpus',
    'records', 'train_step_s', 'train_steps_per_s' and per mode
    {'batches_per_s', 'ratio', 'tokens_per_row', 'supervised_per_row'}
    under 'pipeline'.
  """
  from swirl_jax.data import sources  # pylint: disable=g-import-not-at-top
  load_before = os.getloadavg()[0]
  with tempfile.TemporaryDirectory(prefix="swirl_bench_data_") as tmp:
    workdir = workdir or tmp
    if data_dir is None:
      data_dir = os.path.join(tmp, "data")
      trajectories.prepare_dataset(demonstration_records(num_per_task),
                                   data_dir, shards=4)
    tokenizer = tokenizer or sources.tokenizer_path_for(workdir)
    from swirl_jax.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
    vocab_size = Tokenizer(tokenizer).vocab_size
    num_records = len(trajectories.open_data_source(data_dir))
    results: dict[str, Any] = {"cpus": _cpus(), "records": num_records,
                               "seq": seq, "batch": batch, "preset": preset,
                               "threads": threads, "pipeline": {}}
    sample = None
    for mode in modes:
      stats = pipeline.TruncationStats()
      ds = trajectories.filtered_steps_sft_dataset(
          workdir, 0, 1, 0, data_dir=data_dir, seq_len=seq,
          global_batch_size=batch, pack=mode == "pack",
          tokenizer_path=tokenizer, num_threads=threads,
          prefetch_buffer_size=prefetch, stats=stats)
      it = pipeline.make_iterator(ds)
      for _ in range(warmup):
        last = next(it)
      rows = []
      start = time.perf_counter()
      for _ in range(batches):
        rows.append(next(it))
      elapsed = time.perf_counter() - start
      seg = np.stack([r["segment_ids"] for r in rows])
      mask = np.stack([r["loss_mask"] for r in rows])
      results["pipeline"][mode] = {
          "batches_per_s": batches / elapsed,
          "tokens_per_row": float(np.mean(np.sum(seg > 0, -1))),
          "supervised_per_row": float(np.mean(np.sum(mask, -1))),
          "truncation": stats.as_dict()}
      sample = sample or last
      del it, ds
    step_s = time_train_step(preset, vocab_size, sample, steps,
                             model_overrides)
    results["train_step_s"] = step_s
    results["train_steps_per_s"] = 1.0 / step_s
    for mode_result in results["pipeline"].values():
      mode_result["ratio"] = mode_result["batches_per_s"] * step_s
  results["load_before"] = load_before
  results["load_after"] = os.getloadavg()[0]
  return results


def report(results: dict[str, Any]) -> str:
  """Human-readable lines of `run`'s results."""
  lines = [
      f"records={results['records']} seq={results['seq']} "
      f"batch={results['batch']} preset={results['preset']} "
      f"threads={results['threads']} cpus={results['cpus']} "
      f"load(1min) before={results['load_before']:.2f} "
      f"after={results['load_after']:.2f}",
      f"train step            : {results['train_steps_per_s']:8.2f} steps/s "
      f"({results['train_step_s'] * 1e3:.1f} ms, median)"]
  for mode, r in results["pipeline"].items():
    lines.append(
        f"pipeline ({mode:4s})       : {r['batches_per_s']:8.2f} batches/s "
        f"= {r['ratio']:6.1f}x the train step "
        f"({'meets' if r['ratio'] >= 10 else 'BELOW'} the 10x goal; "
        f"{r['tokens_per_row']:.0f} tokens, {r['supervised_per_row']:.0f} "
        f"supervised per row)")
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=None,
                      help="a built trajectory dataset (default: scripted "
                           "demonstrations in a temp dir)")
  parser.add_argument("--tokenizer", default=None,
                      help="sentencepiece model (default: the tiny one)")
  parser.add_argument("--workdir", default=None,
                      help="where the tiny tokenizer is kept (default: a "
                           "temp dir, so it is trained anew)")
  parser.add_argument("--num_per_task", type=int, default=150)
  parser.add_argument("--seq", type=int, default=384)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--preset", default="tiny")
  parser.add_argument("--modes", default="pad,pack")
  parser.add_argument("--batches", type=int, default=200)
  parser.add_argument("--warmup", type=int, default=20)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--threads", type=int, default=4)
  parser.add_argument("--prefetch", type=int, default=128)
  parser.add_argument("--json", default=None, help="also write results here")
  args = parser.parse_args(argv)
  results = run(data_dir=args.data_dir, tokenizer=args.tokenizer,
                workdir=args.workdir, num_per_task=args.num_per_task,
                seq=args.seq, batch=args.batch, preset=args.preset,
                modes=tuple(m for m in args.modes.split(",") if m),
                batches=args.batches, warmup=args.warmup, steps=args.steps,
                threads=args.threads, prefetch=args.prefetch)
  print(report(results))
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=2, sort_keys=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
