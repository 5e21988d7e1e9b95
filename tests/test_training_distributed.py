"""Sharded, multi-process and killed-then-resumed training equal plain training.

Each case runs tests/scripts/toy_train.py in fresh processes (device counts
are fixed when JAX starts) and compares final parameters.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "toy_train.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.xdist_group("training_distributed")


def _env(devices=1, **extra):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env.pop("JAX_COORDINATOR_ADDRESS", None)
  env.update({k: str(v) for k, v in extra.items()})
  return env


def _run(workdir, out, *args, devices=1, timeout=300, **env):
  cmd = [sys.executable, SCRIPT, "--workdir", str(workdir), "--out", str(out),
         *map(str, args)]
  proc = subprocess.run(cmd, env=_env(devices, **env), capture_output=True,
                        text=True, timeout=timeout, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.load(open(out))


def _params(out):
  return dict(np.load(str(out) + ".npz"))


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


# Session-scoped and on one xdist worker: under --dist loadgroup a worker
# may leave a module and come back, which rebuilt a module fixture (the
# multi-process runs) a second time.
@pytest.fixture(scope="session")
def reference(tmp_path_factory):
  """3 steps on one device (Adam eps 1e-4, see test_mesh_...)."""
  d = tmp_path_factory.mktemp("ref")
  result = _run(d / "w", d / "r.json", "--steps", 3, "--adam_eps", 1e-4)
  return result, _params(d / "r.json")


def _max_diff(a, b):
  assert a.keys() == b.keys()
  return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def test_mesh_2x2x2_matches_single_device(reference, tmp_path):
  # Adam's eps is raised to 1e-4 here: with 1e-8, coordinates whose gradient
  # is ~1e-9 turn float reduction-order noise into full-size updates, which
  # says nothing about sharding.
  ref, ref_params = reference
  result = _run(tmp_path / "w", tmp_path / "r.json", "--steps", 3,
                "--mesh", "2,2,2", "--adam_eps", 1e-4, devices=8)
  assert _max_diff(ref_params, _params(tmp_path / "r.json")) <= 1e-5
  np.testing.assert_allclose(result["losses"], ref["losses"], atol=1e-5)
  specs = result["specs"]
  # The rules: vocab->tensor, embed->fsdp, heads/mlp->tensor; one KV head
  # cannot be split over tensor=2 and stays replicated.
  assert specs["['embedding']"] == "P('tensor', 'fsdp')"
  assert specs["['layer_0']['attn']['q']"] == \
      "P('fsdp', 'tensor', None)"
  assert specs["['layer_0']['attn']['k']"] == \
      "P('fsdp', None, None)"
  assert specs["['layer_0']['mlp']['down']"] == \
      "P('tensor', 'fsdp')"


def test_fsdp_only_mesh_with_microbatches_matches(reference, tmp_path):
  ref, ref_params = reference
  result = _run(tmp_path / "w", tmp_path / "r.json", "--steps", 3, "--mesh",
                "1,4,1", "--microbatches", 2, "--adam_eps", 1e-4, devices=4)
  assert len(result["losses"]) == 3
  np.testing.assert_allclose(result["losses"], ref["losses"], atol=1e-5)
  assert _max_diff(ref_params, _params(tmp_path / "r.json")) <= 1e-5


def test_two_processes_match_one_process(reference, tmp_path):
  _, ref_params = reference
  port = _free_port()
  procs = []
  for i in range(2):
    cmd = [sys.executable, SCRIPT, "--workdir", str(tmp_path / "w"), "--out",
           str(tmp_path / f"r{i}.json"), "--steps", "3", "--mesh", "2,2,2",
           "--adam_eps", "1e-4"]
    procs.append(subprocess.Popen(
        cmd, env=_env(4, JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                      JAX_NUM_PROCESSES=2, JAX_PROCESS_ID=i),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
  r0 = json.load(open(tmp_path / "r0.json"))
  r1 = json.load(open(tmp_path / "r1.json"))
  assert r0["process_index"] == 0 and r1["process_index"] == 1
  np.testing.assert_allclose(r0["losses"], reference[0]["losses"], atol=1e-5)
  assert _max_diff(ref_params, _params(tmp_path / "r0.json")) <= 1e-5
  # Each process fed only its half of every global batch: no example twice.
  assert len(r0["read"]) == len(r1["read"]) == 3 * 4
  assert not set(r0["read"]) & set(r1["read"])


def _wait_for_step(metrics_path, step, proc, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if proc.poll() is not None:
      raise AssertionError(f"run ended early: {proc.stderr.read()[-2000:]}")
    if os.path.exists(metrics_path):
      rows = [json.loads(l) for l in open(metrics_path) if l.strip()]
      if rows and rows[-1]["step"] >= step:
        return
    time.sleep(0.05)
  raise AssertionError(f"step {step} not reached in {timeout}s")


def _complete_steps(workdir):
  """Committed checkpoint steps (orbax renames a step dir when complete)."""
  root = workdir / "checkpoints"
  if not root.exists():
    return []
  return sorted(int(d) for d in os.listdir(root) if d.isdigit())


def test_sigkill_then_restart_is_bitwise_identical(tmp_path):
  full = _run(tmp_path / "full", tmp_path / "full.json", "--steps", 10,
              "--checkpoint_every", 3)
  workdir = tmp_path / "killed"
  cmd = [sys.executable, SCRIPT, "--workdir", str(workdir), "--steps", "10",
         "--checkpoint_every", "3", "--sleep", "0.3"]
  proc = subprocess.Popen(cmd, env=_env(1), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  _wait_for_step(workdir / "metrics.jsonl", 5, proc)
  deadline = time.time() + 60  # until step 3's async save is committed
  while not _complete_steps(workdir) and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  steps = _complete_steps(workdir)
  assert steps and max(steps) < 10  # really interrupted, mid-run
  resumed = _run(workdir, tmp_path / "resumed.json", "--steps", 10,
                 "--checkpoint_every", 3)
  assert resumed["last_step"] == 10
  assert resumed["sha256"] == full["sha256"]
  rows = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  assert [r["step"] for r in rows] == list(range(1, 11))


def test_sigterm_saves_and_exits(tmp_path):
  workdir = tmp_path / "w"
  cmd = [sys.executable, SCRIPT, "--workdir", str(workdir), "--steps", "50",
         "--checkpoint_every", "100", "--sleep", "0.2", "--out",
         str(tmp_path / "r.json")]
  proc = subprocess.Popen(cmd, env=_env(1), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  _wait_for_step(workdir / "metrics.jsonl", 3, proc)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-2000:]
  result = json.load(open(tmp_path / "r.json"))
  assert result["preempted"] and 3 <= result["last_step"] < 50
  steps = [int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit()]
  assert result["last_step"] in steps
