"""Times one GRPO training step of Google's Tunix (google-tunix 0.1.7) on CPU.

The peer side of benchmarks/grpo_step.py, run side by side with it. Tunix
pins its own dependencies, so it gets its own virtualenv:

    python3 -m venv /tmp/tunix_venv
    /tmp/tunix_venv/bin/pip install google-tunix==0.1.7
    /tmp/tunix_venv/bin/python benchmarks/peers/tunix_grpo_step.py --steps 20

(measured with jax/jaxlib 0.10.2, flax 0.12.8, optax 0.2.8). The workload
is the one benchmarks/grpo_step.py times:

* 8 prompts x 4 samples = 32 rows; prompts of 32 random ids (first id 2,
  the rest in [4, 1024)); exactly 64 generated ids per row (the EOS id is
  outside the vocabulary, so it can never be sampled: no early stop);
  sampling at temperature 1 (top_p 1.0, no top_k: plain categorical);
* Tunix's own Gemma 2 model class (tunix.models.gemma.model.Gemma with a
  Gemma 2-style ModelConfig) at ~1.1M parameters, random init, float32;
* Tunix's GRPOLearner / GRPOConfig (group-normalised advantages, beta 0.04,
  KL estimator 'low_var_kl' = k3, num_iterations 1) on an RLCluster with the
  'vanilla' rollout engine (Tunix's Sampler) and a frozen reference model;
  AdamW lr 1e-6.

A "step" is one of Tunix's global steps (RLLearner._run_global_step: rollout,
reward, advantages, reference log-probs, one actor update), plus the weight
sync if Tunix does one, ending when the updated actor params are ready.
"""

from __future__ import annotations

import argparse
import os
import time


class IdTokenizer:
  """Tokenizer stand-in: a prompt string is its ids, space-separated."""

  def __init__(self, vocab_size: int):
    self._vocab = vocab_size

  def encode(self, text: str, **kwargs) -> list[int]:
    del kwargs
    return [int(t) for t in text.split()]

  def decode(self, ids, **kwargs) -> str:
    del kwargs
    return " ".join(str(int(i)) for i in ids)

  def bos_id(self) -> int:
    # Every prompt starts with id 2; the sampler prepends bos and then
    # de-duplicates a repeated bos, so the prompt stays 32 ids long.
    return 2

  def eos_id(self) -> int:
    return self._vocab + 1  # outside the vocabulary: never sampled

  def pad_id(self) -> int:
    # Outside the vocabulary too, so no sampled id is ever masked out as
    # padding (Tunix builds completion masks as `ids != pad_id`). Nothing
    # is padded in this workload (all prompts 32 ids, all completions 64).
    return self._vocab


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--prompts", type=int, default=8)
  parser.add_argument("--samples", type=int, default=4)
  parser.add_argument("--prompt_len", type=int, default=32)
  parser.add_argument("--new_tokens", type=int, default=64)
  parser.add_argument("--beta", type=float, default=0.04)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)

  os.sched_setaffinity(0, set(range(min(args.threads, os.cpu_count() or 1))))
  load_before = os.getloadavg()

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from tunix.models.gemma import model as gemma_lib  # pylint: disable=g-import-not-at-top
  from tunix.rl import rl_cluster as rl_cluster_lib  # pylint: disable=g-import-not-at-top
  from tunix.rl.grpo import grpo_learner as grpo_lib  # pylint: disable=g-import-not-at-top
  from tunix.rl.rollout import base_rollout  # pylint: disable=g-import-not-at-top

  vocab = 1024
  n_layers = 4
  config = gemma_lib.ModelConfig(
      num_layers=n_layers,
      num_embed=vocab,
      embed_dim=128,
      hidden_dim=512,
      num_heads=4,
      head_dim=32,
      num_kv_heads=1,
      final_logit_softcap=30.0,
      use_post_attn_norm=True,
      use_post_ffw_norm=True,
      attention_types=(gemma_lib.AttentionType.LOCAL_SLIDING,
                       gemma_lib.AttentionType.GLOBAL) * (n_layers // 2),
      attn_logits_soft_cap=50.0,
      sliding_window_size=64,
  )
  mesh = jax.sharding.Mesh(
      np.array(jax.devices()[:1]).reshape(1, 1), ("fsdp", "tp"))
  with mesh:
    actor = gemma_lib.Gemma(config, rngs=nnx.Rngs(params=args.seed))
    reference = gemma_lib.Gemma(config, rngs=nnx.Rngs(params=args.seed))
  n_params = sum(x.size for x in jax.tree.leaves(nnx.state(actor, nnx.Param)))
  dtypes = {str(x.dtype) for x in jax.tree.leaves(nnx.state(actor, nnx.Param))}

  b, g = args.prompts, args.samples
  rng = np.random.default_rng(args.seed)
  prompt_ids = [[2] + rng.integers(4, vocab, args.prompt_len - 1).tolist()
                for _ in range(b)]
  prompt_strs = [" ".join(map(str, p)) for p in prompt_ids]

  seen_lengths = []

  def reward(prompts, completions, **kwargs):
    """1.0 if at least len(ids)//7 of the generated ids are divisible by 7."""
    del prompts, kwargs
    out = []
    for text in completions:
      ids = [int(t) for t in text.split()]
      seen_lengths.append(len(ids))
      out.append(float(sum(1 for t in ids if t % 7 == 0) >= len(ids) // 7))
    return out

  total_steps = args.steps + 1  # the first one compiles
  cluster_config = rl_cluster_lib.ClusterConfig(
      role_to_mesh={
          rl_cluster_lib.Role.ACTOR: mesh,
          rl_cluster_lib.Role.REFERENCE: mesh,
          rl_cluster_lib.Role.ROLLOUT: mesh,
      },
      rollout_engine="vanilla",
      offload_to_cpu=False,
      training_config=rl_cluster_lib.RLTrainingConfig(
          actor_optimizer=optax.adamw(1e-6),
          eval_every_n_steps=10**9,
          max_steps=total_steps,
          pbar_description=None,
      ),
      rollout_config=base_rollout.RolloutConfig(
          max_tokens_to_generate=args.new_tokens,
          max_prompt_length=args.prompt_len,
          kv_cache_size=args.prompt_len + args.new_tokens,
          temperature=1.0,
          top_p=1.0,
          top_k=None,
          eos_tokens=[vocab + 1],
      ),
  )
  cluster = rl_cluster_lib.RLCluster(
      actor=actor, reference=reference, tokenizer=IdTokenizer(vocab),
      cluster_config=cluster_config)
  grpo_config = grpo_lib.GRPOConfig(
      num_generations=g, num_iterations=1, beta=args.beta,
      kl_loss_mode="low_var_kl", epsilon=0.2)
  learner = grpo_lib.GRPOLearner(
      rl_cluster=cluster, algo_config=grpo_config, reward_fns=reward)

  # Per-step wall-clock: from the start of a global step to the end of the
  # weight sync (if any), with the actor's params on the host side ready.
  starts, ends = [], []
  run_global_step = learner._run_global_step  # pylint: disable=protected-access
  sync_weights = cluster.sync_weights

  def actor_ready():
    jax.block_until_ready(
        nnx.state(cluster.actor_trainer.model, nnx.Param))

  def timed_global_step(*a, **kw):
    starts.append(time.perf_counter())
    out = run_global_step(*a, **kw)
    actor_ready()
    if not learner.should_sync_weights:
      ends.append(time.perf_counter())
    return out

  def timed_sync():
    out = sync_weights()
    jax.block_until_ready(cluster.rollout._sampler.transformer_state)  # pylint: disable=protected-access
    ends.append(time.perf_counter())
    return out

  learner._run_global_step = timed_global_step  # pylint: disable=protected-access
  cluster.sync_weights = timed_sync

  train_ds = [{"prompts": np.array(prompt_strs)} for _ in range(total_steps)]
  with mesh:
    learner.train(train_ds)
  load_after = os.getloadavg()

  times = [e - s for s, e in zip(starts, ends)]
  assert len(times) == total_steps, (len(starts), len(ends))
  assert set(seen_lengths) == {args.new_tokens}, set(seen_lengths)
  assert len(seen_lengths) == total_steps * b * g, len(seen_lengths)
  first, rest = times[0], times[1:]
  med = float(np.median(rest))
  kl_hist = None
  try:
    kl_hist = cluster.actor_trainer.metrics_logger.get_metric_history(
        "actor", "kl", "train")
  except Exception:  # pylint: disable=broad-except
    pass

  print(f"tunix {_version('google-tunix')} jax {jax.__version__} flax "
        f"{_version('flax')} device={jax.devices()[0].device_kind} "
        f"cores={len(os.sched_getaffinity(0))} params={n_params:,} "
        f"dtypes={sorted(dtypes)} rows={b}x{g} prompt={args.prompt_len} "
        f"new={args.new_tokens} (all {sorted(set(seen_lengths))}) "
        f"beta={args.beta} should_sync_weights={learner.should_sync_weights}")
  print(f"load average before {load_before[0]:.2f}, after "
        f"{load_after[0]:.2f} (1 min); os.cpu_count()={os.cpu_count()}")
  print(f"first step (compiles): {first:.2f} s")
  print(f"all steps (ms): " + " ".join(f"{t * 1e3:.0f}" for t in rest))
  if kl_hist is not None:
    print(f"final kl {float(np.asarray(kl_hist)[-1]):.2e}")
  print(f"tunix step median {med * 1e3:.1f} ms "
        f"({min(rest) * 1e3:.1f}, {max(rest) * 1e3:.1f})")
  return 0


def _version(dist: str) -> str:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  return metadata.version(dist)


if __name__ == "__main__":
  raise SystemExit(main())
