"""Train-step throughput and model FLOPs utilisation (MFU).

    python benchmarks/train_step_mfu.py                      # tiny, CPU
    python benchmarks/train_step_mfu.py --preset gemma2-2b --seq 2048 \\
        --batch 8 --dtype bfloat16 --remat dots_no_batch      # on a GPU
    python benchmarks/train_step_mfu.py --preset gemma3-270m --batch 8 \\
        --seq 512 --steps 3 --freeze embedding --chunk_tokens 64  # real model

--against transformers also times the same step in transformers (PyTorch):
the same model built from our config (`checkpoints.hf.config_to_hf`), the
same batch of random ids, the loss over every position, AdamW with
clipping, the parameters matching --freeze given requires_grad=False, eager
mode, float32. Each implementation runs in its own child process, one after
the other in one run, so each prints its own peak memory.

--freeze takes `make_optimizer.frozen` patterns (the run's optimizer is the
project's AdamW with clipping); the peak resident memory of the process
(ru_maxrss) is printed, so compare variants in separate processes.

Model FLOPs per step = 6 * N * T + attention, with N the parameters without
the embedding lookup (the tied unembedding matmul counted once: 2 * D * V
per token forward) and attention 12 * layers * T * S_eff * H * heads (QK^T and
PV, forward and backward), S_eff = the keys each query sees on average
(causal: (S + 1) / 2, capped by the sliding window on local layers).
MFU = model FLOPs / step time / peak. The peak is the data-sheet dense peak
for known GPUs (H100 / H200 SXM: 989 TFLOP/s bf16); on a CPU, where there is
no data-sheet figure, it is the measured rate of a large float32 matmul, and
the result is labelled as such.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from swirl_jax import models
from swirl_jax.objectives import get_objective
from swirl_jax.training.optimizer import make_optimizer
from swirl_jax.training.train_state import TrainState
from swirl_jax.training.train_step import make_train_step

PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def model_flops_per_step(config, batch: int, seq: int) -> float:
  n = config.num_params(include_embedding=False)
  tokens = batch * seq
  dense = 6 * (n + config.embed_dim * config.vocab_size) * tokens
  attn = 0.0
  for kind in config.attention_types:
    s_eff = (seq + 1) / 2
    if kind == "local" and config.sliding_window_size:
      s_eff = min(s_eff, config.sliding_window_size)
    attn += 12 * tokens * s_eff * config.head_dim * config.num_heads
  return dense + attn


def measured_matmul_peak(dtype=jnp.float32, n=2048, repeats=5) -> float:
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  start = time.perf_counter()
  for _ in range(repeats):
    f(a).block_until_ready()
  return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="tiny")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seq", type=int, default=512)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--remat", default="none")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--param_dtype", default="float32")
  parser.add_argument("--freeze", nargs="*", default=(),
                      help="make_optimizer.frozen patterns, e.g. embedding")
  parser.add_argument("--memory_only", action="store_true",
                      help="compile the step and print XLA's memory "
                      "analysis (arguments, outputs, temporaries) without "
                      "running it")
  parser.add_argument("--chunk_tokens", type=int, default=None,
                      help="target_logprobs.chunk_tokens: logits formed this "
                      "many positions at a time")
  parser.add_argument("--group_size", type=int, default=1,
                      help="rows in groups of this many that share their "
                      "first --prefix tokens (an RL batch's layout)")
  parser.add_argument("--prefix", type=int, default=0,
                      help="shared prefix length: the step then computes "
                      "it once per group (objectives.shared_prefix)")
  parser.add_argument("--query_block", type=int, default=None,
                      help="models.attention.QUERY_BLOCK: query tokens per "
                      "block of the blocked attention (a huge value: one "
                      "block, the unblocked form)")
  parser.add_argument("--against", choices=("none", "transformers"),
                      default="none",
                      help="also time transformers' step on the same batch")
  parser.add_argument("--impl", choices=("swirl_jax", "transformers"),
                      default="swirl_jax", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.against != "none":
    return side_by_side(args)
  if args.impl == "transformers":
    return transformers_step(args)
  if args.chunk_tokens:
    import gin  # pylint: disable=g-import-not-at-top
    gin.bind_parameter("swirl_jax.objectives.common.target_logprobs."
                       "chunk_tokens", args.chunk_tokens)

  if args.query_block:
    from swirl_jax.models import attention  # pylint: disable=g-import-not-at-top
    attention.QUERY_BLOCK = args.query_block
  config = models.get_config(args.preset, dtype=args.dtype,
                             param_dtype=args.param_dtype)
  model = models.Transformer(config, remat_policy=args.remat)
  params = models.init_params(config, jax.random.key(0))
  tx = make_optimizer(optax.constant_schedule(1e-4), frozen=args.freeze)
  state = TrainState.create(params, tx, jax.random.key_data(jax.random.key(1)))
  b, s = args.batch, args.seq
  inputs = _random_batch(config.vocab_size, b, s)
  loss_mask = np.ones((b, s), np.float32)
  if args.prefix:
    if b % args.group_size or not 0 < args.prefix < s:
      raise SystemExit(f"--group_size {args.group_size} must divide --batch "
                       f"{b} and --prefix {args.prefix} lie in (0, {s}).")
    inputs[:, :args.prefix] = np.repeat(
        inputs[::args.group_size, :args.prefix], args.group_size, axis=0)
    loss_mask[:, :args.prefix] = 0.0  # as RL rows: no loss on the prompt
  batch = dict(inputs=inputs,
               targets=np.roll(inputs, -1, axis=1),
               loss_mask=loss_mask,
               positions=np.tile(np.arange(s, dtype=np.int32), (b, 1)),
               segment_ids=np.ones((b, s), np.int32))
  if args.prefix:
    from swirl_jax.objectives import shared_prefix  # pylint: disable=g-import-not-at-top
    batch = shared_prefix.with_shared_prefix(batch, args.group_size,
                                             bucket=1, length=args.prefix)
  batch = jax.device_put(batch)
  step = jax.jit(make_train_step(model, get_objective("sft"), tx,
                                 optax.constant_schedule(1e-4),
                                 frozen=args.freeze),
                 donate_argnums=(0,))
  if args.memory_only:
    compiled = step.lower(state, batch, None).compile()
    mem = compiled.memory_analysis()
    gib = lambda n: n / 2 ** 30  # noqa: E731
    print(f"preset={args.preset} batch={b} seq={s} dtype={args.dtype} "
          f"param_dtype={args.param_dtype} freeze={list(args.freeze)} "
          f"chunk_tokens={args.chunk_tokens} remat={args.remat} "
          f"group_size={args.group_size} prefix={args.prefix} "
          f"query_block={args.query_block}")
    print(f"XLA memory (GiB): arguments {gib(mem.argument_size_in_bytes):.2f}"
          f"  outputs {gib(mem.output_size_in_bytes):.2f}  temporaries "
          f"{gib(mem.temp_size_in_bytes):.2f}  (aliased "
          f"{gib(mem.alias_size_in_bytes):.2f})")
    return
  start = time.perf_counter()
  state, metrics = step(state, batch, None)
  jax.block_until_ready(metrics)
  first = time.perf_counter() - start
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    state, metrics = step(state, batch, None)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  step_time = float(np.median(times))
  flops = model_flops_per_step(config, b, s)
  device = jax.devices()[0]
  kind = next((k for k in PEAK_FLOPS if k in device.device_kind), None)
  if kind:
    peak, peak_label = PEAK_FLOPS[kind], f"{kind} data-sheet bf16 dense peak"
  else:
    peak = measured_matmul_peak()
    peak_label = "measured float32 2048^3 matmul rate on this device"
  print(f"device={device.device_kind} preset={args.preset} batch={b} seq={s} "
        f"dtype={args.dtype} param_dtype={args.param_dtype} "
        f"freeze={list(args.freeze)} chunk_tokens={args.chunk_tokens} "
        f"remat={args.remat} group_size={args.group_size} prefix={args.prefix} "
        f"query_block={args.query_block} "
        f"params={config.num_params():,}")
  print(f"first step (compile) : {first * 1e3:9.1f} ms")
  print(f"step time            : {step_time * 1e3:9.1f} ms (median of "
        f"{args.steps})")
  print(f"tokens/s             : {b * s / step_time:11,.0f}")
  print(f"model TFLOP/s        : {flops / step_time / 1e12:11.4f}")
  print(f"peak TFLOP/s         : {peak / 1e12:11.4f} ({peak_label})")
  print(f"MFU                  : {flops / step_time / peak:11.1%}")
  peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
  print(f"peak resident memory : {peak_rss:11.2f} GiB (whole process)")


def _random_batch(vocab: int, b: int, s: int) -> np.ndarray:
  return np.random.default_rng(0).integers(4, vocab, (b, s)).astype(np.int32)


def transformers_step(args):
  """The same step in transformers: forward, loss, backward, AdamW."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from swirl_jax.checkpoints import hf  # pylint: disable=g-import-not-at-top
  if args.dtype != "float32" or args.remat != "none":
    raise SystemExit("--against transformers compares float32 steps "
                     "without remat only.")
  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)
  config = models.get_config(args.preset)
  hf_config = transformers.AutoConfig.for_model(**hf.config_to_hf(config))
  model = transformers.AutoModelForCausalLM.from_config(
      hf_config, dtype=torch.float32)
  model.train()
  # --freeze patterns match our names; transformers' embed_tokens (tied
  # with the unembedding, as ours) is 'embedding', other parameters are
  # matched by their transformers names.
  frozen = [re.compile(p) for p in args.freeze]
  for name, p in model.named_parameters():
    ours = "embedding" if "embed_tokens" in name else name
    if any(f.search(ours) for f in frozen):
      p.requires_grad_(False)
  trained = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.AdamW(trained, lr=1e-4, weight_decay=0.0)
  b, s = args.batch, args.seq
  inputs = torch.from_numpy(_random_batch(config.vocab_size, b, s)).long()
  targets = torch.roll(inputs, -1, dims=1)

  def step():
    opt.zero_grad(set_to_none=True)
    logits = model(input_ids=inputs, use_cache=False).logits
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trained, 1.0)
    opt.step()
    return float(loss)

  start = time.perf_counter()
  step()
  first = time.perf_counter() - start
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  step_time = float(np.median(times))
  print(f"transformers {transformers.__version__} torch {torch.__version__} "
        f"threads={torch.get_num_threads()} preset={args.preset} batch={b} "
        f"seq={s} float32 eager freeze={list(args.freeze)} "
        f"trained params={sum(p.numel() for p in trained):,}")
  print(f"first step           : {first * 1e3:9.1f} ms")
  print(f"step time            : {step_time * 1e3:9.1f} ms (median of "
        f"{args.steps})")
  print(f"tokens/s             : {b * s / step_time:11,.0f}")
  peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
  print(f"peak resident memory : {peak_rss:11.2f} GiB (whole process)")


def side_by_side(args):
  """Runs ours, then transformers, each in a child process; prints both."""
  argv = [a for a in sys.argv[1:] if not a.startswith("--against")]
  if "transformers" in argv:  # '--against transformers' as two words
    argv.remove("transformers")
  rates = {}
  for impl in ("swirl_jax", "transformers"):
    print(f"== {impl} ==", flush=True)
    proc = subprocess.run([sys.executable, __file__, *argv, "--impl", impl],
                          capture_output=True, text=True, check=False)
    print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
      # A child the kernel kills for memory gets SIGKILL (-9): say so, and
      # what to try, instead of a CalledProcessError from subprocess.
      why = ("killed by signal 9, most likely out of memory at this batch "
             "and sequence length; try a smaller --batch" if
             proc.returncode == -9 else f"exit status {proc.returncode}")
      print(f"{impl} did not finish: {why}\n{proc.stderr[-2000:]}",
            flush=True)
      continue
    m = re.search(r"step time\s*:\s*([\d.]+) ms", proc.stdout)
    rates[impl] = float(m.group(1))
  if len(rates) < 2:
    print("ratio (transformers step / ours) : not measured (a side did not "
          "finish)")
    return
  print(f"ratio (transformers step / ours) : "
        f"{rates['transformers'] / rates['swirl_jax']:.2f}x")


if __name__ == "__main__":
  main()
