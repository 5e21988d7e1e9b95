"""Tests for swirl_jax.rollout.scripts: episode scripts played by the engine."""

import pytest

from swirl_jax import tokenizer as tok
from swirl_jax.rollout import engine as engine_lib
from swirl_jax.rollout import scripts
from swirl_jax.tasks import base as task_base
from swirl_jax.tasks import get_task

from test_rollout_engine import ScriptedSampler


@pytest.fixture(scope="module")
def math_task():
  task = get_task("math")
  return task, task.generate(2, seed=0)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, math_task):
  task, examples = math_task
  texts = [task.prompt(e) for e in examples] * 3
  texts += [tok.format_chat([("model", _final(12)),
                             ("user", "Again, shorter.")])] * 3
  path = tmp_path_factory.mktemp("spm") / "scripts.model"
  return tok.Tokenizer(tok.train_sentencepiece(texts, str(path), 512))


class SeedRecorder(ScriptedSampler):
  """A ScriptedSampler that also records each call's seed and temperature."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.seeds, self.temperatures = [], []

  def generate(self, prompts_, max_new_tokens, temperature=0.0, seed=0,
               **kwargs):
    self.seeds.append(seed)
    self.temperatures.append(temperature)
    return super().generate(prompts_, max_new_tokens, temperature=temperature,
                            seed=seed, **kwargs)


def _final(x):
  return f"Final Answer: The final answer is ${x}$. I hope it is correct."


def _engine(sampler, tokenizer):
  return engine_lib.RolloutEngine(sampler, tokenizer, progress=False,
                                  temperature=0.7)


def test_a_declared_script(tokenizer, math_task):
  """Fork, Say, Sample (grouped, seeded, own temperature), Grade, KeepFailed
  in the order declared, one sampler call per Sample."""
  task, (e, f) = math_task
  sampler = SeedRecorder(tokenizer, {
      e.question: [[_final(e.answer), _final(999)], _final(e.answer)],
      f.question: [[_final(998), _final(997)], _final(f.answer)],
  })
  engine = _engine(sampler, tokenizer)
  script = (scripts.Fork(2), scripts.Say(scripts.PROMPT),
            scripts.Sample("a", ("mine", 0), group=True),
            scripts.Grade(("a",)), scripts.KeepFailed("a"),
            scripts.Say("Again, shorter."),
            scripts.Sample("b", temperature=0.0), scripts.Grade(("b",)))
  rows = engine.play(task, [e, f], script, seed=5)
  # e's first branch was right: dropped. Three rows answer again.
  assert [(r.example.id, r.parent, r.branch) for r in rows] == [
      (e.id, 0, 1), (f.id, 1, 0), (f.id, 1, 1)]
  assert sampler.group_sizes == [2, 1]  # the Fork's groups, then unshared
  assert sampler.seeds == [task_base.seed_for(5, "mine", 0) % (1 << 31), 5]
  assert sampler.temperatures == [0.7, 0.0]
  for row in rows:
    assert not row.verdicts["a"].correct and row.verdicts["b"].correct
    assert [t for t, _ in row.conv.turns] == ["user", "model"] * 2
    assert row.conv.turns[2] == ("user", "Again, shorter.")
    assert row.turns["b"].context_ids == tokenizer.encode_chat(
        row.conv.turns[:3])
    assert row.conv.ids == tokenizer.encode_chat(row.conv.turns, False)
  assert engine.last_stats.num_trajectories == 3
  assert engine.last_stats.num_sampler_calls == 2


def test_given_turns_keep_their_grade(tokenizer, math_task):
  task, (e, f) = math_task
  sampler = SeedRecorder(tokenizer, {e.question: [_final(e.answer)],
                                     f.question: [_final(f.answer)]})
  engine = _engine(sampler, tokenizer)
  firsts = engine.first_attempts(task, [e, f], seed=3)
  assert sampler.seeds == [3]  # first_attempts uses its seed as given
  # A GradedTurn keeps its (here faked) grade: no verifier call for it.
  wrong = task_base.Verdict(False, "wrong", "")
  given = [firsts[0]._replace(verdict=wrong), firsts[1].turn.text]
  rows = engine.play(task, [e, f], (
      scripts.Say(scripts.PROMPT), scripts.Given("y"),
      scripts.KeepFailed("y")), given={"y": given[:1] * 2})
  assert [r.example.id for r in rows] == [e.id, f.id]
  rows = engine.play(task, [e, f], (
      scripts.Say(scripts.PROMPT), scripts.Given("y"), scripts.Grade(("y",))),
                     given={"y": given})
  assert rows[1].turns["y"].finish == "given"
  assert rows[1].turns["y"].context_ids == tokenizer.encode_chat(
      rows[1].conv.turns[:1])
  assert rows[0].verdicts["y"].correct  # Grade re-grades a given turn
  assert len(sampler.seeds) == 1  # no sampler call for given turns


def test_bad_scripts_are_named(tokenizer, math_task):
  task, (e, _) = math_task
  engine = _engine(SeedRecorder(tokenizer, {}), tokenizer)
  with pytest.raises(ValueError, match="Grade of the turn 'z'"):
    engine.play(task, [e], (scripts.Say(scripts.PROMPT),
                            scripts.Sample("y"), scripts.Grade(("z",))))
  with pytest.raises(TypeError, match="Step 1 of the script is a str"):
    engine.play(task, [e], (scripts.Say(scripts.PROMPT), "model"))
  with pytest.raises(ValueError, match="Fork"):
    engine.play(task, [e], (scripts.Fork(0),))
  with pytest.raises(ValueError, match=r"needs given\['y'\]"):
    engine.play(task, [e], (scripts.Say(scripts.PROMPT), scripts.Given("y")))
  with pytest.raises(ValueError, match="has no grade"):
    engine.play(task, [e], (scripts.Say(scripts.PROMPT), scripts.Given("y"),
                            scripts.KeepFailed("y")), given={"y": ["x"]})


def test_recipe_scripts_are_declared_in_order():
  """The recipes' scripts: their sampler seeds are the engine's old ones."""
  two = scripts.two_attempts("Fix it.", 3)
  assert two[0] == scripts.Fork(3)
  assert [s.seed for s in two if isinstance(s, scripts.Sample)] == [
      ("rollout", 0), ("rollout", 1)]
  r3 = scripts.reflect_retry("Reflect.", 4, retry_temperature=0.5)
  samples = [s for s in r3 if isinstance(s, scripts.Sample)]
  assert [s.name for s in samples] == ["first", "reflection", "retry"]
  assert samples[2] == scripts.Sample("retry", ("rollout", 2), group=True,
                                      shared_prefix=True, temperature=0.5)
  assert isinstance(scripts.reflect_retry("R.", 2, given_first=True)[1],
                    scripts.Given)
  assert scripts.seed_of(7, None) == 7
