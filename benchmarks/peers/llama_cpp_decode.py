"""llama.cpp's batch-1 decode on a GGUF file: the anchor CPU users know.

Runs in its own environment (llama-cpp-python is not a project dependency;
0.3.36 builds from its source distribution in about 6 minutes with the
system cmake and gcc):

    python3 -m venv /tmp/llamavenv
    /tmp/llamavenv/bin/pip install llama-cpp-python==0.3.36
    /tmp/llamavenv/bin/python benchmarks/peers/llama_cpp_decode.py \\
        --gguf ~/.cache/swirl_jax/gguf/gemma-3-270m-q4_k_m.gguf

The same workload as `benchmarks/sampler_throughput.py --gguf`: one prompt
of `--prompt_len` token ids (bos, then ids drawn with numpy's default_rng
seed 0 from [4, vocab)), exactly `--new` greedy tokens (end-of-sequence
ignored), prefill included, `--threads` threads; the median of `--repeats`
timed calls after one untimed. Prints one JSON line:
{"tokens_per_s": ..., "seconds": ..., "threads": ..., "new": ...}.
`sampler_throughput.py --llama_python PYTHON` runs this script and prints
its figure beside ours.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--gguf", required=True)
  parser.add_argument("--prompt_len", type=int, default=32)
  parser.add_argument("--new", type=int, default=64)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  import llama_cpp  # pylint: disable=g-import-not-at-top
  llm = llama_cpp.Llama(model_path=args.gguf, n_ctx=args.prompt_len
                        + args.new + 8, n_threads=args.threads,
                        n_threads_batch=args.threads, n_batch=512,
                        verbose=False)
  vocab = llm.n_vocab()
  rng = np.random.default_rng(0)
  prompt = [2] + rng.integers(4, vocab, args.prompt_len - 1).tolist()

  def call():
    llm.reset()
    llm.eval(prompt)
    for i in range(args.new):  # the first from the prefill's logits
      token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
      if i + 1 < args.new:
        llm.eval([token])

  call()
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  seconds = float(np.median(times))
  print(json.dumps({"tokens_per_s": args.new / seconds, "seconds": seconds,
                    "threads": args.threads, "new": args.new,
                    "llama_cpp": llama_cpp.__version__}))


if __name__ == "__main__":
  main()
