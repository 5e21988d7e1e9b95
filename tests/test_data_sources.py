"""The dataset functions the trainer calls: the workdir's tokenizer is made
once, and `sft_dataset_fn` serves fixed or lazily made SFT examples."""

import os

import numpy as np
import pytest

from swirl_jax.data import sources

EXAMPLES = [{"prompt": f"What is {i} + 1?", "target": f"It is {i + 1}."}
            for i in range(12)]


def test_tokenizer_is_trained_once(tmp_path):
  calls = []

  def texts():
    calls.append(1)
    return [e["prompt"] + " " + e["target"] for e in EXAMPLES] * 20

  path = sources.ensure_tokenizer(str(tmp_path), texts, vocab_size=300)
  assert os.path.exists(path) and calls == [1]
  assert sources.ensure_tokenizer(str(tmp_path), texts, vocab_size=300) == path
  assert calls == [1]
  with pytest.raises(FileNotFoundError, match="does not exist"):
    sources.tokenizer_path_for(str(tmp_path), path=str(tmp_path / "no.model"))


def test_sft_dataset_fn_fixed_or_lazy_examples(tmp_path):
  path = sources.ensure_tokenizer(
      str(tmp_path), lambda: [e["prompt"] + " " + e["target"]
                              for e in EXAMPLES] * 20, vocab_size=300)
  made = []

  def make():
    made.append(1)
    return EXAMPLES

  kw = dict(seq_len=32, global_batch_size=4)
  fixed = sources.sft_dataset_fn(EXAMPLES, path, **kw)
  lazy = sources.sft_dataset_fn(make, path, **kw)
  assert not made  # made on the process that trains, not here
  args = dict(workdir=str(tmp_path), process_index=0, process_count=1,
              seed=0)
  a, b = next(iter(fixed(**args))), next(iter(lazy(**args)))
  assert made == [1]
  assert a["inputs"].shape == (4, 32)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  with pytest.raises(ValueError, match="no examples"):
    sources.sft_dataset_fn([], path, **kw)
