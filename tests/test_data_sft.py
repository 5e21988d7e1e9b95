"""Tests for swirl_jax.data.sft: SFT tokenisation and loss masks."""

import random
import subprocess
import sys

import numpy as np
import pytest

from swirl_jax import tokenizer as tok
from swirl_jax.data import sft


def _corpus(n: int = 300, seed: int = 0):
  """A few hundred short question / answer / tool-call sentences."""
  rng = random.Random(seed)
  texts = []
  for i in range(n):
    a, b = rng.randint(0, 999), rng.randint(1, 99)
    texts.append(tok.format_chat([
        ("user", f"Question {i}: what is {a} plus {b}?"),
        ("model", f"<math_exp> {a} + {b} </math_exp>"),
        ("user", f"{a} + {b} -> {a + b}"),
        ("model", f"The answer is <answer> {a + b} </answer>."),
    ], add_generation_prompt=False))
  return texts


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  path = tmp_path_factory.mktemp("spm") / "sft.model"
  return tok.Tokenizer(tok.train_sentencepiece(_corpus(), str(path),
                                               vocab_size=1024))


def test_import_does_not_load_tensorflow_or_seqio():
  code = ("import sys, swirl_jax.data, swirl_jax.data.sft, "
          "swirl_jax.data.pipeline\n"
          "bad = sorted(m for m in ('tensorflow', 'seqio') "
          "if m in sys.modules)\n"
          "assert not bad, bad\n")
  subprocess.run([sys.executable, "-c", code], check=True)


def test_single_turn_masks_exactly_target_and_end_of_turn(tokenizer):
  prompt, target = "Question 7: what is 3 plus 4?", "The answer is 7."
  out = sft.tokenize_sft_example(tokenizer, prompt, target)
  prompt_ids = tokenizer.encode_chat([("user", prompt)],
                                     add_generation_prompt=True)
  target_ids = tokenizer.encode(target) + [tokenizer.end_of_turn_id]
  assert out["tokens"].dtype == np.int32
  assert out["loss_mask"].dtype == np.float32
  np.testing.assert_array_equal(out["tokens"], prompt_ids + target_ids)
  np.testing.assert_array_equal(
      out["loss_mask"], [0.0] * len(prompt_ids) + [1.0] * len(target_ids))
  assert out["tokens"][0] == tokenizer.bos_id
  assert out["tokens"][-1] == tokenizer.end_of_turn_id
  supervised = out["tokens"][out["loss_mask"] == 1]
  assert tokenizer.decode(supervised) == target + tok.END_OF_TURN


def test_prompt_given_as_turns(tokenizer):
  turns = [("user", "Question 1: what is 1 plus 1?"), ("model", "2"),
           ("user", "Are you sure?")]
  out = sft.tokenize_sft_example(tokenizer, turns, "Yes, 2.")
  prompt_ids = tokenizer.encode_chat(turns, add_generation_prompt=True)
  assert out["tokens"][:len(prompt_ids)].tolist() == prompt_ids
  assert not out["loss_mask"][:len(prompt_ids)].any()
  assert out["loss_mask"][len(prompt_ids):].all()


def test_bytes_and_dict_turns_are_accepted(tokenizer):
  a = sft.tokenize_sft_example(tokenizer, b"Question 2: hi", b"hello")
  b = sft.tokenize_sft_example(tokenizer, "Question 2: hi", "hello")
  np.testing.assert_array_equal(a["tokens"], b["tokens"])
  c = sft.tokenize_multiturn(tokenizer, [
      {"role": b"user", "text": b"Question 2: hi"},
      {"role": "model", "text": "hello"}])
  np.testing.assert_array_equal(c["tokens"], b["tokens"])
  np.testing.assert_array_equal(c["loss_mask"], b["loss_mask"])


def test_multiturn_supervises_every_model_turn(tokenizer):
  turns = [
      ("user", "Question 3: what is 12 plus 30?"),
      ("model", "<math_exp> 12 + 30 </math_exp>"),
      ("user", "12 + 30 -> 42"),
      ("model", "The answer is <answer> 42 </answer>."),
  ]
  out = sft.tokenize_multiturn(tokenizer, turns)
  tokens, mask = out["tokens"], out["loss_mask"]
  # The whole sequence is the chat text of the conversation.
  full = tok.format_chat(turns, add_generation_prompt=False)
  assert tokenizer.decode(tokens) == full.rstrip("\n")
  # The supervised spans are exactly the model turns plus <end_of_turn>.
  edges = np.flatnonzero(np.diff(np.concatenate([[0], mask, [0]])))
  spans = [tokenizer.decode(tokens[s:e]) for s, e in zip(edges[::2],
                                                          edges[1::2])]
  assert spans == [turns[1][1] + tok.END_OF_TURN,
                   turns[3][1] + tok.END_OF_TURN]
  # Each model turn is encoded on its own, as the sampler produces it.
  first_model = tokenizer.encode(turns[1][1]) + [tokenizer.end_of_turn_id]
  start = edges[0]
  assert tokens[start:start + len(first_model)].tolist() == first_model


def test_multiturn_with_one_exchange_equals_single_turn(tokenizer):
  a = sft.tokenize_multiturn(tokenizer, [("user", "Question 4: x?"),
                                         ("model", "y.")])
  b = sft.tokenize_sft_example(tokenizer, "Question 4: x?", "y.")
  np.testing.assert_array_equal(a["tokens"], b["tokens"])
  np.testing.assert_array_equal(a["loss_mask"], b["loss_mask"])


@pytest.mark.parametrize("turns, match", [
    ([], "empty conversation"),
    ([("model", "hi")], r"turns\[0\] has role 'model'"),
    ([("user", "a"), ("user", "b")], r"turns\[1\] has role 'user'"),
    ([("user", "a"), ("model", "b"), ("user", "c")], "last turn"),
    ([("system", "a"), ("model", "b")], "role 'system'"),
    ([("user", "a", "extra")], "pair"),
])
def test_multiturn_errors(tokenizer, turns, match):
  with pytest.raises(ValueError, match=match):
    sft.tokenize_multiturn(tokenizer, turns)


def test_bad_target_type_is_named(tokenizer):
  with pytest.raises(TypeError, match="target must be a str"):
    sft.tokenize_sft_example(tokenizer, "hi", 42)


def test_tokenize_example_dispatches_on_keys(tokenizer):
  single = sft.tokenize_example(tokenizer, {"prompt": "p", "target": "t",
                                            "id": 3})
  np.testing.assert_array_equal(
      single["tokens"], sft.tokenize_sft_example(tokenizer, "p", "t")["tokens"])
  turns = [("user", "p"), ("model", "t")]
  multi = sft.tokenize_example(tokenizer, {"turns": turns})
  np.testing.assert_array_equal(multi["tokens"], single["tokens"])
  with pytest.raises(ValueError, match=r"got keys \['question'\]"):
    sft.tokenize_example(tokenizer, {"question": "p"})


def test_to_next_token_features_shifts_tokens_and_mask():
  tokens = np.array([2, 10, 11, 12, 107], np.int32)
  mask = np.array([0, 0, 1, 1, 1], np.float32)
  out = sft.to_next_token_features(tokens, mask)
  np.testing.assert_array_equal(out["inputs"], tokens)
  np.testing.assert_array_equal(out["targets"], [10, 11, 12, 107, 0])
  np.testing.assert_array_equal(out["loss_mask"], [0, 1, 1, 1, 0])
  assert out["targets"].dtype == np.int32
  assert out["loss_mask"].dtype == np.float32
  with pytest.raises(ValueError, match=r"shapes \(5,\) and \(4,\)"):
    sft.to_next_token_features(tokens, mask[:4])
