"""A fourth recipe (single-attempt GRPO on Countdown, tests/fourth_recipe.py)
declared in under 150 lines over the shared machinery: its batches carry
the verifier's rewards, group advantages and a loss on the answer tokens
only; it trains, evaluates on held-out queries and resumes."""

import json
import os
import types

import jax
import numpy as np
import pytest

import fourth_recipe
from swirl_jax import models
from swirl_jax import stages
from swirl_jax.objectives import get_objective
from swirl_jax.tasks import compact

CD_KW = dict(prompt_style="compact", min_numbers=3, max_numbers=3,
             min_value=1, max_value=10, min_target=1, max_target=50)


class Scripted:
  """Fake sampler: row j of a prompt's group answers the gold expression
  when j is even, '<answer> 1 </answer>' otherwise."""

  def __init__(self, tokenizer, gold_by_prompt):
    self.tok, self.gold = tokenizer, gold_by_prompt

  def update_params(self, params):
    del params

  def generate(self, prompts, max_new_tokens, **kw):
    del max_new_tokens, kw
    out, seen = [], {}
    for p in prompts:
      key = next(k for k in self.gold if k in self.tok.decode(p))
      j = seen[key] = seen.get(key, -1) + 1
      text = f"<answer> {self.gold[key]} </answer>" if j % 2 == 0 else (
          "<answer> 1 </answer>")
      out.append(self.tok.encode(text) + [self.tok.end_of_turn_id])
    return types.SimpleNamespace(
        tokens=out, logprobs=[[-0.5] * len(t) for t in out],
        done=[True] * len(out))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  from swirl_jax.data import reflection_demonstrations as demonstrations
  from swirl_jax.tokenizer import Tokenizer, train_sentencepiece
  texts = demonstrations.tokenizer_corpus(
      tasks=("countdown",), task_kwargs={"countdown": CD_KW}, num_per_task=20)
  path = tmp_path_factory.mktemp("fourth") / "spm.model"
  tokenizer = Tokenizer(train_sentencepiece(texts, str(path), 1024))
  config = models.get_config("tiny", num_layers=1, embed_dim=32,
                             hidden_dim=64, num_heads=2, head_dim=16,
                             query_pre_attn_scalar=16,
                             attention_types=("local",))
  return tokenizer, config


def test_declaration_is_short():
  path = os.path.join(os.path.dirname(__file__), "fourth_recipe.py")
  with open(path) as f:
    assert len(f.read().splitlines()) < 150


def test_batch_rewards_advantages_and_answer_mask(setup):
  tokenizer, config = setup
  cfg = fourth_recipe.Config(task_kwargs=CD_KW)
  task = compact.make_task("countdown", **CD_KW)
  examples = compact.generate_examples(task, 2, seed=5)
  gold = {task.prompt(ex): ex.answer for ex in examples}
  builder = fourth_recipe.SingleAttemptBuilder(
      config, tokenizer, task, cfg, sampler=Scripted(tokenizer, gold))
  batch = builder(params=None, records=[{"example": ex.to_dict()}
                                        for ex in examples], step=0)
  np.testing.assert_array_equal(batch["rewards"], [1, 0, 1, 0] * 2)
  np.testing.assert_allclose(batch["advantages"], [1, -1, 1, -1] * 2,
                             atol=1e-5)
  np.testing.assert_array_equal(batch["group_ids"], [0] * 4 + [1] * 4)
  # The mask covers exactly the answer ids (and the end-of-turn id).
  for i in range(8):
    masked = batch["targets"][i][batch["action_mask"][i] > 0].tolist()
    text = (f"<answer> {examples[i // 4].answer} </answer>" if i % 2 == 0
            else "<answer> 1 </answer>")
    assert masked == tokenizer.encode(text) + [tokenizer.end_of_turn_id]
    np.testing.assert_allclose(
        batch["old_logprobs"][i][batch["action_mask"][i] > 0], -0.5)
  assert builder.last_stats["mean_reward"] == 0.5
  # The objective takes the batch as it is: a finite loss, a gradient.
  params = stages.load_policy(config, None, seed=0)
  loss_and_grad = jax.value_and_grad(
      lambda p: get_objective("grpo").loss_fn(
          p, batch, None, models.Transformer(config), beta=0.0)[0])
  loss, grads = loss_and_grad(params)
  assert np.isfinite(float(loss))
  assert any(float(np.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_trains_evaluates_and_resumes(setup, tmp_path):
  tokenizer, config = setup
  cfg = fourth_recipe.Config(task_kwargs=CD_KW)
  report = fourth_recipe.run(str(tmp_path), config, tokenizer, cfg)
  (entry,) = report["headline"]
  assert entry["n"] == cfg.eval_queries
  assert entry["low"] <= entry["value"] <= entry["high"]
  with open(tmp_path / "grpo" / "result.json") as f:
    assert json.load(f)["last_step"] == cfg.train_steps
  assert report["last_stats"]["step"] == cfg.train_steps - 1
  again = fourth_recipe.run(str(tmp_path), config, tokenizer, cfg)
  assert again["headline"] == report["headline"]  # stages reused
