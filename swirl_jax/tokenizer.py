"""SentencePiece tokenizer, Gemma chat template and a small tokenizer trainer.

Three pieces live here:

* `Tokenizer`: a thin wrapper around `seqio.SentencePieceVocabulary` that
  exposes python-side `encode` / `decode` and the Gemma special ids (pad, eos,
  bos, `<start_of_turn>`, `<end_of_turn>`), looked up by piece so a real Gemma
  `tokenizer.model` and a locally trained one behave the same way.
* `format_turn` / `format_chat`: the Gemma chat template as pure string
  functions. BOS is never part of the text; `Tokenizer.encode_chat` prepends
  the BOS id.
* `train_sentencepiece`: trains a small, deterministic BPE model with Gemma's
  id layout (pad=0, eos=1, bos=2, unk=3), byte fallback, split digits and the
  tool tags as single pieces, for the embedded CPU default model and tests.

seqio imports TensorFlow, which takes seconds; it is imported lazily inside
`Tokenizer.__init__`, so importing this module stays cheap. sentencepiece is
also imported lazily, inside `train_sentencepiece`.
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Iterable, List, Sequence, Tuple

if TYPE_CHECKING:  # Only for annotations; never imported at runtime here.
  import seqio  # pylint: disable=g-bad-import-order

GGUF_PREFIX = "gguf:"  # Tokenizer('gguf:FILE'): the vocabulary of a GGUF
START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"
USER_ROLE = "user"
MODEL_ROLE = "model"
ROLES = (USER_ROLE, MODEL_ROLE)

# Gemma's id layout and piece names for the four reserved ids.
PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3
PAD_PIECE, EOS_PIECE, BOS_PIECE, UNK_PIECE = "<pad>", "<eos>", "<bos>", "<unk>"

DEFAULT_SYMBOLS = (
    START_OF_TURN,
    END_OF_TURN,
    "<math_exp>",
    "</math_exp>",
    "<search_query>",
    "</search_query>",
    "<answer>",
    "</answer>",
    "<tool_call>",
    "</tool_call>",
    "<reflection>",
    "</reflection>",
)

_NUM_BYTE_PIECES = 256  # byte_fallback adds <0x00> ... <0xFF>.
_NUM_RESERVED_IDS = 4  # pad, eos, bos, unk.
_UNUSED_PIECE = "<unused{}>"  # Gemma's name for filler pieces.

Turn = Tuple[str, str]


# ----------------------------------------------------------------------------
# Chat template.
# ----------------------------------------------------------------------------


def format_turn(role: str, text: str) -> str:
  """Formats one Gemma chat turn.

  Args:
    role: 'user' or 'model'.
    text: the turn's content (str).

  Returns:
    str: "<start_of_turn>{role}\\n{text}<end_of_turn>\\n".

  Raises:
    ValueError: if `role` is not 'user' or 'model'.
    TypeError: if `text` is not a string.
  """
  if role not in ROLES:
    raise ValueError(
        f"Unknown chat role {role!r}; Gemma roles are {list(ROLES)}.")
  if not isinstance(text, str):
    raise TypeError(
        f"Turn text must be a str, got {type(text).__name__}: {text!r}.")
  return f"{START_OF_TURN}{role}\n{text}{END_OF_TURN}\n"


def stop_ids(tokenizer) -> list[int]:
  """The ids that end a model turn: <end_of_turn> and EOS (those defined)."""
  return sorted({int(t) for t in (tokenizer.end_of_turn_id, tokenizer.eos_id)
                 if t >= 0})


def format_chat(turns: Sequence[Turn], add_generation_prompt: bool = True
                ) -> str:
  """Formats a conversation with the Gemma chat template (without BOS).

  Args:
    turns: sequence of (role, text) pairs, role in {'user', 'model'}.
    add_generation_prompt: if True, appends "<start_of_turn>model\\n" so the
      model continues with its own turn.

  Returns:
    str: the concatenated turns, plus the generation prompt if requested.

  Raises:
    ValueError: if a turn is not a (role, text) pair or has an unknown role.
  """
  parts = []
  for index, turn in enumerate(turns):
    if isinstance(turn, (str, bytes)) or len(turn) != 2:
      raise ValueError(
          f"Turn {index} must be a (role, text) pair, got {turn!r}.")
    role, text = turn
    parts.append(format_turn(role, text))
  if add_generation_prompt:
    parts.append(f"{START_OF_TURN}{MODEL_ROLE}\n")
  return "".join(parts)


# ----------------------------------------------------------------------------
# Tokenizer.
# ----------------------------------------------------------------------------


def _path_exists(path: str) -> bool:
  """True if `path` exists; remote paths (gs://...) are checked via gfile."""
  if "://" in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile.exists(path)
  return os.path.isfile(path)


class Tokenizer:
  """A SentencePiece tokenizer backed by `seqio.SentencePieceVocabulary`.

  Encoding goes through seqio's python path (`vocabulary.encode`) and decoding
  through the python SentencePiece processor that seqio loaded, so neither
  builds a TensorFlow graph. Unlike `seqio.Vocabulary.decode`, `decode` does not
  stop at EOS: it decodes every id and only drops pad ids.

  Note: seqio caches loaded models by path, so rewriting a model file in place
  and loading it again in the same process returns the old model; write a
  retrained model to a new path.

  Attributes:
    path: str, the SentencePiece model path given to the constructor.
    vocabulary: the `seqio.SentencePieceVocabulary`, for the data layer.
  """

  def __init__(self, path: str | os.PathLike):
    """Loads a SentencePiece model.

    Args:
      path: path of a SentencePiece `.model` file (local, or any filesystem
        tf.io.gfile understands, e.g. gs://), or 'gguf:FILE': the vocabulary
        of a Gemma GGUF file, rebuilt as a SentencePiece model
        (`swirl_jax.checkpoints.gguf.sentencepiece_model`; `path` is then
        that model's file).

    Raises:
      FileNotFoundError: if no file exists at `path`.
      ValueError: if the file is not a valid SentencePiece model.
    """
    path = os.fspath(path)
    if path.startswith(GGUF_PREFIX):
      from swirl_jax.checkpoints import gguf  # pylint: disable=g-import-not-at-top
      path = gguf.sentencepiece_model(path[len(GGUF_PREFIX):])
    if not _path_exists(path):
      raise FileNotFoundError(f"SentencePiece model not found: {path!r}.")
    import seqio  # pylint: disable=g-import-not-at-top,redefined-outer-name
    self.path = path
    self.vocabulary: seqio.SentencePieceVocabulary = (
        seqio.SentencePieceVocabulary(path))
    try:
      self._sp = self.vocabulary.tokenizer  # Loads the model now.
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(
          f"Could not load a SentencePiece model from {path!r}: {e}") from e
    self._size = int(self._sp.GetPieceSize())
    pad = int(self._sp.pad_id())
    # A model without a pad piece gets seqio's convention (id 0).
    self._pad_id = pad if pad >= 0 else int(self.vocabulary.pad_id)

  def __repr__(self) -> str:
    return f"Tokenizer(path={self.path!r}, vocab_size={self.vocab_size})"

  # -- ids ------------------------------------------------------------------

  @property
  def vocab_size(self) -> int:
    """int: number of ids (pieces) in the model."""
    return self._size

  @property
  def pad_id(self) -> int:
    """int: the pad id (0 for Gemma)."""
    return self._pad_id

  @property
  def eos_id(self) -> int:
    """int: the end-of-sequence id (1 for Gemma; -1 if the model has none)."""
    return int(self._sp.eos_id())

  @property
  def bos_id(self) -> int:
    """int: the beginning-of-sequence id (2 for Gemma; -1 if none)."""
    return int(self._sp.bos_id())

  @property
  def unk_id(self) -> int:
    """int: the unknown-piece id (3 for Gemma)."""
    return int(self._sp.unk_id())

  @property
  def start_of_turn_id(self) -> int:
    """int: id of the '<start_of_turn>' piece (106 in Gemma's tokenizer)."""
    return self.piece_to_id(START_OF_TURN)

  @property
  def end_of_turn_id(self) -> int:
    """int: id of the '<end_of_turn>' piece (107 in Gemma's tokenizer)."""
    return self.piece_to_id(END_OF_TURN)

  def piece_to_id(self, piece: str) -> int:
    """Returns the id of a piece.

    Args:
      piece: str, a piece of the vocabulary, e.g. '<end_of_turn>'.

    Returns:
      int: its id.

    Raises:
      KeyError: if the vocabulary has no such piece.
    """
    piece_id = int(self._sp.PieceToId(piece))
    # SentencePiece maps unknown pieces to the unk id.
    if piece_id == self.unk_id and piece != self._sp.IdToPiece(piece_id):
      raise KeyError(
          f"Piece {piece!r} is not in the vocabulary of {self.path!r}.")
    return piece_id

  def id_to_piece(self, piece_id: int) -> str:
    """Returns the piece of an id (raises ValueError if out of range)."""
    self._check_ids([piece_id])
    return self._sp.IdToPiece(int(piece_id))

  # -- encode / decode ----------------------------------------------------

  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False
             ) -> List[int]:
    """Encodes text to ids with seqio's python path.

    Args:
      text: str to encode. Special symbols written in the text (e.g.
        '<start_of_turn>') become their single ids.
      add_bos: prepend the BOS id.
      add_eos: append the EOS id.

    Returns:
      list[int]: the ids.

    Raises:
      TypeError: if `text` is not a str.
      ValueError: if BOS/EOS is requested but the model has none.
    """
    if not isinstance(text, str):
      raise TypeError(
          f"encode expects a str, got {type(text).__name__}: {text!r}.")
    ids = [int(i) for i in self.vocabulary.encode(text)]
    if add_bos:
      ids.insert(0, self._required_id(self.bos_id, "BOS"))
    if add_eos:
      ids.append(self._required_id(self.eos_id, "EOS"))
    return ids

  def encode_batch(self, texts: Iterable[str], add_bos: bool = False,
                   add_eos: bool = False) -> List[List[int]]:
    """Encodes each text; see `encode`. Returns list[list[int]]."""
    return [self.encode(t, add_bos=add_bos, add_eos=add_eos) for t in texts]

  def encode_chat(self, turns: Sequence[Turn],
                  add_generation_prompt: bool = True) -> List[int]:
    """Encodes a conversation: [bos] + encode(format_chat(turns, ...)).

    Args:
      turns: sequence of (role, text) pairs, role in {'user', 'model'}.
      add_generation_prompt: append "<start_of_turn>model\\n".

    Returns:
      list[int]: the ids, starting with BOS.
    """
    text = format_chat(turns, add_generation_prompt=add_generation_prompt)
    return self.encode(text, add_bos=True)

  def decode(self, ids: Iterable[int]) -> str:
    """Decodes ids to text, dropping pad ids; does not stop at EOS.

    Control ids (EOS, BOS) decode to nothing; special symbols such as
    '<end_of_turn>' decode to their text.

    Args:
      ids: 1-D iterable of ints (list, tuple, numpy or jax array).

    Returns:
      str: the decoded text.

    Raises:
      ValueError: if an id is outside [0, vocab_size).
    """
    if hasattr(ids, "tolist"):  # numpy / jax arrays: avoid per-element calls.
      ids = ids.tolist()
    clean = [int(i) for i in ids if int(i) != self._pad_id]
    self._check_ids(clean)
    return self._sp.DecodeIds(clean)

  def decode_batch(self, batch: Iterable[Iterable[int]]) -> List[str]:
    """Decodes each row; see `decode`. Returns list[str]."""
    if hasattr(batch, "tolist"):
      batch = batch.tolist()
    return [self.decode(row) for row in batch]

  # -- helpers --------------------------------------------------------------

  def _check_ids(self, ids: Sequence[int]) -> None:
    for i in ids:
      if not 0 <= int(i) < self._size:
        raise ValueError(
            f"Token id {i} is outside the vocabulary [0, {self._size}) of "
            f"{self.path!r}.")

  def _required_id(self, piece_id: int, name: str) -> int:
    if piece_id < 0:
      raise ValueError(f"The model {self.path!r} has no {name} id.")
    return piece_id


# ----------------------------------------------------------------------------
# Training.
# ----------------------------------------------------------------------------


def _check_symbols(extra_symbols: Sequence[str]) -> List[str]:
  """Validates user-defined symbols; returns them as a list."""
  if isinstance(extra_symbols, str):
    raise TypeError(
        f"extra_symbols must be a sequence of str, not a str: "
        f"{extra_symbols!r}.")
  symbols = list(extra_symbols)
  reserved = {PAD_PIECE, EOS_PIECE, BOS_PIECE, UNK_PIECE}
  seen = set()
  for symbol in symbols:
    if not isinstance(symbol, str) or not symbol or symbol.isspace():
      raise ValueError(f"Invalid extra symbol {symbol!r}: need a non-blank "
                       "str.")
    if any(c.isspace() for c in symbol):
      raise ValueError(
          f"Extra symbol {symbol!r} contains whitespace; it could not be a "
          "single piece.")
    if symbol in reserved:
      raise ValueError(f"Extra symbol {symbol!r} is a reserved piece.")
    if symbol in seen:
      raise ValueError(f"Extra symbol {symbol!r} is listed twice.")
    seen.add(symbol)
  return symbols


def _pad_with_unused(model_bytes: bytes, vocab_size: int) -> bytes:
  """Appends UNUSED '<unusedN>' pieces until the model has vocab_size pieces."""
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top
  model = sentencepiece_model_pb2.ModelProto.FromString(model_bytes)
  existing = {p.piece for p in model.pieces}
  index = 0
  while len(model.pieces) < vocab_size:
    name = _UNUSED_PIECE.format(index)
    index += 1
    if name in existing:
      continue
    model.pieces.add(
        piece=name,
        score=0.0,
        type=sentencepiece_model_pb2.ModelProto.SentencePiece.UNUSED)
  model.trainer_spec.vocab_size = vocab_size
  return model.SerializeToString(deterministic=True)


def _write_atomically(data: bytes, output_path: str) -> None:
  """Writes bytes to a temp file next to output_path, then os.replace()s it."""
  directory = os.path.dirname(os.path.abspath(output_path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp_path = tempfile.mkstemp(
      dir=directory, prefix=".tmp-", suffix=".model")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp_path, output_path)
  except BaseException:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
    raise


def train_sentencepiece(
    texts: Iterable[str],
    output_path: str | os.PathLike,
    vocab_size: int = 1024,
    extra_symbols: Sequence[str] = DEFAULT_SYMBOLS,
    *,
    character_coverage: float = 1.0,
) -> str:
  """Trains a small deterministic BPE SentencePiece model with Gemma's layout.

  The model has pad=0, eos=1, bos=2, unk=3 (pieces '<pad>', '<eos>', '<bos>',
  '<unk>' as in Gemma), then `extra_symbols` as single user-defined pieces,
  then 256 byte-fallback pieces and the learned merges. Normalization is the
  identity, no dummy prefix is added and whitespace is kept, so any text
  round-trips exactly; digits are split into single pieces.

  BPE (rather than unigram) because Gemma's own tokenizer is a BPE
  SentencePiece model, segmentation is then greedy and unambiguous, and BPE
  training has no EM / seed-piece pruning steps; on tiny corpora it also
  learns more useful merges than unigram.

  Training is deterministic: one thread, no input sampling or shuffling, a
  fixed random seed, and the model is serialized in memory (so no temp path
  is recorded in it). If the corpus supports fewer pieces than `vocab_size`,
  the model is padded with UNUSED '<unusedN>' pieces (never produced by
  encoding, as in Gemma), so the result always has exactly `vocab_size` ids.

  Args:
    texts: iterable of training strings (may contain newlines).
    output_path: where to write the `.model` file (written atomically: a temp
      file in the same directory, then os.replace). Parent dirs are created.
    vocab_size: exact number of ids of the resulting model.
    extra_symbols: strings that each become exactly one piece (chat markers
      and tool tags by default).
    character_coverage: fraction of characters covered by character pieces;
      the rest fall back to bytes.

  Returns:
    str: `output_path`.

  Raises:
    ValueError: on an empty corpus, bad symbols, or a `vocab_size` too small
      for the reserved, byte and symbol pieces plus the corpus' characters.
    TypeError: if a text is not a str.
  """
  import io  # pylint: disable=g-import-not-at-top
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top

  output_path = os.fspath(output_path)
  symbols = _check_symbols(extra_symbols)
  corpus = []
  for index, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(
          f"Training text {index} is a {type(text).__name__}, not a str: "
          f"{text!r}.")
    if text:
      corpus.append(text)
  if not corpus:
    raise ValueError(
        f"No non-empty training texts given for {output_path!r}.")
  min_size = _NUM_RESERVED_IDS + len(symbols) + _NUM_BYTE_PIECES + 1
  if vocab_size < min_size:
    raise ValueError(
        f"vocab_size={vocab_size} is too small: the 4 reserved ids, "
        f"{len(symbols)} extra symbols and {_NUM_BYTE_PIECES} byte pieces "
        f"need at least {min_size}.")

  spm.set_random_generator_seed(0)
  writer = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=writer,
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=False,  # Small corpora: stop early, pad below.
        pad_id=PAD_ID, eos_id=EOS_ID, bos_id=BOS_ID, unk_id=UNK_ID,
        pad_piece=PAD_PIECE, eos_piece=EOS_PIECE, bos_piece=BOS_PIECE,
        unk_piece=UNK_PIECE,
        user_defined_symbols=symbols,
        byte_fallback=True,
        split_digits=True,
        character_coverage=character_coverage,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        max_sentence_length=1 << 20,
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
  except RuntimeError as e:
    raise ValueError(
        f"SentencePiece training for {output_path!r} with "
        f"vocab_size={vocab_size} failed: {e}") from e

  model_bytes = _pad_with_unused(writer.getvalue(), vocab_size)
  _write_atomically(model_bytes, output_path)
  return output_path
