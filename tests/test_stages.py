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


def test_stage_seconds_reads_the_stored_results(tmp_path):
  stages.run_stage(str(tmp_path), "a", lambda d: {"seconds": 1.5})
  stages.run_stage(str(tmp_path), "b", lambda d: {})
  os.makedirs(tmp_path / "not_a_stage")
  assert set(stages.stage_seconds(str(tmp_path))) == {"a", "b"}
  assert stages.stage_seconds(str(tmp_path), ("a", "missing")) == {
      "a": 1.5, "missing": None}


def test_settings_of_keeps_json_values_and_reprs_the_rest():
  import dataclasses  # pylint: disable=g-import-not-at-top

  @dataclasses.dataclass(frozen=True)
  class Config:
    seed: int = 0
    tasks: tuple = ("a",)
    model: object = frozenset({1})

  assert stages.settings_of(Config(), extra=2) == {
      "seed": 0, "tasks": ("a",), "model": "frozenset({1})", "extra": 2}
  assert stages.settings_of(Config(), seed=3)["seed"] == 3


def test_experiment_keeps_only_the_params_asked_to(tmp_path, monkeypatch):
  loads = []
  monkeypatch.setattr(stages, "experiment_tokenizer", lambda w, c: "tok")
  monkeypatch.setattr(stages, "load_policy",
                      lambda config, init_from, seed: loads.append(
                          (init_from, seed)) or object())

  class Config:
    model_config, seed = "config", 7

  exp = stages.Experiment(str(tmp_path), Config())
  assert exp.tokenizer == "tok" and exp.stage_dir("x") == str(tmp_path / "x")
  base = exp.params("base", keep=True)
  assert exp.params("base") is base and exp.params("other") is not base
  exp.params("other")
  assert loads == [("base", 7), ("other", 7), ("other", 7)]
  assert exp.seconds() >= 0 and exp.cpu_seconds() >= 0
  assert isinstance(stages.load_average(), list)
