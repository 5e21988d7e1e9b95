"""Tests for swirl_jax.stages: stored results, reuse, atomic writes, scopes."""

import json
import os

import gin
import pytest

from swirl_jax import stages


def test_run_stage_stores_and_reuses_result(tmp_path):
  calls = []

  def fn(directory):
    calls.append(directory)
    with open(os.path.join(directory, "out.txt"), "w") as f:
      f.write("x")
    return {"value": 3}

  first = stages.run_stage(str(tmp_path), "a", fn)
  second = stages.run_stage(str(tmp_path), "a", fn)
  assert first["value"] == second["value"] == 3
  assert calls == [str(tmp_path / "a")]
  assert "seconds" in first
  assert stages.stage_result(str(tmp_path), "a")["value"] == 3


def test_failed_stage_leaves_no_result_and_reruns(tmp_path):
  def boom(directory):
    raise RuntimeError("killed")

  with pytest.raises(RuntimeError):
    stages.run_stage(str(tmp_path), "b", boom)
  assert stages.stage_result(str(tmp_path), "b") is None
  assert stages.run_stage(str(tmp_path), "b", lambda d: {"ok": 1})["ok"] == 1


def test_write_json_atomic_handles_numpy(tmp_path):
  import numpy as np
  path = str(tmp_path / "x" / "r.json")
  stages.write_json_atomic(path, {"a": np.float32(0.5), "b": np.arange(2)})
  assert json.load(open(path)) == {"a": 0.5, "b": [0, 1]}
  assert os.listdir(tmp_path / "x") == ["r.json"]


@gin.configurable("stages_probe", module="tests")
def _probe(value=0):
  return value


def test_stage_scope_selects_scoped_bindings(tmp_path):
  gin.clear_config()
  gin.parse_config(["tests.stages_probe.value = 1",
                    "sft/tests.stages_probe.value = 2"])
  try:
    with gin.config_scope("sft"):
      assert _probe() == 2
    assert _probe() == 1
  finally:
    gin.clear_config()


def test_check_eval_split_names_the_experiment_and_value():
  assert stages.check_eval_split("r3_experiment", "validation") == "validation"
  with pytest.raises(ValueError, match=r"r3_experiment\.eval_split .*'dev'"):
    stages.check_eval_split("r3_experiment", "dev")
