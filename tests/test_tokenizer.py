"""Tests for swirl_jax.tokenizer: trainer, Tokenizer and chat template."""

import os
import pickle
import random
import subprocess
import sys

import numpy as np
import pytest

from swirl_jax import tokenizer as tok

_NAMES = ("Alice", "Bob", "Carol", "Dave", "Erin")
_ITEMS = ("apples", "books", "coins", "marbles", "pencils")


def _corpus(n: int = 300, seed: int = 0):
  """A few hundred short English / arithmetic / tool-call sentences."""
  rng = random.Random(seed)
  texts = []
  for _ in range(n):
    a, b = rng.randint(0, 999), rng.randint(1, 99)
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    choice = rng.randrange(3)
    if choice == 0:
      texts.append(f"{name} has {a} {item} and buys {b} more. How many "
                   f"{item} does {name} have now?")
    elif choice == 1:
      texts.append(tok.format_chat([
          ("user", f"What is {a} times {b}?"),
          ("model", f"<math_exp> {a} * {b} </math_exp>"),
          ("user", f"{a} * {b} -> {a * b}"),
          ("model", f"<answer> {a * b} </answer>"),
      ], add_generation_prompt=False))
    else:
      texts.append(f"<search_query> capital of country number {a} "
                   f"</search_query>\n<reflection> The answer was wrong, "
                   f"so I check again. </reflection>")
  return texts


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
  path = tmp_path_factory.mktemp("spm") / "tok.model"
  return tok.train_sentencepiece(_corpus(), str(path), vocab_size=1024)


@pytest.fixture(scope="module")
def tokenizer(model_path):
  return tok.Tokenizer(model_path)


# -- import hygiene -----------------------------------------------------------


def test_import_does_not_load_tensorflow_or_seqio():
  code = ("import sys, swirl_jax.tokenizer\n"
          "bad = sorted(m for m in ('tensorflow', 'seqio') "
          "if m in sys.modules)\n"
          "print(','.join(bad))\n")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", code], cwd=root, check=True,
                       capture_output=True, text=True, timeout=60)
  assert out.stdout.strip() == "", f"imported: {out.stdout.strip()}"


# -- chat template ------------------------------------------------------------


def test_format_turn_exact():
  assert tok.format_turn("user", "Hi") == (
      "<start_of_turn>user\nHi<end_of_turn>\n")
  assert tok.format_turn("model", "") == (
      "<start_of_turn>model\n<end_of_turn>\n")


def test_format_turn_rejects_unknown_role():
  with pytest.raises(ValueError, match="'system'"):
    tok.format_turn("system", "Hi")


def test_format_chat_exact():
  turns = [("user", "What is 2+2?"), ("model", "4")]
  expected = ("<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
              "<start_of_turn>model\n4<end_of_turn>\n")
  assert tok.format_chat(turns, add_generation_prompt=False) == expected
  assert tok.format_chat(turns) == expected + "<start_of_turn>model\n"
  assert tok.format_chat([]) == "<start_of_turn>model\n"


def test_format_chat_rejects_bad_turn():
  with pytest.raises(ValueError, match="Turn 0"):
    tok.format_chat([("user", "a", "b")])
  with pytest.raises(ValueError, match="'bot'"):
    tok.format_chat([("bot", "a")])


def test_constants():
  assert tok.START_OF_TURN == "<start_of_turn>"
  assert tok.END_OF_TURN == "<end_of_turn>"
  assert tok.DEFAULT_SYMBOLS[:2] == (tok.START_OF_TURN, tok.END_OF_TURN)
  assert len(tok.DEFAULT_SYMBOLS) == 12


# -- trained model ------------------------------------------------------------


def test_reserved_ids(tokenizer):
  assert (tokenizer.pad_id, tokenizer.eos_id, tokenizer.bos_id,
          tokenizer.unk_id) == (0, 1, 2, 3)
  assert [tokenizer.id_to_piece(i) for i in range(4)] == [
      "<pad>", "<eos>", "<bos>", "<unk>"]


def test_exact_vocab_size(tokenizer):
  assert tokenizer.vocab_size == 1024
  assert tokenizer.vocabulary.vocab_size == 1024


@pytest.mark.parametrize("symbol", tok.DEFAULT_SYMBOLS)
def test_special_symbol_is_one_id(tokenizer, symbol):
  ids = tokenizer.encode(symbol)
  assert ids == [tokenizer.piece_to_id(symbol)]
  assert tokenizer.decode(ids) == symbol
  # Also a single id inside running text.
  assert tokenizer.piece_to_id(symbol) in tokenizer.encode(f"x {symbol}y")


def test_turn_ids(tokenizer):
  assert tokenizer.start_of_turn_id == tokenizer.piece_to_id("<start_of_turn>")
  assert tokenizer.end_of_turn_id == tokenizer.piece_to_id("<end_of_turn>")
  assert tokenizer.start_of_turn_id != tokenizer.end_of_turn_id


def test_piece_to_id_unknown_piece(tokenizer):
  with pytest.raises(KeyError, match="no_such_piece"):
    tokenizer.piece_to_id("<no_such_piece>")
  assert tokenizer.piece_to_id("<unk>") == 3


@pytest.mark.parametrize("text", [
    "",
    "Hello, world!",
    "  leading and  double  spaces, trailing ",
    "Alice has 12345 apples; 3.14159 * 2 = 6.28318",
    "Ünïcödé: 日本語のテキスト, emoji 🙂🚀, Ελληνικά, العربية",
    "tabs\tand\nnew\r\nlines\n\n",
    "<start_of_turn>user\nWhat is 7*6?<end_of_turn>\n<start_of_turn>model\n",
    "<eos> and <bos> written as text",
])
def test_round_trip(tokenizer, text):
  ids = tokenizer.encode(text)
  assert all(isinstance(i, int) for i in ids)
  assert tokenizer.decode(ids) == text


def test_random_unicode_round_trip(tokenizer):
  rng = random.Random(1)
  for _ in range(20):
    text = "".join(chr(rng.choice([rng.randint(32, 126),
                                   rng.randint(0xA0, 0x2FFF),
                                   rng.randint(0x1F300, 0x1F64F)]))
                   for _ in range(rng.randint(1, 40)))
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_digits_are_split(tokenizer):
  ids = tokenizer.encode("9876543210")
  assert len(ids) == 10
  assert [tokenizer.decode([i]) for i in ids] == list("9876543210")


def test_encode_bos_eos(tokenizer):
  ids = tokenizer.encode("hi", add_bos=True, add_eos=True)
  assert ids[0] == 2 and ids[-1] == 1
  assert ids[1:-1] == tokenizer.encode("hi")


def test_decode_ignores_pad_and_does_not_stop_at_eos(tokenizer):
  a, b = tokenizer.encode("Alice has"), tokenizer.encode(" 3 apples")
  ids = [tokenizer.bos_id] + a + [tokenizer.eos_id] + b + [0, 0, 0]
  assert tokenizer.decode(ids) == "Alice has 3 apples"
  assert tokenizer.decode(np.asarray(ids, np.int32)) == "Alice has 3 apples"


def test_decode_rejects_out_of_range_id(tokenizer):
  with pytest.raises(ValueError, match="1024"):
    tokenizer.decode([5, 1024])


def test_encode_rejects_non_str(tokenizer):
  with pytest.raises(TypeError, match="bytes"):
    tokenizer.encode(b"abc")


def test_encode_batch_and_decode_batch(tokenizer):
  texts = ["one", "two 2", "<answer> 3 </answer>"]
  batch = tokenizer.encode_batch(texts, add_bos=True)
  assert batch == [tokenizer.encode(t, add_bos=True) for t in texts]
  assert tokenizer.decode_batch(batch) == texts


def test_encode_chat(tokenizer):
  turns = [("user", "What is 2+2?"), ("model", "<answer> 4 </answer>"),
           ("user", "Are you sure?")]
  ids = tokenizer.encode_chat(turns)
  assert ids[0] == tokenizer.bos_id
  assert ids[1:] == tokenizer.encode(tok.format_chat(turns))
  assert ids.count(tokenizer.start_of_turn_id) == 4
  assert ids.count(tokenizer.end_of_turn_id) == 3
  assert ids[-3:] == tokenizer.encode("<start_of_turn>model\n")
  assert tokenizer.decode(ids) == tok.format_chat(turns)
  no_prompt = tokenizer.encode_chat(turns, add_generation_prompt=False)
  assert no_prompt[-1] == tokenizer.encode("\n")[-1]
  assert no_prompt[-2] == tokenizer.end_of_turn_id


def test_vocabulary_is_seqio(tokenizer):
  import seqio  # pylint: disable=g-import-not-at-top
  assert isinstance(tokenizer.vocabulary, seqio.SentencePieceVocabulary)
  assert list(tokenizer.vocabulary.encode("Bob has 7")) == tokenizer.encode(
      "Bob has 7")


# -- trainer ------------------------------------------------------------------


def test_training_is_deterministic(tmp_path, model_path):
  again = tok.train_sentencepiece(_corpus(), str(tmp_path / "again.model"),
                                  vocab_size=1024)
  with open(model_path, "rb") as f1, open(again, "rb") as f2:
    assert f1.read() == f2.read()


def test_training_writes_atomically(tmp_path):
  out = tmp_path / "nested" / "dir" / "m.model"
  returned = tok.train_sentencepiece(_corpus(50), out, vocab_size=512)
  assert returned == str(out)
  assert os.listdir(out.parent) == ["m.model"]  # no leftover temp files


def test_training_errors(tmp_path):
  out = str(tmp_path / "bad.model")
  with pytest.raises(ValueError, match="vocab_size=100"):
    tok.train_sentencepiece(_corpus(20), out, vocab_size=100)
  with pytest.raises(ValueError, match="bad.model"):
    tok.train_sentencepiece(["", ""], out)
  with pytest.raises(ValueError, match="listed twice"):
    tok.train_sentencepiece(_corpus(5), out, extra_symbols=("<a>", "<a>"))
  with pytest.raises(TypeError, match="Training text 1"):
    tok.train_sentencepiece(["ok", 3], out)
  assert not os.path.exists(out)


def test_missing_path_error_names_path(tmp_path):
  missing = str(tmp_path / "does_not_exist.model")
  with pytest.raises(FileNotFoundError, match="does_not_exist.model"):
    tok.Tokenizer(missing)


def test_invalid_model_file(tmp_path):
  path = tmp_path / "garbage.model"
  path.write_bytes(b"not a sentencepiece model")
  with pytest.raises(ValueError, match="garbage.model"):
    tok.Tokenizer(str(path))


def test_tokenizer_pickles(tokenizer):
  clone = pickle.loads(pickle.dumps(tokenizer))
  assert clone.encode("Carol has 42 coins") == tokenizer.encode(
      "Carol has 42 coins")
  assert clone.end_of_turn_id == tokenizer.end_of_turn_id
