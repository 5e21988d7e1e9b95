"""Base accuracy per task family: few-shot prompts built from the train split
only, each family graded in its recipe's loop, the resumable experiment and
its report. A scripted oracle policy (answers each held-out question with
its solved conversation) must score 1.0, a policy that always answers
nonsense 0.0, on all six families."""

import json
import types

import pytest

from swirl_jax.evaluation import base_accuracy as ba

CD_KW = dict(min_numbers=3, max_numbers=3, min_value=1, max_value=9,
             min_target=1, max_target=40, shuffle=False)
TASK_KW = {"countdown": CD_KW}
YOUR_TASK = "=== Your task ==="


def _task(family):
  return ba.make_family_task(family, **TASK_KW.get(family, {}))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  from swirl_jax.tokenizer import Tokenizer, train_sentencepiece
  texts = []
  for family in ba.FAMILIES:
    task = _task(family)
    exs = ba.family_examples(task, 3, seed=0, split="train")
    for turns in ba.demonstration_turns(family, task, exs):
      texts += [t for _, t in turns]
  path = tmp_path_factory.mktemp("base_acc") / "spm.model"
  return Tokenizer(train_sentencepiece(texts, str(path), 1024))


class OraclePolicy:
  """Answers the question after the few-shot prefix with its solved turn."""

  def __init__(self, tokenizer, scripts, wrong=False):
    self.tok, self.scripts, self.wrong = tokenizer, scripts, wrong
    self.calls = 0

  def update_params(self, params):
    del params

  def generate(self, prompts_, max_new_tokens, temperature=0.0, top_k=None,
               top_p=None, stop_tokens=None, seed=0, **unused):
    del max_new_tokens, top_k, top_p, stop_tokens, seed, unused
    assert temperature == 0.0
    self.calls += 1
    out = []
    for ids in prompts_:
      text = self.tok.decode(ids)
      asked = text.rsplit(YOUR_TASK, 1)[-1]
      key = next(k for k in self.scripts if k in asked)
      turn = text.count("<start_of_turn>model") - 1
      answer = ("<answer> no idea </answer>" if self.wrong
                else self.scripts[key][turn])
      out.append(self.tok.encode(answer) + [self.tok.end_of_turn_id])
    return types.SimpleNamespace(tokens=out,
                                 logprobs=[[0.0] * len(t) for t in out],
                                 done=[True] * len(out))


def _scripts(families, n, seed=0):
  """question -> the model turns of its solved conversation, per family."""
  scripts, held_out = {}, {}
  for family in families:
    task = _task(family)
    exs = ba.family_examples(task, n, seed=ba.held_out_seed(seed, family),
                             split="test")
    held_out[family] = (task, exs)
    for ex, turns in zip(exs, ba.demonstration_turns(family, task, exs)):
      scripts[ex.question] = [t for r, t in turns if r == "model"]
  return scripts, held_out


def test_few_shot_prompt_shows_train_examples_only():
  task = _task("gsm8k")
  shot = ba.few_shot_task("gsm8k", task, 2, seed=0)
  held = ba.family_examples(task, 50, seed=104729, split="test")
  prompt = shot.prompt(held[0])
  head, tail = prompt.split(YOUR_TASK)
  assert tail.strip() == task.prompt(held[0]).strip()
  assert head.count("=== Example") == 2
  assert "<math_exp>" in head and "<answer>" in head and " -> " in head
  # The instructions come once, in the asked question's prompt.
  assert prompt.count("I will allow you") == 1
  demos = ba.family_examples(task, 2, seed=ba.base.seed_for(0, "few-shot",
                                                            "gsm8k"),
                             split="train")
  for d in demos:
    assert d.question in head
  assert not any(h.question in head for h in held)
  # Everything but the prompt is the task's own.
  assert shot.tools == task.tools and shot.max_steps == task.max_steps
  assert shot.score(held[0], f"<answer> {held[0].answer} </answer>").correct
  assert ba.few_shot_task("gsm8k", task, 0, seed=0) is task
  with pytest.raises(ValueError, match="shots must be >= 0, got -1"):
    ba.few_shot_task("gsm8k", task, -1, seed=0)


def test_hotpotqa_few_shot_keeps_the_corpus_of_the_held_out_questions():
  task = _task("hotpotqa")
  shot = ba.few_shot_task("hotpotqa", task, 1, seed=0)
  held = ba.family_examples(task, 3, seed=5, split="test")
  assert shot.corpus(held) == task.corpus(held)
  assert "<search_query>" in shot.prompt(held[0])


@pytest.mark.parametrize("family", ba.FAMILIES)
def test_oracle_scores_one_and_nonsense_zero(tokenizer, family):
  scripts, held_out = _scripts((family,), 3)
  task, exs = held_out[family]
  shot = ba.few_shot_task(family, task, 1, seed=0)
  for wrong, expected in ((False, 1.0), (True, 0.0)):
    rows = ba.evaluate_family(OraclePolicy(tokenizer, scripts, wrong),
                              tokenizer, family, shot, exs,
                              max_new_tokens=32, max_context_tokens=4096)
    summary = ba.summarize(rows)
    assert summary["n"] == 3
    assert summary["accuracy"]["value"] == expected, rows
    if family in ba.MULTI_STEP and not wrong:
      assert all(r["steps"] >= 2 for r in rows)  # tool calls, then answer


def test_experiment_report_and_resume(tokenizer, tmp_path, monkeypatch):
  from swirl_jax import stages
  from swirl_jax import sampling
  families = ("countdown", "math")
  scripts, _ = _scripts(families, 4)
  policy = OraclePolicy(tokenizer, scripts)
  monkeypatch.setattr(stages, "experiment_tokenizer", lambda wd: tokenizer)
  monkeypatch.setattr(stages, "load_policy", lambda *a, **k: None)
  monkeypatch.setattr(sampling, "chat_sampler", lambda *a, **k: policy)
  kw = dict(model_config=None, init_from="gguf:x.gguf", families=families,
            shots=(0, 1), task_kwargs=TASK_KW, num_questions=4)
  report = ba.base_accuracy_experiment(str(tmp_path), **kw)
  assert set(report["results"]) == {"countdown-0shot", "countdown-1shot",
                                    "math-0shot", "math-1shot"}
  for r in report["results"].values():
    assert r["n"] == 4 and r["accuracy"]["value"] == 1.0
  on_disk = json.loads((tmp_path / "report.json").read_text())
  assert on_disk["settings"]["split"] == "test"
  assert "| countdown | R3 first attempt | 1 | 1.000" in (
      tmp_path / "report.md").read_text()
  rows = (tmp_path / "math-1shot" / "rows.jsonl").read_text().splitlines()
  assert len(rows) == 4 and json.loads(rows[0])["correct"]
  calls = policy.calls
  ba.base_accuracy_experiment(str(tmp_path), **kw)  # every stage reused
  assert policy.calls == calls


def test_bad_settings_are_named(tmp_path):
  kw = dict(model_config=None, init_from=None)
  with pytest.raises(ValueError, match=r"Unknown task families \['gsm9k'\]"):
    ba.base_accuracy_experiment(str(tmp_path), families=("gsm9k",), **kw)
  with pytest.raises(ValueError, match="non-negative"):
    ba.base_accuracy_experiment(str(tmp_path), shots=(-2,), **kw)
  with pytest.raises(ValueError, match=r"Question counts must be >= 1, "
                     r"got \{'math': 0\}"):
    ba.base_accuracy_experiment(str(tmp_path), families=("math",),
                                num_questions_per_family={"math": 0}, **kw)
  with pytest.raises(ValueError, match=r"families \['code'\] that are not"):
    ba.base_accuracy_experiment(str(tmp_path), families=("math",),
                                task_kwargs={"code": {}}, **kw)
