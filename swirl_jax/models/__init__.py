"""Gemma 1/2/3 text decoders in flax.linen, their configs and presets."""

from swirl_jax.models.config import GLOBAL, LOCAL, TransformerConfig, alternating_pattern
from swirl_jax.models.presets import get_config, preset_names
from swirl_jax.models.transformer import (
    REMAT_POLICIES,
    Transformer,
    causal_attention_mask,
    init_cache,
    init_params,
    param_logical_axes,
    param_shapes,
    positions_from_mask,
)

# Logical axis names used by parameters and activations; sharding rules map
# these to mesh axes (swirl_jax.sharding).
LOGICAL_AXES = ("vocab", "embed", "mlp", "heads", "kv_heads", "head_dim")
