"""Fixtures shared by several test modules, and the suite's XLA cache.

Many tests (and the `python -m swirl_jax.main` subprocesses of the docs,
notebook and multi-process tests) compile the same tiny-model functions.
JAX's persistent compilation cache, in `.pytest_cache/`, lets every process
after the first load them instead of compiling again; it is keyed by the
computation, the jax version and the flags, so it cannot hand a test another
program. Set JAX_COMPILATION_CACHE_DIR to choose another place.
"""

import os
import pathlib

import pytest

os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    str(pathlib.Path(__file__).resolve().parents[1] / ".pytest_cache" /
        "jax_compilation_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


def pytest_collection_modifyitems(config, items):
  """Under pytest-xdist (`-n 2 --dist loadgroup`), the tests that share the
  toy SWiRL experiment run on one worker, so it is built once."""
  del config
  docs = pathlib.Path(__file__).resolve().parents[1] / "docs"
  for item in items:
    uses_toy_run = "swirl_toy_run" in getattr(item, "fixturenames", ())
    if "test_doc_page_commands[" in item.nodeid:  # fetched by page content
      page = item.nodeid.split("[", 1)[1].rstrip("]")
      uses_toy_run = "needs: quickstart" in (docs / page).read_text()
    if uses_toy_run:
      item.add_marker(pytest.mark.xdist_group("swirl_toy_run"))


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory):
  """(config, params, tokenizer): the random tiny model and a tokenizer
  trained on compact tool-use demonstrations, built once per session."""
  import jax  # pylint: disable=g-import-not-at-top
  from swirl_jax import models  # pylint: disable=g-import-not-at-top
  from swirl_jax.data import demonstrations  # pylint: disable=g-import-not-at-top
  from swirl_jax.tokenizer import Tokenizer, train_sentencepiece  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp("tiny_policy") / "spm.model")
  texts = demonstrations.corpus_texts(demonstrations.tool_use_demonstrations(
      num_per_task=60, prompt_style="compact"))
  tokenizer = Tokenizer(train_sentencepiece(texts, path, vocab_size=1024))
  config = models.get_config("tiny")
  return config, models.init_params(config, jax.random.key(0)), tokenizer


# A toy-size SWiRL experiment (tests/test_swirl_experiment.py, notebooks):
# gin bindings on top of gin_configs/experiments/quickstart.gin.
SWIRL_TOY_BINDINGS = [
    # The toy run warm-starts in the run (its own tokenizer) instead of
    # loading the packaged base, so the warm_start stage stays tested.
    "BASE = None",
    "warm_start/swirl_jax.training.trainer.train.train_steps = 3",
    "sft/swirl_jax.training.trainer.train.train_steps = 2",
    "swirl/swirl_jax.training.trainer.train.train_steps = 2",
    "swirl_jax.training.trainer.train.async_checkpoints = False",
    "swirl_jax.data.demonstrations.tool_use_demonstrations.num_per_task = 40",
    "warm_start/swirl_jax.data.sources.sft_dataset.seq_len = 256",
    "sft/swirl_jax.data.trajectories.filtered_steps_sft_dataset.seq_len = 256",
    "swirl_jax.swirl.SwirlConfig.train_tasks = ('hotpotqa',)",
    "swirl_jax.swirl.SwirlConfig.eval_tasks = ('hotpotqa', 'gsm8k')",
    "swirl_jax.swirl.SwirlConfig.filter_strategy = 'none'",
    "swirl_jax.swirl.SwirlConfig.compare_filters = ('none', 'process')",
    "swirl_jax.swirl.SwirlConfig.questions_per_task = 3",
    "swirl_jax.swirl.SwirlConfig.samples_per_question = 2",
    "swirl_jax.swirl.SwirlConfig.eval_questions = 2",
    "swirl_jax.swirl.SwirlConfig.groups_per_step = 2",
    "swirl_jax.swirl.SwirlConfig.group_size = 2",
    "swirl_jax.swirl.SwirlConfig.max_steps = 1",
    "swirl_jax.swirl.SwirlConfig.max_new_tokens = 16",
    "swirl_jax.swirl.SwirlConfig.max_context_tokens = 320",
]


@pytest.fixture(scope="session")
def swirl_toy_bindings():
  return list(SWIRL_TOY_BINDINGS)


@pytest.fixture(scope="session")
def swirl_toy_run(tmp_path_factory):
  """(workdir, report payload) of one toy SWiRL experiment per session."""
  import gin  # pylint: disable=g-import-not-at-top
  from swirl_jax import gin_utils, registry  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("swirl_toy") / "exp")
  gin.clear_config()
  gin_utils.parse(["gin_configs/experiments/quickstart.gin"],
                  SWIRL_TOY_BINDINGS)
  try:
    payload = registry.run(workdir)
  finally:
    gin.clear_config()
  return workdir, payload
