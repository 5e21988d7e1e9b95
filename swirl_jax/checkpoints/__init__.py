"""Checkpoint import and export.

  hf:     Hugging Face `transformers` directories (config.json + safetensors)
          for Gemma 1/2/3: `hf.load(path) -> (config, params)`,
          `hf.save(path, config, params, dtype)`.
  kaggle: the official Flax/Orbax Gemma checkpoints (google-deepmind `gemma`
          layout): `kaggle.load(path, preset_or_config) -> params`,
          `kaggle.to_kaggle_layout(params, config)`.

Neither module imports torch or transformers; orbax is imported only when an
Orbax checkpoint is read or written.
"""

from swirl_jax.checkpoints import hf
from swirl_jax.checkpoints import kaggle

__all__ = ["hf", "kaggle"]
