"""Batched autoregressive sampling with a KV cache, compiled end to end.

One jitted function does the prefill and the whole decode loop
(`lax.while_loop` on the device): there is no Python call per token.

Layout: prompts are left-padded to a bucketed length P so that every row
writes its next token to the same cache slot; RoPE positions count only real
tokens, so padding changes nothing for the model. The cache holds
S = P + N slots, N the bucketed number of new tokens.

Log-probabilities returned are those of the model's own distribution
(temperature 1, no top-k / top-p) at each generated token: the quantity RL
objectives need for importance ratios and KL terms.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from swirl_jax.models.config import TransformerConfig
from swirl_jax.models.transformer import (Transformer, init_cache,
                                          positions_from_mask)
from swirl_jax.sampling.logits import sample_tokens, token_logprobs

StopTokens = Union[None, Sequence[int], Sequence[Sequence[int]]]


@dataclasses.dataclass
class SamplerOutput:
  """What `Sampler.generate` returns.

  Attributes:
    tokens: per prompt, the generated ids (prompt excluded), up to and
      including the stop token if one was produced.
    logprobs: per prompt, log p(token) under the model for each id in tokens.
    done: per prompt, True if generation ended with a stop token, False if it
      ran out of max_new_tokens.
    token_array: [B, N] int32 generated ids, `pad_id` after the end.
    logprob_array: [B, N] float32, 0 after the end.
    lengths: [B] int32 number of generated ids per row.
  """

  tokens: list[list[int]]
  logprobs: list[list[float]]
  done: list[bool]
  token_array: np.ndarray
  logprob_array: np.ndarray
  lengths: np.ndarray


def _round_up(n: int, multiple: int) -> int:
  return max(multiple, -(-n // multiple) * multiple)


def _generate(model: Transformer, params, tokens, input_mask, max_new, stops,
              rng, temperature, top_p, *, num_new: int, greedy: bool,
              top_k: Optional[int], use_top_p: bool, pad_id: int,
              cache_dtype, group: int = 1):
  """Prefill + on-device decode loop.

  Args:
    tokens: [B, P] left-padded prompts.
    input_mask: [B, P] bool, True on real prompt tokens.
    max_new: [B] int32 per-row budget (<= num_new).
    stops: [B, M] int32 stop ids, -1 = none.
    rng: PRNG key.
    temperature, top_p: float32 scalars.
    num_new: static N, size of the output buffers.
    group: static; rows come in consecutive groups of this many identical
      prompts, each prefilled once.
  Returns:
    out_tokens [B, N], out_logprobs [B, N], lengths [B], stopped [B].
  """
  b, p = tokens.shape
  s = p + num_new
  cfg = model.config
  valid = jnp.concatenate([input_mask, jnp.zeros((b, num_new), bool)], axis=1)
  causal = jnp.arange(s)[None, :] <= jnp.arange(p)[:, None]  # [P, S]
  prefill_mask = jnp.logical_and(causal[None], valid[:, None, :])
  positions = positions_from_mask(input_mask)
  # Rows come in groups of `group` identical prompts (checked on the host):
  # the prompt is prefilled once per group, its cache repeated to the rows.
  first = slice(None, None, group)
  cache = init_cache(cfg, b // group, s, cache_dtype)
  logits, cache = model.apply(
      {"params": params}, tokens[first], positions[first],
      prefill_mask[first], cache, jnp.int32(0), method="forward_with_cache")
  last_logits = jnp.repeat(logits[:, -1], group, axis=0)
  if group > 1:
    cache = jax.tree.map(lambda c: jnp.repeat(c, group, axis=0), cache)
  next_pos = jnp.sum(input_mask, axis=1).astype(jnp.int32)  # [B]

  # One U[0, 1) number per row and step, drawn up front: the per-step
  # draw costs only an index (see `inverse_cdf_sample`).
  uniforms = jax.random.uniform(rng, (num_new, b), jnp.float32)

  def pick(logits_row, step, finished):
    tok = sample_tokens(logits_row, None, greedy=greedy,
                        temperature=temperature, top_k=top_k,
                        top_p=top_p if use_top_p else None,
                        uniform=uniforms[step])
    logp = token_logprobs(logits_row, tok)
    live = jnp.logical_and(~finished, step < max_new)
    tok = jnp.where(live, tok, pad_id)
    logp = jnp.where(live, logp, 0.0)
    hit_stop = jnp.logical_and(live, jnp.any(tok[:, None] == stops, axis=1))
    now_finished = finished | hit_stop | (step + 1 >= max_new)
    return tok, logp, live, hit_stop, now_finished

  out_tokens = jnp.full((b, num_new), pad_id, jnp.int32)
  out_logp = jnp.zeros((b, num_new), jnp.float32)
  finished = max_new <= 0
  tok, logp, live, stopped, finished = pick(last_logits, 0, finished)
  out_tokens = out_tokens.at[:, 0].set(tok)
  out_logp = out_logp.at[:, 0].set(logp)
  lengths = live.astype(jnp.int32)

  def cond(state):
    step, _, _, _, _, _, _, finished, _, _ = state
    return jnp.logical_and(step < num_new, ~jnp.all(finished))

  # The transposed embedding table, materialised once for all steps (the
  # barrier keeps XLA from folding the transpose back into every step's
  # matmul; see `Transformer.forward_with_cache`).
  table_t = jax.lax.optimization_barrier(params["embedding"].T)

  def body(state):
    (step, tok, cache, valid, pos, out_tokens, out_logp, finished, stopped,
     lengths) = state
    slot = p + step - 1  # slot of the token sampled at step - 1
    valid = valid.at[:, slot].set(True)
    logits, cache = model.apply(
        {"params": params}, tok[:, None], pos[:, None], valid[:, None, :],
        cache, slot, table_t, method="forward_with_cache")
    tok, logp, live, hit, finished = pick(logits[:, 0], step, finished)
    out_tokens = out_tokens.at[:, step].set(tok)
    out_logp = out_logp.at[:, step].set(logp)
    return (step + 1, tok, cache, valid, pos + 1, out_tokens, out_logp,
            finished, stopped | hit, lengths + live.astype(jnp.int32))

  state = (jnp.int32(1), tok, cache, valid, next_pos, out_tokens, out_logp,
           finished, stopped, lengths)
  state = jax.lax.while_loop(cond, body, state)
  _, _, _, _, _, out_tokens, out_logp, _, stopped, lengths = state
  return out_tokens, out_logp, lengths, stopped


@functools.lru_cache(maxsize=16)
def _jitted_generate(config: TransformerConfig):
  """One jitted generate per architecture, shared by every Sampler of it.

  Experiments build many samplers of one model (synthesis, stage-2 batches,
  evaluation of each checkpoint); sharing the jitted function shares its
  compilation cache, so only the first sampler of a shape compiles.
  """
  return jax.jit(
      functools.partial(_generate, Transformer(config)),
      static_argnames=("num_new", "greedy", "top_k", "use_top_p", "pad_id",
                       "cache_dtype", "group"),
      compiler_options=_compiler_options())


def _compiler_options() -> dict:
  """XLA options of the decode program.

  On CPU, copy insertion with region analysis: it sees that each layer's
  KV cache is read (`decode_attention`) before the new token is written
  into it, so the decode loop updates the caches in place. Without it
  XLA:CPU copied every layer's K and V cache twice per generated token.
  """
  if jax.default_backend() == "cpu":
    return {"xla_cpu_copy_insertion_use_region_analysis": True}
  return {}


class Sampler:
  """Generates continuations of token prompts with a jit-compiled KV cache.

      sampler = Sampler(config, params)
      out = sampler.generate([[2, 17, 5], [2, 9]], max_new_tokens=32)
      out.tokens, out.logprobs, out.done

  Args:
    config: the model's TransformerConfig.
    params: its parameters (any tree `Transformer(config).apply` accepts).
    pad_id: id used to left-pad prompts and fill finished rows.
    stop_tokens: default stop ids for every row (e.g. eos, end_of_turn).
    prompt_bucket: prompt lengths are rounded up to a multiple of this, and
      new-token budgets too, to bound the number of compilations.
    batch_bucket: batch sizes are rounded up to a multiple of this with
      dummy rows (useful when the number of live rollouts shrinks).
    cache_dtype: KV cache dtype (default: the model's compute dtype).
  """

  def __init__(self, config: TransformerConfig, params: Any, *,
               pad_id: int = 0, stop_tokens: Sequence[int] = (),
               prompt_bucket: int = 16, batch_bucket: int = 1,
               cache_dtype: Any = None):
    self.config = config
    self.params = params
    self.pad_id = int(pad_id)
    self.default_stop_tokens = tuple(int(t) for t in stop_tokens)
    self.prompt_bucket = int(prompt_bucket)
    self.batch_bucket = int(batch_bucket)
    self.cache_dtype = cache_dtype or config.compute_dtype
    self._model = Transformer(config)
    self._compiled = _jitted_generate(config)

  def update_params(self, params: Any) -> None:
    """Swaps in new weights (same shapes: no recompilation)."""
    self.params = params

  def _stop_array(self, stop_tokens: StopTokens, batch: int) -> np.ndarray:
    if stop_tokens is None:
      rows = [list(self.default_stop_tokens)] * batch
    elif len(stop_tokens) and isinstance(stop_tokens[0], (list, tuple)):
      if len(stop_tokens) != batch:
        raise ValueError(f"stop_tokens has {len(stop_tokens)} rows for "
                         f"{batch} prompts.")
      rows = [list(r) for r in stop_tokens]
    else:
      rows = [list(stop_tokens)] * batch
    width = max(1, max(len(r) for r in rows))
    out = np.full((batch, width), -1, np.int32)
    for i, r in enumerate(rows):
      out[i, :len(r)] = r
    return out

  @staticmethod
  def _check_groups(tokens: np.ndarray, mask: np.ndarray, batch: int,
                    group_size: int) -> int:
    """Validates `group_size` against the padded [b, P] prompt arrays."""
    g = int(group_size)
    if g < 1 or batch % g:
      raise ValueError(f"group_size={group_size} must be >= 1 and divide "
                       f"the number of prompts ({batch}).")
    if g == 1:
      return 1
    if tokens.shape[0] % g:  # dummy rows of batch_bucket split a group
      return 1
    shaped = tokens.reshape(-1, g, tokens.shape[1])
    same = np.all(shaped == shaped[:, :1], axis=(1, 2)) & np.all(
        mask.reshape(shaped.shape) == mask.reshape(shaped.shape)[:, :1],
        axis=(1, 2))
    if not np.all(same):
      bad = int(np.argmin(same))
      raise ValueError(f"group_size={g}: prompts {bad * g}..{bad * g + g - 1} "
                       "are not all the same prompt.")
    return g

  def generate(self, prompts: Sequence[Sequence[int]],
               max_new_tokens: Union[int, Sequence[int]],
               temperature: float = 0.0, top_k: Optional[int] = None,
               top_p: Optional[float] = None, stop_tokens: StopTokens = None,
               seed: int = 0, rng: Optional[jax.Array] = None,
               group_size: int = 1) -> SamplerOutput:
    """Samples continuations.

    Args:
      prompts: B non-empty lists of token ids.
      max_new_tokens: one budget for all rows, or one per row.
      temperature: 0 for greedy decoding, otherwise the softmax temperature.
      top_k: keep the k most likely tokens (None: all).
      top_p: nucleus mass in (0, 1] (None: all).
      stop_tokens: None (the sampler's defaults), a list of ids for every row,
        or one list per row. The stop token is included in the output.
      seed / rng: randomness (rng wins if given).
      group_size: the prompts come in consecutive groups of this many
        identical ones (e.g. G samples per prompt for GRPO); each group's
        prompt is prefilled once instead of G times (same results; on the
        CPU the prefill of 32 rows of 32 tokens costs ~3.5x that of 8).
        A batch that does not split into such groups is a ValueError.
    Returns:
      SamplerOutput.
    """
    batch = len(prompts)
    if batch == 0:
      raise ValueError("generate() needs at least one prompt.")
    vocab = self.config.vocab_size
    for i, prompt in enumerate(prompts):
      if len(prompt) == 0:
        raise ValueError(f"Prompt {i} is empty; every prompt needs at least "
                         "one token (e.g. BOS).")
      bad = [t for t in prompt if not 0 <= int(t) < vocab]
      if bad:
        raise ValueError(f"Prompt {i} has token id {bad[0]} outside the "
                         f"vocabulary [0, {vocab}).")
    if temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {temperature}.")
    if top_p is not None and not 0.0 < top_p <= 1.0:
      raise ValueError(f"top_p must be in (0, 1], got {top_p}.")
    if top_k is not None and top_k < 0:
      raise ValueError(f"top_k must be >= 0, got {top_k}.")
    budgets = (np.full(batch, max_new_tokens, np.int32)
               if np.isscalar(max_new_tokens)
               else np.asarray(max_new_tokens, np.int32))
    if budgets.shape != (batch,) or np.any(budgets < 0):
      raise ValueError(f"max_new_tokens must be >= 0 (one value or one per "
                       f"prompt), got {max_new_tokens!r}.")
    num_new = _round_up(int(budgets.max()) or 1, self.prompt_bucket)
    p = _round_up(max(len(x) for x in prompts), self.prompt_bucket)
    b = _round_up(batch, self.batch_bucket)

    tokens = np.full((b, p), self.pad_id, np.int32)
    mask = np.zeros((b, p), bool)
    for i, prompt in enumerate(prompts):
      tokens[i, p - len(prompt):] = prompt
      mask[i, p - len(prompt):] = True
    tokens[batch:, -1] = self.pad_id  # dummy rows: one "real" token, no budget
    mask[batch:, -1] = True
    max_new = np.zeros(b, np.int32)
    max_new[:batch] = budgets
    stop_rows = self._stop_array(stop_tokens, batch)
    stops = np.full((b, stop_rows.shape[1]), -1, np.int32)
    stops[:batch] = stop_rows
    group = self._check_groups(tokens, mask, batch, group_size)

    greedy = temperature == 0.0
    key = rng if rng is not None else jax.random.key(seed)
    out_tokens, out_logp, lengths, stopped = self._compiled(
        self.params, tokens, mask, max_new, stops, key,
        jnp.float32(temperature or 1.0), jnp.float32(top_p or 1.0),
        num_new=num_new, greedy=greedy,
        top_k=None if greedy else (top_k or None),
        use_top_p=(not greedy and top_p is not None and top_p < 1.0),
        pad_id=self.pad_id, cache_dtype=self.cache_dtype, group=group)
    out_tokens = np.asarray(out_tokens)[:batch]
    out_logp = np.asarray(out_logp)[:batch]
    lengths = np.asarray(lengths)[:batch]
    stopped = np.asarray(stopped)[:batch]
    return SamplerOutput(
        tokens=[out_tokens[i, :lengths[i]].tolist() for i in range(batch)],
        logprobs=[out_logp[i, :lengths[i]].tolist() for i in range(batch)],
        done=[bool(x) for x in stopped],
        token_array=out_tokens, logprob_array=out_logp, lengths=lengths)
