"""The R3 experiment end to end at toy size: every stage runs, the report
files are written, and a rerun resumes (finished stages are reused, an
unfinished one is redone)."""

import json
import os

import pytest

from swirl_jax import models
from swirl_jax import stages
from swirl_jax.r3 import experiment

STAGES = ("sft", "failures", "grpo", "eval_vanilla", "eval_trained")


def _run(workdir, config):
  return experiment.r3_experiment(workdir, experiment.R3Config(
      model_config=config,
      task_kwargs={
          "countdown": {"prompt_style": "compact", "min_numbers": 3,
                        "max_numbers": 3, "min_value": 1, "max_value": 9,
                        "min_target": 1, "max_target": 40, "shuffle": False},
          "function_calling": {"prompt_style": "compact",
                               "num_distractors": 1}},
      sft_steps=2, sft_examples_per_task=8, sft_batch_size=2,
      sft_seq_len=384, failure_queries_per_task=3, max_samples_per_query=2,
      samples_per_round=1, grpo_steps=2, groups_per_step=2,
      group_size=2, inner_updates=2, grpo_seq_len=256,
      max_new_tokens=8, eval_queries_per_task=3, seed=0))


@pytest.fixture(scope="module")
def config():
  # One small layer: quick to compile; the tokenizer has 1024 pieces.
  return models.get_config("tiny", num_layers=1, embed_dim=32, hidden_dim=64,
                           num_heads=2, head_dim=16, query_pre_attn_scalar=16,
                           attention_types=("local",), max_seq_len=512)


def test_toy_experiment_writes_report_and_resumes(tmp_path, config):
  workdir = str(tmp_path / "r3")
  payload = _run(workdir, config)
  for name in ("report.json", "report.md", "accuracy@t1.png",
               "accuracy@t2.png", "errors_countdown.png",
               "errors_function_calling.png", "grpo_reward.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  report = json.load(open(os.path.join(workdir, "report.json")))
  assert report == json.loads(json.dumps(payload))
  for table in ("accuracy@t1", "accuracy@t2"):
    for method in ("vanilla", "trained"):
      cells = report["tables"][table][method]
      assert cells["countdown"]["n"] == 3
      assert cells["function_calling"]["n"] == 3
      assert cells["all"]["n"] == 6
  assert set(report["second_attempt_comparison"]) == {
      "countdown", "function_calling", "all"}
  assert report["grpo_batches"]["count"] == 1  # steps 0-1: one sample
  assert report["failure_dataset"]["total_failures"] >= 1
  assert report["grading"] == {"function_calling": "strict"}  # R3's rule
  # The headline: pooled over both tasks (6 queries), too few to hold.
  t2, t1 = report["headline"]
  assert report["eval_split"] == "test"
  assert (t2["n"], t1["n"]) == (6, 6) and not t2["holds"]
  assert t2["value"] == pytest.approx(
      report["tables"]["accuracy@t2"]["trained"]["all"]["value"] -
      report["tables"]["accuracy@t2"]["vanilla"]["all"]["value"])
  grpo = stages.stage_result(workdir, "grpo")
  assert grpo["last_step"] == 2
  for label in ("vanilla", "trained"):
    rows = experiment.read_eval_rows(
        os.path.join(workdir, f"eval_{label}"), "countdown")
    assert len(rows) == 3

  # Resume: finished stages are reused; a stage without its result (as if
  # killed) is redone, and the report is written again.
  mtimes = {s: os.path.getmtime(os.path.join(workdir, s, "result.json"))
            for s in STAGES}
  os.remove(os.path.join(workdir, "eval_trained", "result.json"))
  os.remove(os.path.join(workdir, "report.md"))
  again = _run(workdir, config)
  for s in STAGES[:-1]:
    assert os.path.getmtime(os.path.join(workdir, s, "result.json")) == (
        mtimes[s]), s
  assert os.path.exists(os.path.join(workdir, "eval_trained", "result.json"))
  assert os.path.exists(os.path.join(workdir, "report.md"))
  assert again["tables"] == payload["tables"]  # the same trained model


def test_bad_task_settings_fail_before_any_stage(tmp_path, config):
  with pytest.raises(ValueError, match="not in tasks"):
    experiment.R3Config(model_config=config, tasks=("countdown",),
                        task_kwargs={"function_calling": {}})
  with pytest.raises(ValueError, match="no reflection_instruction"):
    experiment.R3Config(model_config=config, tasks=("gsm8k",))
  with pytest.raises(ValueError, match="'dev'"):
    experiment.R3Config(model_config=config, eval_split="dev")
  # Countdown of three one-digit numbers has 186 validation queries: more
  # are refused before any stage trains.
  with pytest.raises(ValueError, match="only 186 of 200 distinct "
                     "'validation'"):
    experiment.r3_experiment(str(tmp_path), experiment.R3Config(
        model_config=config, tasks=("countdown",),
        task_kwargs={"countdown": {
            "prompt_style": "compact", "min_numbers": 3, "max_numbers": 3,
            "min_value": 1, "max_value": 9, "min_target": 1,
            "max_target": 40, "shuffle": False}},
        eval_split="validation", eval_queries_per_task=200))
  assert not os.listdir(tmp_path)
