"""swirl_jax.checkpoints.kaggle: the official Flax/Orbax Gemma layout.

No real checkpoint can be downloaded here, so each test writes one in the
published layout (with orbax) from random params, imports it and compares.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swirl_jax.checkpoints import kaggle
from swirl_jax.models import (GLOBAL, TransformerConfig,
                              alternating_pattern, get_config, param_shapes)
from swirl_jax.models.config import same_architecture

# Gemma 1 shapes with MQA and with MHA (which the library stores as one
# qkv_einsum), Gemma 2 with GQA, Gemma 3 with q/k norm. D != F throughout.
_GEMMA_MQA = TransformerConfig(
    vocab_size=70, num_layers=2, embed_dim=24, hidden_dim=40, num_heads=4,
    num_kv_heads=1, head_dim=8, attention_types=(GLOBAL, GLOBAL))
_GEMMA_MHA = _GEMMA_MQA.replace(num_kv_heads=4, head_dim=10)
_GEMMA2_GQA = TransformerConfig(
    vocab_size=70, num_layers=3, embed_dim=24, hidden_dim=40, num_heads=4,
    num_kv_heads=2, head_dim=8, attention_types=alternating_pattern(3, 1),
    sliding_window_size=4096, query_pre_attn_scalar=8,
    attn_logits_soft_cap=50.0, final_logit_soft_cap=30.0,
    use_post_attn_norm=True, use_post_ffw_norm=True, max_seq_len=8192)
_GEMMA3 = TransformerConfig(
    vocab_size=70, num_layers=2, embed_dim=24, hidden_dim=40, num_heads=2,
    num_kv_heads=1, head_dim=8, attention_types=alternating_pattern(2, 5),
    sliding_window_size=1024, query_pre_attn_scalar=8, use_post_attn_norm=True,
    use_post_ffw_norm=True, use_qk_norm=True, rope_base_global=1_000_000.0,
    rope_base_local=10_000.0, max_seq_len=131_072)
CONFIGS = {"gemma_mqa": _GEMMA_MQA, "gemma_mha": _GEMMA_MHA,
           "gemma2_gqa": _GEMMA2_GQA, "gemma3": _GEMMA3}
FAMILY = {"gemma_mqa": "gemma", "gemma_mha": "gemma", "gemma2_gqa": "gemma2",
          "gemma3": "gemma3"}


def _random_params(config, seed=0):
  """Random values (norm scales too) in the shapes of Transformer(config)."""
  rng = np.random.RandomState(seed)
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(rng.standard_normal(s.shape).astype(np.float32)
                            * 0.5, s.dtype),
      param_shapes(config))


def _assert_equal(a, b):
  fa = jax.tree_util.tree_leaves_with_path(a)
  fb = dict(jax.tree_util.tree_leaves_with_path(b))
  assert {p for p, _ in fa} == set(fb)
  for path, leaf in fa:
    assert leaf.dtype == fb[path].dtype, jax.tree_util.keystr(path)
    np.testing.assert_array_equal(np.asarray(leaf), np.asarray(fb[path]),
                                  err_msg=jax.tree_util.keystr(path))


def _layout_shapes(tree):
  return {k: {n: a.shape for n, a in v.items()} for k, v in tree.items()}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_round_trip_exact(name, tmp_path):
  config = CONFIGS[name]
  params = _random_params(config)
  kaggle.save(tmp_path / "ckpt", config, params)

  # Verified against the config.
  loaded = kaggle.load(tmp_path / "ckpt", config)
  _assert_equal(loaded, params)

  # Inferred from shapes given only the family.
  inferred, loaded = kaggle.load_with_config(tmp_path / "ckpt", FAMILY[name])
  assert same_architecture(inferred, config), (inferred, config)
  _assert_equal(loaded, params)


def test_official_layout_names_and_shapes():
  d, f, h = 24, 40, 8
  tree = kaggle.to_kaggle_layout(_random_params(_GEMMA_MQA), _GEMMA_MQA)
  shapes = _layout_shapes(tree)
  assert shapes["transformer/embedder"] == {"input_embedding": (70, d)}
  assert shapes["transformer/final_norm"] == {"scale": (d,)}
  assert shapes["transformer/layer_1/attn/q_einsum"] == {"w": (4, d, h)}
  assert shapes["transformer/layer_1/attn/kv_einsum"] == {"w": (2, 1, d, h)}
  assert shapes["transformer/layer_1/attn/attn_vec_einsum"] == {"w": (4, h, d)}
  # Gemma 1 stores the gating einsum as [2, D, F] ...
  assert shapes["transformer/layer_1/mlp/gating_einsum"] == {"w": (2, d, f)}
  assert shapes["transformer/layer_1/mlp/linear"] == {"w": (f, d)}
  assert set(shapes) == {
      "transformer/embedder", "transformer/final_norm",
      *(f"transformer/layer_{i}/{m}" for i in range(2) for m in (
          "attn/q_einsum", "attn/kv_einsum", "attn/attn_vec_einsum",
          "mlp/gating_einsum", "mlp/linear", "pre_attention_norm",
          "pre_ffw_norm"))}

  mha = _layout_shapes(kaggle.to_kaggle_layout(_random_params(_GEMMA_MHA),
                                               _GEMMA_MHA))
  assert mha["transformer/layer_0/attn/qkv_einsum"] == {"w": (3, 4, d, 10)}
  assert "transformer/layer_0/attn/q_einsum" not in mha

  g3 = _layout_shapes(kaggle.to_kaggle_layout(_random_params(_GEMMA3),
                                              _GEMMA3))
  # ... Gemma 2/3 as [2, F, D] (transpose_gating_einsum=True).
  assert g3["transformer/layer_0/mlp/gating_einsum"] == {"w": (2, f, d)}
  assert g3["transformer/layer_0/attn/_query_norm"] == {"scale": (h,)}
  assert g3["transformer/layer_0/attn/_key_norm"] == {"scale": (h,)}
  assert g3["transformer/layer_0/post_ffw_norm"] == {"scale": (d,)}


def test_layout_semantics():
  """Index 0 of gating_einsum is the GELU gate; q_einsum is [N, D, H]."""
  params = _random_params(_GEMMA2_GQA)
  tree = kaggle.to_kaggle_layout(params, _GEMMA2_GQA,
                                 transpose_gating_einsum=False)
  layer = params["layer_0"]
  np.testing.assert_array_equal(
      tree["transformer/layer_0/mlp/gating_einsum"]["w"][0],
      np.asarray(layer["mlp"]["gate"]))
  np.testing.assert_array_equal(
      tree["transformer/layer_0/attn/q_einsum"]["w"][2],
      np.asarray(layer["attn"]["q"])[:, 2, :])
  np.testing.assert_array_equal(
      tree["transformer/layer_0/attn/kv_einsum"]["w"][1, 1],
      np.asarray(layer["attn"]["v"])[:, 1, :])


@pytest.mark.parametrize("transpose", [False, True])
def test_gating_layout_detected(transpose):
  params = _random_params(_GEMMA2_GQA)
  tree = kaggle.to_kaggle_layout(params, _GEMMA2_GQA,
                                 transpose_gating_einsum=transpose)
  _, loaded = kaggle.from_kaggle_layout(tree, _GEMMA2_GQA)
  _assert_equal(loaded, params)


def test_nested_layout_and_multimodal_keys_ignored():
  """The `gm` nested layout ({'layer_0': {'mlp': {'gating_einsum': w}}})."""
  params = _random_params(_GEMMA3)
  flat = kaggle.to_kaggle_layout(params, _GEMMA3)
  nested = {}
  for key, leaves in flat.items():
    *path, last = key.split("/")[1:]
    node = nested
    for p in path:
      node = node.setdefault(p, {})
    if last in ("gating_einsum", "linear"):
      node[last] = leaves["w"]
    else:
      node[last] = dict(leaves)
  nested["embedder"]["mm_input_projection"] = {"w": np.zeros((3, 24))}
  nested["vision_encoder"] = {"x": np.zeros(2)}
  config, loaded = kaggle.from_kaggle_layout(nested, "gemma3")
  assert same_architecture(config, _GEMMA3)
  _assert_equal(loaded, params)


def test_preset_names_and_padded_vocab():
  # A (tiny) preset: shapes must match; the vocabulary comes from the file.
  tiny = get_config("tiny")
  padded = tiny.replace(vocab_size=tiny.vocab_size + 128)
  params = _random_params(padded)
  tree = kaggle.to_kaggle_layout(params, padded)
  config, loaded = kaggle.from_kaggle_layout(tree, "tiny")
  assert config == padded
  _assert_equal(loaded, params)
  # A family name picks the preset with the same shapes.
  # A family name with shapes of no gemma2-* preset: generic Gemma 2 switches.
  config, _ = kaggle.from_kaggle_layout(tree, "gemma2")
  assert config.sliding_window_size == 4096 and config.vocab_size == 1152
  assert config.query_pre_attn_scalar == config.head_dim
  # Against the config itself, the padded vocabulary is an error with a hint.
  with pytest.raises(ValueError, match=(
      r"'transformer/embedder/input_embedding' has shape \(1152, 128\), but "
      r"the config expects \(1024, 128\) \(published checkpoints pad")):
    kaggle.from_kaggle_layout(tree, tiny)


def test_dtype(tmp_path):
  params = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16),
                                  _random_params(_GEMMA_MQA))
  bf16 = _GEMMA_MQA.replace(param_dtype="bfloat16")
  kaggle.save(tmp_path / "ckpt", bf16, params)
  config, loaded = kaggle.load_with_config(tmp_path / "ckpt", "gemma")
  assert config.param_dtype == "bfloat16"
  _assert_equal(loaded, params)
  loaded = kaggle.load(tmp_path / "ckpt", _GEMMA_MQA)  # float32 config
  assert loaded["embedding"].dtype == jnp.float32
  with pytest.raises(ValueError, match="Unsupported dtype 'int32'"):
    kaggle.load(tmp_path / "ckpt", "gemma", dtype="int32")


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


def test_errors_wrong_shapes():
  params = _random_params(_GEMMA2_GQA)
  tree = kaggle.to_kaggle_layout(params, _GEMMA2_GQA)
  with pytest.raises(ValueError, match=(
      r"'transformer/layer_0/attn/q_einsum/w' has shape \(4, 24, 8\), but the "
      r"config expects \(8, 24, 8\)")):
    kaggle.from_kaggle_layout(tree, _GEMMA2_GQA.replace(num_heads=8))
  with pytest.raises(ValueError, match=(
      r"'transformer/layer_0/mlp/gating_einsum/w' has shape \(2, 40, 24\), "
      r"but the config expects \(2, 24, 48\) or \(2, 48, 24\)")):
    kaggle.from_kaggle_layout(tree, _GEMMA2_GQA.replace(hidden_dim=48))
  with pytest.raises(ValueError, match=(
      r"'transformer/layer_0/attn/kv_einsum/w' has shape \(2, 2, 24, 8\), "
      r"but the config expects \(2, 1, 24, 8\)")):
    kaggle.from_kaggle_layout(tree, _GEMMA2_GQA.replace(num_kv_heads=1))
  with pytest.raises(ValueError,
                     match=r"missing 9 tensors: \['transformer/layer_3/"):
    kaggle.from_kaggle_layout(tree, _GEMMA2_GQA.replace(
        num_layers=4, attention_types=alternating_pattern(4, 1)))
  with pytest.raises(ValueError, match=(
      r"unexpected 3 tensors: \['transformer/layer_0/post_attention_norm/"
      r"scale'")):
    kaggle.from_kaggle_layout(tree, _GEMMA2_GQA.replace(
        use_post_attn_norm=False))

  mha = kaggle.to_kaggle_layout(_random_params(_GEMMA_MHA), _GEMMA_MHA)
  with pytest.raises(ValueError, match="uses qkv_einsum.*num_kv_heads=2"):
    kaggle.from_kaggle_layout(mha, _GEMMA_MHA.replace(num_kv_heads=2))


def test_errors_family_preset_and_tensors():
  tree = kaggle.to_kaggle_layout(_random_params(_GEMMA3), _GEMMA3)
  with pytest.raises(ValueError, match="use_qk_norm=True, but family 'gemma2'"):
    kaggle.from_kaggle_layout(tree, "gemma2")
  with pytest.raises(ValueError, match=(
      r"does not match preset 'gemma3-1b' \(num_layers: preset 26, "
      r"checkpoint 2")):
    kaggle.from_kaggle_layout(tree, "gemma3-1b")
  with pytest.raises(ValueError, match="Unknown model preset 'gemma4'"):
    kaggle.from_kaggle_layout(tree, "gemma4")
  with pytest.raises(TypeError, match="preset_or_config"):
    kaggle.from_kaggle_layout(tree, 3)

  bad = dict(tree)
  del bad["transformer/layer_1/pre_ffw_norm"]
  with pytest.raises(ValueError, match=(
      r"missing 1 tensors: \['transformer/layer_1/pre_ffw_norm/scale'\]")):
    kaggle.from_kaggle_layout(bad, _GEMMA3)
  bad = dict(tree, **{"transformer/layer_0/attn/extra": {"w": np.zeros(3)}})
  with pytest.raises(ValueError, match=(
      r"unexpected 1 tensors: \['transformer/layer_0/attn/extra/w'\]")):
    kaggle.from_kaggle_layout(bad, _GEMMA3)
  bad = dict(tree, **{"transformer/final_norm": {"scale": np.zeros(24,
                                                                   np.int8)}})
  with pytest.raises(ValueError, match=(
      "'transformer/final_norm/scale' has dtype int8, which cannot be")):
    kaggle.from_kaggle_layout(bad, _GEMMA3)
  bad = {k: v for k, v in tree.items() if "layer_1" not in k}
  bad["transformer/layer_2/mlp/linear"] = tree["transformer/layer_1/mlp/linear"]
  with pytest.raises(ValueError, match="missing layer_1 of layer_0..layer_2"):
    kaggle.from_kaggle_layout(bad, "gemma3")


def test_error_ambiguous_gating():
  config = _GEMMA_MQA.replace(hidden_dim=24)
  params = _random_params(config)
  tree = kaggle.to_kaggle_layout(params, config, transpose_gating_einsum=True)
  with pytest.raises(ValueError, match="ambiguous; pass transpose_gating"):
    kaggle.from_kaggle_layout(tree, config)
  _, loaded = kaggle.from_kaggle_layout(tree, config,
                                        transpose_gating_einsum=True)
  _assert_equal(loaded, params)


def test_errors_paths(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    kaggle.load(tmp_path / "nope", "gemma")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="not a readable orbax"):
    kaggle.load(tmp_path / "empty", "gemma")
  params = _random_params(_GEMMA_MQA)
  kaggle.save(tmp_path / "ckpt", _GEMMA_MQA, params)
  with pytest.raises(FileExistsError, match="overwrite=True"):
    kaggle.save(tmp_path / "ckpt", _GEMMA_MQA, params)
  with pytest.raises(ValueError, match=r"ckpt: .*q_einsum/w' has shape"):
    kaggle.load(tmp_path / "ckpt", _GEMMA_MQA.replace(num_heads=2))
