"""R3 evaluation on a scripted policy: first and second attempt per query,
accuracies with Wilson intervals, error categories, and the report files."""

import json
import os
import types

import pytest

from swirl_jax.evaluation import reflect_retry as evaluation
from swirl_jax.evaluation import r3_report as report
from swirl_jax.tasks import compact
from swirl_jax.tasks import prompts

CD_KW = dict(prompt_style="compact", min_numbers=3, max_numbers=3,
             min_value=1, max_value=9, min_target=1, max_target=40,
             shuffle=False)


class TwoAttemptPolicy:
  """Per example (by prompt): (first answer, reflection, retry)."""

  def __init__(self, tokenizer, script):
    self.tok, self.script = tokenizer, script
    self.temperatures = []

  def update_params(self, params):
    del params

  def generate(self, prompts_, max_new_tokens, temperature=0.0, top_k=None,
               top_p=None, stop_tokens=None, seed=0):
    del max_new_tokens, top_k, top_p, stop_tokens, seed
    self.temperatures.append(temperature)
    out = []
    for ids in prompts_:
      text = self.tok.decode(ids)
      key = next(k for k in self.script if k in text)
      turn = text.count("<start_of_turn>model") - 1
      out.append(self.tok.encode(self.script[key][turn]) +
                 [self.tok.end_of_turn_id])
    return types.SimpleNamespace(tokens=out,
                                 logprobs=[[0.0] * len(t) for t in out],
                                 done=[True] * len(out))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  from swirl_jax.data import reflection_demonstrations as demonstrations
  from swirl_jax.tokenizer import Tokenizer, train_sentencepiece
  texts = demonstrations.tokenizer_corpus(
      tasks=("countdown",), task_kwargs={"countdown": CD_KW}, num_per_task=20)
  path = tmp_path_factory.mktemp("r3_eval") / "spm.model"
  tokenizer = Tokenizer(train_sentencepiece(texts, str(path), 1024))
  task = compact.make_task("countdown", **CD_KW)
  ex = compact.generate_examples(task, 4, seed=9, split="test")
  good = [f"<answer> {e.answer} </answer>" for e in ex]
  script = {
      task.prompt(ex[0]): [good[0]],                               # t1 ok
      task.prompt(ex[1]): ["<answer> 1 + </answer>", "Fix it.", good[1]],
      task.prompt(ex[2]): ["no idea", "Hmm.", "<answer> 99 </answer>"],
      task.prompt(ex[3]): ["<answer> 1 + </answer>", "Hmm.",
                           "<answer> 1 + </answer>"],
  }
  return tokenizer, task, ex, script


def test_two_attempts_per_query(setup):
  tokenizer, task, ex, script = setup
  policy = TwoAttemptPolicy(tokenizer, script)
  rows = evaluation.evaluate_task(policy, tokenizer, task, ex,
                                  temperature=0.0)
  assert set(policy.temperatures) == {0.0}
  assert [r["correct1"] for r in rows] == [True, False, False, False]
  assert [r["correct2"] for r in rows] == [True, True, False, False]
  assert [r["category1"] for r in rows] == [
      "correct", "invalid_equation", "no_answer", "invalid_equation"]
  assert [r["final_category"] for r in rows] == [
      "correct", "correct", "wrong_numbers", "invalid_equation"]
  assert rows[0]["reflection"] == "" and rows[0]["category2"] == ""
  assert rows[1]["reflection"] == "Fix it."
  s = evaluation.summarize(rows)
  assert s["n"] == 4
  assert s["accuracy_t1"]["value"] == 0.25
  assert s["accuracy_t2"]["value"] == 0.5
  assert s["delta_i_to_c"]["value"] == 0.25
  assert s["retry_success"]["value"] == pytest.approx(1 / 3)
  assert s["retry_success"]["n"] == 3
  lo, hi = s["accuracy_t2"]["low"], s["accuracy_t2"]["high"]
  assert 0.0 < lo < 0.5 < hi < 1.0  # Wilson interval around 2/4
  assert s["categories_t1"] == {"correct": 1, "invalid_equation": 2,
                                "no_answer": 1}
  assert s["categories_t2"] == {"correct": 2, "wrong_numbers": 1,
                                "invalid_equation": 1}


def test_reflection_prompt_in_evaluation(setup):
  tokenizer, task, ex, script = setup
  policy = TwoAttemptPolicy(tokenizer, script)
  seen = []
  original = policy.generate

  def spy(prompts_, *args, **kw):
    seen.append([tokenizer.decode(p) for p in prompts_])
    return original(prompts_, *args, **kw)

  policy.generate = spy
  evaluation.evaluate_task(policy, tokenizer, task, ex[1:2])
  first, reflect, retry = seen
  assert prompts.COUNTDOWN_REFLECTION_INSTRUCTION not in first[0]
  assert reflect[0].endswith(
      prompts.COUNTDOWN_REFLECTION_INSTRUCTION +
      "<end_of_turn>\n<start_of_turn>model\n")
  assert retry[0].endswith(prompts.RETRY_INSTRUCTION +
                           "<end_of_turn>\n<start_of_turn>model\n")


def test_report_files(setup, tmp_path):
  tokenizer, task, ex, script = setup
  rows = evaluation.evaluate_task(TwoAttemptPolicy(tokenizer, script),
                                  tokenizer, task, ex)
  better = [dict(r, correct2=True, final_category="correct") for r in rows]
  evals = {"vanilla": {"countdown": evaluation.summarize(rows)},
           "trained": {"countdown": evaluation.summarize(better)}}
  log = tmp_path / "rollouts.jsonl"
  log.write_text("\n".join(json.dumps(
      {"step": s, "mean_reward": 0.1 * s, "reward_by_task":
       {"countdown": 0.1 * s}}) for s in (0, 2, 2)) + "\n")
  paired = {"countdown": evaluation.paired_comparison(rows, better)}
  payload = report.write_r3_report(str(tmp_path), evals,
                                   rollout_log=str(log), paired=paired,
                                   settings={"seed": 0},
                                   grading={"function_calling": "strict"})
  for name in ("report.json", "report.md", "accuracy@t2.png",
               "errors_countdown.png", "grpo_reward.png"):
    assert os.path.getsize(tmp_path / name) > 0, name
  cmp = payload["second_attempt_comparison"]["countdown"]
  assert cmp["vanilla_t2"] == 0.5 and cmp["trained_t2"] == 1.0
  assert cmp["trained_above_vanilla"]
  assert payload["tables"]["accuracy@t2"]["trained"]["all"]["n"] == 4
  assert payload["grpo_batches"]["count"] == 2  # step 2 logged twice
  assert payload["second_attempt_paired"]["countdown"]["b_only"] == 2
  md = (tmp_path / "report.md").read_text()
  assert "Error categories: countdown" in md and "invalid_equation" in md
  assert "| countdown | 2 | 0 | 0 | 2 | 0.500 |" in md
  assert json.load(open(tmp_path / "report.json"))["settings"] == {"seed": 0}
  assert payload["grading"] == {"function_calling": "strict"}
  assert "## Grading\n\n- function_calling: `strict` (R3's rule: " in md


def test_r3_headline_rules():
  from swirl_jax.evaluation import r3_report as report  # pylint: disable=g-import-not-at-top
  # 400 queries: the trained model fixes 30 second attempts and breaks 10
  # (p ~ 0.002); its first attempts are the vanilla model's.
  vanilla = [{"id": str(i), "correct1": i < 100, "correct2": i < 150}
             for i in range(400)]
  trained = [{"id": str(i), "correct1": i < 100,
              "correct2": 10 <= i < 180} for i in range(400)]
  t2, t1 = report.r3_headline(vanilla, trained)
  assert t2["holds"] and t2["value"] == pytest.approx(20 / 400)
  assert t2["n"] == 400 and t2["low"] > 0
  assert t1["holds"] and t1["value"] == 0.0
  # The same effect on 200 queries is too few for the claim.
  t2, _ = report.r3_headline(vanilla[:200], trained[:200])
  assert not t2["holds"]
  # A first attempt 20 points lower fails the second claim.
  worse = [dict(r, correct1=r["correct1"] and int(r["id"]) >= 80)
           for r in trained]
  assert not report.r3_headline(vanilla, worse)[1]["holds"]


def test_paired_comparison_sign_test():
  a = [{"id": str(i), "correct2": c} for i, c in enumerate(
      [True, True, False, False, True, False, False, False])]
  b = [{"id": str(i), "correct2": c} for i, c in enumerate(
      [True, False, True, True, True, True, True, False])]
  p = evaluation.paired_comparison(a, b[::-1][::-1])
  assert (p["both"], p["neither"], p["a_only"], p["b_only"]) == (2, 1, 1, 4)
  # Exact two-sided sign test on 1 vs 4 discordant: 2 * P(X <= 1), n = 5.
  assert p["p_value"] == pytest.approx(2 * (1 + 5) / 32)
  assert evaluation.paired_comparison(a, a)["p_value"] == 1.0
  with pytest.raises(ValueError, match="different items"):
    evaluation.paired_comparison(a, b[:-1])
