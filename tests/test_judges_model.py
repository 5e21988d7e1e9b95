"""Tests for swirl_jax.judges.model: the prompt, verdict parsing, batching.

Most tests drive `ModelJudge` with a character-level fake tokenizer and a
fake sampler returning scripted replies; one test runs the real tiny random
model through our Sampler.
"""

import types

import jax
import numpy as np
import pytest

from swirl_jax import models
from swirl_jax import tokenizer as tok
from swirl_jax.judges import base
from swirl_jax.judges import model as model_judge
from swirl_jax.sampling import Sampler

CONTEXT = [
    ("user", "Solve with the calculator. Question: Ana has 12 boxes of 30 "
             "pens. How many pens?"),
    ("model", "Multiply. <math_exp> 12*30 </math_exp>"),
    ("user", "12*30 -> 360"),
]
ACTION = "So she has <answer> 360 </answer>"


def _request(action=ACTION, task="gsm8k", context=CONTEXT):
  return base.JudgeRequest(task_name=task, question="Ana has 12 boxes...",
                           context_turns=list(context), action_text=action,
                           step_index=1)


class CharTokenizer:
  """Characters as ids (offset 10); 1 = end_of_turn, 2 = bos, 3 = eos."""

  end_of_turn_id, bos_id, eos_id, pad_id = 1, 2, 3, 0

  def encode_chat(self, turns, add_generation_prompt=True):
    return [self.bos_id] + self.encode(
        tok.format_chat(turns, add_generation_prompt))

  def encode(self, text):
    return [ord(c) + 10 for c in text]

  def decode(self, ids):
    return "".join(chr(i - 10) for i in ids if i >= 10)


class ScriptedSampler:
  """Replies with the scripted texts in order; records every call."""

  def __init__(self, tokenizer, replies):
    self.tokenizer = tokenizer
    self.replies = list(replies)
    self.calls = []

  def generate(self, prompts, max_new_tokens, temperature=0.0, top_k=None,
               top_p=None, stop_tokens=None, seed=0):
    self.calls.append(dict(prompts=prompts, max_new_tokens=max_new_tokens,
                           temperature=temperature, stop_tokens=stop_tokens,
                           seed=seed))
    texts = [self.replies.pop(0) for _ in prompts]
    tokens = [self.tokenizer.encode(t) + [self.tokenizer.end_of_turn_id]
              for t in texts]
    return types.SimpleNamespace(tokens=tokens,
                                 done=[True] * len(tokens))


# -- prompt --------------------------------------------------------------------


def test_prompt_has_context_action_and_instruction():
  prompt = model_judge.build_prompt(_request())
  for _, text in CONTEXT:
    assert text in prompt
  assert ACTION in prompt
  assert prompt.rstrip().endswith(
      'Explain your reasoning and then answer with either "GOOD" or "BAD".')
  assert "Judge only this last step" in prompt
  # The step comes after the whole context.
  assert prompt.index(ACTION) > prompt.index("12*30 -> 360")
  assert model_judge.MATH_GUIDANCE in prompt


def test_prompt_guidance_follows_the_task_tools():
  qa = model_judge.build_prompt(_request(
      "<search_query> Ana </search_query>", task="hotpotqa"))
  assert model_judge.SEARCH_GUIDANCE in qa
  assert "follows from the" in qa and "search results" in qa
  assert "whether the query helps" in qa
  other = model_judge.build_prompt(_request(task="unknown_task"))
  assert model_judge.GENERIC_GUIDANCE in other


# -- parsing -------------------------------------------------------------------


@pytest.mark.parametrize("reply, label", [
    ("The calculation is right. GOOD", "GOOD"),
    ("Reasoning...\n\n**Answer:** **BAD**", "BAD"),
    ('It uses the result. "GOOD".', "GOOD"),
    ("First I thought GOOD, but the answer ignores the result: BAD.", "BAD"),
    ("BAD at first glance; on reflection it is GOOD!", "GOOD"),
    ("Verdict: `GOOD`", "GOOD"),
    ("## Verdict\n- BAD\n", "BAD"),
    ("(GOOD)", "GOOD"),
    ("good step, nothing bad about it", None),
    ("GOODNESS knows; BADLY formed", None),
    ("", None),
    ("The step is fine.", None),
    ("xGOOD GOODy", None),
])
def test_parse_verdict(reply, label):
  assert model_judge.parse_verdict(reply) == label


# -- judging with a scripted sampler -------------------------------------------


def test_one_batched_call_and_labels():
  tokenizer = CharTokenizer()
  replies = ["Follows from 360. GOOD", "Invented number. **BAD**",
             "I cannot decide.", "GOOD"]
  sampler = ScriptedSampler(tokenizer, replies)
  judge = model_judge.ModelJudge(sampler, tokenizer, max_new_tokens=32)
  results = judge.judge_steps([_request()] * 4)
  assert len(sampler.calls) == 1
  call = sampler.calls[0]
  assert len(call["prompts"]) == 4 and call["max_new_tokens"] == 32
  assert call["temperature"] == 0.0  # greedy by default
  assert call["stop_tokens"] == [1, 3]
  assert tokenizer.decode(call["prompts"][0]).endswith(
      '"BAD".<end_of_turn>\n<start_of_turn>model\n')
  assert [r.label for r in results] == ["GOOD", "BAD", "BAD", "GOOD"]
  assert [r.reward for r in results] == [1.0, 0.0, 0.0, 1.0]
  assert [r.parsed for r in results] == [True, True, False, True]
  assert results[0].explanation == "Follows from 360. GOOD"
  assert "no GOOD/BAD verdict" in results[2].explanation
  assert judge.last_stats["unparsed"] == 1
  assert judge.last_stats["requests"] == 4
  assert judge.num_unparsed == 1 and judge.num_requests == 4


def test_default_label_batch_size_and_seeds():
  tokenizer = CharTokenizer()
  sampler = ScriptedSampler(tokenizer, ["???", "GOOD", "BAD", "meh", "BAD"])
  judge = model_judge.ModelJudge(sampler, tokenizer, default_label=base.GOOD,
                                 batch_size=2, temperature=0.7, seed=5)
  results = judge.judge_steps([_request()] * 5)
  assert [len(c["prompts"]) for c in sampler.calls] == [2, 2, 1]
  assert [c["seed"] for c in sampler.calls] == [5, 6, 7]
  assert all(c["temperature"] == 0.7 for c in sampler.calls)
  assert [(r.label, r.parsed) for r in results] == [
      ("GOOD", False), ("GOOD", True), ("BAD", True), ("GOOD", False),
      ("BAD", True)]
  assert judge.last_stats["unparsed"] == 2
  assert judge.last_stats["sampler_calls"] == 3
  assert judge.judge_steps([]) == []


def test_long_prompts_are_cut_in_the_middle():
  tokenizer = CharTokenizer()
  sampler = ScriptedSampler(tokenizer, ["GOOD", "GOOD"])
  judge = model_judge.ModelJudge(sampler, tokenizer, max_prompt_tokens=2000)
  long_context = CONTEXT + [("model", "<math_exp> 1+1 </math_exp>"),
                            ("user", "1+1 -> 2 " + "x" * 3000)]
  judge.judge_steps([_request(context=long_context), _request()])
  long_ids, short_ids = sampler.calls[0]["prompts"]
  assert len(long_ids) == 2000 and len(short_ids) < 2000
  assert long_ids[0] == tokenizer.bos_id
  text = tokenizer.decode(long_ids)
  assert "You are grading one step" in text  # the head survives,
  assert ACTION in text and text.endswith(  # and so do the step and the end.
      '"BAD".<end_of_turn>\n<start_of_turn>model\n')
  assert judge.last_stats["truncated_prompts"] == 1


def test_constructor_checks():
  tokenizer = CharTokenizer()
  sampler = ScriptedSampler(tokenizer, [])
  with pytest.raises(TypeError, match="generate"):
    model_judge.ModelJudge(object(), tokenizer)
  with pytest.raises(ValueError, match="default_label"):
    model_judge.ModelJudge(sampler, tokenizer, default_label="bad")
  with pytest.raises(ValueError, match="temperature"):
    model_judge.ModelJudge(sampler, tokenizer, temperature=-1)
  with pytest.raises(ValueError, match="batch_size"):
    model_judge.ModelJudge(sampler, tokenizer, batch_size=0)
  with pytest.raises(ValueError, match="lacks the field"):
    model_judge.ModelJudge(sampler, tokenizer, template="no fields")
  # A sampler with a config bounds the prompt by max_seq_len.
  sampler.config = types.SimpleNamespace(max_seq_len=512)
  judge = model_judge.ModelJudge(sampler, tokenizer, max_new_tokens=64)
  assert judge.max_prompt_tokens == 448
  with pytest.raises(ValueError, match="max_prompt_tokens"):
    model_judge.ModelJudge(sampler, tokenizer, max_new_tokens=510)


# -- the real tiny model -------------------------------------------------------


def test_real_tiny_model_judge_completes():
  # The tiny preset with random weights (drawn with numpy from the parameter
  # shapes, which skips compiling the initialiser), prompts from the
  # character tokenizer (its ids fit the tiny vocabulary).
  config = models.get_config("tiny")
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda s: (0.05 * rng.standard_normal(s.shape)).astype(s.dtype),
      models.param_shapes(config))
  tokenizer = CharTokenizer()
  sampler = Sampler(config, params, pad_id=tokenizer.pad_id,
                    prompt_bucket=128)
  judge = model_judge.ModelJudge(sampler, tokenizer, max_new_tokens=8,
                                 max_prompt_tokens=256)
  requests = [_request(), _request("<math_exp> 12*31 </math_exp>"),
              _request("<search_query> Ana </search_query>", task="hotpotqa")]
  results = judge.judge_steps(requests)
  assert len(results) == 3
  for r in results:
    assert r.label in base.LABELS and r.reward in (0.0, 1.0)
    if r.parsed:
      assert model_judge.parse_verdict(r.explanation) == r.label
    else:
      assert r.label == base.BAD
  stats = judge.last_stats
  assert stats["requests"] == 3 and stats["sampler_calls"] == 1
  assert stats["truncated_prompts"] == 3
  assert stats["unparsed"] == sum(not r.parsed for r in results)
