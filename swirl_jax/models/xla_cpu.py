"""The three computations written in the form XLA:CPU compiles well.

Each is the same maths as a plain form (given in its docstring) and runs on
every backend; on XLA:CPU the plain form compiled to strided copies or extra
memory traffic that these avoid (each docstring says what and by how much).
The model's layers call these instead of the plain forms:

- `dense`: the einsum "...i,io->...o" as one 2-D matmul (the weight gradient
  is then a plain x^T @ dy, read in place);
- `gated_gelu`: gelu_tanh(gate) * up with a hand-written gradient that
  recomputes tanh instead of saving the intermediates;
- `decode_attention`: one new token's attention against the KV cache it is
  written to, reading the old cache so that the cache updates in place.

`tests/test_models_xla_cpu.py` checks each against its plain form, values and
gradients.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from swirl_jax.models.attention import MASK_VALUE, soft_cap
from swirl_jax.models.quantized import QuantizedKernel, int8_dense


def dense(x: jax.Array, w: jax.Array, n_in: int = 1) -> jax.Array:
  """Contracts the last `n_in` axes of x with the first `n_in` axes of w.

  x: [..., *I]; w: [*I, *O] -> [..., *O]. The same maths as the einsum
  "...i,io->...o", written as ONE 2-D matmul [prod(...), prod(I)] @
  [prod(I), prod(O)]. Why: the gradient of a 3-D einsum such as
  "btd,df->btf" w.r.t. w contracts two axes (b and t); XLA:CPU then
  canonicalises that dot by making the elementwise fusion that produces the
  incoming gradient write it transposed ([f, b*t]): slow strided loops
  (together about a fifth of a tiny model's train step). With 2-D operands
  the weight gradient is a plain x^T @ dy, which the matmul library reads
  in place.

  `w` may also be a `quantized.QuantizedKernel` (the sampler's int8 decode
  weights): then an int8 x int8 matmul, the result in x's dtype.
  """
  if isinstance(w, QuantizedKernel):
    return int8_dense(x, w, n_in).astype(x.dtype)
  in_shape, out_shape = w.shape[:n_in], w.shape[n_in:]
  lead = x.shape[:x.ndim - n_in]
  size_in = math.prod(in_shape)
  y = jnp.matmul(x.reshape(-1, size_in), w.reshape(size_in, -1))
  return y.reshape(lead + out_shape)


def decode_attention(qg: jax.Array, key: jax.Array, value: jax.Array,
                     cache_k: jax.Array, cache_v: jax.Array,
                     write_index: jax.Array, mask: jax.Array,
                     cap: Optional[float]) -> jax.Array:
  """`attention` of ONE new token against the cache it is being written to.

  The same maths as `attention(qg, dus(cache_k, key), dus(cache_v, value),
  ...)`, but the keys and values of the old cache and of the new token are
  used separately: slot `write_index` takes the new token's logit, and its
  value is added outside the matmul, where the old cache's entry at that
  slot gets probability 0 (it must be finite: `init_cache` zeros it; the
  result differs from the plain form by float32 round-off only). Why: if
  the attention read the updated cache, XLA:CPU fuses the
  dynamic_update_slice into both of its users (this matmul and the decode
  loop's carry), so neither updates the cache in place: the sampler's
  while loop copied every layer's cache three times per token. Here the
  update has a single user, and the old cache is read before it is
  overwritten: with region-analysis copy insertion (the sampler compiles
  with it on CPU, see `swirl_jax.sampling.sampler`) the caches are then
  updated in place, with no copy at all.

  Args:
    qg: [B, K, G, H] queries of the new token (scaled).
    key, value: [B, K, 1, H] the new token's key and value.
    cache_k, cache_v: [B, K, S, H] the cache BEFORE writing them.
    write_index: int32 scalar, the new token's slot.
    mask: [B, S] bool over the cache slots (the new slot included).
    cap: attention-logit soft-cap (None: off).
  Returns:
    [B, K, G, H] in qg.dtype.
  """
  dtype = qg.dtype
  s = cache_k.shape[2]
  at_slot = jnp.arange(s) == write_index  # [S]
  old = jnp.einsum("bkgh,bksh->bkgs", qg, cache_k.astype(dtype),
                   preferred_element_type=jnp.float32)
  new = jnp.einsum("bkgh,bksh->bkgs", qg, key.astype(dtype),
                   preferred_element_type=jnp.float32)  # [B, K, G, 1]
  logits = soft_cap(jnp.where(at_slot, new, old), cap)
  logits = jnp.where(mask[:, None, None, :], logits, MASK_VALUE)
  probs = jax.nn.softmax(logits, axis=-1).astype(dtype)
  p_new = jnp.sum(jnp.where(at_slot, probs, 0), axis=-1, keepdims=True)
  out = jnp.einsum("bkgs,bksh->bkgh", jnp.where(at_slot, 0, probs),
                   cache_v.astype(dtype))
  return out + p_new * value.astype(dtype)


@jax.custom_vjp
def gated_gelu(gate: jax.Array, up: jax.Array) -> jax.Array:
  """gelu_tanh(gate) * up, elementwise ([..., F] each): GeGLU's activation.

  The value is exactly `jax.nn.gelu(gate, approximate=True) * up`; the
  gradient is written by hand (below) from `gate` and `up` alone. Why: the
  autodiff of gelu_tanh saves several [B*T, F] intermediates (tanh, powers,
  products) in the forward pass and reads them back in the backward pass:
  on XLA:CPU that memory traffic cost more than recomputing tanh from
  `gate` in one fused backward loop (the MLP's gradient is ~25% faster).
  """
  return jax.nn.gelu(gate, approximate=True) * up


def _gated_gelu_fwd(gate, up):
  return gated_gelu(gate, up), (gate, up)


def _gated_gelu_bwd(residuals, d_out):
  """d/dgate = d_out * up * gelu'(gate); d/dup = d_out * gelu(gate), with
  gelu(x) = x/2 (1 + tanh(u)), u = c (x + a x^3), c = sqrt(2/pi), a = 0.044715
  and gelu'(x) = (1 + tanh(u))/2 + x/2 (1 - tanh(u)^2) c (1 + 3 a x^2)."""
  gate, up = residuals
  x = gate.astype(jnp.float32)
  c, a = math.sqrt(2.0 / math.pi), 0.044715
  t = jnp.tanh(c * (x + a * x * x * x))
  gelu = 0.5 * x * (1.0 + t)
  d_gelu = (0.5 * (1.0 + t)
            + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * a * x * x))
  d_out32 = d_out.astype(jnp.float32)
  d_gate = d_out32 * up.astype(jnp.float32) * d_gelu
  d_up = d_out32 * gelu
  return d_gate.astype(gate.dtype), d_up.astype(up.dtype)


gated_gelu.defvjp(_gated_gelu_fwd, _gated_gelu_bwd)
