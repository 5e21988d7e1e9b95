"""Parity of swirl_jax.checkpoints.hf with Hugging Face transformers (CPU, f32).

Tiny random Gemma / Gemma 2 / Gemma 3 models are built with transformers,
saved with `save_pretrained`, imported with `hf.load` and compared on logits;
then exported with `hf.save`, reloaded with transformers and compared again.
Sequences (24 tokens) are longer than the sliding window (8).
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors.numpy import load_file, save_file  # noqa: E402

from swirl_jax.checkpoints import hf  # noqa: E402
from swirl_jax.models import (  # noqa: E402
    GLOBAL, LOCAL, Transformer, TransformerConfig, causal_attention_mask,
    positions_from_mask)
from swirl_jax import models  # noqa: E402
from swirl_jax.models.config import same_architecture  # noqa: E402

WINDOW = 8
LENGTH = 24
VOCAB = 96
TOL = 1e-4

_CLASSES = {
    "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM),
    "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM),
    "gemma3_text": (transformers.Gemma3TextConfig,
                    transformers.Gemma3ForCausalLM),
}

_BASE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
             max_position_embeddings=128, rms_norm_eps=1e-6)

# name -> (model_type, config kwargs). Every case has head_dim != D / N.
CASES = {
    # Gemma 1, multi-head attention (qkv of equal widths).
    "gemma_mha": ("gemma", dict(num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=4, head_dim=16)),
    # Gemma 1, multi-query attention with linear RoPE scaling.
    "gemma_mqa_linear_rope": ("gemma", dict(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
        head_dim=12, rope_parameters={"rope_type": "linear", "factor": 2.0,
                                      "rope_theta": 500.0})),
    # Gemma 2, GQA, soft-caps that bite, query_pre_attn_scalar != head_dim.
    "gemma2_gqa_caps": ("gemma2", dict(
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, query_pre_attn_scalar=24, sliding_window=WINDOW,
        attn_logit_softcapping=4.0, final_logit_softcapping=3.0)),
    # Gemma 2, MQA, soft-caps off.
    "gemma2_mqa_nocaps": ("gemma2", dict(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
        head_dim=16, query_pre_attn_scalar=16, sliding_window=WINDOW,
        attn_logit_softcapping=None, final_logit_softcapping=None,
        rope_parameters={"rope_type": "default", "rope_theta": 100.0})),
    # Gemma 3, GQA, q/k norm, local/global bases, linear scaling on global.
    "gemma3_gqa_rope": ("gemma3_text", dict(
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, query_pre_attn_scalar=32, sliding_window=WINDOW,
        layer_types=["sliding_attention", "sliding_attention",
                     "full_attention", "sliding_attention"],
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 4.0,
                               "rope_theta": 1000.0},
            "sliding_attention": {"rope_type": "default",
                                  "rope_theta": 50.0}})),
    # Gemma 3, MHA, final soft-cap on. (transformers' Gemma 3 ignores
    # attn_logit_softcapping; the importer must too.)
    "gemma3_mha_caps": ("gemma3_text", dict(
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        head_dim=24, query_pre_attn_scalar=20, sliding_window=WINDOW,
        layer_types=["sliding_attention", "full_attention"],
        attn_logit_softcapping=5.0, final_logit_softcapping=4.0)),
}


def _randomize(model, seed):
  """Random weights at a scale where every feature moves the logits."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for _, p in model.named_parameters():
      if p.ndim == 1:  # RMSNorm scales: tests the (1 + scale) convention
        p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
      else:
        p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))
  return model.eval()


def _hf_model(case, seed=0):
  model_type, kwargs = CASES[case]
  config_cls, model_cls = _CLASSES[model_type]
  config = config_cls(**_BASE, **kwargs, attn_implementation="eager")
  torch.manual_seed(seed)
  return _randomize(model_cls(config), seed)


def _tokens(batch=2, length=LENGTH, seed=0):
  return np.random.RandomState(seed).randint(0, VOCAB, (batch, length))


def _hf_logits(model, tokens, **kwargs):
  with torch.no_grad():
    out = model(torch.tensor(tokens), **kwargs)
  return out.logits.float().numpy()


_APPLY = jax.jit(lambda model, params, *args: model.apply({"params": params},
                                                         *args),
                 static_argnums=0)


def _our_logits(config, params, tokens, *args):
  return np.asarray(_APPLY(Transformer(config), params, jnp.asarray(tokens),
                           *args))


def _max_diff(a, b):
  assert a.shape == b.shape, (a.shape, b.shape)
  return float(np.max(np.abs(a - b)))


def _same_params(a, b):
  fa = jax.tree_util.tree_leaves_with_path(a)
  fb = dict(jax.tree_util.tree_leaves_with_path(b))
  assert len(fa) == len(fb)
  for path, leaf in fa:
    np.testing.assert_array_equal(np.asarray(leaf), np.asarray(fb[path]),
                                  err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("case", sorted(CASES))
def test_import_export_parity(case, tmp_path):
  model = _hf_model(case)
  model.save_pretrained(tmp_path / "hf")
  config, params = hf.load(tmp_path / "hf")
  assert config.param_dtype == "float32"
  assert config.head_dim != config.embed_dim // config.num_heads
  if LOCAL in config.attention_types:
    assert config.sliding_window_size == WINDOW < LENGTH

  tokens = _tokens()
  ref = _hf_logits(model, tokens)
  ours = _our_logits(config, params, tokens)
  assert _max_diff(ours, ref) <= TOL

  # Export, reload with transformers, compare against our logits.
  hf.save(tmp_path / "ours", config, params)
  reloaded, info = transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path / "ours", attn_implementation="eager", output_loading_info=True)
  assert type(reloaded) is type(model)
  assert not any(info.values()), info  # no missing / unexpected keys
  assert _max_diff(_hf_logits(reloaded, tokens), ours) <= TOL

  # And our own loader reads our export back exactly.
  config2, params2 = hf.load(tmp_path / "ours")
  assert same_architecture(config2, config)
  _same_params(params2, params)


def test_config_mapping_gemma3():
  model = _hf_model("gemma3_gqa_rope")
  config = hf.config_from_hf(model.config.to_dict())
  assert config.attention_types == (LOCAL, LOCAL, GLOBAL, LOCAL)
  assert config.use_qk_norm and config.use_post_attn_norm
  assert (config.rope_base_global, config.rope_scale_global) == (1000.0, 4.0)
  assert (config.rope_base_local, config.rope_scale_local) == (50.0, 1.0)
  assert config.query_pre_attn_scalar == 32
  assert config.max_seq_len == 128


def test_legacy_gemma3_config_keys_match_transformers():
  """Old Hub configs: rope_theta / rope_local_base_freq / rope_scaling and
  sliding_window_pattern instead of rope_parameters and layer_types."""
  legacy = dict(_BASE, model_type="gemma3_text", num_hidden_layers=7,
                num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                sliding_window=WINDOW, sliding_window_pattern=3,
                rope_theta=20000.0, rope_local_base_freq=300.0,
                rope_scaling={"rope_type": "linear", "factor": 8.0})
  ours = hf.config_from_hf(legacy)
  theirs = transformers.Gemma3TextConfig(
      **{k: v for k, v in legacy.items() if k != "model_type"})
  types = tuple(LOCAL if t == "sliding_attention" else GLOBAL
                for t in theirs.layer_types)
  assert ours.attention_types == types
  assert ours.attention_types == (LOCAL, LOCAL, GLOBAL) * 2 + (LOCAL,)
  full = theirs.rope_parameters["full_attention"]
  local = theirs.rope_parameters["sliding_attention"]
  assert ours.rope_base_global == full["rope_theta"] == 20000.0
  assert ours.rope_scale_global == full["factor"] == 8.0
  assert ours.rope_base_local == local["rope_theta"] == 300.0
  assert ours.rope_scale_local == 1.0


def test_legacy_gemma_config():
  """The original Gemma 1 config.json: hidden_act 'gelu' (= tanh GELU),
  rope_theta and rope_scaling null."""
  legacy = dict(_BASE, model_type="gemma", architectures=["GemmaForCausalLM"],
                num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=1, head_dim=16, hidden_act="gelu",
                rope_theta=10000.0, rope_scaling=None)
  config = hf.config_from_hf(legacy)
  assert config.attention_types == (GLOBAL, GLOBAL)
  assert config.query_pre_attn_scalar is None
  assert not config.use_post_attn_norm
  assert (config.rope_base_global, config.rope_scale_global) == (10000.0, 1.0)


def test_sharded_safetensors(tmp_path):
  model = _hf_model("gemma2_gqa_caps")
  model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
  model.save_pretrained(tmp_path / "single")
  files = os.listdir(tmp_path / "sharded")
  assert "model.safetensors.index.json" in files
  assert sum(f.endswith(".safetensors") for f in files) > 1
  config, params = hf.load(tmp_path / "sharded")
  config1, params1 = hf.load(tmp_path / "single")
  assert config == config1
  _same_params(params, params1)

  # Our sharded writer: transformers reads it, logits match.
  hf.save(tmp_path / "ours", config, params, max_shard_bytes=20_000)
  files = os.listdir(tmp_path / "ours")
  assert sum(f.endswith(".safetensors") for f in files) > 1
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path / "ours", attn_implementation="eager")
  tokens = _tokens()
  assert _max_diff(_hf_logits(reloaded, tokens),
                   _our_logits(config, params, tokens)) <= TOL


@pytest.mark.parametrize("case", ["gemma2_gqa_caps", "gemma3_gqa_rope"])
def test_left_padded_batch(case, tmp_path):
  model = _hf_model(case)
  model.save_pretrained(tmp_path)
  config, params = hf.load(tmp_path)
  tokens = _tokens(batch=3)
  pads = np.array([0, 5, 11])
  input_mask = np.arange(LENGTH)[None, :] >= pads[:, None]
  tokens = np.where(input_mask, tokens, 0)

  positions = positions_from_mask(jnp.asarray(input_mask))
  attention_mask = causal_attention_mask(jnp.asarray(input_mask))
  ours = _our_logits(config, params, tokens, positions, attention_mask)
  ref = _hf_logits(model, tokens,
                   attention_mask=torch.tensor(input_mask.astype(np.int64)),
                   position_ids=torch.tensor(np.asarray(positions)))
  assert _max_diff(ours[input_mask], ref[input_mask]) <= TOL
  # The unpadded row equals the plain forward pass.
  plain = _our_logits(config, params, tokens[:1])
  assert _max_diff(ours[:1], plain) <= TOL


def test_gemma3_multimodal_text_weights(tmp_path):
  text = dict(_BASE, **CASES["gemma3_gqa_rope"][1])
  text["vocab_size"] = 120
  vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, image_size=28, patch_size=14)
  config = transformers.Gemma3Config(
      text_config=text, vision_config=vision, mm_tokens_per_image=4,
      boi_token_index=116, eoi_token_index=117, image_token_index=118,
      attn_implementation="eager")
  torch.manual_seed(0)
  model = _randomize(transformers.Gemma3ForConditionalGeneration(config), 1)
  model.save_pretrained(tmp_path)
  ours_config, params = hf.load(tmp_path)
  assert ours_config.vocab_size == 120 and ours_config.use_qk_norm
  tokens = _tokens()
  assert _max_diff(_our_logits(ours_config, params, tokens),
                   _hf_logits(model, tokens)) <= TOL


def test_dtypes(tmp_path):
  model = _hf_model("gemma_mha")
  model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
  config, params = hf.load(tmp_path / "bf16")
  assert config.param_dtype == config.dtype == "bfloat16"
  assert params["layer_0"]["attn"]["q"].dtype == jnp.bfloat16
  config32, params32 = hf.load(tmp_path / "bf16", dtype="float32")
  assert config32.param_dtype == "float32"
  np.testing.assert_array_equal(
      np.asarray(params32["embedding"]),
      np.asarray(params["embedding"]).astype(np.float32))

  hf.save(tmp_path / "out16", config32, params32, dtype="float16")
  with open(tmp_path / "out16" / "config.json") as f:
    assert json.load(f)["dtype"] == "float16"
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path / "out16")
  assert reloaded.dtype == torch.float16
  config16, _ = hf.load(tmp_path / "out16")
  assert config16.param_dtype == "float16"


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A saved tiny Gemma 2 model: (directory, hf config dict, tensors)."""
  path = tmp_path_factory.mktemp("saved")
  _hf_model("gemma2_mqa_nocaps").save_pretrained(path)
  with open(path / "config.json") as f:
    config = json.load(f)
  return path, config, load_file(path / "model.safetensors")


def _write(path, config, tensors):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)
  if tensors is not None:
    save_file(tensors, os.path.join(path, "model.safetensors"),
              metadata={"format": "pt"})
  return path


def test_error_missing_paths(tmp_path, saved):
  _, config, tensors = saved
  with pytest.raises(FileNotFoundError, match="does not exist"):
    hf.load(tmp_path / "nope")
  (tmp_path / "file").write_text("x")
  with pytest.raises(NotADirectoryError, match="not a directory"):
    hf.load(tmp_path / "file")
  os.makedirs(tmp_path / "noconfig")
  with pytest.raises(FileNotFoundError, match="config.json not found"):
    hf.load(tmp_path / "noconfig")
  path = _write(tmp_path / "noweights", config, None)
  (tmp_path / "noweights" / "pytorch_model.bin").write_text("x")
  with pytest.raises(FileNotFoundError,
                     match="No weights.*pytorch_model.bin.*Only safetensors"):
    hf.load(path)
  path = _write(tmp_path / "noshard", config, None)
  with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
    json.dump({"weight_map": {"model.norm.weight":
                              "model-00001-of-00002.safetensors"}}, f)
  with pytest.raises(FileNotFoundError,
                     match="shard 'model-00001-of-00002.safetensors'"):
    hf.load(path)


@pytest.mark.parametrize("changes, message", [
    (dict(model_type="llama"), "unsupported model_type 'llama'"),
    (dict(architectures=["Gemma2ForSequenceClassification"]),
     r"unsupported architectures \['Gemma2ForSequenceClassification'\]"),
    (dict(hidden_activation="gelu"), "hidden_activation='gelu'"),
    (dict(hidden_activation="silu"), "hidden_activation='silu'"),
    (dict(rope_parameters={"rope_type": "yarn", "factor": 2.0}),
     "unsupported RoPE type 'yarn'"),
    (dict(rope_parameters={"rope_type": "linear"}), "positive 'factor'"),
    (dict(use_bidirectional_attention=True), "use_bidirectional_attention"),
    (dict(attention_bias=True), "attention_bias=true"),
    (dict(layer_types=["sliding_attention", "chunked_attention"]),
     "unsupported layer type 'chunked_attention'"),
    (dict(layer_types=["sliding_attention"]), "layer_types has 1 entries"),
    (dict(sliding_window=None), "positive int sliding_window"),
    (dict(quantization_config={"quant_method": "bitsandbytes"}),
     "quant_method='bitsandbytes'"),
])
def test_error_bad_config(tmp_path, saved, changes, message):
  _, config, tensors = saved
  path = _write(tmp_path / "bad", dict(config, **changes), tensors)
  with pytest.raises(ValueError, match=message):
    hf.load(path)


def test_error_bad_tensors(tmp_path, saved):
  _, config, tensors = saved
  name = "model.layers.1.self_attn.q_proj.weight"

  bad = dict(tensors, **{name: np.zeros((60, 32), np.float32)})
  with pytest.raises(ValueError, match=(
      r"tensor 'model\.layers\.1\.self_attn\.q_proj\.weight' has shape "
      r"\(60, 32\), but the config expects \(64, 32\)")):
    hf.load(_write(tmp_path / "shape", config, bad))

  bad = {k: v for k, v in tensors.items()
         if k != "model.layers.1.mlp.up_proj.weight"}
  with pytest.raises(ValueError, match=(
      r"missing 1 tensors: \['model\.layers\.1\.mlp\.up_proj\.weight'\]")):
    hf.load(_write(tmp_path / "missing", config, bad))

  bad = dict(tensors, **{"model.layers.0.self_attn.q_proj.bias":
                         np.zeros((64,), np.float32)})
  with pytest.raises(ValueError, match=(
      r"unexpected 1 tensors: \['model\.layers\.0\.self_attn\.q_proj\.bias'"
      r"\]")):
    hf.load(_write(tmp_path / "unexpected", config, bad))

  bad = dict(tensors, **{"model.norm.weight": np.zeros((32,), np.int32)})
  with pytest.raises(ValueError,
                     match="tensor 'model.norm.weight' has dtype I32"):
    hf.load(_write(tmp_path / "int", config, bad))

  bad = dict(tensors, **{"lm_head.weight": tensors[
      "model.embed_tokens.weight"] + 1})
  with pytest.raises(ValueError, match="untied output embeddings"):
    hf.load(_write(tmp_path / "untied", config, bad))
  # A tied copy of the embedding is accepted.
  ok = dict(tensors, **{"lm_head.weight": tensors["model.embed_tokens.weight"]})
  hf.load(_write(tmp_path / "tied", config, ok))


def test_error_float8_tensor(tmp_path, saved):
  from safetensors.torch import save_file as save_torch
  path, config, tensors = saved
  torch_tensors = {k: torch.from_numpy(np.array(v)) for k, v in
                   tensors.items()}
  torch_tensors["model.norm.weight"] = torch_tensors["model.norm.weight"].to(
      torch.float8_e4m3fn)
  out = _write(tmp_path / "f8", config, None)
  save_torch(torch_tensors, os.path.join(out, "model.safetensors"))
  with pytest.raises(ValueError, match="'model.norm.weight' has dtype F8_E4M3"):
    hf.load(out)


def test_error_bad_dtype_and_save(tmp_path, saved):
  path, _, _ = saved
  with pytest.raises(ValueError, match="Unsupported dtype 'int8'"):
    hf.load(path, dtype="int8")
  config, params = hf.load(path)
  with pytest.raises(ValueError, match="Unsupported dtype 'float64'"):
    hf.save(tmp_path / "x", config, params, dtype="float64")

  # Configs no transformers Gemma class expresses.
  with pytest.raises(ValueError, match="only one of the post-norms"):
    hf.save(tmp_path / "x", config.replace(use_post_ffw_norm=False), params)
  with pytest.raises(ValueError, match="need Gemma 3"):
    hf.save(tmp_path / "x", config.replace(rope_base_local=123.0), params)
  with pytest.raises(ValueError, match="ignores attn_logit_softcapping"):
    hf.save(tmp_path / "x", config.replace(use_qk_norm=True,
                                           attn_logits_soft_cap=5.0), params)
  with pytest.raises(ValueError, match="Gemma 1.*sliding-window layers"):
    hf.save(tmp_path / "x", config.replace(use_post_attn_norm=False,
                                           use_post_ffw_norm=False), params)

  # Params that disagree with the config: named, nothing written.
  bad = jax.tree_util.tree_map(lambda x: x, params)
  bad["layer_1"]["mlp"]["up"] = jnp.zeros((32, 7))
  with pytest.raises(ValueError, match=(
      r"tensor 'layer_1/mlp/up' has shape \(32, 7\), but the config expects "
      r"\(32, 48\)")):
    hf.save(tmp_path / "x", config, bad)
  del bad["layer_1"]["mlp"]["up"]
  with pytest.raises(ValueError,
                     match=r"missing 1 parameters: \['layer_1/mlp/up'\]"):
    hf.save(tmp_path / "x", config, bad)
  assert not os.path.exists(tmp_path / "x")

  # Atomic writes and overwrite protection.
  hf.save(tmp_path / "x", config, params)
  with pytest.raises(FileExistsError, match="overwrite=True"):
    hf.save(tmp_path / "x", config, params)
  hf.save(tmp_path / "x", config, params, overwrite=True, dtype="bfloat16")
  assert hf.load(tmp_path / "x")[0].param_dtype == "bfloat16"
  assert sorted(os.listdir(tmp_path)) == ["x"]


def test_config_round_trip_without_weights():
  config = TransformerConfig(
      vocab_size=50, num_layers=3, embed_dim=16, hidden_dim=24, num_heads=2,
      num_kv_heads=1, head_dim=8, attention_types=(LOCAL, LOCAL, GLOBAL),
      sliding_window_size=4, query_pre_attn_scalar=10.0,
      use_post_attn_norm=True, use_post_ffw_norm=True, use_qk_norm=True,
      rope_base_global=1e6, rope_scale_global=8.0, max_seq_len=256)
  hf_config = hf.config_to_hf(config, "bfloat16")
  assert hf_config["architectures"] == ["Gemma3ForCausalLM"]
  assert hf_config["query_pre_attn_scalar"] == 10
  back = hf.config_from_hf(hf_config)
  assert back.param_dtype == "float32"
  assert same_architecture(back, config)


def test_save_writes_extra_files_inside_the_atomic_directory(tmp_path):
  config = models.get_config("tiny", vocab_size=64)
  params = models.init_params(config, jax.random.key(0))
  hf.save(tmp_path / "m", config, params,
          extra_files={"tokenizer.model": b"spm", "notes.json": b"{}"})
  assert (tmp_path / "m" / "tokenizer.model").read_bytes() == b"spm"
  assert (tmp_path / "m" / "notes.json").read_bytes() == b"{}"
  with pytest.raises(ValueError, match=r"plain file names, got '\.\./x'"):
    hf.save(tmp_path / "bad", config, params, extra_files={"../x": b""})
  assert not (tmp_path / "bad").exists() and not (tmp_path / "x").exists()
