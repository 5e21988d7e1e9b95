"""SWiRL evaluation on the tiny model: accuracy and mean process label."""

import pytest

from swirl_jax.evaluation import write_report
from swirl_jax.evaluation.tool_use import evaluate_policy


@pytest.fixture
def setup(tiny_policy):
  return tiny_policy


def test_evaluate_policy_and_report(setup, tmp_path):
  config, params, tokenizer = setup
  results = evaluate_policy(config, params, tokenizer,
                            task_names=("gsm8k", "hotpotqa"), num_questions=3,
                            prompt_style="compact", max_new_tokens=12,
                            max_steps=1)
  for name in ("gsm8k", "hotpotqa"):
    r = results[name]
    assert r["accuracy"]["n"] == 3 and len(r["trajectories"]) == 3
    steps = sum(len(t.steps) for t in r["trajectories"])
    assert r["process_label"]["n"] == steps
    assert 0.0 <= r["process_label"]["value"] <= 1.0
    # A random model answers nothing correctly and writes malformed steps.
    assert r["accuracy"]["value"] == 0.0
    assert r["correct"] == {t.example_id: t.correct
                            for t in r["trajectories"]}
  # Held-out: the evaluated questions come from the test split, with a seed
  # fixed by the task's name (the same questions whatever the task list).
  from swirl_jax.evaluation.tool_use import task_seed
  from swirl_jax.tasks import get_task
  test_ids = {e.id for e in get_task("gsm8k").generate(
      3, seed=task_seed(0, "gsm8k"), split="test")}
  assert {t.example_id for t in results["gsm8k"]["trajectories"]} == test_ids
  alone = evaluate_policy(config, params, tokenizer, task_names=("hotpotqa",),
                          num_questions=3, prompt_style="compact",
                          max_new_tokens=12, max_steps=1)
  assert set(alone["hotpotqa"]["correct"]) == set(
      results["hotpotqa"]["correct"])
  table = {"base": {k: v["accuracy"] for k, v in results.items()}}
  paths = write_report(str(tmp_path), {"accuracy": table}, title="SWiRL")
  assert "| base |" in open(paths["md"]).read()
