"""Writes tiny Gemma GGUF files for the importer's tests, with the `gguf`
package's own writer, the way llama.cpp's convert_hf_to_gguf.py does:
metadata under `{arch}.*`, tensors named `blk.N.*`, every RMSNorm weight
stored as (1 + w), 2-D weights as torch [out, in] arrays (ne = [in, out]).
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

# HF decoder tensor (after 'model.') -> GGUF name, per family.
_COMMON = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_FAMILY = {
    "gemma": {"post_attention_layernorm": "ffn_norm"},
    "gemma2": {"post_attention_layernorm": "post_attention_norm",
               "pre_feedforward_layernorm": "ffn_norm",
               "post_feedforward_layernorm": "post_ffw_norm"},
}
_FAMILY["gemma3"] = dict(_FAMILY["gemma2"], **{
    "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"})


def gguf_name(hf_name: str, arch: str) -> Optional[str]:
  """'model.layers.3.mlp.up_proj.weight' -> 'blk.3.ffn_up.weight'."""
  name = hf_name.removeprefix("model.")
  if name == "embed_tokens.weight":
    return "token_embd.weight"
  if name == "norm.weight":
    return "output_norm.weight"
  if name == "lm_head.weight":
    return "output.weight"
  if not name.startswith("layers."):
    return None
  _, index, rest = name.split(".", 2)
  rest = rest.removesuffix(".weight")
  table = dict(_COMMON, **_FAMILY[arch])
  return f"blk.{index}.{table[rest]}.weight" if rest in table else None


def write_tiny_gguf(path: str, arch: str, hf_config: Mapping,
                    state: Mapping[str, np.ndarray], *,
                    types: Optional[Mapping[str, str]] = None,
                    vocab: Optional[list[str]] = None,
                    extra_metadata: Optional[Mapping] = None,
                    tensor_dtypes: Optional[Mapping[str, str]] = None) -> None:
  """Writes `state` (HF names -> float32 arrays) as a GGUF file.

  types: GGUF tensor name suffix ('ffn_up', 'token_embd', ...) -> GGML type
    name ('Q8_0', 'F16', 'BF16', 'Q5_0', 'Q4_0'); others stay F32.
  tensor_dtypes: GGUF name -> raw numpy dtype to store (e.g. 'int32') for
    files with a tensor of a type the importer must refuse.
  """
  import gguf  # pylint: disable=g-import-not-at-top
  from gguf import quants  # pylint: disable=g-import-not-at-top

  c = dict(hf_config)
  writer = gguf.GGUFWriter(path, arch)
  writer.add_name(f"tiny {arch}")
  writer.add_context_length(int(c.get("max_position_embeddings", 8192)))
  writer.add_embedding_length(int(c["hidden_size"]))
  writer.add_block_count(int(c["num_hidden_layers"]))
  writer.add_feed_forward_length(int(c["intermediate_size"]))
  writer.add_head_count(int(c["num_attention_heads"]))
  writer.add_head_count_kv(int(c["num_key_value_heads"]))
  writer.add_key_length(int(c["head_dim"]))
  writer.add_value_length(int(c["head_dim"]))
  writer.add_layer_norm_rms_eps(float(c.get("rms_norm_eps", 1e-6)))
  rope = c.get("rope_parameters") or {}
  rope = rope.get("full_attention", rope)  # Gemma 3: keyed by layer type
  writer.add_rope_freq_base(float(rope.get("rope_theta",
                                           c.get("rope_theta", 10_000.0))))
  if arch != "gemma":
    writer.add_sliding_window(int(c["sliding_window"]))
  if arch == "gemma2":
    writer.add_attn_logit_softcapping(float(c["attn_logit_softcapping"]))
    writer.add_final_logit_softcapping(float(c["final_logit_softcapping"]))
  writer.add_file_type(1)
  for key, value in (extra_metadata or {}).items():
    if isinstance(value, float):
      writer.add_float32(key, value)
    elif isinstance(value, (list, tuple)):
      writer.add_array(key, list(value))
    else:
      writer.add_uint32(key, int(value))
  size = int(c["vocab_size"])
  vocab = vocab or (["<pad>", "<eos>", "<bos>", "<unk>"]
                    + [f"tok{i}" for i in range(4, size)])
  writer.add_tokenizer_model("llama")
  writer.add_token_list(vocab)
  writer.add_token_scores([0.0] * 4 + [-float(i) for i in range(4, size)])
  writer.add_token_types([3, 3, 3, 2] + [1] * (size - 4))
  writer.add_bos_token_id(2)
  writer.add_eos_token_id(1)
  writer.add_unk_token_id(3)
  writer.add_pad_token_id(0)
  types = dict(types or {})
  for hf_name, array in state.items():
    name = gguf_name(hf_name, arch)
    if name is None:
      continue
    array = np.asarray(array, dtype=np.float32)
    if name.endswith("norm.weight"):
      array = array + np.float32(1.0)  # llama.cpp stores Gemma norms as 1+w
    raw = (tensor_dtypes or {}).get(name)
    if raw is not None:
      writer.add_tensor(name, array.astype(raw))
      continue
    kind = next((t for suffix, t in types.items()
                 if name.removesuffix(".weight").endswith(suffix)), "F32")
    if kind == "F32" or array.ndim == 1:
      writer.add_tensor(name, array)
    else:
      qtype = gguf.GGMLQuantizationType[kind]
      data = quants.quantize(array, qtype)
      writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


def dequantized_state(state: Mapping[str, np.ndarray], arch: str,
                      types: Mapping[str, str]) -> dict[str, np.ndarray]:
  """`state` with each tensor rounded as `write_tiny_gguf` stores it."""
  import gguf  # pylint: disable=g-import-not-at-top
  from gguf import quants  # pylint: disable=g-import-not-at-top
  out = {}
  for hf_name, array in state.items():
    name = gguf_name(hf_name, arch)
    array = np.asarray(array, dtype=np.float32)
    kind = "F32"
    if name is not None and array.ndim == 2:
      kind = next((t for suffix, t in types.items()
                   if name.removesuffix(".weight").endswith(suffix)), "F32")
    if kind != "F32":
      qtype = gguf.GGMLQuantizationType[kind]
      array = quants.dequantize(quants.quantize(array, qtype), qtype)
      array = np.asarray(array, np.float32).reshape(state[hf_name].shape)
    out[hf_name] = array
  return out
