"""Smoke test of benchmarks/data_pipeline.py on a few records and batches."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
  spec = importlib.util.spec_from_file_location(
      f"bench_{name}", os.path.join(ROOT, "benchmarks", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_data_pipeline_benchmark_measures_both_sides(tmp_path):
  bench = _load("data_pipeline")
  records = bench.demonstration_records(num_per_task=3)
  # Scripted episodes: every model turn is one record, the last an answer.
  assert {r["task"] for r in records} == {"gsm8k", "hotpotqa"}
  assert all(r["label"] == "GOOD" and r["outcome"] for r in records)
  tools = [r for r in records if r["kind"] == "tool"]
  assert tools and all(r["tool"] in bench.TOOL_TAGS and r["tool_input"]
                       and r["tool_result"] for r in tools)
  results = bench.run(workdir=str(tmp_path), num_per_task=3, seq=192,
                      batch=2, batches=4, warmup=1, steps=2, threads=2,
                      prefetch=8, model_overrides=dict(
                          num_layers=1, attention_types=("global",)))
  assert results["records"] == len(records)
  assert set(results["pipeline"]) == {"pad", "pack"}
  for mode in results["pipeline"].values():
    assert mode["batches_per_s"] > 0
    assert 0 < mode["supervised_per_row"] < mode["tokens_per_row"] <= 192
    assert mode["ratio"] == pytest.approx(
        mode["batches_per_s"] * results["train_step_s"])
  assert results["train_steps_per_s"] == pytest.approx(
      1 / results["train_step_s"])
  text = bench.report(results)
  assert "train step" in text and "pipeline (pack)" in text
  assert "the train step" in text


def test_train_step_benchmark_against_transformers_same_step():
  """Both sides time the same frozen-embedding step; the ratio is printed."""
  import re
  import subprocess
  import sys
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  from swirl_jax import models
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "benchmarks", "train_step_mfu.py"),
       "--preset", "tiny", "--batch", "1", "--seq", "16", "--steps", "1",
       "--freeze", "embedding", "--against", "transformers"],
      check=True, capture_output=True, text=True, timeout=600).stdout
  assert "== swirl_jax ==" in out and "== transformers ==" in out
  times = re.findall(r"step time\s*:\s*([\d.]+) ms", out)
  assert len(times) == 2 and all(float(t) > 0 for t in times)
  ratio = float(re.search(r"ratio \(transformers step / ours\) : "
                          r"([\d.]+)x", out).group(1))
  assert ratio == pytest.approx(float(times[1]) / float(times[0]), abs=0.006)
  config = models.get_config("tiny")
  trained = int(re.search(r"trained params=([\d,]+)", out).group(1)
                .replace(",", ""))
  assert trained == (config.num_params()
                     - config.vocab_size * config.embed_dim)


def test_recipe_step_benchmark_splits_a_real_swirl_step(swirl_toy_run):
  """The SWiRL step of the toy run, timed by part: the parts add up."""
  import gin  # pylint: disable=g-import-not-at-top
  from conftest import SWIRL_TOY_BINDINGS  # pylint: disable=g-import-not-at-top
  workdir, _ = swirl_toy_run
  bench = _load("recipe_step")
  argv = ["--workdir", workdir, "--task", "hotpotqa", "--steps", "2",
          "--threads", str(os.cpu_count() or 1)]
  for b in SWIRL_TOY_BINDINGS:
    argv += ["--gin", b]
  gin.clear_config()
  try:
    results = bench.main(argv)
  finally:
    gin.clear_config()
  p = results["parts"]
  assert results["rows"][0] == 2 * 2  # states x actions of the toy run
  assert len(results["step_s"]) == 2 and results["steps"] == 4
  assert len(results["compile_s"]) == 2 and min(results["compile_s"]) >= 0
  assert results["steady_steps"] == sum(c == 0 for c in results["compile_s"])
  assert 0 < p["prefill"] and p["sample"] > 0 and p["judge"] >= 0
  assert p["prefill"] + p["decode"] == pytest.approx(p["sample"])
  assert (p["sample"] + p["judge"] + p["host glue"] + p["update"]
          == pytest.approx(p["step"]))
  assert p["update"] > 0 and p["reference forward"] > 0
  assert p["forward + backward"] > p["reference forward"]
  text = bench.report(results)
  assert "SWiRL stage-2 step, hotpotqa: 2 states x 2 actions" in text
  with pytest.raises(SystemExit):
    bench.main(["--workdir", workdir, "--task", "gsm8k"])  # not trained on


def test_sampler_benchmark_times_grouped_prompts_both_ways():
  """--group: each prompt prefilled per row and once per group, the same
  sampled tokens, and the printed ratio is the printed times' ratio."""
  import re
  import subprocess
  import sys
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "benchmarks",
                                    "sampler_throughput.py"),
       "--group", "2", "--batch", "4", "--prompt_len", "8", "--new", "4",
       "--repeats", "1", "--temperature", "1.0"],
      check=True, capture_output=True, text=True, timeout=600).stdout
  times = {int(g): float(t) for g, t in re.findall(
      r"group_size=\s*(\d+): +([\d.]+) ms per call", out)}
  assert set(times) == {1, 2} and all(t > 0 for t in times.values())
  ratio = float(re.search(r"ratio \(group_size=1 / group_size=2\): "
                          r"([\d.]+)x per call", out).group(1))
  assert ratio == pytest.approx(times[1] / times[2], rel=0.05, abs=0.02)
  assert "same tokens: True" in out
  with pytest.raises(subprocess.CalledProcessError):
    subprocess.run([sys.executable, os.path.join(
        ROOT, "benchmarks", "sampler_throughput.py"), "--group", "3",
                    "--batch", "4"], check=True, capture_output=True,
                   timeout=600)


def test_sampler_benchmark_times_the_int8_decode_weights_beside_float():
  """--decode float,int8_unembed,int8: every mode timed against transformers
  on the same weights, with each int8 sampler's share of tokens equal to
  float's."""
  import re
  import subprocess
  import sys
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "benchmarks",
                                    "sampler_throughput.py"),
       "--batch", "1,2", "--prompt_len", "8", "--new", "4", "--repeats", "1",
       "--decode", "float,int8_unembed,int8"],
      check=True, capture_output=True, text=True, timeout=600).stdout
  rates = re.findall(r"batch=\s*(\d+) swirl_jax Sampler \((\w+) *\): +"
                     r"([\d.]+) tokens/s", out)
  assert {(b, m) for b, m, _ in rates} == {
      (b, m) for b in ("1", "2") for m in ("float", "int8_unembed", "int8")}
  assert all(float(r) > 0 for _, _, r in rates)
  equal = [float(x) for x in re.findall(r"tokens equal to float's: (\d+)%",
                                        out)]
  assert len(equal) == 4 and all(0 <= x <= 100 for x in equal)
  for mode in ("int8_unembed", "int8"):
    assert len(re.findall(rf"ratio \({mode} / transformers\)", out)) == 2


R3_TOY_BINDINGS = [
    # One small layer (quick to compile), as tests/test_r3_experiment.py.
    "swirl_jax.models.preset_config.num_layers = 1",
    "swirl_jax.models.preset_config.embed_dim = 32",
    "swirl_jax.models.preset_config.hidden_dim = 64",
    "swirl_jax.models.preset_config.num_heads = 2",
    "swirl_jax.models.preset_config.head_dim = 16",
    "swirl_jax.models.preset_config.query_pre_attn_scalar = 16",
    "swirl_jax.models.preset_config.attention_types = ('local',)",
    "swirl_jax.models.preset_config.max_seq_len = 512",
    "swirl_jax.r3.R3Config.sft_steps = 2",
    "swirl_jax.r3.R3Config.sft_examples_per_task = 8",
    "swirl_jax.r3.R3Config.sft_batch_size = 2",
    "swirl_jax.r3.R3Config.failure_queries_per_task = 3",
    "swirl_jax.r3.R3Config.max_samples_per_query = 2",
    "swirl_jax.r3.R3Config.samples_per_round = 1",
    "swirl_jax.r3.R3Config.grpo_steps = 2",
    "swirl_jax.r3.R3Config.groups_per_step = 2",
    "swirl_jax.r3.R3Config.query_pool = 2",
    "swirl_jax.r3.R3Config.group_size = 2",
    "swirl_jax.r3.R3Config.grpo_seq_len = 256",
    "swirl_jax.r3.R3Config.max_new_tokens = 8",
    "swirl_jax.r3.R3Config.eval_queries_per_task = 2",
    "swirl_jax.training.trainer.train.async_checkpoints = False",
]


def _recipe_step_on_toy_run(workdir, gin_file, bindings, recipe_args):
  """Runs the experiment of `gin_file` with `bindings` in `workdir`, then
  recipe_step.py on it (2 steps); returns the benchmark's results."""
  import gin  # pylint: disable=g-import-not-at-top
  from swirl_jax import gin_utils, registry  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  try:
    gin_utils.parse([gin_file], bindings)
    registry.run(workdir)
    gin.clear_config()
    argv = recipe_args + ["--workdir", workdir, "--steps", "2",
                          "--threads", str(os.cpu_count() or 1)]
    for b in bindings:
      argv += ["--gin", b]
    return _load("recipe_step").main(argv)
  finally:
    gin.clear_config()


def test_recipe_step_benchmark_splits_a_real_r3_cycle(tmp_path):
  """--recipe r3 on a toy R3 run: every closed cycle's sampler calls are
  the reflection and the retry call, and the parts add up to the cycle."""
  results = _recipe_step_on_toy_run(
      str(tmp_path / "r3"), "gin_configs/experiments/r3_quickstart.gin",
      R3_TOY_BINDINGS, ["--recipe", "r3"])
  assert results["inner_updates"] == 2 and results["steps"] == 8
  assert len(results["cycles"]) == 2
  for cycle in results["cycles"]:
    assert cycle["rows"] == [4, 4]  # 2 queries x 2 reflections, then retries
    assert cycle["compile_s"] >= 0 and cycle["cycle_s"] > 0
  p = results["parts"]
  assert p["reflection call"] > 0 and p["retry call"] > 0
  assert p["reflection prefill"] > 0 and p["retry prefill"] > 0
  assert p["log-probs"] > 0 and p["updates"] > 0 and p["verify"] >= 0
  assert (p["reflection call"] + p["retry call"] + p["log-probs"]
          + p["verify"] + p["host glue"] + p["updates"]) == pytest.approx(
              p["cycle"])


def test_recipe_step_benchmark_splits_a_real_score_step(tmp_path):
  """--recipe score on a toy SCoRe run: each step's sampler calls are the
  two attempts (one task), verification is timed, the parts add up."""
  from test_score_experiment import EXP, TOY_BINDINGS  # pylint: disable=g-import-not-at-top
  results = _recipe_step_on_toy_run(
      str(tmp_path / "score"), "gin_configs/experiments/score_quickstart.gin",
      TOY_BINDINGS + [f"{EXP}.baselines = ()", f"{EXP}.scaling_methods = ()"],
      ["--recipe", "score", "--stage", "stage2"])
  assert results["stage"] == "stage2" and results["steps"] == 4
  assert len(results["cycles"]) == 2
  for cycle in results["cycles"]:
    assert cycle["rows"] == [4, 4]  # 2 problems x 2 episodes, two attempts
  p = results["parts"]
  assert p["attempt 1 call"] > 0 and p["attempt 2 call"] > 0
  assert p["attempt 1 prefill"] > 0 and p["attempt 2 prefill"] > 0
  assert p["verify"] > 0 and p["log-probs"] > 0 and p["updates"] > 0
  assert (p["attempt 1 call"] + p["attempt 2 call"] + p["verify"]
          + p["log-probs"] + p["host glue"] + p["updates"]) == pytest.approx(
              p["cycle"])
