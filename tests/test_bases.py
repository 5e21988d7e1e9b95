"""Bases (`init_from='base:...'`): export, resolution, loading, errors."""

import json
import os

import jax
import numpy as np
import pytest

from swirl_jax import bases
from swirl_jax.data import sources
from swirl_jax.training import trainer


@pytest.fixture(scope="module")
def exported(tiny_policy, tmp_path_factory):
  config, params, tokenizer = tiny_policy
  out = str(tmp_path_factory.mktemp("bases") / "export")
  bases.export(out, config, params, tokenizer.path,
               {"train_steps": 7, "validation": {"gsm8k": {"accuracy": {
                   "value": 0.25, "low": 0.1, "high": 0.4, "n": 20}}}})
  return out


def test_export_holds_the_files_and_provenance(exported):
  assert sorted(os.listdir(exported)) == sorted(bases.FILES)
  info = bases.provenance("base:" + exported)
  assert info["train_steps"] == 7
  assert bases.describe("base:" + exported)["validation"]["gsm8k"][
      "accuracy"]["value"] == 0.25
  assert bases.describe("hf:somewhere") is None


def test_init_from_base_gives_the_exported_params(tiny_policy, exported):
  config, params, _ = tiny_policy
  loaded = trainer.load_initial_params(
      "base:" + exported, config, jax.random.key(1), None)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_tokenizer_path_for_a_base_is_its_tokenizer(tiny_policy, exported,
                                                    tmp_path):
  _, _, tokenizer = tiny_policy
  path = sources.tokenizer_path_for(str(tmp_path), path="base:" + exported)
  assert path == os.path.join(exported, "tokenizer.model")
  with open(path, "rb") as a, open(tokenizer.path, "rb") as b:
    assert a.read() == b.read()
  assert not os.listdir(tmp_path)  # no tokenizer trained in the workdir


def test_a_base_of_another_shape_is_refused(exported):
  from swirl_jax import models  # pylint: disable=g-import-not-at-top
  other = models.get_config("tiny", hidden_dim=256)
  with pytest.raises(ValueError, match="does not match the configured"):
    trainer.load_initial_params("base:" + exported, other,
                                jax.random.key(0), None)


def test_resolution_errors_name_the_value(exported, tmp_path):
  with pytest.raises(ValueError, match="'hf:x'"):
    bases.resolve("hf:x")
  with pytest.raises(FileNotFoundError, match="no packaged base 'nope'"):
    bases.resolve("base:nope")
  partial = tmp_path / "partial"
  partial.mkdir()
  (partial / "config.json").write_text(json.dumps({}))
  with pytest.raises(FileNotFoundError, match="lacks .*model.safetensors"):
    bases.resolve(f"base:{partial}")
  assert bases.resolve("base:" + exported) == os.path.abspath(exported)


def test_packaged_bases_resolve_and_record_their_validation():
  assert "tiny_tool_use" in bases.available()
  for name in bases.available():
    info = bases.provenance("base:" + name)
    assert info["validation_settings"]["split"] == "validation"
    for task, result in info["validation"].items():
      assert 0.0 <= result["accuracy"]["value"] <= 1.0, task


def test_the_quickstart_base_answers_questions_with_the_tools(tmp_path):
  """The quickstart's BASE loads through its gin file and is partly
  competent: greedy, it answers some held-out validation questions."""
  import gin  # pylint: disable=g-import-not-at-top
  from swirl_jax import gin_utils, registry, stages  # pylint: disable=g-import-not-at-top,unused-import
  from swirl_jax.evaluation import tool_use as evaluate  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  try:
    gin_utils.parse(["gin_configs/experiments/quickstart.gin"], [])
    spec = gin.query_parameter("%BASE")
    tokenizer = stages.experiment_tokenizer(str(tmp_path))
  finally:
    gin.clear_config()
  assert spec == "base:tiny_tool_use"
  from swirl_jax import models  # pylint: disable=g-import-not-at-top
  config = models.get_config("tiny")  # gin_configs/models/tiny.gin
  assert tokenizer.path == bases.tokenizer_path(spec)
  params = stages.load_policy(config, spec)
  result = evaluate.evaluate_policy(
      config, params, tokenizer, task_names=("gsm8k", "hotpotqa"),
      num_questions=8, prompt_style="compact", max_new_tokens=48,
      max_context_tokens=768, split="validation", seed=123)
  for task, r in result.items():
    assert r["accuracy"]["value"] > 0, task
    assert len(r["correct"]) == 8, task
