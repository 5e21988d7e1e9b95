"""Fixtures shared by several test modules."""

import pytest


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
