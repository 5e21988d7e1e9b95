"""swirl_jax: SWiRL, SCoRe and R3 for Gemma-family models in JAX."""

__version__ = "0.1.0"
