"""A small, fast training job for the trainer/sharding/resume tests.

    python tests/scripts/toy_train.py --workdir DIR --steps N [--mesh D,F,T]
        [--stop_after K] [--microbatches M] [--out result.json]

Data: a copy task over a fixed set of 64 examples with global ids; each
process reads only its rows of each global batch and records the ids read. The result file holds a
float64 checksum of the final params, the per-array sums, and the ids read.
"""

import argparse
import hashlib
import json
import os
import sys

import numpy as np

NUM_EXAMPLES = 64
SEQ = 32


def example(i):
  rng = np.random.default_rng(i)
  x = rng.integers(4, 64, SEQ // 2)
  seq = np.concatenate([x, x])
  targets = np.concatenate([seq[1:], [0]])
  mask = np.zeros(SEQ, np.float32)
  mask[SEQ // 2 - 1:-1] = 1
  return seq, targets, mask


class ToyData:
  """Iterator with get_state/set_state over global batches of the 64 ids.

  The global order is a seeded permutation per epoch; global batch b is
  order[b*B:(b+1)*B] and process p reads only rows [p*B/P, (p+1)*B/P) of it,
  so every process count sees the same global batches.
  """

  def __init__(self, global_batch, process_index, process_count, seed, log):
    self.global_batch, self.seed, self.log = global_batch, seed, log
    self.rows = global_batch // process_count
    self.offset = process_index * self.rows
    self.batch_index = 0

  def __iter__(self):
    return self

  def __next__(self):
    start = self.batch_index * self.global_batch + self.offset
    out = []
    for pos in range(start, start + self.rows):
      epoch, k = divmod(pos, NUM_EXAMPLES)
      out.append(int(np.random.default_rng([self.seed, epoch])
                     .permutation(NUM_EXAMPLES)[k]))
    self.batch_index += 1
    self.log.extend(out)
    seqs = [example(i) for i in out]
    return dict(
        inputs=np.stack([s[0] for s in seqs]).astype(np.int32),
        targets=np.stack([s[1] for s in seqs]).astype(np.int32),
        loss_mask=np.stack([s[2] for s in seqs]),
        positions=np.tile(np.arange(SEQ), (len(out), 1)).astype(np.int32),
        segment_ids=np.ones((len(out), SEQ), np.int32))

  def get_state(self):
    return {"batch_index": self.batch_index}

  def set_state(self, state):
    self.batch_index = int(state["batch_index"])


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--steps", type=int, default=6)
  parser.add_argument("--stop_after", type=int, default=None)
  parser.add_argument("--mesh", default="1,1,1")
  parser.add_argument("--global_batch", type=int, default=8)
  parser.add_argument("--microbatches", type=int, default=1)
  parser.add_argument("--checkpoint_every", type=int, default=2)
  parser.add_argument("--out", default=None)
  parser.add_argument("--sleep", type=float, default=0.0)
  parser.add_argument("--adam_eps", type=float, default=1e-8)
  args = parser.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  from swirl_jax import models, sharding  # pylint: disable=g-import-not-at-top
  from swirl_jax.training.trainer import train  # pylint: disable=g-import-not-at-top
  sharding.maybe_initialize_distributed()
  import gin  # pylint: disable=g-import-not-at-top
  gin.bind_parameter("swirl_jax.training.optimizer.make_optimizer.eps",
                     args.adam_eps)
  data, fsdp, tensor = (int(x) for x in args.mesh.split(","))
  read = []

  def dataset_fn(workdir, process_index, process_count, seed):
    del workdir
    return ToyData(args.global_batch, process_index, process_count, seed,
                   read)

  def slow(step, row):
    del step, row
    if args.sleep:
      import time  # pylint: disable=g-import-not-at-top
      time.sleep(args.sleep)

  config = models.get_config("tiny", vocab_size=64)
  result = train(
      args.workdir, model_config=config, dataset_fn=dataset_fn,
      train_steps=args.steps, checkpoint_every=args.checkpoint_every,
      log_every=1, num_microbatches=args.microbatches,
      stop_after=args.stop_after, async_checkpoints=True,
      mesh_fn=lambda: sharding.make_mesh(data, fsdp, tensor),
      step_callback=slow)
  params = result.state.params
  gathered = jax.tree.map(
      lambda x: np.asarray(jax.experimental.multihost_utils
                           .process_allgather(x, tiled=True)), params)
  sums = {jax.tree_util.keystr(p): float(np.sum(v.astype(np.float64)))
          for p, v in jax.tree_util.tree_leaves_with_path(gathered)}
  digest = hashlib.sha256(b"".join(
      np.ascontiguousarray(v).tobytes() for v in jax.tree.leaves(gathered))
                          ).hexdigest()
  specs = sharding.describe_sharding(params)
  from swirl_jax.training.metrics import read_metrics  # pylint: disable=g-import-not-at-top
  losses = [row["loss"] for row in read_metrics(args.workdir)]
  out = {"last_step": result.last_step, "losses": losses, "sums": sums, "sha256": digest,
         "read": read, "process_index": jax.process_index(), "specs": specs,
         "preempted": result.preempted}
  if args.out:
    with open(args.out, "w") as f:
      json.dump(out, f)
    if jax.process_index() == 0:
      np.savez(args.out + ".npz", **{
          jax.tree_util.keystr(p): v
          for p, v in jax.tree_util.tree_leaves_with_path(gathered)})
  print(json.dumps({"last_step": result.last_step, "sha256": digest}))


if __name__ == "__main__":
  sys.exit(main())
