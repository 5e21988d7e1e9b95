"""Jit-compiled KV-cache sampling for the Gemma decoders."""

from swirl_jax.sampling.logits import apply_top_k, apply_top_p, sample_tokens, token_logprobs
from swirl_jax.sampling.sampler import (RowKeyedSampler, Sampler,
                                        SamplerOutput, chat_sampler, stop_ids)
