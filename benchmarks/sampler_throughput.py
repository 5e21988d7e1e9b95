"""Sampler throughput: ours against `transformers` generate, and vs the roofline.

CPU (default): the tiny preset, same random weights exported to a Hugging Face
directory and loaded by `transformers`; same batch, prompt length and number of
new tokens, greedy; prints tokens/s for both and the ratio.

    python benchmarks/sampler_throughput.py --batch 8 --prompt_len 32 --new 128

The real pretrained model (`--gguf`): gemma3-270m dequantised from its
packaged GGUF by `checkpoints.gguf`, and `transformers` loading the same
file with its own GGUF reader (float32 both); `--batch` may list sizes:

    python benchmarks/sampler_throughput.py --gguf gemma-3-270m-q4_k_m.gguf \
        --batch 1,8 --new 64 --repeats 2

`--decode float,int8_unembed,int8` times the int8 decode weights beside
float32 (`Sampler(unembed='int8')`: the unembedding table only;
`Sampler(unembed='int8', body='int8')`: the blocks' kernels too;
`int8_prefill`: `prefill='int8'` as well, the prompt on the int8 body) and prints
how many greedy tokens equal the first mode's;
`--llama_python PY` runs benchmarks/peers/llama_cpp_decode.py with that
interpreter (llama-cpp-python in its own venv) on the same file at batch 1.

Groups of identical prompts (`--group G`; R3's G reflections of one failed
attempt, GRPO's G samples of one query): the same call with each prompt
prefilled G times (`group_size=1`) and once per group (`group_size=G`),
side by side, and the prefill alone (one new token) both ways; R3's
quickstart reflection call is 24 failures x 8 at about 128 context tokens:

    python benchmarks/sampler_throughput.py --group 8 --batch 192 \
        --prompt_len 128 --new 64 --temperature 1.0

GPU (`--roofline`): gemma2-2b shapes with random bfloat16 weights, context
1k, batch sizes 1..256; prints decode tokens/s and the fraction of the
memory-bandwidth roofline, where one decode step must read all weights plus
the KV cache in use: bytes = params * 2 + B * S * layers * 2 * K * H * 2.

    python benchmarks/sampler_throughput.py --roofline --batches 1,8,64,256
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from swirl_jax import models
from swirl_jax.sampling import Sampler

# HBM bandwidth in bytes/s by device kind (vendor data sheets).
HBM_BANDWIDTH = {
    "H100": 3.35e12,  # SXM5 80GB
    "H200": 4.8e12,
    "A100": 2.0e12,  # 80GB SXM
}

# --decode modes: the Sampler's decode-weight options.
DECODE_MODES = {"float": {},
                "int8_unembed": {"unembed": "int8"},
                "int8": {"unembed": "int8", "body": "int8"},
                "int8_prefill": {"unembed": "int8", "body": "int8",
                                 "prefill": "int8"}}


def _prompts(batch, length, vocab, seed=0):
  rng = np.random.default_rng(seed)
  return [[2] + rng.integers(4, vocab, length - 1).tolist()
          for _ in range(batch)]


def _time(fn, repeats):
  fn()  # warm-up / compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def cpu_comparison(args):
  import torch
  import transformers
  from swirl_jax.checkpoints import hf
  torch.set_num_threads(os.cpu_count() or 1)
  if args.gguf:
    from swirl_jax.checkpoints import gguf
    path = gguf.resolve_path(args.gguf)
    config, params = gguf.load(path)
    args.preset = os.path.basename(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path),
        dtype=torch.float32).eval()
  else:
    config = models.get_config(args.preset)
    params = models.init_params(config, jax.random.key(0))
    with tempfile.TemporaryDirectory() as tmp:
      hf.save(os.path.join(tmp, "model"), config, params)
      model = transformers.AutoModelForCausalLM.from_pretrained(
          os.path.join(tmp, "model"), dtype=torch.float32).eval()
  model.generation_config.eos_token_id = None
  modes = args.decode.split(",")
  for m in modes:
    if m not in DECODE_MODES:
      raise SystemExit(f"--decode mode {m!r}; choose from "
                       f"{sorted(DECODE_MODES)}.")
  samplers = {m: Sampler(config, params, stop_tokens=(), **DECODE_MODES[m])
              for m in modes}
  print(f"preset={args.preset} prompt={args.prompt_len} new={args.new} "
        f"device={jax.devices()[0].platform} cores={os.cpu_count()} "
        f"threads(torch)={torch.get_num_threads()} greedy, float32 weights")
  llama = _llama_cpp(args, path) if args.gguf and args.llama_python else None
  if llama:
    print(f"batch=  1 llama.cpp {llama['llama_cpp']} ({os.path.basename(path)}"
          f", {llama['threads']} threads): {llama['tokens_per_s']:8.1f} "
          f"tokens/s ({llama['seconds'] * 1e3:.0f} ms per call, prefill "
          "included)", flush=True)
  for batch in [int(b) for b in str(args.batch).split(",")]:
    prompts = _prompts(batch, args.prompt_len, config.vocab_size)
    times, outs = {}, {}
    for mode, sampler in samplers.items():
      def ours(sampler=sampler, mode=mode):
        outs[mode] = sampler.generate(prompts, args.new)
        assert all(len(t) == args.new for t in outs[mode].tokens)
      times[mode] = _time(ours, args.repeats)
    ids = torch.tensor(prompts)
    mask = torch.ones_like(ids)

    def theirs():
      with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=mask,
                       max_new_tokens=args.new, min_new_tokens=args.new,
                       do_sample=False, pad_token_id=0)
    t_theirs = _time(theirs, args.repeats)
    n = batch * args.new
    for mode, t in times.items():
      same = ""
      if mode != modes[0]:
        agree = np.mean([a == b for x, y in zip(outs[modes[0]].tokens,
                                                outs[mode].tokens)
                         for a, b in zip(x, y)])
        same = f"; tokens equal to {modes[0]}'s: {100 * agree:.0f}%"
      print(f"batch={batch:3d} swirl_jax Sampler ({mode:12s}): {n / t:8.1f} "
            f"tokens/s ({t * 1e3:.0f} ms per call, prefill included{same})")
    print(f"batch={batch:3d} transformers generate  : {n / t_theirs:8.1f} "
          f"tokens/s ({t_theirs * 1e3:.0f} ms per call)")
    for mode, t in times.items():
      line = (f"batch={batch:3d} ratio ({mode} / transformers): "
              f"{t_theirs / t:6.2f}x")
      if llama:
        line += (f"; ({mode} / llama.cpp batch 1): "
                 f"{n / t / llama['tokens_per_s']:6.2f}x")
      print(line, flush=True)


def _llama_cpp(args, path):
  """llama.cpp's batch-1 figure from `peers/llama_cpp_decode.py`, run by
  --llama_python (its own environment), or None when it fails."""
  import json
  import subprocess
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers",
                        "llama_cpp_decode.py")
  run = subprocess.run(
      [args.llama_python, script, "--gguf", path, "--prompt_len",
       str(args.prompt_len), "--new", str(args.new), "--threads",
       str(args.threads), "--repeats", str(args.repeats)],
      capture_output=True, text=True, check=False)
  if run.returncode:
    print(f"llama.cpp run failed (exit {run.returncode}): "
          f"{run.stderr.strip()[-500:]}")
    return None
  return json.loads(run.stdout.strip().splitlines()[-1])


def group_comparison(args):
  config = models.get_config(args.preset)
  params = models.init_params(config, jax.random.key(0))
  sampler = Sampler(config, params, stop_tokens=())
  g = args.group
  print(f"preset={args.preset} prompt={args.prompt_len} new={args.new} "
        f"group={g} temperature={args.temperature} "
        f"device={jax.devices()[0].platform} cores={os.cpu_count()} float32")
  for batch in [int(b) for b in str(args.batch).split(",")]:
    if batch % g:
      raise SystemExit(f"--batch {batch} is not a multiple of --group {g}.")
    prompts = [p for p in _prompts(batch // g, args.prompt_len,
                                   config.vocab_size) for _ in range(g)]
    times, outs = {}, {}
    for size in (1, g):
      for new in (1, args.new):
        def call(size=size, new=new):
          outs[size, new] = sampler.generate(
              prompts, new, temperature=args.temperature, seed=0,
              group_size=size)
        times[size, new] = _time(call, args.repeats)
    same = outs[1, args.new].tokens == outs[g, args.new].tokens
    for size in (1, g):
      whole, prefill = times[size, args.new], times[size, 1]
      print(f"batch={batch:3d} group_size={size:2d}: {whole * 1e3:8.1f} ms "
            f"per call ({batch * args.new / whole:8.1f} tokens/s), prefill "
            f"{prefill * 1e3:7.1f} ms, decode {(whole - prefill) * 1e3:7.1f}"
            " ms")
    print(f"batch={batch:3d} ratio (group_size=1 / group_size={g}): "
          f"{times[1, args.new] / times[g, args.new]:.2f}x per call, "
          f"{times[1, 1] / times[g, 1]:.2f}x prefill; same tokens: {same}",
          flush=True)


def roofline(args):
  device = jax.devices()[0]
  kind = next((k for k in HBM_BANDWIDTH if k in device.device_kind), None)
  bandwidth = HBM_BANDWIDTH.get(kind) if kind else None
  config = models.get_config(args.preset, dtype="bfloat16",
                             param_dtype="bfloat16")
  params = models.init_params(config, jax.random.key(0))
  weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
  print(f"device={device.device_kind} preset={args.preset} "
        f"weights={weight_bytes / 1e9:.2f} GB context={args.context} "
        f"new={args.new}")
  sampler = Sampler(config, params, prompt_bucket=128)
  for batch in [int(b) for b in args.batches.split(",")]:
    prompts = _prompts(batch, args.context, config.vocab_size)
    short = 8
    # Decode time = time(prefill + N steps) - time(prefill + `short` steps).
    t_long = _time(lambda: sampler.generate(prompts, args.new), args.repeats)
    t_short = _time(lambda: sampler.generate(prompts, short), args.repeats)
    step = (t_long - t_short) / (args.new - short)
    cache_len = -(-args.context // 128) * 128 + -(-args.new // 128) * 128
    kv_bytes = (batch * cache_len * config.num_layers * 2 *
                config.num_kv_heads * config.head_dim * 2)
    line = (f"batch={batch:4d} decode {batch / step:10.1f} tokens/s "
            f"step {step * 1e3:7.2f} ms")
    if bandwidth:
      ideal = (weight_bytes + kv_bytes) / bandwidth
      line += f"  roofline fraction {ideal / step:5.1%}"
    print(line, flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default=None)
  parser.add_argument("--batch", default="8",
                      help="batch size, or sizes: 1,8 (CPU comparison)")
  parser.add_argument("--gguf", default=None,
                      help="compare on a Gemma GGUF file's real weights")
  parser.add_argument("--prompt_len", type=int, default=32)
  parser.add_argument("--new", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--group", type=int, default=1,
                      help="> 1: groups of this many identical prompts, "
                      "prefilled per row vs once per group (no transformers)")
  parser.add_argument("--temperature", type=float, default=0.0,
                      help="--group only: the sampling temperature")
  parser.add_argument("--decode", default="float",
                      help="decode-weight modes to time, from "
                      f"{sorted(DECODE_MODES)}, e.g. float,int8 (the first "
                      "is the reference for the tokens-equal figure)")
  parser.add_argument("--llama_python", default=None,
                      help="with --gguf: a Python with llama-cpp-python, to "
                      "time llama.cpp's batch-1 decode of the same file")
  parser.add_argument("--threads", type=int, default=2,
                      help="llama.cpp's threads")
  parser.add_argument("--roofline", action="store_true")
  parser.add_argument("--batches", default="1,8,64,128,256")
  parser.add_argument("--context", type=int, default=1024)
  args = parser.parse_args()
  if args.roofline:
    args.preset = args.preset or "gemma2-2b"
    roofline(args)
  elif args.group > 1:
    args.preset = args.preset or "tiny"
    group_comparison(args)
  else:
    args.preset = args.preset or "tiny"
    cpu_comparison(args)


if __name__ == "__main__":
  main()
