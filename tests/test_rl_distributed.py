"""The online RL stages on two processes equal one process.

SWiRL stage 2, SCoRe Stage I and II and R3 train for 3 steps with their
batch builders (tests/scripts/rl_distributed.py): once in one process with
8 CPU devices, once in two processes with 4 each (jax.distributed on
localhost), the same (2, 2, 2) mesh, seed and global batches. Each host
samples its own rows on its own copy of the params, every row drawing the
randomness of its global index; reference / old log-probs and the update
run on global arrays (docs/tpu_gpu.md, "Online RL on several hosts"). The
two runs must sample the same tokens, get the same rewards and losses, and
end with the same parameters (within 1e-5). A per-host batch that does not
split over the host's batch shards, and hosts holding different numbers of
records, stop with errors naming the sizes.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts",
                      "rl_distributed.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ("swirl", "score1", "score2", "r3")
STEPS = 3
TIMEOUT = 400

pytestmark = pytest.mark.xdist_group("rl_distributed")


def _env(devices, **extra):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
              "JAX_PROCESS_ID"):
    env.pop(key, None)
  env.update({k: str(v) for k, v in extra.items()})
  return env


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _cmd(tokenizer, out, *extra):
  return [sys.executable, SCRIPT, "--tokenizer", str(tokenizer), "--out",
          str(out), "--steps", str(STEPS), "--mesh", "2,2,2", *extra]


# Session-scoped and on one xdist worker: under --dist loadgroup a worker
# may leave a module and come back, which rebuilt a module fixture (the
# multi-process runs) a second time.
@pytest.fixture(scope="session")
def runs(tmp_path_factory):
  """(one-process dir, two-process dir), both runs launched together."""
  from swirl_jax.data import demonstrations  # pylint: disable=g-import-not-at-top
  from swirl_jax.data import reflection_demonstrations as r3_demos  # pylint: disable=g-import-not-at-top
  from swirl_jax.tokenizer import train_sentencepiece  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("rl_distributed")
  tokenizer = root / "spm.model"
  texts = demonstrations.corpus_texts(demonstrations.tool_use_demonstrations(
      num_per_task=20, prompt_style="compact")) + r3_demos.tokenizer_corpus(
          tasks=("countdown",), task_kwargs={"countdown": dict(
              prompt_style="compact", min_numbers=3, max_numbers=3,
              min_value=1, max_value=10, min_target=1, max_target=50)},
          num_per_task=20)
  train_sentencepiece(texts, str(tokenizer), 1024)
  one, two = root / "one", root / "two"
  port = _free_port()
  procs = [subprocess.Popen(_cmd(tokenizer, one), env=_env(8),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)]
  for i in range(2):
    procs.append(subprocess.Popen(
        _cmd(tokenizer, two, "--bad"),
        env=_env(4, JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                 JAX_NUM_PROCESSES=2, JAX_PROCESS_ID=i),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  errors = []
  for p in procs:
    try:
      _, err = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    if p.returncode != 0:
      errors.append(err[-4000:])
  assert not errors, "\n\n".join(errors)
  return one, two


def _rows(directory, case, processes):
  """{step: {key: global rows}}: the processes' rows, in process order."""
  parts = [dict(np.load(directory / f"{case}.p{i}.npz"))
           for i in range(processes)]
  out = {}
  for key in parts[0]:
    step, name = key.split("/", 1)
    out.setdefault(int(step), {})[name] = [p[key] for p in parts]
  return out


def _pad_cat(arrays):
  """Concatenates rows whose lengths (dim 1) may differ, zero-padded."""
  if arrays[0].ndim < 2:
    return np.concatenate(arrays)
  width = max(a.shape[1] for a in arrays)
  return np.concatenate([np.pad(a, [(0, 0), (0, width - a.shape[1])] +
                                [(0, 0)] * (a.ndim - 2)) for a in arrays])


def _partition(ids):
  """Group ids renumbered by first appearance (the same groups compare
  equal whatever their numbers)."""
  first = {}
  return np.array([first.setdefault(int(i), len(first)) for i in ids])


# The 1-vs-2-process differences of the last run, for the report.
FIGURES = {}


@pytest.mark.parametrize("case", CASES)
def test_two_processes_sample_and_train_like_one(runs, case):
  one, two = runs
  single, double = _rows(one, case, 1), _rows(two, case, 2)
  assert sorted(single) == sorted(double) == list(range(STEPS))
  token_diff = reward_diff = 0.0
  for step in range(STEPS):
    a = {k: v[0] for k, v in single[step].items()}
    b = {k: _pad_cat(v) for k, v in double[step].items()}
    assert sorted(a) == sorted(b), step
    # Same length on every host (they agree on the bucketed row length).
    assert len({v.shape[1] for v in double[step]["inputs"]}) == 1
    for key in ("inputs", "targets", "segment_ids", "positions"):
      np.testing.assert_array_equal(a[key], b[key],
                                    err_msg=f"{case} step {step} {key}")
      token_diff = max(token_diff, float(np.max(np.abs(
          a[key].astype(np.int64) - b[key].astype(np.int64)))))
    for key in a:
      if key.endswith("mask"):
        np.testing.assert_array_equal(a[key], b[key],
                                      err_msg=f"{case} step {step} {key}")
    if "group_ids" in a:  # the same groups (each host numbers its own)
      np.testing.assert_array_equal(_partition(a["group_ids"]),
                                    _partition(b["group_ids"]))
    for key in ("rewards", "reward1", "reward2", "advantages"):
      if key in a:
        np.testing.assert_array_equal(a[key], b[key],
                                      err_msg=f"{case} step {step} {key}")
        reward_diff = max(reward_diff,
                          float(np.max(np.abs(a[key] - b[key]))))
    for key in ("ref_logprobs", "old_logprobs", "beta2"):
      if key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5,
                                   err_msg=f"{case} step {step} {key}")
  m1 = json.load(open(one / f"{case}.json"))
  m2 = json.load(open(two / f"{case}.json"))
  assert m1["process_count"] == 1 and m2["process_count"] == 2
  losses1 = [r["loss"] for r in m1["metrics"]]
  losses2 = [r["loss"] for r in m2["metrics"]]
  assert len(losses1) == len(losses2) == STEPS
  np.testing.assert_allclose(losses1, losses2, atol=1e-5, rtol=1e-5)
  for key in ("kl", "pg_loss", "mean_reward"):
    if key in m1["metrics"][0]:
      np.testing.assert_allclose([r[key] for r in m1["metrics"]],
                                 [r[key] for r in m2["metrics"]], atol=1e-5)
  p1 = dict(np.load(one / f"{case}.params.npz"))
  p2 = dict(np.load(two / f"{case}.params.npz"))
  assert p1.keys() == p2.keys()
  param_diff = max(float(np.max(np.abs(p1[k] - p2[k]))) for k in p1)
  assert param_diff <= 1e-5
  # The runs trained (non-zero gradients).
  assert any(r["grad_norm"] > 0 for r in m1["metrics"])
  FIGURES[case] = {"tokens": token_diff, "rewards": reward_diff,
                   "losses": float(np.max(np.abs(np.subtract(losses1,
                                                             losses2)))),
                   "params": param_diff, "loss_values": losses1}
  print(case, json.dumps(FIGURES[case]))


def test_uneven_per_host_batches_stop_with_the_sizes(runs):
  _, two = runs
  for i in range(2):
    errors = json.load(open(two / f"bad.p{i}.json"))
    assert "3 rows" in errors["swirl_bad"], errors
    assert "2 batch shards" in errors["swirl_bad"], errors
    assert "{0: 2, 1: 3}" in errors["unequal_records"], errors


def test_row_keyed_samples_do_not_depend_on_the_batch():
  """With row_ids, a row's sample is the same alone, in another batch, at
  another position or with other padding: what makes hosts agree."""
  import jax  # pylint: disable=g-import-not-at-top
  from swirl_jax import models  # pylint: disable=g-import-not-at-top
  from swirl_jax.sampling import Sampler  # pylint: disable=g-import-not-at-top
  from swirl_jax.sampling.sampler import RowKeyedSampler  # pylint: disable=g-import-not-at-top
  config = models.get_config("tiny", vocab_size=64, num_layers=1,
                             attention_types=("local",))
  sampler = Sampler(config, models.init_params(config, jax.random.key(0)),
                    prompt_bucket=8, batch_bucket=4)
  prompts = [[1, 5, 9], [1, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 11, 12]]
  full = sampler.generate(prompts, 6, temperature=1.0, seed=3,
                          row_ids=[10, 11, 12, 13])
  part = sampler.generate(prompts[2:0:-1], [6, 3], temperature=1.0, seed=3,
                          row_ids=[12, 11])
  assert part.tokens[0] == full.tokens[2]
  assert part.tokens[1] == full.tokens[1][:3]
  np.testing.assert_allclose(part.logprobs[0], full.logprobs[2], atol=1e-5)
  keyed = RowKeyedSampler(sampler)
  with keyed.rows([13]):
    alone = keyed.generate(prompts[3:], 6, temperature=1.0, seed=3)
  assert alone.tokens[0] == full.tokens[3]
  # Without row ids: the batch's own [N, B] draw (as before), which
  # depends on the row's position.
  plain = sampler.generate(prompts, 6, temperature=1.0, seed=3)
  assert plain.tokens != full.tokens
