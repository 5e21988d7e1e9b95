"""Tests for swirl_jax.rollout: the engine, trajectories and JSONL files.

Most tests drive the engine with a scripted fake sampler (same `generate`
interface as `swirl_jax.sampling.Sampler`) that finds each row by a key
string in its prompt and answers with the scripted text for the number of
model turns already in it; one test runs the real tiny Sampler end to end.
"""

import json
import random
import threading
import time
import types

import jax
import pytest

from swirl_jax import models
from swirl_jax import tokenizer as tok
from swirl_jax.rollout import actions
from swirl_jax.rollout import engine as engine_lib
from swirl_jax.rollout import trajectory as traj
from swirl_jax.sampling import Sampler
from swirl_jax.tasks import get_task
from swirl_jax.tasks import prompts
from swirl_jax.tools import base as tool_base
from swirl_jax.tools import get_tool


# -- fixtures -----------------------------------------------------------------


@pytest.fixture(scope="module")
def gsm8k():
  task = get_task("gsm8k", max_steps=3)
  return task, task.generate(4, seed=0)


@pytest.fixture(scope="module")
def math_task():
  task = get_task("math")
  return task, task.generate(2, seed=0)


@pytest.fixture(scope="module")
def fc_task():
  task = get_task("function_calling")
  return task, task.generate(3, seed=0)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, gsm8k, math_task, fc_task):
  texts = []
  for task, examples in (gsm8k, math_task, fc_task):
    texts += [task.prompt(e) for e in examples]
  texts += [tok.format_chat([("model", "<math_exp> 6 * 7 </math_exp>"),
                             ("user", "6 * 7 -> 42"),
                             ("model", "So <answer> 42 </answer>")])] * 3
  path = tmp_path_factory.mktemp("spm") / "rollout.model"
  return tok.Tokenizer(tok.train_sentencepiece(texts, str(path), 1024))


class ScriptedSampler:
  """A fake Sampler answering from scripts.

  scripts: key string -> list of actions, one per model turn already in the
  prompt (the last one repeats). An action is a str, or a list of
  alternatives handed to the 1st, 2nd, ... row of a call with the same key
  and turn (e.g. the G reflections of one failed attempt).
  """

  def __init__(self, tokenizer, scripts):
    self.tok = tokenizer
    self.scripts = scripts
    self.eot = tokenizer.end_of_turn_id
    self.calls = []  # per call: the prompts (tuples of ids)
    self.group_sizes = []  # per call: the group_size it was given

  def generate(self, prompts_, max_new_tokens, temperature=0.0, top_k=None,
               top_p=None, stop_tokens=None, seed=0, rng=None, group_size=1,
               shared_prefix=False):
    del temperature, top_k, top_p, seed, rng
    assert stop_tokens is not None and self.eot in stop_tokens
    for i in range(0, len(prompts_), group_size):  # as Sampler checks
      group = prompts_[i:i + group_size]
      if shared_prefix:  # the group's rows begin alike
        assert all(p[:len(group[0]) // 2] == group[0][:len(group[0]) // 2]
                   for p in group)
      else:
        assert all(p == group[0] for p in group)
    self.group_sizes.append((group_size, shared_prefix) if shared_prefix
                            else group_size)
    budgets = (max_new_tokens if isinstance(max_new_tokens, list)
               else [max_new_tokens] * len(prompts_))
    self.calls.append([tuple(p) for p in prompts_])
    seen = {}
    tokens, logprobs, done = [], [], []
    for prompt, budget in zip(prompts_, budgets):
      text = self.tok.decode(prompt)
      keys = [k for k in self.scripts if k in text]
      assert len(keys) == 1, (keys, text[:200])
      turn = text.count("<start_of_turn>model") - 1
      script = self.scripts[keys[0]]
      action = script[min(turn, len(script) - 1)]
      if isinstance(action, list):
        n = seen.get((keys[0], turn), 0)
        seen[(keys[0], turn)] = n + 1
        action = action[n % len(action)]
      ids = (self.tok.encode(action) + [self.eot])[:budget]
      tokens.append(ids)
      logprobs.append([-0.5] * len(ids))
      done.append(ids[-1] == self.eot)
    return types.SimpleNamespace(tokens=tokens, logprobs=logprobs, done=done)


def _engine(sampler, tokenizer, **kw):
  kw.setdefault("progress", False)
  kw.setdefault("tool_workers", 4)
  return engine_lib.RolloutEngine(
      sampler, tokenizer, {"math_exp": get_tool("calculator")}, **kw)


def _assert_contexts_are_chat_encodings(trajectories, sampler, tokenizer):
  """Every state's encode_chat was a prompt the sampler saw."""
  seen = {p for call in sampler.calls for p in call}
  for t in trajectories:
    for i, step in enumerate(t.steps):
      ids = tokenizer.encode_chat(t.state(i))
      assert tuple(ids) in seen
      assert step.context_tokens == len(ids)


# -- incremental encoding -----------------------------------------------------


def test_incremental_encoding_equals_full_encoding(tokenizer, gsm8k):
  task, examples = gsm8k
  engine = _engine(ScriptedSampler(tokenizer, {}), tokenizer)
  rng = random.Random(0)
  pieces = ["<math_exp>", "</math_exp>", "<answer>", "</answer>", " ", "\n",
            "  ", "12", "3.5", "apples", "é", "日本", "<end", "of_turn>",
            "<start_of_turn>", "<end_of_turn>", "->", "\t", "model", "user"]
  for ex in examples:
    conv = engine.new_conversation()
    engine.add_turn(conv, "user", task.prompt(ex))
    for k in range(6):
      text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
      engine.add_turn(conv, "model" if k % 2 == 0 else "user", text)
      assert engine.prompt_ids(conv) == tokenizer.encode_chat(conv.turns)
      assert conv.ids == tokenizer.encode_chat(conv.turns, False)


# -- multi-step episodes ------------------------------------------------------


def _scripts(examples):
  a, b, c, d = examples
  return {
      a.question: ["I multiply. <math_exp> 6 * 7 </math_exp>",
                   f"So the total is <answer> {a.answer} </answer>"],
      b.question: ["hmm ### garbage",
                   f"<answer> {int(b.answer) + 1} </answer>"],
      c.question: ["<math_exp> 1 + 1 </math_exp>"],
      d.question: ["<math_exp> 2 </math_exp> <answer> 2 </answer>"],
  }


def test_run_mixed_batch(tokenizer, gsm8k):
  task, examples = gsm8k
  sampler = ScriptedSampler(tokenizer, _scripts(examples))
  engine = _engine(sampler, tokenizer)
  out = engine.run(task, examples, seed=3)
  a, b, c, d = out
  # One sampler call per step, only for the rows still running.
  # max_steps=3 queries, then one more action that must answer.
  assert [len(call) for call in sampler.calls] == [4, 4, 2, 2]
  _assert_contexts_are_chat_encodings(out, sampler, tokenizer)
  for t, ex in zip(out, examples):
    assert (t.task, t.example_id, t.gold, t.sample_index) == (
        "gsm8k", ex.id, ex.answer, 0)
    assert t.turns[0] == ("user", task.prompt(ex))
    assert [r for r, _ in t.turns] == ["user", "model"] * (len(t.turns) // 2) \
        + ["user"] * (len(t.turns) % 2)

  # A: a calculator call, then the right answer.
  assert a.finish_reason == "answer" and a.num_steps == 2
  assert a.turns[1:] == [
      ("model", "I multiply. <math_exp> 6 * 7 </math_exp>"),
      ("user", "6 * 7 -> 42"),
      ("model", f"So the total is <answer> {examples[0].answer} </answer>")]
  s0 = a.steps[0]
  assert (s0.kind, s0.tool, s0.tool_input, s0.tool_result, s0.malformed) == (
      "tool", "math_exp", "6 * 7", "42", None)
  assert s0.action_tokens[-1] == tokenizer.end_of_turn_id
  assert len(s0.action_logprobs) == len(s0.action_tokens)
  assert not s0.truncated
  assert a.steps[1].kind == "answer"
  assert a.final_answer == examples[0].answer
  assert a.verdict.correct and a.verdict.category == "correct"
  assert a.reward == 1.0

  # B: garbage (malformed, answered with the feedback), then a wrong answer.
  assert b.finish_reason == "answer" and b.num_steps == 2
  reason = "it contains neither a tool call nor an answer"
  assert b.steps[0].malformed == reason and b.steps[0].kind == "malformed"
  assert b.turns[2] == ("user", actions.malformed_feedback(reason,
                                                           ("math_exp",)))
  assert b.turns[2][1].endswith(actions.NOT_BOTH)
  assert not b.verdict.correct and b.verdict.category == "wrong_answer"

  # C: calls the calculator past the step limit.
  assert c.finish_reason == "step_limit" and c.num_steps == 4
  assert len(c.turns) == 9 and c.turns[-1] == ("user", "1 + 1 -> 2")
  assert all(s.tool_result == "2" for s in c.steps)
  assert c.final_answer is None and c.verdict.category == "no_answer"

  # D: a call plus an answer each time: malformed until the step limit.
  assert d.finish_reason == "step_limit"
  assert [s.malformed for s in d.steps] == [
      "it contains both a tool call and an answer"] * 4

  assert [len(t.states_and_actions()) for t in out] == [2, 2, 4, 4]
  state, action = c.states_and_actions()[2]
  assert state == c.turns[:5] and action == c.turns[5][1]

  stats = engine.last_stats
  assert stats.num_trajectories == 4 and stats.num_sampler_calls == 4
  assert stats.num_model_turns == 12 and stats.num_tool_calls == 1 + 4
  assert stats.generated_tokens == sum(
      len(s.action_tokens) for t in out for s in t.steps)
  assert stats.extra["finish_reasons"]["step_limit"] == 2
  assert stats.extra["accuracy"] == 0.25
  parts = stats.sampler_s + stats.tools_s + stats.verify_s + stats.glue_s
  assert parts == pytest.approx(stats.total_s)
  assert sum(stats.shares().values()) == pytest.approx(1.0)


def test_run_samples_order_and_malformed_limit(tokenizer, gsm8k):
  task, examples = gsm8k
  sampler = ScriptedSampler(tokenizer, _scripts(examples))
  engine = _engine(sampler, tokenizer, max_malformed=2)
  out = engine.run(task, examples[2:], num_samples=2, max_steps=5)
  assert [(t.example_id, t.sample_index) for t in out] == [
      (examples[2].id, 0), (examples[2].id, 1),
      (examples[3].id, 0), (examples[3].id, 1)]
  assert [t.finish_reason for t in out] == ["step_limit"] * 2 + [
      "malformed_limit"] * 2
  assert [t.num_steps for t in out] == [6, 6, 2, 2]
  assert [len(call) for call in sampler.calls] == [4, 4, 2, 2, 2, 2]


def test_run_context_limit(tokenizer, gsm8k):
  task, examples = gsm8k
  sampler = ScriptedSampler(tokenizer, _scripts(examples))
  gen = len(tokenizer.encode("<start_of_turn>model\n"))
  by_length = sorted(examples, key=lambda e: len(tokenizer.encode_chat(
      [("user", task.prompt(e))], False)))
  short, long_ = by_length[0], by_length[-1]
  lengths = [len(tokenizer.encode_chat([("user", task.prompt(e))], False))
             for e in (short, long_)]
  # The short prompt fits once (no step-0 script answers); the long one never.
  limit = lengths[0] + gen + 16 + 3
  assert lengths[1] + gen + 16 > limit
  engine = _engine(sampler, tokenizer, max_new_tokens=16,
                   max_context_tokens=limit)
  c, d = engine.run(task, [short, long_])
  assert (c.finish_reason, c.num_steps) == ("context_limit", 1)
  assert len(c.turns) == 3
  assert (d.finish_reason, d.num_steps, d.states_and_actions()) == (
      "context_limit", 0, [])
  assert d.turns == [("user", task.prompt(long_))]
  assert d.verdict.category == "no_answer"
  assert [len(call) for call in sampler.calls] == [1]


def test_truncated_action(tokenizer, gsm8k):
  task, examples = gsm8k
  sampler = ScriptedSampler(tokenizer, _scripts(examples))
  engine = _engine(sampler, tokenizer, max_new_tokens=3)
  (a,) = engine.run(task, examples[:1], max_steps=1)
  step = a.steps[0]
  assert step.truncated and len(step.action_tokens) == 3
  assert step.action_tokens[-1] != tokenizer.end_of_turn_id
  assert step.action == tokenizer.decode(step.action_tokens)
  assert a.finish_reason == "step_limit"


class _SlowTool(tool_base.Tool):
  """A calculator stand-in that sleeps (like search or the sandbox)."""

  name = "slow"
  tag = "math_exp"

  def __init__(self, seconds):
    self.seconds = seconds
    self.threads = []

  def describe(self):
    return "sleeps"

  def execute(self, call):
    self.threads.append(threading.current_thread().name)
    time.sleep(self.seconds)
    return f"slept on {call}"


def test_slow_tool_calls_run_concurrently(tokenizer, gsm8k):
  task, examples = gsm8k
  scripts = {e.question: [f"<math_exp> {i} </math_exp>"]
             for i, e in enumerate(examples)}
  tool = _SlowTool(0.2)
  engine = engine_lib.RolloutEngine(
      ScriptedSampler(tokenizer, scripts), tokenizer, [tool], progress=False,
      tool_workers=4)
  out = engine.run(task, examples, max_steps=2)
  assert [t.steps[1].tool_result for t in out] == [
      f"slept on {i}" for i in range(4)]
  # Step 0 measures the tool with one inline call, then pools the other 3;
  # steps 1 and 2 pool all 4: about 4 * 0.2 s instead of 12 * 0.2 s.
  assert engine.last_stats.tools_s < 1.5
  assert sum(n.startswith("rollout-tools") for n in tool.threads) == 11
  engine.close()


def test_slow_verifier_runs_on_the_pool(tokenizer, gsm8k):
  task, examples = gsm8k
  threads = []

  class SlowVerify(type(task)):
    """GSM8K with a verifier as slow as a sandboxed test run."""

    def verify(self, example, answer):
      threads.append(threading.current_thread().name)
      time.sleep(0.2)
      return super().verify(example, answer)

  scripts = {e.question: [f"<answer> {e.answer} </answer>"] for e in examples}
  engine = _engine(ScriptedSampler(tokenizer, scripts), tokenizer)
  out = engine.run(SlowVerify(max_steps=2), examples)
  assert all(t.correct for t in out)
  assert engine.last_stats.verify_s < 0.6  # 1 inline, then 3 at once.
  assert sum(n.startswith("rollout-tools") for n in threads) == 3
  engine.close()


def test_missing_tool_for_task_tag_is_named(tokenizer, gsm8k):
  task, examples = gsm8k
  engine = engine_lib.RolloutEngine(ScriptedSampler(tokenizer, {}), tokenizer,
                                    {}, progress=False)
  with pytest.raises(ValueError, match="tool tag 'math_exp'"):
    engine.run(task, examples)
  with pytest.raises(ValueError, match="under the key 'search_query'"):
    engine_lib.RolloutEngine(ScriptedSampler(tokenizer, {}), tokenizer,
                             {"search_query": get_tool("calculator")})
  with pytest.raises(ValueError, match="max_context_tokens=64"):
    engine_lib.RolloutEngine(ScriptedSampler(tokenizer, {}), tokenizer,
                             max_new_tokens=64, max_context_tokens=64)


def test_trajectory_json_round_trip(tokenizer, gsm8k, tmp_path):
  task, examples = gsm8k
  out = _engine(ScriptedSampler(tokenizer, _scripts(examples)),
                tokenizer).run(task, examples)
  for t in out:
    d = t.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert traj.Trajectory.from_dict(d) == t
  path = tmp_path / "sub" / "trajs.jsonl"
  traj.save_jsonl(path, out)
  assert traj.load_jsonl(path) == out
  assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp")]
  traj.save_jsonl(path, out[:1])  # Overwrites atomically.
  assert traj.load_jsonl(path) == out[:1]
  path.write_text('{"task": "x"}\n')
  with pytest.raises(ValueError, match="trajs.jsonl:1"):
    traj.load_jsonl(path)


# -- SCoRe: two attempts ------------------------------------------------------


def _final(x):
  return f"Final Answer: The final answer is ${x}$. I hope it is correct."


def test_two_attempts(tokenizer, math_task):
  task, (e, f) = math_task
  sampler = ScriptedSampler(tokenizer, {
      e.question: [f"Wrong. {_final(999)}", f"Fixed. {_final(e.answer)}"],
      f.question: [f"Right. {_final(f.answer)}", f"Changed. {_final(123)}"],
  })
  engine = _engine(sampler, tokenizer)
  out = engine.run_two_attempts(task, [e, f], None, num_samples=2, seed=1)
  assert len(out) == 4 and len(sampler.calls) == 2
  # An example's samples share its prompt: prefilled once.
  assert sampler.group_sizes == [2, 1]
  assert [(x.example_id, x.sample_index) for x in out] == [
      (e.id, 0), (e.id, 1), (f.id, 0), (f.id, 1)]
  instruction = prompts.MATH_CORRECTION_INSTRUCTION
  for ep, ex in zip(out, [e, e, f, f]):
    assert ep.instruction == instruction
    assert ep.prompt == task.prompt(ex)
    assert ep.y1.context_ids == tokenizer.encode_chat([("user", ep.prompt)])
    assert ep.y2.context_ids == tokenizer.encode_chat(ep.turns[:3])
    assert tokenizer.decode(ep.y2.context_ids) == (
        f"<start_of_turn>user\n{ep.prompt}<end_of_turn>\n"
        f"<start_of_turn>model\n{ep.y1.text}<end_of_turn>\n"
        f"<start_of_turn>user\n{instruction}<end_of_turn>\n"
        "<start_of_turn>model\n")
    assert ep.y1.finish == ep.y2.finish == "stop"
    assert len(ep.y2.logprobs) == len(ep.y2.tokens)
  assert [(x.reward1, x.reward2) for x in out] == [(0, 1), (0, 1), (1, 0),
                                                   (1, 0)]
  assert out[0].answer1 == "999" and out[0].verdict2.correct
  extra = engine.last_stats.extra
  assert extra["accuracy_t1"] == extra["accuracy_t2"] == 0.5
  assert extra["delta_i_to_c"] == extra["delta_c_to_i"] == 0.5
  d = out[0].to_dict()
  assert json.loads(json.dumps(d)) == d and d["reward2"] == 1.0
  assert traj.TwoAttemptEpisode.from_dict(d) == out[0]
  with pytest.raises(ValueError, match="no correction_instruction"):
    engine.run_two_attempts(get_task("gsm8k"), [e])


# -- R3: reflect, retry -------------------------------------------------------


def _call(answer):
  return f"<tool_call>{answer}</tool_call>"


def test_reflect_retry(tokenizer, fc_task, tmp_path):
  task, (e, f, g) = fc_task
  bad = '<tool_call>[{"name": "nope", "arguments": {}}]</tool_call>'
  sampler = ScriptedSampler(tokenizer, {
      # Fails; of its two reflections, only the first leads to a right retry.
      e.question: [bad, ["I used a wrong name.", "Try again."],
                   [_call(e.answer), bad]],
      f.question: [_call(f.answer)],  # Right at once: no reflection.
      g.question: ["no call at all", "I forgot the call.", _call(g.answer)],
  })
  engine = _engine(sampler, tokenizer)
  out = engine.run_reflect_retry(task, [e, f, g], None, group_size=2)
  assert [len(call) for call in sampler.calls] == [3, 4, 4]
  # Each failure's context is prefilled once for its two reflections, and
  # once for its two retries (which differ from their reflection on).
  assert sampler.group_sizes == [1, 2, (2, True)]
  assert [(x.example_id, x.group_index, x.reflection_index) for x in out] == [
      (e.id, 0, 0), (e.id, 0, 1), (g.id, 1, 0), (g.id, 1, 1)]
  assert [x.reward for x in out] == [1.0, 0.0, 1.0, 1.0]
  assert [x.reflection.text for x in out[:2]] == ["I used a wrong name.",
                                                   "Try again."]
  instruction = prompts.REFLECTION_INSTRUCTION
  for ep in out:
    assert not ep.first_verdict.correct
    assert (ep.instruction, ep.retry_instruction) == (
        instruction, prompts.RETRY_INSTRUCTION)
    assert [r for r, _ in ep.turns] == ["user", "model"] * 3
    assert ep.first.context_ids == tokenizer.encode_chat(ep.turns[:1])
    assert ep.reflection.context_ids == tokenizer.encode_chat(ep.turns[:3])
    assert ep.retry.context_ids == tokenizer.encode_chat(ep.turns[:5])
    assert tokenizer.decode(ep.reflection.context_ids).endswith(
        f"<start_of_turn>model\n{ep.first.text}<end_of_turn>\n"
        f"<start_of_turn>user\n{instruction}<end_of_turn>\n"
        "<start_of_turn>model\n")
    assert tokenizer.decode(ep.reflection.tokens) == (
        ep.reflection.text + "<end_of_turn>")
  extra = engine.last_stats.extra
  assert (extra["first_attempts"], extra["first_attempts_correct"],
          extra["retries"], extra["retries_correct"]) == (3, 1, 4, 3)
  traj.save_jsonl(tmp_path / "r3.jsonl", out)
  assert traj.load_jsonl(tmp_path / "r3.jsonl", traj.ReflectionEpisode) == out

  # Given first attempts: no first-attempt sampler call.
  sampler.calls.clear()
  given = engine.run_reflect_retry(task, [e, f], None, first_attempts=[
      bad, _call(f.answer)])
  assert [len(call) for call in sampler.calls] == [1, 1]
  assert len(given) == 1 and given[0].first.finish == "given"
  assert given[0].first.text == bad and given[0].reward == 1.0
  with pytest.raises(ValueError, match="first_attempts has 1 entries"):
    engine.run_reflect_retry(task, [e, f], None, first_attempts=[bad])


# -- integration with the real tiny model -------------------------------------


class _Recorder:
  """Wraps a Sampler and records every prompt it is given."""

  def __init__(self, sampler):
    self.sampler = sampler
    self.calls = []

  def generate(self, prompts_, *args, **kwargs):
    self.calls.append([tuple(p) for p in prompts_])
    return self.sampler.generate(prompts_, *args, **kwargs)


def test_real_tiny_sampler_integration(tokenizer, gsm8k):
  task, examples = gsm8k
  config = models.get_config("tiny")
  # One prompt bucket covers both steps' contexts: a single compilation.
  sampler = _Recorder(Sampler(
      config, models.init_params(config, jax.random.key(0)),
      pad_id=tokenizer.pad_id, prompt_bucket=512))
  engine = _engine(sampler, tokenizer, max_new_tokens=8,
                   max_context_tokens=1024, temperature=1.0)
  out = engine.run(task, examples, max_steps=2, seed=0)
  assert len(out) == 4
  for t, ex in zip(out, examples):
    assert t.example_id == ex.id and t.finish_reason in traj.FINISH_REASONS
    assert 1 <= t.num_steps <= 3
    assert len(t.states_and_actions()) == t.num_steps
    assert t.verdict is not None
    for s in t.steps:
      assert 1 <= len(s.action_tokens) <= 8
      assert len(s.action_logprobs) == len(s.action_tokens)
      assert all(lp <= 0.0 for lp in s.action_logprobs)
    json.dumps(t.to_dict())
  _assert_contexts_are_chat_encodings(out, sampler, tokenizer)
  stats = engine.last_stats
  assert stats.num_sampler_calls == len(sampler.calls)
  assert stats.num_model_turns == sum(t.num_steps for t in out)
  assert stats.generated_tokens == sum(
      len(s.action_tokens) for t in out for s in t.steps)
  assert 0 < stats.sampler_s < stats.total_s
  parts = stats.sampler_s + stats.tools_s + stats.verify_s + stats.glue_s
  assert parts == pytest.approx(stats.total_s)
  assert stats.trajectories_per_s > 0 and stats.tokens_per_s > 0
  # Same seed, same episodes (the shapes are compiled already).
  again = engine.run(task, examples, max_steps=2, seed=0)
  assert [t.to_dict() for t in again] == [t.to_dict() for t in out]


def test_first_attempts_grade_and_sampler_override(tokenizer, math_task):
  task, (e, f) = math_task
  scripts = {e.question: [f"So {_final(e.answer)}"],
             f.question: [f"So {_final(999)}"]}
  main, other = (ScriptedSampler(tokenizer, scripts),
                 ScriptedSampler(tokenizer, scripts))
  engine = _engine(main, tokenizer)
  graded = engine.first_attempts(task, [e, f], 2, seed=3)
  assert len(main.calls) == 1 and len(main.calls[0]) == 4
  assert [g.example.id for g in graded] == [e.id, e.id, f.id, f.id]
  assert [g.verdict.correct for g in graded] == [True, True, False, False]
  assert graded[0].answer == e.answer and graded[2].answer == "999"
  for g in graded:
    assert g.turn.context_ids == tokenizer.encode_chat(
        [("user", task.prompt(g.example))], add_generation_prompt=True)
  engine.first_attempts(task, [e], sampler=other)
  assert len(main.calls) == 1 and len(other.calls) == 1
  with pytest.raises(ValueError, match="num_samples must be >= 1"):
    engine.first_attempts(task, [e], 0)

  class Flaky(type(task)):
    def verify_batch(self, examples, answers):
      raise RuntimeError("batch grader down")

  flaky = Flaky()
  answers, verdicts = engine.grade(flaky, [e, f], [
      f"So {_final(e.answer)}", "no answer here"])
  assert answers[0] == e.answer and answers[1] is None  # graded one by one
  assert [v.correct for v in verdicts] == [True, False]
