"""Tests of the KV-cache sampler against full forwards and `transformers`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swirl_jax import models
from swirl_jax.sampling import Sampler, apply_top_k, apply_top_p, sample_tokens
from swirl_jax.sampling.logits import NEG_INF, inverse_cdf_sample

PROMPTS = [[2, 5, 9, 11, 40, 41, 42], [2, 7],
           [2] + list(range(3, 22))]  # 3 lengths; the last exceeds the window


@pytest.fixture(scope="module")
def tiny():
  config = models.get_config("tiny", sliding_window_size=8)
  return config, models.init_params(config, jax.random.key(0))


def _greedy_reference(config, params, prompt, steps):
  """Greedy decoding by full no-cache forwards, one per token.

  Sequences are right-padded to a fixed length (causality makes the padding
  invisible to earlier positions), so the forward compiles once.
  """
  model = models.Transformer(config)
  forward = jax.jit(lambda p, t: model.apply({"params": p}, t)[0])
  length = len(prompt) + steps
  seq, logps = list(prompt), []
  for _ in range(steps):
    padded = jnp.array([seq + [0] * (length - len(seq))])
    logits = forward(params, padded)[len(seq) - 1]
    tok = int(jnp.argmax(logits))
    logps.append(float(jax.nn.log_softmax(logits)[tok]))
    seq.append(tok)
  return seq[len(prompt):], logps


def test_greedy_cached_equals_full_forward_argmax(tiny):
  config, params = tiny
  out = Sampler(config, params).generate(PROMPTS, max_new_tokens=24)
  for prompt, toks, logps in zip(PROMPTS, out.tokens, out.logprobs):
    ref_toks, ref_logps = _greedy_reference(config, params, prompt, 24)
    assert toks == ref_toks
    np.testing.assert_allclose(logps, ref_logps, atol=1e-4)
  assert out.done == [False] * 3
  assert list(out.lengths) == [24] * 3


def test_per_row_budgets_and_stop_tokens(tiny):
  config, params = tiny
  sampler = Sampler(config, params)
  free = sampler.generate(PROMPTS, max_new_tokens=12)
  stop = free.tokens[0][3]
  out = sampler.generate(PROMPTS, max_new_tokens=[12, 5, 0],
                         stop_tokens=[[stop], [], []])
  first = free.tokens[0].index(stop)
  assert out.tokens[0] == free.tokens[0][:first + 1]  # stop token included
  assert out.done[0] and not out.done[1] and not out.done[2]
  assert out.tokens[1] == free.tokens[1][:5]
  assert out.tokens[2] == []
  assert out.token_array.shape[0] == 3
  assert np.all(out.token_array[1, 5:] == 0)
  assert np.all(out.logprob_array[1, 5:] == 0)


def test_same_stop_tokens_for_all_rows(tiny):
  config, params = tiny
  sampler = Sampler(config, params)
  free = sampler.generate(PROMPTS, max_new_tokens=8)
  stops = sorted({row[1] for row in free.tokens})
  out = Sampler(config, params, stop_tokens=stops).generate(PROMPTS, 8)
  for row, ref in zip(out.tokens, free.tokens):
    assert row[-1] in stops and row == ref[:len(row)]


def test_sampling_is_seeded_and_respects_top_k(tiny):
  config, params = tiny
  sampler = Sampler(config, params)
  a = sampler.generate(PROMPTS, 16, temperature=1.0, seed=3)
  b = sampler.generate(PROMPTS, 16, temperature=1.0, seed=3)
  c = sampler.generate(PROMPTS, 16, temperature=1.0, seed=4)
  assert a.tokens == b.tokens and a.tokens != c.tokens
  greedy = sampler.generate(PROMPTS, 16)
  k1 = sampler.generate(PROMPTS, 16, temperature=1.0, top_k=1, seed=5)
  assert k1.tokens == greedy.tokens


def test_group_size_prefills_once_per_group_with_the_same_results(tiny):
  config, params = tiny
  sampler = Sampler(config, params)
  grouped = [p for p in PROMPTS for _ in range(3)]
  plain = sampler.generate(grouped, 12, temperature=1.0, seed=7)
  shared = sampler.generate(grouped, 12, temperature=1.0, seed=7,
                            group_size=3)
  assert shared.tokens == plain.tokens
  np.testing.assert_allclose(shared.logprob_array, plain.logprob_array,
                             atol=1e-5)
  with pytest.raises(ValueError, match=r"prompts 3\.\.5 are not all"):
    sampler.generate(grouped[:3] + PROMPTS, 4, group_size=3)
  with pytest.raises(ValueError, match="group_size=2"):
    sampler.generate(grouped, 4, group_size=2)


def test_shared_prefix_groups_prefill_the_common_prefix_once(tiny):
  """Groups that share only a prefix (R3's retries): the same tokens and
  log-probs as every row prefilled whole, greedy and sampled, with prompts
  longer than the tiny model's 64-token sliding window (the window is
  measured in positions across the layout's empty slots)."""
  config, params = tiny
  assert config.sliding_window_size < 80
  rng = np.random.default_rng(0)
  prompts = []
  for group in range(3):
    prefix = [2] + rng.integers(3, config.vocab_size, 60 + 7 * group).tolist()
    for j in range(4):
      prompts.append(prefix + rng.integers(
          3, config.vocab_size, 2 + 5 * j + group).tolist())
  sampler = Sampler(config, params)
  for temperature in (0.0, 1.0):
    plain = sampler.generate(prompts, 20, temperature=temperature, seed=3)
    shared = sampler.generate(prompts, 20, temperature=temperature, seed=3,
                              group_size=4, shared_prefix=True)
    assert shared.tokens == plain.tokens
    np.testing.assert_allclose(shared.logprob_array, plain.logprob_array,
                               atol=2e-5)
  # The layout: slots [0, P1) hold each group's prefix, then each row's own.
  p1, tokens, mask = sampler._shared_prefix_layout(prompts, 4, len(prompts))
  assert p1 == 80 and tokens.shape[1] == p1 + 32
  for i, prompt in enumerate(prompts):
    assert tokens[i][mask[i]].tolist() == prompt
  # Identical groups take the plain grouped path; groups sharing nothing
  # (no prefix) are prefilled per row; both as the plain call.
  same = [p for p in PROMPTS for _ in range(2)]
  assert (sampler.generate(same, 6, group_size=2, shared_prefix=True).tokens
          == sampler.generate(same, 6).tokens)
  apart = [[5, 6, 7], [9, 8], [4], [11, 12]]
  assert (sampler.generate(apart, 6, group_size=2, shared_prefix=True).tokens
          == sampler.generate(apart, 6).tokens)
  with pytest.raises(ValueError, match="not all the same prompt"):
    sampler.generate(prompts, 4, group_size=4)


def test_batch_bucket_padding_does_not_change_rows(tiny):
  config, params = tiny
  a = Sampler(config, params).generate(PROMPTS, 10)
  b = Sampler(config, params, batch_bucket=8).generate(PROMPTS, 10)
  assert a.tokens == b.tokens


def test_update_params_changes_output_without_recompiling(tiny):
  config, params = tiny
  sampler = Sampler(config, params)
  a = sampler.generate(PROMPTS, 6)
  compiled = sampler._compiled._cache_size()
  sampler.update_params(models.init_params(config, jax.random.key(9)))
  b = sampler.generate(PROMPTS, 6)
  assert a.tokens != b.tokens
  assert sampler._compiled._cache_size() == compiled


def test_samplers_of_one_architecture_share_compilations(tiny):
  config, params = tiny
  first = Sampler(config, params)
  first.generate(PROMPTS, 5)
  compiled = first._compiled._cache_size()
  second = Sampler(config, models.init_params(config, jax.random.key(3)))
  assert second._compiled is first._compiled
  second.generate(PROMPTS, 5)
  assert second._compiled._cache_size() == compiled


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompts=[[]], max_new_tokens=4), "Prompt 0 is empty"),
    (dict(prompts=[[2, 5000]], max_new_tokens=4), "token id 5000"),
    (dict(prompts=[[2]], max_new_tokens=-1), "max_new_tokens"),
    (dict(prompts=[[2]], max_new_tokens=4, temperature=-1.0), "temperature"),
    (dict(prompts=[[2]], max_new_tokens=4, top_p=0.0), "top_p"),
    (dict(prompts=[[2], [3]], max_new_tokens=4, stop_tokens=[[1]]), "1 rows"),
])
def test_bad_arguments_name_the_value(tiny, kwargs, message):
  config, params = tiny
  with pytest.raises(ValueError, match=message):
    Sampler(config, params).generate(**kwargs)


def test_top_k_and_top_p_filters():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  kept = np.isfinite(np.asarray(apply_top_k(logits, 2))) & (
      np.asarray(apply_top_k(logits, 2)) > -1e29)
  assert kept.tolist() == [[True, True, False, False]]
  top_p = np.asarray(apply_top_p(logits, 0.7)) > -1e29
  assert top_p.tolist() == [[True, True, False, False]]
  top_p = np.asarray(apply_top_p(logits, 0.81)) > -1e29
  assert top_p.tolist() == [[True, True, True, False]]
  draws = jax.vmap(lambda k: sample_tokens(
      logits, k, greedy=False, temperature=1.0, top_p=0.7))(
          jax.random.split(jax.random.key(0), 2000))
  assert set(np.unique(draws).tolist()) == {0, 1}
  frac0 = float(jnp.mean(draws == 0))
  assert abs(frac0 - 0.5 / 0.8) < 0.05


@pytest.mark.parametrize("vocab", [7, 64, 1000])
def test_inverse_cdf_sample_draws_the_softmax_distribution(vocab):
  """Frequencies match softmax(logits) (vocab below, at and off a multiple
  of the block); masked tokens are never drawn; the draw is seeded."""
  rng = np.random.default_rng(vocab)
  logits = rng.normal(size=vocab).astype(np.float32) * 2.0
  logits[rng.random(vocab) < 0.3] = NEG_INF  # e.g. top-k / top-p masks
  logits[int(np.argmax(logits))] += 1.0  # at least one token kept
  probs = np.exp(logits - logits.max())
  probs /= probs.sum()
  n = 40000
  draws = np.asarray(jax.jit(inverse_cdf_sample)(
      jnp.broadcast_to(jnp.asarray(logits), (n, vocab)),
      jax.random.key(vocab)))
  assert draws.dtype == np.int32 and draws.min() >= 0
  counts = np.bincount(draws, minlength=vocab)
  assert counts.shape == (vocab,)
  assert np.all(counts[probs == 0] == 0)
  # Each frequency within 5 binomial standard deviations (+1 count).
  sd = np.sqrt(n * probs * (1 - probs))
  assert np.all(np.abs(counts - n * probs) <= 5 * sd + 1)
  again = jax.jit(inverse_cdf_sample)(jnp.asarray(logits)[None],
                                      jax.random.key(1))
  assert int(again[0]) == int(jax.jit(inverse_cdf_sample)(
      jnp.asarray(logits)[None], jax.random.key(1))[0])


def test_inverse_cdf_sample_with_one_token_left():
  logits = jnp.full((3, 100), NEG_INF).at[:, 99].set(0.0).at[1, 0].set(5.0)
  draws = inverse_cdf_sample(logits, jax.random.key(0))
  assert int(draws[0]) == 99 and int(draws[2]) == 99
  assert int(draws[1]) in (0, 99)


def _hf_greedy(config_cls, config_kwargs, tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from swirl_jax.checkpoints import hf
  torch.manual_seed(0)
  hf_config = config_cls(**config_kwargs)
  model = transformers.AutoModelForCausalLM.from_config(
      hf_config, attn_implementation="eager").eval()
  model.save_pretrained(tmp_path)
  config, params = hf.load(str(tmp_path))
  width = max(len(p) for p in PROMPTS)
  ids = torch.zeros((len(PROMPTS), width), dtype=torch.long)
  mask = torch.zeros_like(ids)
  for i, p in enumerate(PROMPTS):
    ids[i, width - len(p):] = torch.tensor(p)
    mask[i, width - len(p):] = 1
  model.generation_config.eos_token_id = None
  with torch.no_grad():
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=32,
                         min_new_tokens=32, do_sample=False, pad_token_id=0)
  expected = out[:, width:].tolist()
  ours = Sampler(config, params).generate(PROMPTS, max_new_tokens=32)
  return expected, ours


def test_matches_transformers_greedy_generate_gemma2(tmp_path):
  transformers = pytest.importorskip("transformers")
  expected, ours = _hf_greedy(transformers.Gemma2Config, dict(
      vocab_size=512, hidden_size=64, intermediate_size=128,
      num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
      head_dim=16, sliding_window=8, query_pre_attn_scalar=16,
      attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
      max_position_embeddings=256), tmp_path)
  assert ours.tokens == expected


def test_matches_transformers_greedy_generate_gemma3(tmp_path):
  transformers = pytest.importorskip("transformers")
  expected, ours = _hf_greedy(transformers.Gemma3TextConfig, dict(
      vocab_size=512, hidden_size=64, intermediate_size=128,
      num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1,
      head_dim=32, sliding_window=8, query_pre_attn_scalar=32,
      layer_types=["sliding_attention", "sliding_attention",
                   "sliding_attention", "full_attention"],
      max_position_embeddings=256), tmp_path)
  assert ours.tokens == expected
