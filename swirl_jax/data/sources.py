"""Gin-facing dataset functions: what `train(dataset_fn=...)` calls.

    dataset_fn(workdir=..., process_index=..., process_count=..., seed=...)

returns a grain dataset of batches in the pipeline's format. The tokenizer
is loaded from a path, or, for the embedded CPU default, trained on the
demonstrations themselves and kept in `workdir/tokenizer/spm.model` (a
rerun finds it there).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Optional, Sequence, Union

import gin

TOKENIZER_SUBPATH = os.path.join("tokenizer", "spm.model")


def ensure_tokenizer(workdir: str, texts_fn: Callable[[], Sequence[str]],
                     vocab_size: int = 1024) -> str:
  """workdir/tokenizer/spm.model, trained on texts_fn() if not there yet."""
  from swirl_jax.tokenizer import train_sentencepiece  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, TOKENIZER_SUBPATH)
  if not os.path.exists(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    train_sentencepiece(texts_fn(), path, vocab_size=vocab_size)
  return path


@gin.configurable
def tokenizer_path_for(workdir: str, path: Optional[str] = None,
                       vocab_size: int = 1024,
                       corpus_fn: Optional[Callable[[], Sequence[str]]] = None
                       ) -> str:
  """The tokenizer to use: `path` if given, else the workdir's tiny one.

  path: a SentencePiece model, 'gguf:FILE' (the vocabulary of a Gemma GGUF
  file, rebuilt once as a SentencePiece model; its path is returned), or
  'base:NAME' / 'base:DIR' (the tokenizer of a `swirl_jax.bases` base).
  """
  if path and path.startswith("gguf:"):
    from swirl_jax.checkpoints import gguf  # pylint: disable=g-import-not-at-top
    return gguf.sentencepiece_model(path[len("gguf:"):])
  if path and path.startswith("base:"):
    from swirl_jax import bases  # pylint: disable=g-import-not-at-top
    return bases.tokenizer_path(path)
  if path:
    if not os.path.exists(path) and "://" not in path:
      raise FileNotFoundError(f"Tokenizer {path!r} does not exist.")
    return path
  if corpus_fn is None:
    from swirl_jax.data import demonstrations  # pylint: disable=g-import-not-at-top
    corpus_fn = lambda: demonstrations.corpus_texts(  # noqa: E731
        demonstrations.tool_use_demonstrations(num_per_task=500, seed=12345)
        + demonstrations.tool_use_demonstrations(
            num_per_task=100, seed=12346, prompt_style="compact"))
  return ensure_tokenizer(workdir, corpus_fn, vocab_size)


@gin.configurable
def sft_dataset(workdir: str, process_index: int, process_count: int,
                seed: int, *,
                examples_fn: Callable[[], Sequence[Any]] = gin.REQUIRED,
                seq_len: int = 512, global_batch_size: int = 16,
                pack: bool = True, tokenizer_path: Optional[str] = None
                ) -> Any:
  """SFT batches of `examples_fn()` ({'prompt','target'} or {'turns'}).

  tokenizer_path: the sentencepiece model; None: `tokenizer_path_for(workdir)`
  (multi-stage experiments pass the experiment's tokenizer here).
  """
  from swirl_jax.data.pipeline import make_sft_dataset  # pylint: disable=g-import-not-at-top
  from swirl_jax.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  tokenizer = Tokenizer(tokenizer_path or tokenizer_path_for(workdir))
  return make_sft_dataset(
      examples_fn(), tokenizer, seq_len=seq_len,
      global_batch_size=global_batch_size, seed=seed, pack=pack,
      process_index=process_index, process_count=process_count)


def sft_dataset_fn(examples: Union[Sequence[Any], Callable[[], Sequence[Any]]],
                   tokenizer_path: str, *, seq_len: int,
                   global_batch_size: int, pack: bool = True):
  """`sft_dataset` as a `train(dataset_fn=...)` over fixed examples (or a
  function making them on the process that trains) and a tokenizer: the
  warm starts and SFT baselines of the recipes."""
  if not callable(examples):
    examples = [dict(e) for e in examples]
    if not examples:
      raise ValueError("sft_dataset_fn got no examples.")
    examples = functools.partial(list, examples)
  return functools.partial(
      sft_dataset, examples_fn=examples, tokenizer_path=tokenizer_path,
      seq_len=seq_len, global_batch_size=global_batch_size, pack=pack)
