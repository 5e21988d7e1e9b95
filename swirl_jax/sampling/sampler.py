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

Several processes (hosts): params sharded over all of them are copied to
each host's own devices (`sharding.host_local_copy`, in `update_params`),
and every host decodes its own prompts there, without waiting on the
others. `row_ids` (or the `RowKeyedSampler` adapter) gives each row the
randomness of its global identity, so the samples do not depend on which
host, batch or padding a row is in (see docs/tpu_gpu.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from typing import Any, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from swirl_jax import sharding as sharding_lib
from swirl_jax.models.config import TransformerConfig
from swirl_jax.models.quantized import quantize_dense_kernels, quantize_rows
from swirl_jax.models.transformer import (Transformer, init_cache,
                                          positions_from_mask)
from swirl_jax.sampling.logits import sample_tokens, token_logprobs
from swirl_jax.tokenizer import stop_ids

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


def _generate(model: Transformer, params, decode_weights, tokens, input_mask,
              max_new, stops, rng, temperature, top_p, *, num_new: int,
              greedy: bool, top_k: Optional[int], use_top_p: bool,
              pad_id: int, cache_dtype, group: int = 1, prefix_len: int = 0,
              row_ids=None, int8_prefill: bool = False):
  """Prefill + on-device decode loop.

  Args:
    params: the float parameters (the prefill's, and the decode steps'
      unless `decode_weights` replaces them).
    decode_weights: `DecodeWeights` (int8 table and/or body for the decode
      steps; `quantize_for_decode`), or None.
    tokens: [B, P] left-padded prompts.
    input_mask: [B, P] bool, True on real prompt tokens.
    max_new: [B] int32 per-row budget (<= num_new).
    stops: [B, M] int32 stop ids, -1 = none.
    rng: PRNG key.
    temperature, top_p: float32 scalars.
    num_new: static N, size of the output buffers.
    group: static; rows come in consecutive groups of this many identical
      prompts, each prefilled once; or, with prefix_len, groups sharing
      the tokens of slots [0, prefix_len).
    prefix_len: static; > 0: slots [0, prefix_len) hold each group's shared
      prefix (the same in its rows), prefilled once per group, then every
      row's own slots [prefix_len, P) against the group's cache.
    row_ids: None, or [B] int32: row i draws its uniforms from
      fold_in(rng, row_ids[i]) (independent of B and N) instead of column
      i of one [N, B] draw.
    int8_prefill: static; the prefill's matmuls also use the int8 body
      kernels of `decode_weights` (else the float params).
  Returns:
    out_tokens [B, N], out_logprobs [B, N], lengths [B], stopped [B].
  """
  b, p = tokens.shape
  s = p + num_new
  cfg = model.config
  decode_weights = decode_weights or DecodeWeights()
  step_params = params
  if decode_weights.body is not None:
    step_params = dict(decode_weights.body, embedding=params["embedding"])
  prefill_params = step_params if int8_prefill else params
  valid = jnp.concatenate([input_mask, jnp.zeros((b, num_new), bool)], axis=1)
  causal = jnp.arange(s)[None, :] <= jnp.arange(p)[:, None]  # [P, S]
  prefill_mask = jnp.logical_and(causal[None], valid[:, None, :])
  positions = positions_from_mask(input_mask)
  # Rows come in groups of `group` identical prompts (checked on the host):
  # the prompt is prefilled once per group, its cache repeated to the rows.
  first = slice(None, None, group)
  cache = init_cache(cfg, b // group, s, cache_dtype)
  shared = slice(None, prefix_len or None)
  logits, cache = model.apply(
      {"params": prefill_params}, tokens[first, shared],
      positions[first, shared],
      prefill_mask[first, shared], cache, 0, None, True,
      method="forward_with_cache")
  last_logits = jnp.repeat(logits[:, -1], group, axis=0)
  if group > 1:
    cache = jax.tree.map(lambda c: jnp.repeat(c, group, axis=0), cache)
  if prefix_len:  # each row's own tokens after its group's prefix
    logits, cache = model.apply(
        {"params": prefill_params}, tokens[:, prefix_len:],
        positions[:, prefix_len:],
        prefill_mask[:, prefix_len:], cache, prefix_len, None,
        True, method="forward_with_cache")
    last_logits = logits[:, -1]
  next_pos = jnp.sum(input_mask, axis=1).astype(jnp.int32)  # [B]

  # One U[0, 1) number per row and step, drawn up front: the per-step
  # draw costs only an index (see `inverse_cdf_sample`).
  if row_ids is None:
    uniforms = jax.random.uniform(rng, (num_new, b), jnp.float32)
  else:
    # Threefry is counter-based and partitionable: element t of a row's
    # draw is the same for any num_new, so only the row's id matters.
    uniforms = jax.vmap(lambda i: jax.random.uniform(
        jax.random.fold_in(rng, i), (num_new,), jnp.float32))(row_ids).T

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
  # matmul; see `Transformer.forward_with_cache`), or the int8 table.
  if decode_weights.table is not None:
    table_t = decode_weights.table
  else:
    table_t = jax.lax.optimization_barrier(params["embedding"].T)

  def decode_step(state):
    (step, tok, cache, valid, pos, out_tokens, out_logp, finished, stopped,
     lengths) = state
    slot = p + step - 1  # slot of the token sampled at step - 1
    valid = valid.at[:, slot].set(True)
    logits, cache = model.apply(
        {"params": step_params}, tok[:, None], pos[:, None],
        valid[:, None, :],
        cache, slot, table_t, method="forward_with_cache")
    tok, logp, live, hit, finished = pick(logits[:, 0], step, finished)
    out_tokens = out_tokens.at[:, step].set(tok)
    out_logp = out_logp.at[:, step].set(logp)
    return (step + 1, tok, cache, valid, pos + 1, out_tokens, out_logp,
            finished, stopped | hit, lengths + live.astype(jnp.int32))

  state = (jnp.int32(1), tok, cache, valid, next_pos, out_tokens, out_logp,
           finished, stopped, lengths)
  state = jax.lax.while_loop(cond, decode_step, state)
  _, _, _, _, _, out_tokens, out_logp, _, stopped, lengths = state
  return out_tokens, out_logp, lengths, stopped


class DecodeWeights(NamedTuple):
  """The decode steps' int8 weights (None: the float ones).

  table: the embedding table as a `quantized.QuantizedTable` [V, D].
  body: the parameters without the embedding, every block's attention and
    MLP kernel a `quantized.QuantizedKernel`.
  """

  table: Any = None
  body: Any = None


@functools.partial(jax.jit, static_argnames=("unembed", "body"))
def quantize_for_decode(params, *, unembed: str, body: str) -> DecodeWeights:
  """The `DecodeWeights` of `Sampler(unembed=..., body=...)`, once per
  parameter update."""
  table = quantize_rows(params["embedding"]) if unembed == "int8" else None
  kernels = None
  if body == "int8":
    kernels = quantize_dense_kernels(
        {k: v for k, v in params.items() if k != "embedding"})
  return DecodeWeights(table, kernels)


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
                       "cache_dtype", "group", "prefix_len",
                       "int8_prefill"),
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
    unembed: 'float' (default) or 'int8': each decode step's logits from
      the embedding table quantised to int8 per row, against the hidden
      state quantised per row (`swirl_jax.models.quantized`; a quarter of
      the bytes: Gemma 3 270M's table is 63% of a float32 decode step's
      reads). For inference; the returned log-probs are then those of the
      int8 logits, so an objective's old log-probs should be recomputed.
    body: 'float' (default) or 'int8': each decode step's attention and MLP
      matmuls against the blocks' kernels quantised to int8 per output
      (see below), the activations per row
      (`quantized.quantize_dense_kernels`): a quarter of the bytes of the
      float32 body. The prefill stays float unless prefill="int8". For
      inference, as `unembed`.
    prefill: 'float' (default) or 'int8' (needs body='int8'): the prefill's
      matmuls against the same int8 kernels (activations per token), so
      the whole call runs on the quantised body; the prompt's keys and
      values then come from the int8 matmuls too. For inference.

  With an int8 option the weights are quantised once per `update_params`
  (kept beside the float ones: 1.25x the memory of a float32 model),
  not per generate call.
  """

  UNEMBED = ("float", "int8")
  BODY = ("float", "int8")
  PREFILL = ("float", "int8")

  def __init__(self, config: TransformerConfig, params: Any, *,
               pad_id: int = 0, stop_tokens: Sequence[int] = (),
               prompt_bucket: int = 16, batch_bucket: int = 1,
               cache_dtype: Any = None, unembed: str = "float",
               body: str = "float", prefill: str = "float"):
    if unembed not in self.UNEMBED:
      raise ValueError(f"unembed={unembed!r}; choose one of {self.UNEMBED}.")
    if body not in self.BODY:
      raise ValueError(f"body={body!r}; choose one of {self.BODY}.")
    if prefill not in self.PREFILL:
      raise ValueError(f"prefill={prefill!r}; choose one of {self.PREFILL}.")
    if prefill == "int8" and body != "int8":
      raise ValueError(f"prefill='int8' runs on the int8 body kernels; it "
                       f"needs body='int8', got body={body!r}.")
    self.unembed = unembed
    self.body = body
    self.prefill = prefill
    self.config = config
    self.params = params
    self.pad_id = int(pad_id)
    self.default_stop_tokens = tuple(int(t) for t in stop_tokens)
    self.prompt_bucket = int(prompt_bucket)
    self.batch_bucket = int(batch_bucket)
    self.cache_dtype = cache_dtype or config.compute_dtype
    self._model = Transformer(config)
    self._compiled = _jitted_generate(config)
    self._local_mesh = None
    # (source tree, host-local copy, its mesh), newest last: the policy and
    # the reference alternate without copying again (several processes).
    self._copies: list[tuple[Any, Any, Any]] = []
    # (float tree, its DecodeWeights), the last two, as `_copies`.
    self._quantized: list[tuple[Any, DecodeWeights]] = []
    self.update_params(params)

  def update_params(self, params: Any) -> None:
    """Swaps in new weights (same shapes: no recompilation).

    Params sharded over several processes are copied to this host's
    devices (`sharding.host_local_copy`: a collective, so every process
    swaps in the same trees in the same order); the last two trees' copies
    are kept, so swapping back and forth copies each once. On one process
    the params are used as they are.
    """
    self._swap_in(params)
    self._decode_weights = None
    if "int8" in (self.unembed, self.body):
      for source, weights in self._quantized:
        if source is self.params:
          self._decode_weights = weights
          break
      else:
        with self._device_context():
          self._decode_weights = quantize_for_decode(
              self.params, unembed=self.unembed, body=self.body)
        self._quantized = self._quantized[-1:] + [(self.params,
                                                    self._decode_weights)]

  def _swap_in(self, params: Any) -> None:
    if not sharding_lib.spans_processes(params):
      self.params, self._local_mesh = params, None
      return
    for i, (source, copy, mesh) in enumerate(self._copies):
      if source is params:
        self._copies.append(self._copies.pop(i))
        self.params, self._local_mesh = copy, mesh
        return
    copy, mesh = sharding_lib.host_local_copy(params)
    self._copies = self._copies[-1:] + [(params, copy, mesh)]
    self.params, self._local_mesh = copy, mesh

  def _device_context(self):
    """The host's own mesh for a host-local copy (the trainer's global
    activation rules would place the decode on every host's devices)."""
    if self._local_mesh is None:
      return contextlib.nullcontext()
    return sharding_lib.activation_rules(self._local_mesh)

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

  def _layout(self, prompts, p: int, b: int):
    """[b, P] left-padded tokens and mask; rows past the prompts are dummy
    rows of one "real" pad token (and no budget)."""
    tokens = np.full((b, p), self.pad_id, np.int32)
    mask = np.zeros((b, p), bool)
    for i, prompt in enumerate(prompts):
      tokens[i, p - len(prompt):] = prompt
      mask[i, p - len(prompt):] = True
    tokens[len(prompts):, -1] = self.pad_id
    mask[len(prompts):, -1] = True
    return tokens, mask

  def _shared_prefix_layout(self, prompts, g: int, b: int):
    """(P1, tokens, mask): slots [0, P1) hold each group's longest common
    prefix (left-padded; at most each row's length - 1, so that every row
    has a token of its own), slots [P1, P) each row's rest (left-padded).
    (0, None, None) where no group shares a token."""
    lengths = []
    for k in range(0, len(prompts), g):
      rows = [list(x) for x in prompts[k:k + g]]
      n = min(len(r) for r in rows) - 1
      common = 0
      while common < n and all(r[common] == rows[0][common] for r in rows):
        common += 1
      lengths += [common] * len(rows)
    if not max(lengths):
      return 0, None, None
    p1 = _round_up(max(lengths), self.prompt_bucket)
    p2 = _round_up(max(len(x) - n for x, n in zip(prompts, lengths)),
                   self.prompt_bucket)
    tokens = np.full((b, p1 + p2), self.pad_id, np.int32)
    mask = np.zeros((b, p1 + p2), bool)
    for i, (prompt, n) in enumerate(zip(prompts, lengths)):
      tokens[i, p1 - n:p1] = prompt[:n]
      mask[i, p1 - n:p1] = True
      rest = len(prompt) - n
      tokens[i, p1 + p2 - rest:] = prompt[n:]
      mask[i, p1 + p2 - rest:] = True
    mask[len(prompts):, -1] = True
    return p1, tokens, mask

  @staticmethod
  def _identical_groups(tokens: np.ndarray, mask: np.ndarray,
                        g: int) -> bool:
    shaped = tokens.reshape(-1, g, tokens.shape[1])
    masks = mask.reshape(shaped.shape)
    return bool(np.all(shaped == shaped[:, :1]) and
                np.all(masks == masks[:, :1]))

  @classmethod
  def _check_groups(cls, tokens: np.ndarray, mask: np.ndarray, batch: int,
                    group_size: int, allow_different: bool = False) -> int:
    """Validates `group_size` against the padded [b, P] prompt arrays."""
    g = int(group_size)
    if g < 1 or batch % g:
      raise ValueError(f"group_size={group_size} must be >= 1 and divide "
                       f"the number of prompts ({batch}).")
    if g == 1:
      return 1
    if tokens.shape[0] % g:  # dummy rows of batch_bucket split a group
      return 1
    if allow_different:
      return g
    shaped = tokens.reshape(-1, g, tokens.shape[1])
    same = np.all(shaped == shaped[:, :1], axis=(1, 2)) & np.all(
        mask.reshape(shaped.shape) == mask.reshape(shaped.shape)[:, :1],
        axis=(1, 2))
    if not np.all(same):
      bad = int(np.argmin(same))
      raise ValueError(f"group_size={g}: prompts {bad * g}..{bad * g + g - 1} "
                       "are not all the same prompt (shared_prefix=True "
                       "takes groups that share only a prefix).")
    return g

  def generate(self, prompts: Sequence[Sequence[int]],
               max_new_tokens: Union[int, Sequence[int]],
               temperature: float = 0.0, top_k: Optional[int] = None,
               top_p: Optional[float] = None, stop_tokens: StopTokens = None,
               seed: int = 0, rng: Optional[jax.Array] = None,
               group_size: int = 1, shared_prefix: bool = False,
               row_ids: Optional[Sequence[int]] = None) -> SamplerOutput:
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
      shared_prefix: with group_size G > 1, the G prompts of a group need
        only share a prefix (e.g. R3's G retries of one failed attempt,
        which differ from their reflection on): each group's longest
        common prefix is prefilled once, then each row's rest against it
        (the same results up to float round-off). Groups of identical
        prompts take the path above.
      row_ids: None (row i uses column i of one [N, B] draw of uniforms),
        or one id in [0, 2^31) per prompt: row i then draws from
        fold_in(key, row_ids[i]), the same whatever the batch, its
        padding, the other rows or the host (several hosts: give rows
        globally unique ids, see `RowKeyedSampler`).
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

    tokens, mask = self._layout(prompts, p, b)
    max_new = np.zeros(b, np.int32)
    max_new[:batch] = budgets
    stop_rows = self._stop_array(stop_tokens, batch)
    stops = np.full((b, stop_rows.shape[1]), -1, np.int32)
    stops[:batch] = stop_rows
    group = self._check_groups(tokens, mask, batch, group_size,
                               allow_different=shared_prefix)
    prefix_len = 0
    if shared_prefix and group > 1 and not self._identical_groups(
        tokens, mask, group):
      prefix_len, shared_tokens, shared_mask = self._shared_prefix_layout(
          prompts, group, b)
      if prefix_len:
        tokens, mask = shared_tokens, shared_mask
      else:
        group = 1  # no group shares a token: the plain layout
    ids = None
    if row_ids is not None:
      given = np.asarray(row_ids, np.int64)
      if given.shape != (batch,) or np.any(given < 0) or np.any(
          given >= 2 ** 31):
        raise ValueError(f"row_ids must hold one id in [0, 2^31) per prompt "
                         f"({batch}), got shape {given.shape}.")
      ids = np.zeros(b, np.int32)
      ids[:batch] = given

    greedy = temperature == 0.0
    with self._device_context():
      # Made here: a key made under the trainer's global mesh would carry it.
      key = rng if rng is not None else jax.random.key(seed)
      out_tokens, out_logp, lengths, stopped = self._compiled(
          self.params, self._decode_weights, tokens, mask, max_new, stops,
          key,
          jnp.float32(temperature or 1.0), jnp.float32(top_p or 1.0),
          num_new=num_new, greedy=greedy,
          top_k=None if greedy else (top_k or None),
          use_top_p=(not greedy and top_p is not None and top_p < 1.0),
          pad_id=self.pad_id, cache_dtype=self.cache_dtype, group=group,
          prefix_len=prefix_len, int8_prefill=self.prefill == "int8",
          **({} if ids is None else {"row_ids": ids}))
    out_tokens = np.asarray(out_tokens)[:batch]
    out_logp = np.asarray(out_logp)[:batch]
    lengths = np.asarray(lengths)[:batch]
    stopped = np.asarray(stopped)[:batch]
    return SamplerOutput(
        tokens=[out_tokens[i, :lengths[i]].tolist() for i in range(batch)],
        logprobs=[out_logp[i, :lengths[i]].tolist() for i in range(batch)],
        done=[bool(x) for x in stopped],
        token_array=out_tokens, logprob_array=out_logp, lengths=lengths)


def chat_sampler(config: TransformerConfig, tokenizer: Any,
                 params: Any = None, *, prompt_bucket: int = 64,
                 batch_bucket: int = 8, **kwargs) -> "Sampler":
  """The sampler of chat turns every recipe uses: pads with the tokenizer's
  pad id, stops a turn at `stop_ids(tokenizer)`, buckets prompt lengths
  (and budgets) by `prompt_bucket` and batch sizes by `batch_bucket`, so
  the few shapes of an experiment compile once; share one between stages
  with `update_params`. `kwargs` go to `Sampler` (e.g. cache_dtype)."""
  return Sampler(config, params, pad_id=tokenizer.pad_id,
                 stop_tokens=stop_ids(tokenizer), prompt_bucket=prompt_bucket,
                 batch_bucket=batch_bucket, **kwargs)


class RowKeyedSampler:
  """Gives every sampled row the randomness of its global identity.

  Wraps a sampler whose `generate` takes `row_ids` (a `Sampler`). A batch
  builder sets the ids of the rows the next calls will sample (e.g. record
  index x samples + sample index, numbered over every host) with
  `with keyed.rows(ids): engine.run...(...)`; each `generate` call then
  passes them on, so a row's sample does not depend on the host it is
  sampled on nor on the other rows of its call: several hosts draw what
  one process would, and no two rows share their randomness. Outside
  `rows(...)` (or with `enabled` False) calls go through unchanged.

  A call with fewer prompts than ids (the rollout engine leaves out rows
  whose context has no room left) uses the first ids: still unique, but
  then not the same as another topology's.
  """

  def __init__(self, sampler: Any, enabled: bool = True):
    self.sampler = sampler
    self.enabled = bool(enabled)
    self._ids: Optional[list[int]] = None
    self._warned = False

  def update_params(self, params: Any) -> None:
    self.sampler.update_params(params)

  @contextlib.contextmanager
  def rows(self, ids: Sequence[int]):
    """Calls inside the block sample rows with these ids."""
    previous, self._ids = self._ids, [int(i) for i in ids]
    try:
      yield self
    finally:
      self._ids = previous

  def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens,
               **kwargs) -> SamplerOutput:
    if self.enabled and self._ids is not None:
      ids = self._ids
      if len(ids) != len(prompts):
        if not self._warned:
          logging.getLogger(__name__).warning(
              "RowKeyedSampler: %d prompts for %d row ids (rows left out by "
              "the engine); using the first ids.", len(prompts), len(ids))
          self._warned = True
        if len(prompts) > len(ids):
          raise ValueError(f"RowKeyedSampler: {len(prompts)} prompts but "
                           f"only {len(ids)} row ids.")
        ids = ids[:len(prompts)]
      kwargs["row_ids"] = ids
    return self.sampler.generate(prompts, max_new_tokens, **kwargs)
