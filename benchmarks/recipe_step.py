"""One real recipe step at its quickstart workload, timed by part.

    make quickstart                                   # once: the workdir
    python benchmarks/recipe_step.py --workdir runs/quickstart
    python benchmarks/recipe_step.py --workdir runs/quickstart --task hotpotqa \\
        --steps 8 --threads 2
    python benchmarks/recipe_step.py --recipe r3 --workdir runs/r3_quickstart

`--recipe swirl` (default) times SWiRL's stage 2 as below; `--recipe r3`
times R3's GRPO stage the same way (`r3_step`: the reflection and the
retry sampler calls, verification and glue, the old / reference log-probs,
the updates of a cycle of inner_updates steps).

The step is the one `make quickstart` trains: the gin file's settings
(`--gin_file`, default gin_configs/experiments/quickstart.gin: 16 states x
4 sampled actions, contexts up to 768 tokens, 48 new tokens), the packaged
base policy, the workdir's tokenizer and the states its stage-1 synthesis
stored (`<workdir>/synthesis_<task>/data`), run by the real trainer
(`stages.train_stage`, gin scope 'swirl') in a temporary directory, so
nothing in the workdir changes. Per step:

  sample       `Sampler.generate` of the batch builder: the prefill of the
               16 contexts (shared by each group of 4 rows) and the decode
               loop, one jitted program;
    prefill    of which the prefill, measured after training by the same
               call with max_new_tokens=1 on the same prompts (each call
               run once untimed, so compiling is not counted);
               decode = sample - prefill;
  judge        the process judge on every sampled action (host Python);
  host glue    the rest of the batch builder: encoding the contexts,
               decoding the actions, the judge requests, the padded rows;
  update       the rest of the step: the trainer's data read, the jitted
               train step (the reference forward, the policy's forward,
               backward and AdamW), metrics;
    reference  of which the reference forward, measured after training as
               its own jitted call on the last batch;
    forward + backward  and the policy's forward and backward on that
               batch (the gradient of its loss-masked log-probs: the
               objective's model work without AdamW), likewise.

A step is the time between two consecutive batch-builder calls' "params
ready" (the call waits for the previous train step's parameters first: a
step is then one batch and one update, also where the trainer pulls a log
step's metrics); the first (compilation) is reported apart. Each new row length (or
prefix length) compiles the sampler and the train step again in a later
step: XLA's compile events (jax.monitoring) are summed per step, and the
parts are medians over the steps that compiled nothing ("steady"), with
the compiling steps' count and compile seconds beside them (`--steps`
timed in all; when every one compiled, the medians are over all of them
and the report says so). Checkpointing is off (checkpoint_every above the step count).
Ratios are meaningful side by side in one run; on a shared machine, rerun
when it is quiet (the load average is printed).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time


def _set_threads(threads: int) -> None:
  try:
    os.sched_setaffinity(0, set(range(min(threads, os.cpu_count() or 1))))
  except (AttributeError, OSError):
    pass


def _timed(store: list, fn):
  """fn, recording the seconds of each call into `store`."""

  def wrapper(*args, **kwargs):
    start = time.perf_counter()
    try:
      return fn(*args, **kwargs)
    finally:
      store.append(time.perf_counter() - start)
  return wrapper


def _warm_seconds(fn, repeats: int = 1) -> list:
  """Seconds of each of `repeats` calls of fn(), after one untimed call
  (which compiles a new shape); fn's result is waited for."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(fn())
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    seconds.append(time.perf_counter() - start)
  return seconds


def main(argv=None) -> dict:
  """Runs the benchmark; prints and returns the figures."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--recipe", default="swirl",
                      choices=("swirl", "score", "r3"))
  parser.add_argument("--stage", default="stage2",
                      choices=("stage1", "stage2"),
                      help="--recipe score: the SCoRe stage to time")
  parser.add_argument("--workdir", required=True,
                      help="a finished (or at least synthesised) quickstart "
                      "workdir of the recipe")
  parser.add_argument("--gin_file", action="append", default=None)
  parser.add_argument("--gin", action="append", default=[],
                      metavar="NAME=VALUE", help="extra gin bindings")
  parser.add_argument("--task", default="gsm8k")
  parser.add_argument("--steps", type=int, default=12)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--prefix_bucket", type=int, default=64,
                      help="StepwiseBatchBuilder(shared_prefix_bucket=N): "
                      "> 0 (64, the experiment's default): the rows are "
                      "re-laid so that the update's forwards compute each "
                      "state's context once for its G rows, the prefix a "
                      "multiple of N; 0: the plain layout, every row whole")
  args = parser.parse_args(argv)
  if args.steps < 1:
    parser.error(f"--steps must be >= 1, got {args.steps}")
  if args.recipe == "r3":
    return r3_step(parser, args, argv)
  if args.recipe == "score":
    return score_step(parser, args, argv)
  data_dir = os.path.join(args.workdir, f"synthesis_{args.task}", "data")
  if not os.path.isdir(data_dir):
    parser.error(f"no stored states at {data_dir}: run `make quickstart` "
                 "(or the experiment's synthesis stage) first, or pick "
                 "another --task")
  from swirl_jax import allocator  # pylint: disable=g-import-not-at-top
  if argv is None:
    allocator.reexec_with_fast_allocator()
  _set_threads(args.threads)

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  compiles, stop_compile_log = _compile_log()

  from swirl_jax import gin_utils  # pylint: disable=g-import-not-at-top
  from swirl_jax import models  # pylint: disable=g-import-not-at-top
  from swirl_jax import registry  # pylint: disable=g-import-not-at-top,unused-import
  from swirl_jax import stages  # pylint: disable=g-import-not-at-top
  from swirl_jax.objectives.common import target_logprobs  # pylint: disable=g-import-not-at-top
  from swirl_jax.swirl import experiment  # pylint: disable=g-import-not-at-top
  from swirl_jax.swirl import stepwise  # pylint: disable=g-import-not-at-top

  gin_files = args.gin_file or ["gin_configs/experiments/quickstart.gin"]
  steps = args.steps + 2  # the first interval compiles; the last is open
  gin_utils.parse(gin_files, list(args.gin) + [
      f"swirl/swirl_jax.training.trainer.train.checkpoint_every = "
      f"{10 * steps}",
      "swirl_jax.training.trainer.train.async_checkpoints = False"])

  cfg = experiment.SwirlConfig()  # with the gin files' bindings
  config, init_from = cfg.model_config, cfg.init_from
  if init_from is None:  # the experiment warm-started its own base
    init_from = stages.stage_dir(os.path.abspath(args.workdir),
                                 experiment.WARM_START)
  groups_per_step, actions = cfg.groups_per_step, cfg.group_size
  max_new, context, seed = (cfg.max_new_tokens, cfg.max_context_tokens,
                            cfg.seed)
  tokenizer = stages.experiment_tokenizer(os.path.abspath(args.workdir))
  builder = stepwise.StepwiseBatchBuilder(
      config, tokenizer, cfg.judge_fn(), group_size=actions,
      max_new_tokens=max_new, temperature=1.0, seq_len=context,
      seed=seed + 7,
      shared_prefix_bucket=args.prefix_bucket)

  sample_s, judge_s, readies, builder_s = [], [], [], []
  prompts_seen, batches, shapes = [], [], []
  generate = builder.sampler.generate

  def recording_generate(prompts, *a, **kw):
    prompts_seen.append((list(prompts), kw.get("group_size", 1)))
    return generate(prompts, *a, **kw)

  builder.sampler.generate = _timed(sample_s, recording_generate)
  builder.judge.judge_steps = _timed(judge_s, builder.judge.judge_steps)
  call = builder.__call__

  def timed_call(params, records, step):
    # The previous train step runs asynchronously: wait for its params here,
    # so that its time counts as 'update', not as the sampler's. Steps are
    # timed from one "params ready" to the next: a log step's metrics pull
    # waits for its train step, so the calls' starts would put two updates
    # in a log step and none in the next.
    jax.block_until_ready(params)
    ready = time.perf_counter()
    readies.append(ready)
    batch = call(params, records, step)
    builder_s.append(time.perf_counter() - ready)
    batches.append(batch)
    shapes.append((batch["inputs"].shape[1],
                   batch.get("prefix_inputs", batch["inputs"][:, :0]).shape[1]))
    del batches[:-1]
    return batch

  load_before = os.getloadavg()
  with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    stages.train_stage(
        tmp, "swirl_bench", scope="swirl", model_config=config,
        dataset_fn=experiment.states_dataset_fn(data_dir, groups_per_step),
        objective="stepwise_pg", batch_fn=timed_call, init_from=init_from,
        train_steps=steps)
    total_s = time.perf_counter() - t0
  if len(readies) < steps:
    raise RuntimeError(f"the trainer called the batch builder {len(readies)} "
                       f"times for {steps} steps.")

  # The trained params were donated to the train step: reload the base.
  model = models.Transformer(config)
  params = stages.load_policy(config, init_from, seed)
  builder.sampler.update_params(params)

  # Prefill alone, on the prompts of the timed steps: each call twice, the
  # second timed (a new prompt length compiles the first).
  prefill_s = [_warm_seconds(lambda p=prompts, i=i, g=group: generate(
      p, 1, temperature=1.0, seed=i, group_size=g))[0]
               for i, (prompts, group) in enumerate(prompts_seen[1:steps - 1])]

  # The reference forward on the last batch, as its own jitted call.
  batch = {k: v for k, v in batches[-1].items()
           if k in ("inputs", "targets", "segment_ids", "positions",
                    "prefix_inputs")}
  ref_fn = jax.jit(lambda p, b: target_logprobs(model, p, b))
  ref_s = _warm_seconds(lambda: ref_fn(params, batch), 3)
  # The forward and backward of the policy on it (the gradient of its
  # actions' log-probs: the objective's model work without AdamW).
  weights = np.asarray(batches[-1]["loss_mask"], np.float32)
  grad_fn = jax.jit(jax.grad(lambda p, b: jnp.sum(
      target_logprobs(model, p, b) * weights)))
  grad_s = _warm_seconds(lambda: grad_fn(params, batch), 3)

  stop_compile_log()

  intervals = range(1, steps - 1)  # between params ready 1..steps-1
  step_s = [readies[i + 1] - readies[i] for i in intervals]
  compile_s = [sum(d for end, d in compiles
                   if readies[i] <= end < readies[i + 1])
               for i in intervals]
  timed = [i for i, c in zip(intervals, compile_s) if c == 0] or \
      list(intervals)
  med = statistics.median
  parts = {
      "sample": med(sample_s[i] for i in timed),
      "judge": med(judge_s[i] for i in timed),
      "builder": med(builder_s[i] for i in timed),
  }
  step = med(readies[i + 1] - readies[i] for i in timed)
  glue = parts["builder"] - parts["sample"] - parts["judge"]
  update = step - parts["builder"]
  results = {
      "task": args.task, "states": groups_per_step, "actions": actions,
      "new_tokens": max_new, "context": context,
      "rows": list(batches[-1]["inputs"].shape), "threads": args.threads,
      "load_before": load_before[0], "load_after": os.getloadavg()[0],
      "prefix_bucket": args.prefix_bucket,
      "shapes": sorted(set(shapes)), "stage_s": total_s, "steps": steps,
      "first_step_s": readies[1] - readies[0], "step_s": step_s,
      "compile_s": compile_s,
      "steady_steps": sum(c == 0 for c in compile_s),
      "parts": {"step": step, "sample": parts["sample"],
                "prefill": med(prefill_s),
                "decode": parts["sample"] - med(prefill_s),
                "judge": parts["judge"], "host glue": glue,
                "update": update, "reference forward": med(ref_s),
                "forward + backward": med(grad_s)}}
  print(report(results))
  return results


def report(results) -> str:
  """The printed table of `main`'s results."""
  r, p = results, results["parts"]
  lines = [
      f"SWiRL stage-2 step, {r['task']}: {r['states']} states x "
      f"{r['actions']} actions, {r['new_tokens']} new tokens, contexts <= "
      f"{r['context']}; last batch rows {r['rows'][0]} x {r['rows'][1]} "
      f"tokens; shared context "
      f"{'once per state' if r['prefix_bucket'] else 'per row'}; "
      f"(row length, prefix) seen: {r['shapes']}",
      f"threads {r['threads']}; load average before {r['load_before']:.2f},"
      f" after {r['load_after']:.2f}; stage wall {r['stage_s']:.1f} s for "
      f"{r['steps']} steps; first step (compiles) {r['first_step_s']:.2f} s",
      _median_line(r)]
  for name in ("step", "sample", "prefill", "decode", "judge", "host glue",
               "update", "reference forward", "forward + backward"):
    indent = "    " if name in ("prefill", "decode", "reference forward",
                                "forward + backward") else "  "
    lines.append(f"{indent}{name:20s} {p[name]:7.3f} s  "
                 f"{100 * p[name] / p['step']:5.1f}%")
  lines.append("  steps: " + " ".join(
      f"{x:.2f}" + (f" (compiled {c:.1f})" if c else "")
      for x, c in zip(r["step_s"], r["compile_s"])))
  return "\n".join(lines)


def _median_line(r) -> str:
  n, steady = len(r["step_s"]), r["steady_steps"]
  compiled = n - steady
  total = sum(r["compile_s"])
  if not steady:
    return (f"median over all {n} steps; every one compiled (for new row "
            f"lengths, {total:.1f} s in all): not a steady-state figure")
  return (f"median over the {steady} of {n} steps that compiled nothing "
          f"(the other {compiled} compiled for new row lengths, "
          f"{total:.1f} s in all):")


def _compile_log():
  """(events, stop): XLA backend compiles as (perf_counter at the end,
  seconds), recorded until stop() is called."""
  from jax import monitoring  # pylint: disable=g-import-not-at-top
  events = []

  def on_event(event, duration, **_):
    if event == "/jax/core/compile/backend_compile_duration":
      events.append((time.perf_counter(), duration))
  monitoring.register_event_duration_secs_listener(on_event)
  return events, lambda: monitoring.unregister_event_duration_listener(
      on_event)


def firsts_of(sampled):
  """The steps whose batch-builder call sampled (a cycle's first)."""
  return [i for i, s in enumerate(sampled) if s]


def _start_jax(args, argv):
  """Fast allocator, pinned threads, jax imported; the compile log."""
  from swirl_jax import allocator  # pylint: disable=g-import-not-at-top
  if argv is None:
    allocator.reexec_with_fast_allocator()
  _set_threads(args.threads)
  import jax  # pylint: disable=g-import-not-at-top,unused-import
  return _compile_log()


def time_rl_cycles(builder, train, reload_params, call_names, compiles,
                   stop_compile_log):
  """Times the cycles of an RL stage driven by an `RLBatchBuilder`.

  A cycle is the steps that share one sampled batch (`inner_updates`): its
  first step samples (the builder's sampler calls, verification, the rows,
  the log-probs), every step updates. The sampler calls of a cycle are
  named in turn by `call_names` (e.g. ('attempt 1', 'attempt 2') for each
  task of a SCoRe step); each is re-run with max_new_tokens=1 after
  training, on `reload_params()` (the trained params were donated), to
  time its prefill. The engines' verification time is its own part.

  Args:
    builder: the stage's batch builder (its sampler, engines and _logprobs
      are wrapped to time them).
    train: fn(batch_fn) running the stage with that batch_fn.
    reload_params: fn() -> params to re-run the prefills with.
    call_names: names of the sampler calls of a cycle, cycled through.
    compiles / stop_compile_log: `_compile_log()`.
  Returns:
    {'cycles': per-cycle dicts, 'steady_cycles', 'stage_s', 'load_before',
     'load_after', 'parts': medians over the cycles that compiled nothing}.
  """
  import jax  # pylint: disable=g-import-not-at-top
  calls, logprob_s, readies, builder_s, sampled, verify = [], [], [], [], [], []
  generate = builder.sampler.generate

  def timed_generate(prompts, *a, **kw):
    t = time.perf_counter()
    out = generate(prompts, *a, **kw)
    calls.append((len(readies) - 1, time.perf_counter() - t, len(prompts),
                  (list(prompts), kw)))
    return out

  builder.sampler.generate = timed_generate
  builder._logprobs = _timed(logprob_s, builder._logprobs)  # pylint: disable=protected-access
  call = builder.__call__

  def timed_call(params, records, step):
    jax.block_until_ready(params)  # cycles from params ready to ready
    ready = time.perf_counter()
    readies.append(ready)
    n = len(logprob_s)
    batch = call(params, records, step)
    for engine in builder.engines.values():  # made on first use
      if not getattr(engine, "_timed_finish", False):
        finish = engine._finish  # pylint: disable=protected-access

        def timed_finish(start, num, engine=engine, finish=finish):
          verify.append((len(readies) - 1, engine._stats.verify_s))  # pylint: disable=protected-access
          finish(start, num)
        engine._finish, engine._timed_finish = timed_finish, True  # pylint: disable=protected-access
    builder_s.append(time.perf_counter() - ready)
    sampled.append(len(logprob_s) > n)
    return batch

  load_before = os.getloadavg()
  t0 = time.perf_counter()
  train(timed_call)
  total_s = time.perf_counter() - t0
  stop_compile_log()

  firsts = firsts_of(sampled)
  builder.sampler.update_params(reload_params())
  prefill_s = {}
  for k, (step, _, _, (prompts, kw)) in enumerate(calls):
    if step in firsts[1:-1]:
      kw = {key: v for key, v in kw.items() if key != "max_new_tokens"}
      prefill_s[k] = _warm_seconds(
          lambda p=prompts, kw=kw: generate(p, 1, **kw))[0]
  builder.close()

  rows = []  # one per closed cycle after the first
  for c, i in enumerate(firsts[1:-1], start=1):
    end = firsts[c + 1]
    mine = [(d, n, prefill_s.get(k, 0.0)) for k, (step, d, n, _)
            in enumerate(calls) if step == i]
    row = {"cycle_s": readies[end] - readies[i],
           "rows": [n for _, n, _ in mine],
           "logprobs_s": logprob_s[c], "builder_s": builder_s[i],
           "verify_s": sum(v for step, v in verify if step == i),
           "compile_s": sum(d for t, d in compiles
                            if readies[i] <= t < readies[end])}
    for name in call_names:
      row[f"{name} call"] = row[f"{name} prefill"] = 0.0
    for k, (d, _, p) in enumerate(mine):
      name = call_names[k % len(call_names)]
      row[f"{name} call"] += d
      row[f"{name} prefill"] += p
    rows.append(row)
  steady = [r for r in rows if r["compile_s"] == 0] or rows
  med = lambda key: statistics.median(r[key] for r in steady)
  parts = {"cycle": med("cycle_s")}
  for name in call_names:
    parts[f"{name} call"] = med(f"{name} call")
    parts[f"{name} prefill"] = med(f"{name} prefill")
  parts["verify"] = med("verify_s")
  parts["log-probs"] = med("logprobs_s")
  parts["host glue"] = med("builder_s") - sum(
      parts[f"{name} call"] for name in call_names) - parts["log-probs"] \
      - parts["verify"]
  parts["updates"] = parts["cycle"] - med("builder_s")
  return {"cycles": rows,
          "steady_cycles": sum(r["compile_s"] == 0 for r in rows),
          "stage_s": total_s, "load_before": load_before[0],
          "load_after": os.getloadavg()[0], "parts": parts}


def cycles_report(title: str, results: dict) -> str:
  """The printed table of `time_rl_cycles`' results under `title`."""
  r, parts = results, results["parts"]
  rows = r["cycles"]
  lines = [
      f"{title}; sampler rows per call {rows[-1]['rows'] if rows else []}",
      f"threads {r['threads']}; load average before {r['load_before']:.2f}, "
      f"after {r['load_after']:.2f}; stage wall {r['stage_s']:.1f} s for "
      f"{r['steps']} steps",
      f"median over the {r['steady_cycles']} of {len(rows)} cycles "
      "that compiled nothing:"]
  for name, value in parts.items():
    indent = "    " if name.endswith("prefill") else "  "
    lines.append(f"{indent}{name:20s} {value:7.3f} s  "
                 f"{100 * value / parts['cycle']:5.1f}%")
  lines.append("  cycles: " + " ".join(
      f"{c['cycle_s']:.2f}" + (f" (compiled {c['compile_s']:.1f})"
                               if c["compile_s"] else "") for c in rows))
  return "\n".join(lines)


def r3_step(parser, args, argv) -> dict:
  """R3's GRPO stage at the quickstart workload, timed by part.

  The workdir's vanilla model (its 'sft' stage), tokenizer and failures
  (`failures/data`); the gin file's settings (default
  gin_configs/experiments/r3_quickstart.gin: pools of 24 failed queries,
  8 reflections each, 8 groups kept, 2 inner updates); the real trainer
  (gin scope 'grpo') in a temporary directory. A cycle's sampler calls are
  the reflection call and the retry call (`time_rl_cycles`).
  """
  data_dir = os.path.join(args.workdir, "failures", "data")
  vanilla = os.path.join(os.path.abspath(args.workdir), "sft")
  for path in (data_dir, vanilla):
    if not os.path.isdir(path):
      parser.error(f"no {path}: run the R3 quickstart (or its SFT and "
                   "failure stages) first")
  compiles, stop_compile_log = _start_jax(args, argv)
  from swirl_jax import gin_utils  # pylint: disable=g-import-not-at-top
  from swirl_jax import registry  # pylint: disable=g-import-not-at-top,unused-import
  from swirl_jax import stages  # pylint: disable=g-import-not-at-top
  from swirl_jax.r3 import batches as r3_batches  # pylint: disable=g-import-not-at-top
  from swirl_jax.r3 import experiment  # pylint: disable=g-import-not-at-top
  from swirl_jax.data import failures  # pylint: disable=g-import-not-at-top

  gin_files = args.gin_file or ["gin_configs/experiments/r3_quickstart.gin"]
  gin_utils.parse(gin_files, list(args.gin) + [
      "grpo/swirl_jax.training.trainer.train.checkpoint_every = 1000000",
      "swirl_jax.training.trainer.train.async_checkpoints = False"])
  cfg = experiment.R3Config()  # with the gin files' bindings
  mu = cfg.inner_updates
  steps = (args.steps + 2) * mu  # the first cycle compiles; the last is open
  config, seed, groups, pool, g = (cfg.model_config, cfg.seed,
                                   cfg.groups_per_step, cfg.pool,
                                   cfg.group_size)
  tokenizer = stages.experiment_tokenizer(os.path.abspath(args.workdir))
  reference = (stages.load_policy(config, vanilla, seed)
               if cfg.reference_in_batch else None)
  builder = r3_batches.ReflectionBatchBuilder(
      config, tokenizer, task_kwargs=cfg.task_kwargs,
      group_size=g, groups_per_step=groups, inner_updates=mu,
      max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
      retry_temperature=cfg.retry_temperature, seq_len=cfg.grpo_seq_len,
      seed=seed, reference_params=reference, old_logprobs=cfg.old_logprobs)

  def train(batch_fn):
    with tempfile.TemporaryDirectory() as tmp:
      stages.train_stage(
          tmp, "r3_bench", scope="grpo", model_config=config,
          objective="grpo", train_steps=steps, init_from=vanilla, seed=seed,
          batch_fn=batch_fn, dataset_fn=failures.failures_dataset_fn(
              data_dir, global_batch_size=pool, repeat_each=mu))

  results = time_rl_cycles(
      builder, train, lambda: stages.load_policy(config, vanilla, seed),
      ("reflection", "retry"), compiles, stop_compile_log)
  results.update(recipe="r3", pool=pool, groups=groups, group_size=g,
                 inner_updates=mu, steps=steps, threads=args.threads)
  print(cycles_report(
      f"R3 GRPO cycle: pools of {pool} failed queries x {g} reflections, "
      f"{groups} groups kept, {mu} updates per sampled batch", results))
  return results


def score_step(parser, args, argv) -> dict:
  """A SCoRe RL stage (`--stage stage1` or `stage2`) at the quickstart
  workload, timed by part.

  The workdir's base model (its 'warm_start' stage; Stage II starts from
  'stage1' when the workdir has it), tokenizer and RL problems; the gin
  file's settings (default gin_configs/experiments/score_quickstart.gin:
  8 problems x 4 episodes of two 48-token attempts, rows up to 256); the
  builder the experiment trains with (`_Experiment.rl_builder`: the base as
  the reference, its log-probs in the batch) and the real trainer (gin
  scope of the stage) in a temporary directory. Each step samples; its
  sampler calls are each task's first and second attempts.
  """
  workdir = os.path.abspath(args.workdir)
  base = os.path.join(workdir, "warm_start")
  if not os.path.isdir(base):
    parser.error(f"no {base}: run the SCoRe quickstart (or its warm start) "
                 "first")
  compiles, stop_compile_log = _start_jax(args, argv)
  from swirl_jax import gin_utils  # pylint: disable=g-import-not-at-top
  from swirl_jax import registry  # pylint: disable=g-import-not-at-top,unused-import
  from swirl_jax import stages  # pylint: disable=g-import-not-at-top
  from swirl_jax.data import rl_records  # pylint: disable=g-import-not-at-top
  from swirl_jax.score import experiment  # pylint: disable=g-import-not-at-top

  gin_files = args.gin_file or ["gin_configs/experiments/score_quickstart.gin"]
  gin_utils.parse(gin_files, list(args.gin) + [
      "swirl_jax.training.trainer.train.async_checkpoints = False"])
  cfg = experiment.ScoreConfig()  # with the gin files' bindings
  adaptive = args.stage == "stage1" and cfg.adaptive_beta2 is not None
  if adaptive:
    cfg = dataclasses.replace(cfg, adaptive_beta2=cfg.adaptive_beta2
                              .with_beta2(experiment.stage1_loss_beta2()))
  exp = experiment._Experiment(workdir, cfg)  # pylint: disable=protected-access
  stage1 = os.path.join(workdir, "stage1")
  init_from = (stage1 if args.stage == "stage2" and os.path.isdir(stage1)
               else base)
  steps = args.steps + 2  # the first step compiles; the last is open
  builder = exp.rl_builder(base, adaptive=adaptive)
  records = exp.rl_records()

  def train(batch_fn):
    with tempfile.TemporaryDirectory() as tmp:
      stages.train_stage(
          tmp, args.stage, model_config=cfg.model_config,
          dataset_fn=rl_records.records_dataset_fn(
              records, global_batch_size=cfg.groups_per_step,
              what="problems"),
          objective=f"score_{args.stage}", train_steps=steps,
          checkpoint_every=10 * steps, init_from=init_from,
          batch_fn=batch_fn, seed=cfg.seed)

  results = time_rl_cycles(
      builder, train,
      lambda: stages.load_policy(cfg.model_config, init_from, cfg.seed),
      ("attempt 1", "attempt 2"), compiles, stop_compile_log)
  results.update(recipe="score", stage=args.stage, steps=steps,
                 groups=cfg.groups_per_step, group_size=cfg.group_size,
                 threads=args.threads)
  print(cycles_report(
      f"SCoRe {args.stage} step: {cfg.groups_per_step} problems x "
      f"{cfg.group_size} episodes of two attempts ({cfg.max_new_tokens}"
      f" new tokens each), rows <= {cfg.rl_seq_len}, tasks "
      f"{', '.join(cfg.tasks)}", results))
  return results


if __name__ == "__main__":
  main()
