"""Tokenisation of supervised (prompt, target) examples with loss masks.

An SFT example becomes one token sequence and a per-token mask:

* single turn (`tokenize_sft_example`): the prompt is rendered as a Gemma chat
  ending with the generation prompt ("<start_of_turn>model\\n"), exactly as the
  sampler sees it at inference time; the target follows as `encode(target)`
  plus `<end_of_turn>`, so the model learns to answer and then to stop.
* multi-turn (`tokenize_multiturn`): user and model turns alternate (tool
  results come back as user turns); every model turn, with its
  `<end_of_turn>`, is supervised and everything else is context.

`loss_mask[i]` here marks whether *token i* is supervised. The training batch
works on next-token pairs instead; `to_next_token_features` shifts a sequence
into (inputs, targets, loss_mask) where the mask refers to `targets`.

Each piece is encoded on its own (the chat prefix, then each model turn), so
the token boundary between context and supervised text is exactly the one the
sampler produces when it generates after the prompt.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np

USER_ROLE = "user"
MODEL_ROLE = "model"
START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"

Turn = Tuple[str, str]
Prompt = Union[str, Sequence[Turn]]

# dtypes of the per-sequence features.
TOKEN_DTYPE = np.int32
MASK_DTYPE = np.float32


# ----------------------------------------------------------------------------
# Input normalisation.
# ----------------------------------------------------------------------------


def _as_text(value: Any, what: str) -> str:
  """Returns `value` as str; bytes (e.g. from TFDS) are decoded as UTF-8."""
  if isinstance(value, np.ndarray) and value.ndim == 0:
    value = value.item()
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, str):
    return str(value)
  raise TypeError(
      f"{what} must be a str (or UTF-8 bytes), got {type(value).__name__}: "
      f"{value!r}.")


def _as_turns(turns: Any, what: str) -> List[Turn]:
  """Normalises a conversation to a list of (role, text) str pairs.

  Accepts a sequence of (role, text) pairs or of {'role': ..., 'text': ...}
  mappings; roles and texts may be str or UTF-8 bytes.
  """
  if isinstance(turns, (str, bytes)) or not isinstance(
      turns, (Sequence, np.ndarray)):
    raise TypeError(
        f"{what} must be a sequence of (role, text) turns, got "
        f"{type(turns).__name__}: {turns!r}.")
  result = []
  for index, turn in enumerate(turns):
    if isinstance(turn, Mapping):
      if "role" not in turn or "text" not in turn:
        raise ValueError(
            f"{what}[{index}] must have keys 'role' and 'text', got keys "
            f"{sorted(turn)}.")
      role, text = turn["role"], turn["text"]
    else:
      if isinstance(turn, (str, bytes)) or len(turn) != 2:
        raise ValueError(
            f"{what}[{index}] must be a (role, text) pair, got {turn!r}.")
      role, text = turn
    role = _as_text(role, f"{what}[{index}] role")
    if role not in (USER_ROLE, MODEL_ROLE):
      raise ValueError(
          f"{what}[{index}] has role {role!r}; Gemma roles are "
          f"{[USER_ROLE, MODEL_ROLE]}.")
    result.append((role, _as_text(text, f"{what}[{index}] text")))
  if not result:
    raise ValueError(f"{what} is an empty conversation; give at least one "
                     "turn.")
  return result


def _join(pieces: Sequence[Tuple[Sequence[int], float]]
          ) -> Dict[str, np.ndarray]:
  """Concatenates (ids, mask value) pieces into tokens and loss_mask."""
  tokens = np.concatenate(
      [np.asarray(ids, dtype=TOKEN_DTYPE) for ids, _ in pieces])
  loss_mask = np.concatenate(
      [np.full(len(ids), value, dtype=MASK_DTYPE) for ids, value in pieces])
  return {"tokens": tokens, "loss_mask": loss_mask}


# ----------------------------------------------------------------------------
# Tokenisation.
# ----------------------------------------------------------------------------


def tokenize_sft_example(tokenizer, prompt: Prompt, target: str
                         ) -> Dict[str, np.ndarray]:
  """Tokenises one (prompt, target) pair as a Gemma chat with a loss mask.

  tokens = encode_chat(prompt turns, add_generation_prompt=True)   # mask 0
         + encode(target) + [end_of_turn_id]                       # mask 1

  Args:
    tokenizer: a `swirl_jax.tokenizer.Tokenizer` (anything with `encode`,
      `encode_chat` and `end_of_turn_id`).
    prompt: the user's message (str), or a whole conversation so far as a
      sequence of (role, text) turns (usually ending with a user turn).
    target: the model's answer (str), without chat markers.

  Returns:
    dict with
      'tokens': int32 [n], starting with BOS, ending with `<end_of_turn>`;
      'loss_mask': float32 [n], 1.0 on the target tokens and the final
        `<end_of_turn>`, 0.0 on the prompt (including the generation prompt).

  Raises:
    TypeError / ValueError: on a malformed prompt or a non-str target.
  """
  if isinstance(prompt, (str, bytes, np.ndarray)) and np.ndim(prompt) == 0:
    turns = [(USER_ROLE, _as_text(prompt, "prompt"))]
  else:
    turns = _as_turns(prompt, "prompt")
  target = _as_text(target, "target")
  prompt_ids = tokenizer.encode_chat(turns, add_generation_prompt=True)
  target_ids = list(tokenizer.encode(target)) + [tokenizer.end_of_turn_id]
  return _join([(prompt_ids, 0.0), (target_ids, 1.0)])


def tokenize_multiturn(tokenizer, turns: Sequence[Turn]
                       ) -> Dict[str, np.ndarray]:
  """Tokenises an alternating user/model conversation; model turns supervised.

  Used for multi-step demonstrations (e.g. tool use: the model's tool call is a
  model turn, the tool's result comes back as the next user turn). Tokens are

    encode_chat(turns[:1], add_generation_prompt=True)            # mask 0
    encode(turns[1].text) + [end_of_turn_id]                      # mask 1
    encode("\\n" + format_chat(turns[2:3], add_generation_prompt=True))  # 0
    encode(turns[3].text) + [end_of_turn_id]                      # mask 1
    ...

  i.e. the Gemma chat text of the whole conversation, split so that each
  model turn is encoded on its own (as the sampler produced it). With one
  user and one model turn this equals `tokenize_sft_example`.

  Args:
    tokenizer: a `swirl_jax.tokenizer.Tokenizer`.
    turns: sequence of (role, text) pairs (or {'role', 'text'} mappings),
      alternating 'user', 'model', 'user', ..., ending with a 'model' turn.

  Returns:
    dict with 'tokens' int32 [n] and 'loss_mask' float32 [n] (1.0 on every
    model turn's text tokens and its `<end_of_turn>`, else 0.0).

  Raises:
    ValueError: if the turns do not alternate starting with 'user' and ending
      with 'model'.
  """
  turns = _as_turns(turns, "turns")
  for index, (role, _) in enumerate(turns):
    expected = USER_ROLE if index % 2 == 0 else MODEL_ROLE
    if role != expected:
      raise ValueError(
          f"turns[{index}] has role {role!r} but {expected!r} was expected: "
          "turns must alternate 'user', 'model', ... starting with 'user'. "
          f"Roles given: {[r for r, _ in turns]}.")
  if len(turns) % 2:
    raise ValueError(
        f"The last turn (turns[{len(turns) - 1}]) is a 'user' turn, which "
        "nothing supervised follows; end the conversation with a 'model' "
        "turn or drop the trailing user turn.")
  end_of_turn_id = tokenizer.end_of_turn_id
  pieces = []
  for index in range(0, len(turns), 2):
    user_turn, (_, model_text) = turns[index], turns[index + 1]
    if index == 0:
      context = tokenizer.encode_chat([user_turn], add_generation_prompt=True)
    else:
      # The template's "\n" after the previous <end_of_turn>, then the user
      # turn and the generation prompt.
      context = tokenizer.encode(
          "\n" + _format_user_turn_and_generation_prompt(user_turn[1]))
    pieces.append((context, 0.0))
    pieces.append((list(tokenizer.encode(model_text)) + [end_of_turn_id],
                   1.0))
  return _join(pieces)


def _format_user_turn_and_generation_prompt(text: str) -> str:
  """Gemma template of one user turn followed by the model's turn header."""
  return (f"{START_OF_TURN}{USER_ROLE}\n{text}{END_OF_TURN}\n"
          f"{START_OF_TURN}{MODEL_ROLE}\n")


def tokenize_example(tokenizer, example: Mapping[str, Any]
                     ) -> Dict[str, np.ndarray]:
  """Tokenises a dataset record: {'prompt', 'target'} or {'turns'}.

  Args:
    tokenizer: a `swirl_jax.tokenizer.Tokenizer`.
    example: a mapping with either 'prompt' (str or turns) and 'target' (str),
      tokenised by `tokenize_sft_example`, or 'turns' (alternating user /
      model turns), tokenised by `tokenize_multiturn`. Other keys are ignored.

  Returns:
    dict with 'tokens' int32 [n] and 'loss_mask' float32 [n].

  Raises:
    ValueError: if the record has neither layout.
  """
  if not isinstance(example, Mapping):
    raise TypeError(
        f"An SFT example must be a mapping with 'prompt' and 'target' (or "
        f"'turns'), got {type(example).__name__}: {example!r:.200}.")
  if "turns" in example:
    return tokenize_multiturn(tokenizer, example["turns"])
  if "prompt" in example and "target" in example:
    return tokenize_sft_example(tokenizer, example["prompt"],
                                example["target"])
  raise ValueError(
      f"An SFT example needs keys 'prompt' and 'target' (or 'turns'); got "
      f"keys {sorted(example)}.")


# ----------------------------------------------------------------------------
# Next-token features.
# ----------------------------------------------------------------------------


def to_next_token_features(tokens: np.ndarray, loss_mask: np.ndarray
                           ) -> Dict[str, np.ndarray]:
  """Turns a masked token sequence into next-token prediction features.

  Args:
    tokens: int [n], one sequence.
    loss_mask: float [n], 1.0 where token i is supervised.

  Returns:
    dict of [n] arrays:
      'inputs' int32: `tokens`;
      'targets' int32: tokens[i + 1], and 0 at the last position;
      'loss_mask' float32: loss_mask[i + 1] (whether targets[i] is
        supervised), and 0.0 at the last position.

  Raises:
    ValueError: if the shapes differ or are not 1-D.
  """
  tokens = np.asarray(tokens, dtype=TOKEN_DTYPE)
  loss_mask = np.asarray(loss_mask, dtype=MASK_DTYPE)
  if tokens.ndim != 1 or tokens.shape != loss_mask.shape:
    raise ValueError(
        f"tokens and loss_mask must be 1-D of the same length, got shapes "
        f"{tokens.shape} and {loss_mask.shape}.")
  targets = np.zeros_like(tokens)
  targets[:-1] = tokens[1:]
  target_mask = np.zeros_like(loss_mask)
  target_mask[:-1] = loss_mask[1:]
  return {"inputs": tokens, "targets": targets, "loss_mask": target_mask}
