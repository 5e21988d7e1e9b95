"""Small trained starting policies: `init_from='base:NAME'`.

The papers start their RL from a capable pretrained model. On a CPU the
embedded default starts from a tiny model instead, trained here on scripted
tool-use demonstrations by one documented command
(`gin_configs/experiments/tiny_base.gin`, `swirl_jax.bases.train.train_base`)
and shipped in the package, so that a quickstart spends its minutes on the
recipe, not on the warm start.

A base is a directory holding

  config.json, model.safetensors   the policy (a Hugging Face Gemma directory,
                                   `checkpoints.hf`), float32
  tokenizer.model                  its SentencePiece tokenizer
  base.json                        how it was made: the command, the gin
                                   bindings, steps, wall time, and its
                                   accuracy on the validation split

`base:NAME` names a packaged base (`available()`), `base:DIR` any directory
in that layout (e.g. `runs/tiny_base/export`, written by `train_base`).
Wherever a checkpoint is read (`init_from`) and a tokenizer is chosen
(`swirl_jax.data.sources.tokenizer_path_for.path`), the same `base:` value
gives both, so the policy and its vocabulary cannot be mixed up.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional

PREFIX = "base:"
PACKAGED_DIR = os.path.dirname(os.path.abspath(__file__))
FILES = ("config.json", "model.safetensors", "tokenizer.model", "base.json")


def available() -> list[str]:
  """Names of the bases shipped in the package."""
  return sorted(
      n for n in os.listdir(PACKAGED_DIR)
      if os.path.isfile(os.path.join(PACKAGED_DIR, n, "base.json")))


def resolve(spec: str) -> str:
  """The directory of 'base:NAME' (packaged) or 'base:DIR'.

  Raises:
    ValueError: `spec` does not start with 'base:'.
    FileNotFoundError: no such packaged base or directory, or the directory
      lacks one of `FILES` (named in the message).
  """
  if not isinstance(spec, str) or not spec.startswith(PREFIX):
    raise ValueError(f"A base is written 'base:NAME' or 'base:DIR', got "
                     f"{spec!r}.")
  name = spec[len(PREFIX):]
  packaged = os.path.join(PACKAGED_DIR, name)
  if name and os.sep not in name and os.path.isdir(packaged):
    directory = packaged
  elif os.path.isdir(name):
    directory = os.path.abspath(name)
  else:
    raise FileNotFoundError(
        f"{spec!r}: no packaged base {name!r} (available: {available()}) and "
        f"no directory {name!r}.")
  missing = [f for f in FILES
             if not os.path.isfile(os.path.join(directory, f))]
  if missing:
    raise FileNotFoundError(f"{spec!r}: {directory} lacks {missing}; a base "
                            f"directory holds {list(FILES)}.")
  return directory


def tokenizer_path(spec: str) -> str:
  """The SentencePiece model of a base."""
  return os.path.join(resolve(spec), "tokenizer.model")


def provenance(spec: str) -> dict[str, Any]:
  """The base's base.json: how it was trained and what it measured."""
  with open(os.path.join(resolve(spec), "base.json")) as f:
    return json.load(f)


def load(spec: str, dtype: Any = None):
  """(config, params) of a base (`checkpoints.hf.load` on its directory)."""
  from swirl_jax.checkpoints import hf  # pylint: disable=g-import-not-at-top
  return hf.load(resolve(spec), dtype)


def export(out_dir: str, config, params, tokenizer_file: str,
           info: Mapping[str, Any], *, overwrite: bool = True) -> str:
  """Writes a base directory atomically (`hf.save` with the tokenizer and
  base.json inside); returns `out_dir`."""
  from swirl_jax.checkpoints import hf  # pylint: disable=g-import-not-at-top
  with open(tokenizer_file, "rb") as f:
    tokenizer_bytes = f.read()
  hf.save(out_dir, config, params, "float32", overwrite=overwrite,
          extra_files={"tokenizer.model": tokenizer_bytes,
                       "base.json": (json.dumps(dict(info), indent=1,
                                                sort_keys=True) + "\n"
                                     ).encode()})
  return out_dir


def describe(spec: Optional[str]) -> Optional[dict[str, Any]]:
  """A short record of a base for reports: its name, command and the
  validation accuracy it was shipped with; None when `spec` is not a base."""
  if not (isinstance(spec, str) and spec.startswith(PREFIX)):
    return None
  info = provenance(spec)
  return {"base": spec, "command": info.get("command"),
          "train_steps": info.get("train_steps"),
          "validation": info.get("validation")}
