"""One GRPO step on CPU (generation, reward, reference, update), timed by part.

    python benchmarks/grpo_step.py                  # the fixed workload
    python benchmarks/grpo_step.py --steps 20 --threads 2

The workload (the one Tunix 0.1.7's GRPO learner and TRL 1.16's GRPOTrainer
were measured on, on this machine: 0.74 s and 0.93 s per step):

* 8 prompts x 4 samples = 32 rows; prompts of 32 random token ids;
  exactly 64 generated ids per row (no stop token: no early stop);
* the `tiny` preset: a Gemma 2-style decoder of ~1.1M parameters (vocab
  1024, d_model 128, 4 layers, 4 heads, 1 KV head, head_dim 32, MLP 512,
  sliding window 64, soft-caps, post-norms), float32 everywhere;
* GRPO with group-normalised advantages, KL coefficient 0.04 (k3, to a
  frozen reference copy of the initial params), one update per step
  (on-policy: ratio 1, so no old-log-prob pass), AdamW lr 1e-6.

A step of our path is:

  generation  `Sampler.generate`: one jitted prefill + decode loop on the
              device (`lax.while_loop`, KV cache), sampling at temperature 1;
  scoring     the reward of every sample (host Python, a rule on the
              generated ids, as cheap as a verifier), group advantages, the
              [32, 96] training rows (numpy);
  update      one jitted, buffer-donating train step of the 'grpo' objective
              given the frozen reference params: the reference forward
              ('ref_logprobs', outside the gradient), then the policy's
              forward, backward and AdamW, all in one XLA program (one
              dispatch and one host sync fewer than a separate reference
              call; the same work). The 'reference' line then times only
              moving the batch to the device: the reference forward is
              timed inside 'update' (`--separate_reference` runs and times
              it as its own jitted call instead, as before).

Each part ends with its results on the host (`block_until_ready` or numpy),
so the parts add up to the step. The first step compiles everything; its
time is reported separately, and the step time is the median over
`--steps` further steps. The machine's load average is printed before and
after: on a shared machine, rerun it when quiet.
"""

from __future__ import annotations

import argparse
import os
import time


def _set_threads(threads: int) -> None:
  """Pins the process to `threads` cores (before jax starts its pools)."""
  try:
    os.sched_setaffinity(0, set(range(min(threads, os.cpu_count() or 1))))
  except (AttributeError, OSError):
    pass


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--prompts", type=int, default=8)
  parser.add_argument("--samples", type=int, default=4)
  parser.add_argument("--prompt_len", type=int, default=32)
  parser.add_argument("--new_tokens", type=int, default=64)
  parser.add_argument("--beta", type=float, default=0.04)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--separate_reference", action="store_true",
                      help="compute 'ref_logprobs' in their own jitted call "
                      "(timed as 'reference') instead of inside the update")
  parser.add_argument("--no_shared_prefix", action="store_true",
                      help="run every row's prompt through the prefill and "
                      "the update's forwards (by default each group's shared "
                      "prompt is computed once: Sampler.generate(group_size"
                      "=G) and swirl_jax/objectives/shared_prefix.py)")
  parser.add_argument("--profile_dir", default=None,
                      help="after timing, trace 3 more steps with "
                      "jax.profiler into this directory (Perfetto JSON)")
  parser.add_argument("--allocator", choices=("auto", "system"),
                      default="auto",
                      help="auto: re-run under the caching allocator "
                      "(swirl_jax/allocator.py) as `swirl_jax.main` does; "
                      "system: glibc malloc, to compare")
  args = parser.parse_args(argv)
  from swirl_jax import allocator  # pylint: disable=g-import-not-at-top
  if args.allocator == "system":
    os.environ[allocator.ENV_CHOICE] = "system"
  elif argv is None:
    allocator.reexec_with_fast_allocator()
  _set_threads(args.threads)

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  from swirl_jax import models  # pylint: disable=g-import-not-at-top
  from swirl_jax.objectives import get_objective  # pylint: disable=g-import-not-at-top
  from swirl_jax.objectives import grpo  # pylint: disable=g-import-not-at-top
  from swirl_jax.objectives import shared_prefix  # pylint: disable=g-import-not-at-top
  from swirl_jax.objectives.common import target_logprobs  # pylint: disable=g-import-not-at-top
  from swirl_jax.rollout import batches  # pylint: disable=g-import-not-at-top
  from swirl_jax.sampling import Sampler  # pylint: disable=g-import-not-at-top
  from swirl_jax.training.train_state import TrainState  # pylint: disable=g-import-not-at-top
  from swirl_jax.training.train_step import make_train_step  # pylint: disable=g-import-not-at-top

  load_before = os.getloadavg()
  config = models.get_config("tiny", dtype="float32", param_dtype="float32")
  model = models.Transformer(config)
  params = models.init_params(config, jax.random.key(args.seed))
  ref_params = jax.tree.map(jnp.copy, params)
  tx = optax.adamw(1e-6)
  state = TrainState.create(params, tx,
                            jax.random.key_data(jax.random.key(1)))
  objective = get_objective("grpo")
  loss_fn = objective.loss_fn

  def grpo_loss(p, b, rng, m):
    return loss_fn(p, b, rng, m, beta=args.beta, clip_epsilon=0.2,
                   aggregation="sequence")

  step_fn = jax.jit(make_train_step(
      model, type(objective)(objective.name, grpo_loss, True), tx,
      optax.constant_schedule(1e-6)), donate_argnums=(0,))
  ref_fn = jax.jit(lambda p, b: target_logprobs(model, p, b))
  sampler = Sampler(config, state.params, pad_id=0, prompt_bucket=32)

  rng = np.random.default_rng(args.seed)
  b, g = args.prompts, args.samples
  rows, p_len, n_new = b * g, args.prompt_len, args.new_tokens
  prompts = [[2] + rng.integers(4, config.vocab_size, p_len - 1).tolist()
             for _ in range(b)]
  prompts = [p for p in prompts for _ in range(g)]  # group-major
  seq = p_len + n_new

  def reward(ids: list[int]) -> float:
    """A rule on the generated ids (stand-in for a verifier)."""
    return float(sum(1 for t in ids if t % 7 == 0) >= len(ids) // 7)

  def one_step(step: int, state):
    times = {}
    t0 = time.perf_counter()
    sampler.update_params(state.params)
    out = sampler.generate(prompts, n_new, temperature=1.0, stop_tokens=[],
                           seed=step, group_size=1 if args.no_shared_prefix
                           else g)
    tokens = out.token_array  # numpy [rows, n_new]
    t1 = time.perf_counter()
    times["generation"] = t1 - t0
    assert tokens.shape == (rows, n_new) and int(out.lengths.min()) == n_new
    rewards = np.array([reward(t) for t in out.tokens], np.float32)
    full = np.concatenate([np.asarray(prompts, np.int32), tokens], axis=1)
    mask = np.zeros((rows, seq - 1), np.float32)
    mask[:, p_len - 1:] = 1.0
    batch = {"inputs": full[:, :-1], "targets": full[:, 1:],
             "positions": np.tile(np.arange(seq - 1, dtype=np.int32),
                                  (rows, 1)),
             "segment_ids": np.ones((rows, seq - 1), np.int32),
             "action_mask": mask,
             "advantages": batches.group_advantages(rewards, g)}
    if not args.no_shared_prefix:
      batch = shared_prefix.with_shared_prefix(batch, g)
    t2 = time.perf_counter()
    times["scoring"] = t2 - t1
    batch = jax.device_put(batch)
    if args.separate_reference:
      batch["ref_logprobs"] = ref_fn(ref_params, batch)
      batch["ref_logprobs"].block_until_ready()
    t3 = time.perf_counter()
    times["reference"] = t3 - t2
    # Without 'ref_logprobs' in the batch the step computes them from
    # ref_params (see `make_train_step`).
    state, metrics = step_fn(state, batch, ref_params)
    jax.block_until_ready(metrics)
    times["update"] = time.perf_counter() - t3
    times["step"] = time.perf_counter() - t0
    return state, times, metrics

  state, first, metrics = one_step(0, state)
  all_times = []
  for step in range(1, args.steps + 1):
    state, times, metrics = one_step(step, state)
    all_times.append(times)
  load_after = os.getloadavg()
  if args.profile_dir:
    jax.profiler.start_trace(args.profile_dir, create_perfetto_trace=True)
    for step in range(args.steps + 1, args.steps + 4):
      state, _, _ = one_step(step, state)
    jax.profiler.stop_trace()
  med = {k: float(np.median([t[k] for t in all_times])) for k in first}

  print(f"device={jax.devices()[0].device_kind} cores={args.threads} "
        f"params={config.num_params():,} rows={b}x{g} prompt={p_len} "
        f"new={n_new} beta={args.beta} float32")
  print(f"host allocator: {allocator.describe()}")
  print(f"load average before {load_before[0]:.2f}, after "
        f"{load_after[0]:.2f} (1 min); os.cpu_count()={os.cpu_count()}")
  print(f"first step (compiles): {first['step']:.2f} s = "
        + ", ".join(f"{k} {first[k]:.2f}" for k in
                    ("generation", "scoring", "reference", "update")))
  print(f"median of {args.steps} steps after warm-up:")
  notes = {"reference": "" if args.separate_reference else
           "  (batch to device only: the reference forward is in 'update')",
           "update": "" if args.separate_reference else
           "  (reference forward + forward, backward, AdamW)"}
  for k in ("generation", "scoring", "reference", "update"):
    print(f"  {k:10s} {med[k] * 1e3:8.1f} ms  ({med[k] / med['step']:5.1%})"
          f"{notes.get(k, '')}")
  print(f"  {'step':10s} {med['step'] * 1e3:8.1f} ms  "
        f"(min {min(t['step'] for t in all_times) * 1e3:.1f}, "
        f"max {max(t['step'] for t in all_times) * 1e3:.1f})")
  for name, ref in (("Tunix 0.1.7 GRPO learner", 0.74),
                    ("TRL 1.16 GRPOTrainer", 0.93)):
    print(f"  vs {name} ({ref:.2f} s/step on this machine): "
          f"{ref / med['step']:.2f}x")
  print(f"  final kl {float(metrics['kl']):.2e}, loss "
        f"{float(metrics['loss']):.4f}")
  del grpo
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
