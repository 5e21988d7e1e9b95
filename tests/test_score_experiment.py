"""The chained SCoRe experiment: a toy-size run (report files, resume), the
STaR / Pair-SFT data builders, and the paper-scale TPU gin files built with
shapes only."""

import json
import os
import subprocess
import sys
import textwrap

import gin
import pytest

from swirl_jax import gin_utils, registry, stages
from swirl_jax.data import correction_demonstrations as correction_demos
from swirl_jax.evaluation import score_report
from swirl_jax.rollout import trajectory as traj
from swirl_jax.score import experiment
from swirl_jax.tasks.base import Verdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXP = "swirl_jax.score.ScoreConfig"

TOY_BINDINGS = [
    f"{EXP}.tasks = ('math_small',)",
    f"{EXP}.warm_start_steps = 2",
    f"{EXP}.warm_start_examples = 16",
    f"{EXP}.sft_batch_size = 4",
    f"{EXP}.stage1_steps = 2",
    f"{EXP}.stage2_steps = 2",
    f"{EXP}.rl_problems_per_task = 4",
    f"{EXP}.groups_per_step = 2",
    f"{EXP}.group_size = 2",
    f"{EXP}.max_new_tokens = 6",
    f"{EXP}.rl_seq_len = 200",
    f"{EXP}.baseline_problems_per_task = 2",
    f"{EXP}.baseline_samples = 2",
    f"{EXP}.baseline_sft_steps = 2",
    f"{EXP}.eval_problems_per_task = 3",
    f"{EXP}.eval_context_tokens = 200",
    f"{EXP}.scaling_problems_per_task = 2",
    f"{EXP}.scaling_budgets = (2, 4)",
    "swirl_jax.data.correction_demonstrations.tokenizer_corpus.num_per_task = 30",
]


@pytest.fixture
def toy_config():
  gin.clear_config()
  gin_utils.parse(["gin_configs/experiments/score_quickstart.gin"],
                  TOY_BINDINGS)
  yield
  gin.clear_config()


def test_toy_experiment_writes_report_and_resumes(tmp_path, toy_config,
                                                 capsys):
  workdir = str(tmp_path / "exp")
  out = registry.run(workdir)
  results = out["results"]
  methods = ["base", "self_refine", "score_stage1", "score"]
  assert [m for m in results if m in methods] == methods
  for method in methods:
    assert results[method]["math_small"]["accuracy_t1"]["n"] == 3
  with open(os.path.join(workdir, "report.json")) as f:
    report = json.load(f)
  assert set(report["tables"]) == {"Accuracy@t1", "Accuracy@t2",
                                   "Delta(t1,t2)", "Delta_i->c",
                                   "Delta_c->i"}
  assert report["tables"]["Delta(t1,t2)"]["score"]["math_small"] == (
      results["score"]["math_small"]["delta"])
  curve = report["inference_scaling"]["score/math_small"]
  assert curve["budgets"] == [2, 4] and len(curve["sequential"]) == 2
  for name in ("report.md", "Accuracy@t1.png", "Delta(t1,t2).png",
               "inference_scaling.png"):
    assert os.path.exists(os.path.join(workdir, name)), name
  # STaR / Pair-SFT have data only when the base corrects itself.
  data = stages.stage_result(workdir, "baseline_data")
  for name in ("star", "pair_sft"):
    assert (name in results) == (data[f"{name}_examples"] > 0)
  assert os.path.exists(os.path.join(workdir, "learning_curves.png"))
  rows = [json.loads(line) for line in
          open(os.path.join(workdir, "stage2", "metrics.jsonl"))]
  assert rows[-1]["step"] == 2 and "shaped_reward2" in rows[-1]
  # The headline: one claim per rule, over the pooled held-out problems.
  head = report["headline"]
  assert report["eval_split"] == "test"
  assert head == out["headline"]
  assert [c["metric"].split(" (")[0] for c in head[:3]] == [
      "Delta = Acc@t2 - Acc@t1", "Delta = Acc@t2 - Acc@t1",
      "Delta_i->c - Delta_c->i"]
  assert [c["n"] for c in head] == [3] * len(head)  # held-out problems
  assert head[1]["value"] == pytest.approx(
      results["score"]["math_small"]["delta"]["value"])
  # A rerun reuses every finished stage and reports the same numbers.
  capsys.readouterr()
  again = registry.run(workdir)
  printed = capsys.readouterr().out
  assert "running in" not in printed
  for stage in ("warm_start", "stage1", "stage2", "baseline_data",
                "eval_base", "eval_self_refine", "eval_score_stage1",
                "eval_score", "scaling_score"):
    assert f"[{stage}] finished earlier" in printed, stage
  assert again["results"] == results


def test_ablation_scopes_switch_the_objective(toy_config):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from swirl_jax.objectives import score  # pylint: disable=g-import-not-at-top

  class Logits:  # a 'model' whose logits are the parameters
    def apply(self, variables, *args):
      del args
      return variables["params"]["logits"]

  rng = np.random.default_rng(0)
  params = {"logits": jnp.asarray(rng.standard_normal((4, 6, 5)),
                                  jnp.float32)}
  m1 = np.zeros((4, 6), np.float32)
  m1[:, 1:3] = 1
  m2 = np.zeros((4, 6), np.float32)
  m2[:, 3:5] = 1
  batch = dict(inputs=np.zeros((4, 6), np.int32),
               targets=rng.integers(0, 5, (4, 6)).astype(np.int32),
               positions=np.tile(np.arange(6), (4, 1)),
               segment_ids=np.ones((4, 6), np.int32), attempt1_mask=m1,
               attempt2_mask=m2, reward1=np.array([0., 0., 0., 1.]),
               reward2=np.array([0., 1., 1., 1.]),
               ref_logprobs=np.zeros((4, 6), np.float32))
  shaped_r2 = lambda: float(score.score_stage2_loss(  # noqa: E731
      params, batch, None, Logits())[1]["shaped_reward2"])
  # R2 = r2 + 10 (r2 - r1) = [0, 11, 11, 1] -> 5.75; unshaped: mean r2
  assert shaped_r2() == pytest.approx(5.75)
  with experiment.ablation_scope("no_shaping"):
    with gin.config_scope("no_shaping"):
      assert shaped_r2() == pytest.approx(0.75)
    with gin.config_scope("no_stage1"):
      assert shaped_r2() == pytest.approx(5.75)
  with pytest.raises(ValueError, match="'no_kl'"):
    with experiment.ablation_scope("no_kl"):
      pass


def test_bad_values_name_the_argument(tmp_path, toy_config):
  with pytest.raises(ValueError, match="ablations.*'no_kl'"):
    experiment.ScoreConfig(ablations=("no_kl",))
  with pytest.raises(ValueError, match="stage2_steps"):
    experiment.ScoreConfig(stage2_steps=0)
  with pytest.raises(ValueError, match="'dev'"):
    experiment.score_experiment(str(tmp_path),
                                experiment.ScoreConfig(eval_split="dev"))
  assert not os.listdir(tmp_path)


def _ep(example_id, y1, r1, y2, r2):
  turn = lambda text: traj.ModelTurn(text, [1], [0.0], [2])  # noqa: E731
  return traj.TwoAttemptEpisode(
      task="math_small", example_id=example_id, question="q", gold="1",
      sample_index=0, prompt=f"x{example_id}", instruction="p",
      y1=turn(y1), y2=turn(y2), answer1=None, answer2=None,
      verdict1=Verdict(bool(r1), "x"), verdict2=Verdict(bool(r2), "x"))


def test_score_headline_rules():
  # 10 problems: the base never changes its answer; SCoRe fixes 3 wrong
  # first attempts and breaks 1 right one; STaR's second attempts are
  # right on 5 (SCoRe's on 6).
  base = {str(i): (i < 4, i < 4) for i in range(10)}
  score = {str(i): (i < 4, (i < 4 and i != 0) or 4 <= i < 7)
           for i in range(10)}
  star = {str(i): (False, i < 5) for i in range(10)}
  head = score_report.score_headline(
      {"base": base, "score": score, "star": star})
  assert [c["holds"] for c in head] == [True, False, True, True]
  assert head[0]["value"] == 0.0 and head[0]["n"] == 10
  assert head[1]["value"] == pytest.approx(0.2)
  assert head[1]["low"] < 0 < head[1]["high"]  # n=10: not above 0
  assert head[2]["value"] == pytest.approx(0.3 - 0.1)
  assert "0.300" in head[2]["claim"] and "0.100" in head[2]["claim"]
  assert head[3]["value"] == pytest.approx(0.1)
  # 100 times the evidence: the interval leaves 0.
  many = lambda d: {f"{k}/{j}": v for k, v in d.items() for j in range(100)}  # noqa: E731
  head = score_report.score_headline({"base": many(base),
                                      "score": many(score)})
  assert [c["holds"] for c in head] == [True, True, True]
  with pytest.raises(ValueError, match="different items"):
    score_report.score_headline({"score": score, "star": {"0": (1, 1)}})


def test_star_and_pair_sft_data():
  eps = [_ep("a", "w1", 0, "r1", 1), _ep("a", "r1", 1, "w2", 0),
         _ep("b", "w3", 0, "w4", 0), _ep("c", "r5", 1, "r5", 1)]
  star = correction_demos.star_examples(eps)
  assert star == [{"prompt": [["user", "xa"], ["model", "w1"],
                              ["user", "p"]],
                   "target": "r1", "task": "math_small", "example_id": "a"}]
  pairs = correction_demos.pair_sft_examples(eps)
  # problem a: wrong w1, w2 -> right r1; b has no right answer; c no wrong
  assert [(p["prompt"][1][1], p["target"]) for p in pairs] == [
      ("w1", "r1"), ("w2", "r1")]
  assert all(p["prompt"][2] == ["user", "p"] for p in pairs)


_PAPER_SCRIPT = textwrap.dedent("""
    import json, sys
    import gin, jax, numpy as np
    from swirl_jax import gin_utils, models, registry
    gin_utils.parse([sys.argv[1]], [
        "CHECKPOINT = 'kaggle:/mnt/gemma2-9b'",
        "TOKENIZER = '/mnt/gemma2-9b/tokenizer.model'",
        "TRAIN_DATA = '/mnt/data/train'", "EVAL_DATA = '/mnt/data/test'"])
    exp = 'swirl_jax.score.ScoreConfig.'
    def q(name):
      v = gin.query_parameter(exp + name)
      if isinstance(v, gin.config.ConfigurableReference) and v.evaluate:
        return v.scoped_configurable_fn()
      return v
    config = q('model_config')
    abstract = jax.eval_shape(
        lambda r: models.init_params(config, r), jax.random.key(0))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
    scoped = lambda scope, name: gin.query_parameter(scope + '/' + name)
    lr = 'swirl_jax.training.optimizer.learning_rate_schedule.peak_learning_rate'
    out = {'params': count, 'layers': config.num_layers,
           'tasks': list(q('tasks')), 'init_from': q('init_from'),
           'warm_start_steps': q('warm_start_steps'),
           'steps': q('stage1_steps') + q('stage2_steps'),
           'batch': q('groups_per_step') * q('group_size'),
           'temperature': q('temperature'),
           'ablations': list(q('ablations')),
           'lr1': scoped('stage1', lr), 'lr2': scoped('stage2', lr),
           'alpha': gin.query_parameter(
               'swirl_jax.objectives.score.score_stage2_loss.alpha'),
           'beta1': gin.query_parameter(
               'swirl_jax.objectives.score.score_stage2_loss.beta1'),
           'beta2': gin.query_parameter(
               'swirl_jax.objectives.score.score_stage1_loss.beta2')}
    print(json.dumps(out))
""")


@pytest.mark.parametrize("name,task,lr,steps,batch,beta2", [
    ("score_math_gemma2_9b_tpu.gin", "math", 5e-6, 3000, 512, 0.1),
    ("score_mbpp_gemma2_9b_tpu.gin", "mbpp", 1e-5, 1500, 128, 0.25)])
def test_paper_scale_configs_build_with_shapes_only(name, task, lr, steps,
                                                    batch, beta2):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run(
      [sys.executable, "-c", _PAPER_SCRIPT,
       os.path.join("gin_configs", "experiments", name)],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  got = json.loads(out.stdout.strip().splitlines()[-1])
  assert 9.0e9 < got["params"] < 9.5e9 and got["layers"] == 42  # Gemma 2 9B
  assert got["tasks"] == [task]
  assert got["init_from"] == "kaggle:/mnt/gemma2-9b"
  assert got["warm_start_steps"] == 0
  assert got["steps"] == steps and got["batch"] == batch
  assert got["lr1"] == got["lr2"] == lr
  assert got["temperature"] == 1.0
  assert (got["alpha"], got["beta1"], got["beta2"]) == (10.0, 0.01, beta2)
  assert got["ablations"] == ["no_stage1", "no_shaping", "single_turn"]


def test_settings_are_a_gin_dataclass_and_old_bindings_are_redirected():
  """gin binds ScoreConfig's fields; a binding of a setting on the
  experiment function names the field to bind instead."""
  gin.clear_config()
  try:
    gin_utils.parse(["gin_configs/experiments/score_quickstart.gin"],
                    ["swirl_jax.score.ScoreConfig.seed = 3"])
    cfg = experiment.ScoreConfig()
    assert (cfg.seed, cfg.group_size, cfg.stage2_steps) == (3, 4, 80)
    assert cfg.baselines == ("self_refine", "star", "pair_sft")
    gin.clear_config()
    with pytest.raises(gin_utils.GinConfigError,
                       match=r"bind swirl_jax\.score\.ScoreConfig\.seed"):
      gin_utils.parse(["gin_configs/experiments/score_quickstart.gin"],
                      [f"{experiment.__name__}.score_experiment.seed = 3"])
  finally:
    gin.clear_config()
