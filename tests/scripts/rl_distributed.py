"""Online RL stages, trained for a few steps, for tests/test_rl_distributed.py.

    python tests/scripts/rl_distributed.py --tokenizer SPM --out DIR
        [--cases swirl,score1,score2,r3] [--steps 3] [--mesh 2,2,2] [--bad]

Runs in one process, or in several (JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID, as `sharding.maybe_initialize_distributed`
reads them). Each case is a real `trainer.train` run with its batch builder
as `batch_fn` (SWiRL stage 2: `StepwiseBatchBuilder`; SCoRe Stage I / II:
`TwoAttemptBatchBuilder`; R3: `ReflectionBatchBuilder`). The data: a fixed
list of records; global batch b of step s is records[b*s : b*(s+1)]
(cyclically) and process p reads its contiguous share, so every process
count sees the same global batches in the same row order.

Each process writes DIR/<case>.p<index>.npz: its rows of every step's batch
(the sampled tokens in 'inputs' / 'targets', the masks and the rewards);
process 0 writes DIR/<case>.json (the metrics of every step) and
DIR/<case>.params.npz (the final params, gathered). --bad adds the runs
that must fail (DIR/bad.p<index>.json: their error messages).
"""

import argparse
import json
import os
import sys

import numpy as np

CD_KW = dict(prompt_style="compact", min_numbers=3, max_numbers=3,
             min_value=1, max_value=10, min_target=1, max_target=50)
FIRST = "<answer> 1 + </answer>"


class ParityJudge:
  """A deterministic judge with varied rewards on a random policy's
  actions (the rules judge gives them all 0): GOOD iff the action text has
  an even number of characters."""

  name = "parity"

  def judge_steps(self, requests):
    from swirl_jax.judges.base import JudgeResult  # pylint: disable=g-import-not-at-top
    return [JudgeResult.of(len(r.action_text) % 2 == 0, "parity")
            for r in requests]


class Records:
  """Iterator (get_state / set_state) over contiguous per-process shares of
  the global batches of a fixed list of records."""

  def __init__(self, records, global_batch, process_index, process_count):
    if global_batch % process_count:
      raise ValueError(f"global batch {global_batch} does not divide over "
                       f"{process_count} processes.")
    self.records, self.global_batch = list(records), global_batch
    self.rows = global_batch // process_count
    self.offset = process_index * self.rows
    self.index = 0

  def __iter__(self):
    return self

  def __next__(self):
    start = self.index * self.global_batch + self.offset
    self.index += 1
    return [self.records[(start + i) % len(self.records)]
            for i in range(self.rows)]

  def get_state(self):
    return {"index": self.index}

  def set_state(self, state):
    self.index = int(state["index"])


def swirl_records(n):
  from swirl_jax.data import demonstrations  # pylint: disable=g-import-not-at-top
  from swirl_jax.swirl.filters import RECORD_FIELDS  # pylint: disable=g-import-not-at-top
  demos = demonstrations.tool_use_demonstrations(
      tasks=("gsm8k",), num_per_task=n, prompt_style="compact")
  out = []
  for d in demos:
    turns = d["turns"]
    rec = {k: ("" if t is str else t(0)) for k, t in RECORD_FIELDS.items()}
    rec.update(trajectory_id=f"gsm8k/{d['id']}/0", task="gsm8k",
               example_id=d["id"], step_index=1,
               num_steps=(len(turns) - 1) // 2,
               context=json.dumps(turns[:3]), action=turns[3][1],
               kind="tool", label="GOOD", reward=1.0, judge_parsed=True,
               outcome=True, question=turns[0][1], gold="0")
    out.append(rec)
  return out


def score_records(n):
  from swirl_jax.tasks import small as small_tasks  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
  from swirl_jax.tasks import get_task  # pylint: disable=g-import-not-at-top
  task = get_task("math_small")
  return task, [{"task": "math_small", "example": e.to_dict()}
                for e in task.generate(n, seed=0, split="train")]


def r3_records(n, tokenizer):
  from swirl_jax.tasks import compact  # pylint: disable=g-import-not-at-top
  task = compact.make_task("countdown", **CD_KW)
  out = []
  for ex in compact.generate_examples(task, n, seed=2):
    answer = task.parse_answer(FIRST)
    verdict = task.verify(ex, answer)
    tokens = tokenizer.encode(FIRST) + [tokenizer.end_of_turn_id]
    out.append({
        "failure_id": f"countdown/{ex.id}", "task": "countdown",
        "example_id": ex.id, "example": json.dumps(ex.to_dict()),
        "prompt": task.prompt(ex), "attempt": FIRST,
        "attempt_tokens": tokens, "attempt_logprobs": [-1.0] * len(tokens),
        "answer": answer or "", "category": verdict.category,
        "detail": verdict.detail, "sample_index": 0, "num_samples": 1,
        "num_correct": 0})
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--tokenizer", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--cases", default="swirl,score1,score2,r3")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--mesh", default="2,2,2")
  parser.add_argument("--bad", action="store_true")
  args = parser.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  from swirl_jax import models, sharding, stages  # pylint: disable=g-import-not-at-top
  sharding.maybe_initialize_distributed()
  import gin  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from swirl_jax.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  from swirl_jax.training import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from swirl_jax.training.trainer import train  # pylint: disable=g-import-not-at-top

  # Adam's eps as in toy_train.py: 1e-8 turns reduction-order noise in
  # ~0 gradients into full-size updates, which says nothing about hosts.
  gin.bind_parameter("swirl_jax.training.optimizer.make_optimizer.eps", 1e-4)
  gin.bind_parameter(
      "swirl_jax.training.optimizer.learning_rate_schedule."
      "peak_learning_rate", 3e-3)
  gin.bind_parameter(
      "swirl_jax.training.optimizer.learning_rate_schedule.warmup_steps", 0)
  me, count = jax.process_index(), jax.process_count()
  os.makedirs(args.out, exist_ok=True)
  tokenizer = Tokenizer(args.tokenizer)
  config = models.get_config("tiny", num_layers=1, embed_dim=64,
                             hidden_dim=128, num_heads=2, head_dim=32,
                             query_pre_attn_scalar=32,
                             attention_types=("local",))
  data, fsdp, tensor = (int(x) for x in args.mesh.split(","))
  mesh = sharding.make_mesh(data, fsdp, tensor)
  # The reference / base model of SCoRe and R3: other params than the
  # policy's start (seed 1), sharded over every process like the policy.
  reference = stages.load_policy(config, None, seed=1, mesh=mesh)

  def make(case):
    """(builder, objective, records, global batch of records)."""
    if case == "swirl":
      from swirl_jax.swirl.stepwise import StepwiseBatchBuilder  # pylint: disable=g-import-not-at-top
      return (StepwiseBatchBuilder(config, tokenizer, ParityJudge(),
                                   group_size=2, max_new_tokens=8,
                                   seq_len=200, length_bucket=None,
                                   row_keyed=True),
              "stepwise_pg", swirl_records(8), 4)
    if case == "swirl_bad":
      from swirl_jax.swirl.stepwise import StepwiseBatchBuilder  # pylint: disable=g-import-not-at-top
      # 1 state x 3 actions per host: 3 rows over each host's 2 shards.
      return (StepwiseBatchBuilder(config, tokenizer, ParityJudge(),
                                   group_size=3, max_new_tokens=8,
                                   seq_len=200, length_bucket=None,
                                   row_keyed=True),
              "stepwise_pg", swirl_records(4), count)
    if case in ("score1", "score2"):
      from swirl_jax.score import batches  # pylint: disable=g-import-not-at-top
      task, records = score_records(8)
      stage1 = case == "score1"
      builder = batches.TwoAttemptBatchBuilder(
          config, tokenizer, {"math_small": task}, ref_params=reference,
          group_size=2, base_first_attempts=0 if stage1 else 2,
          max_new_tokens=6, seq_len=192, length_bucket=None,
          adaptive=batches.AdaptiveBeta2(0.1, 0.02) if stage1 else None,
          row_keyed=True)
      return (builder, "score_stage1" if stage1 else "score_stage2",
              records, 4)
    if case == "r3":
      from swirl_jax.r3 import batches  # pylint: disable=g-import-not-at-top
      builder = batches.ReflectionBatchBuilder(
          config, tokenizer, task_kwargs={"countdown": CD_KW},
          group_size=2, max_new_tokens=8, seq_len=192,
          length_bucket=None, shared_prefix_bucket=64,
          retry_temperature=0.0, reference_params=reference,
          old_logprobs="recompute", row_keyed=True,
          cache_dir=os.path.join(args.out, "r3_cache"))
      return builder, "grpo", r3_records(8, tokenizer), 4
    raise ValueError(case)

  def run(case):
    builder, objective, records, global_batch = make(case)
    seen = {}

    def batch_fn(params, local, step):
      batch = builder(params, local, step)
      seen[step] = {k: np.asarray(v) for k, v in batch.items()}
      return batch

    def dataset_fn(workdir, process_index, process_count, seed):
      del workdir, seed
      return Records(records, global_batch, process_index, process_count)

    workdir = os.path.join(args.out, f"{case}_work")
    try:
      result = train(workdir, model_config=config, dataset_fn=dataset_fn,
                     objective=objective, train_steps=args.steps,
                     checkpoint_every=1000, log_every=1, seed=0,
                     mesh_fn=lambda: mesh, async_checkpoints=False,
                     batch_fn=batch_fn)
    finally:
      if hasattr(builder, "close"):
        builder.close()
    np.savez(os.path.join(args.out, f"{case}.p{me}.npz"), **{
        f"{step}/{k}": v for step, b in seen.items() for k, v in b.items()})
    gathered = jax.tree.map(
        lambda x: np.asarray(multihost_utils.process_allgather(
            x, tiled=True)), result.state.params)
    if me == 0:
      np.savez(os.path.join(args.out, f"{case}.params.npz"), **{
          jax.tree_util.keystr(p): v
          for p, v in jax.tree_util.tree_leaves_with_path(gathered)})
      with open(os.path.join(args.out, f"{case}.json"), "w") as f:
        json.dump({"metrics": metrics_lib.read_metrics(workdir),
                   "process_count": count}, f)

  for case in [c for c in args.cases.split(",") if c]:
    run(case)
  if args.bad:
    errors = {}
    try:
      run("swirl_bad")
    except ValueError as e:
      errors["swirl_bad"] = str(e)
    try:  # one process holds one more record than the other
      sharding.process_row_offset(2 + me, "records")
    except ValueError as e:
      errors["unequal_records"] = str(e)
    with open(os.path.join(args.out, f"bad.p{me}.json"), "w") as f:
      json.dump(errors, f)
  print(json.dumps({"process": me, "of": count, "done": True}))


if __name__ == "__main__":
  sys.exit(main())
