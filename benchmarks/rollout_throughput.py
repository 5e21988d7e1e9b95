"""Rollout throughput: multi-step calculator episodes with the tiny model.

A randomly initialised `tiny` model plays a batch of GSM8K episodes with the
calculator tool (`RolloutEngine.run`): one sampler call per step for all
rows still running, tool calls on the host thread pool, verification at the
end. Prints episodes/s, generated tokens/s and the share of wall-clock time
in the sampler, in tools, in verification and in Python glue (encoding,
decoding, parsing, bookkeeping). Goal: tools + verify + glue under 20%.

The first run compiles the sampler for each new (batch, prompt length)
bucket; it is reported separately, the figures come from the runs after it
(the number of XLA compilations during each is printed).

A random model almost never writes a well-formed tool call, so a second
section replays scripted correct solutions (one calculator call per
arithmetic step, then the answer) through a fake sampler with no model: it
measures the host side alone (tool calls, parsing, encoding, bookkeeping)
per episode, to compare with the sampler time per episode above.

    python benchmarks/rollout_throughput.py --batch 64 --new 64 --steps 5
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
import types

import jax

from swirl_jax import models
from swirl_jax import tokenizer as tok
from swirl_jax.rollout import RolloutEngine
from swirl_jax.sampling import Sampler
from swirl_jax.tasks import get_task
from swirl_jax.tools import get_tool

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_compiles = {"count": 0, "seconds": 0.0}


def _on_event(event: str, seconds: float, **kwargs) -> None:
  del kwargs
  if event == _COMPILE_EVENT:
    _compiles["count"] += 1
    _compiles["seconds"] += seconds


def _tokenizer(task, directory):
  """A 1024-piece tokenizer trained on GSM8K prompts and tool-call text."""
  texts = [task.prompt(e) for e in task.generate(200, seed=123)]
  texts += [tok.format_chat([("model", f"<math_exp> {a} * {a + 3} </math_exp>"),
                             ("user", f"{a} * {a + 3} -> {a * (a + 3)}"),
                             ("model", f"<answer> {a * (a + 3)} </answer>")])
            for a in range(50)]
  path = os.path.join(directory, "gsm8k.model")
  return tok.Tokenizer(tok.train_sentencepiece(texts, path, vocab_size=1024))


class ScriptedPolicy:
  """A fake sampler replaying each example's reference solution.

  Action i of an episode is the calculator call of the solution's i-th
  arithmetic step; after the last step it answers.
  """

  def __init__(self, tokenizer, examples):
    self.tok = tokenizer
    self.eot = tokenizer.end_of_turn_id
    self.scripts = {}
    for ex in examples:
      exprs = re.findall(r"<<([^=>]+)=", ex.metadata["solution"])
      self.scripts[ex.question] = (
          [f"Next I compute this. <math_exp> {e} </math_exp>" for e in exprs]
          + [f"So the result is <answer> {ex.answer} </answer>"])

  def generate(self, prompts, max_new_tokens, **kwargs):
    del max_new_tokens, kwargs
    tokens = []
    for prompt in prompts:
      text = self.tok.decode(prompt)
      start = text.rindex("Question: ") + len("Question: ")
      question = text[start:text.index("<end_of_turn>")]
      script = self.scripts[question]
      turn = min(text.count("<start_of_turn>model") - 1, len(script) - 1)
      tokens.append(self.tok.encode(script[turn]) + [self.eot])
    return types.SimpleNamespace(
        tokens=tokens, logprobs=[[-1.0] * len(t) for t in tokens],
        done=[True] * len(tokens))


def _report(name, stats, trajs):
  steps = sum(t.num_steps for t in trajs)
  malformed = sum(s.malformed is not None for t in trajs for s in t.steps)
  print(f"{name}: {stats.summary()}")
  print(f"  sampler calls {stats.num_sampler_calls}, model turns "
        f"{stats.num_model_turns}, tool calls {stats.num_tool_calls}, "
        f"malformed {malformed}/{steps}, finish "
        f"{ {k: v for k, v in stats.extra['finish_reasons'].items() if v} }, "
        f"accuracy {stats.extra['accuracy']:.2f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64,
                      help="episodes per run (one sample per example)")
  parser.add_argument("--new", type=int, default=64,
                      help="max_new_tokens of one model turn")
  parser.add_argument("--steps", type=int, default=5, help="step limit")
  parser.add_argument("--temperature", type=float, default=1.0)
  parser.add_argument("--prompt_bucket", type=int, default=128)
  parser.add_argument("--batch_bucket", type=int, default=16)
  parser.add_argument("--tool_workers", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=1,
                      help="timed runs after the compiling one")
  args = parser.parse_args()
  jax.monitoring.register_event_duration_secs_listener(_on_event)

  task = get_task("gsm8k", max_steps=args.steps)
  examples = task.generate(args.batch, seed=0, split="test")
  with tempfile.TemporaryDirectory() as tmp:
    tokenizer = _tokenizer(task, tmp)
  config = models.get_config("tiny")
  params = models.init_params(config, jax.random.key(0))
  sampler = Sampler(config, params, pad_id=tokenizer.pad_id,
                    prompt_bucket=args.prompt_bucket,
                    batch_bucket=args.batch_bucket)
  tools = {"math_exp": get_tool("calculator")}
  engine = RolloutEngine(
      sampler, tokenizer, tools, max_new_tokens=args.new,
      temperature=args.temperature, max_context_tokens=4096,
      tool_workers=args.tool_workers, progress=False)

  print(f"device={jax.devices()[0].platform} cores={os.cpu_count()} "
        f"model=tiny(random) episodes={args.batch} max_new_tokens={args.new} "
        f"step_limit={args.steps} prompt_bucket={args.prompt_bucket}")
  start = time.perf_counter()
  engine.run(task, examples, seed=1000)
  print(f"first run: {time.perf_counter() - start:.1f}s, with "
        f"{_compiles['count']} compilations ({_compiles['seconds']:.1f}s)")

  runs = []
  for r in range(args.repeats):
    _compiles.update(count=0, seconds=0.0)
    trajs = engine.run(task, examples, seed=r)
    runs.append(engine.last_stats)
    _report(f"run {r} ({_compiles['count']} compilations)", runs[-1], trajs)
  best = min(runs, key=lambda s: s.total_s)
  shares = best.shares()
  host = shares["tools"] + shares["verify"] + shares["glue"]
  print("--- tiny random model")
  print(f"trajectories/s       {best.trajectories_per_s:10.2f}")
  print(f"generated tokens/s   {best.tokens_per_s:10.1f}")
  print(f"sampler share        {shares['sampler']:10.1%}  "
        f"({best.sampler_s:.2f}s)")
  print(f"tools share          {shares['tools']:10.1%}  ({best.tools_s:.3f}s)")
  print(f"verify share         {shares['verify']:10.1%}  "
        f"({best.verify_s:.3f}s)")
  print(f"python glue share    {shares['glue']:10.1%}  ({best.glue_s:.3f}s)")
  print(f"tools+verify+glue    {host:10.1%}  (goal < 20%: "
        f"{'met' if host < 0.2 else 'NOT met'})")

  scripted = RolloutEngine(
      ScriptedPolicy(tokenizer, examples), tokenizer, tools,
      max_new_tokens=args.new, max_context_tokens=4096,
      tool_workers=args.tool_workers, progress=False)
  trajs = scripted.run(task, examples)
  stats = scripted.last_stats
  print("--- host side alone (scripted solutions, no model)")
  _report("scripted", stats, trajs)
  host_s = stats.tools_s + stats.verify_s + stats.glue_s
  per_turn = host_s / max(stats.num_model_turns, 1)
  print(f"host time {host_s * 1e3:.1f} ms for {stats.num_model_turns} model "
        f"turns and {stats.num_tool_calls} tool calls: "
        f"{per_turn * 1e3:.3f} ms per model turn (tools "
        f"{stats.tools_s * 1e3:.1f} ms, verify {stats.verify_s * 1e3:.1f} ms, "
        f"glue {stats.glue_s * 1e3:.1f} ms; the fake sampler's own "
        f"{stats.sampler_s * 1e3:.1f} ms excluded)")
  model_turn_s = best.sampler_s / max(best.num_model_turns, 1)
  print(f"vs the tiny model's sampler time per model turn "
        f"{model_turn_s * 1e3:.1f} ms: host / (host + sampler) = "
        f"{per_turn / (per_turn + model_turn_s):.2%}")


if __name__ == "__main__":
  main()
