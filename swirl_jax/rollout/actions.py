"""Parsing one model action of a tool-use episode, and the reply to a bad one.

A SWiRL action is free reasoning text plus exactly one tool call
`<tag> CONTENT </tag>` (`tag` one of the task's tool tags, e.g. `math_exp`)
or the final answer `<answer> ANSWER </answer>`. Anything else is malformed;
the engine records it and replies with `malformed_feedback`. Parsing is
regular expressions and string slicing only: nothing is evaluated.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Optional, Sequence

from swirl_jax.tokenizer import END_OF_TURN

ANSWER_TAG = "answer"

TOOL = "tool"
ANSWER = "answer"
MALFORMED = "malformed"

NOT_BOTH = "Please either issue a query or answer the question, but not both."

_TAG_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
# Any complete XML-like element, to name unknown tags in the error message.
_ANY_ELEMENT_RE = re.compile(r"<([A-Za-z_][A-Za-z0-9_\-]*)>.*?</\1>", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class ParsedAction:
  """The outcome of `parse_action`.

  Attributes:
    kind: 'tool' (one tool call), 'answer' (the final answer) or 'malformed'.
    tag: the tool tag of a call, 'answer' for an answer, None if malformed.
    content: the stripped text between the tags (None if malformed).
    reason: why the action is malformed, a short phrase without a final
      period (None if valid).
  """

  kind: str
  tag: Optional[str] = None
  content: Optional[str] = None
  reason: Optional[str] = None

  @property
  def is_tool(self) -> bool:
    return self.kind == TOOL

  @property
  def is_answer(self) -> bool:
    return self.kind == ANSWER

  @property
  def is_malformed(self) -> bool:
    return self.kind == MALFORMED


def _malformed(reason: str) -> ParsedAction:
  return ParsedAction(kind=MALFORMED, reason=reason)


def check_tool_tags(tool_tags: Sequence[str]) -> tuple[str, ...]:
  """Validates tool tags; returns them as a tuple.

  Args:
    tool_tags: tags such as ('math_exp',); not 'answer', no duplicates.

  Raises:
    TypeError: if `tool_tags` is a single string.
    ValueError: naming a tag that is not a valid tag name, is 'answer' or is
      repeated.
  """
  if isinstance(tool_tags, str):
    raise TypeError(
        f"tool_tags must be a sequence of tags, not the string {tool_tags!r}; "
        f"write ({tool_tags!r},).")
  tags = tuple(tool_tags)
  seen = set()
  for tag in tags:
    if not isinstance(tag, str) or not _TAG_RE.match(tag):
      raise ValueError(
          f"Invalid tool tag {tag!r}: need a name like 'math_exp'.")
    if tag == ANSWER_TAG:
      raise ValueError(
          f"{ANSWER_TAG!r} is the answer tag and cannot be a tool tag.")
    if tag in seen:
      raise ValueError(f"Tool tag {tag!r} is listed twice in {list(tags)}.")
    seen.add(tag)
  return tags


@functools.lru_cache(maxsize=64)
def _tag_pattern(tags: tuple[str, ...]) -> re.Pattern:
  names = "|".join(re.escape(t) for t in sorted(tags, key=len, reverse=True))
  return re.compile(rf"<(/?)({names})>")


def strip_end_of_turn(text: str) -> str:
  """`text` without trailing '<end_of_turn>' markers (and whitespace after)."""
  stripped = text.rstrip()
  if not stripped.endswith(END_OF_TURN):
    return text
  while stripped.endswith(END_OF_TURN):
    stripped = stripped[:-len(END_OF_TURN)].rstrip()
  return stripped


def _call_forms(tool_tags: Sequence[str]) -> str:
  return " or ".join(f"<{t}> ... </{t}>" for t in tool_tags)


def parse_action(text: str, tool_tags: Sequence[str] = ()) -> ParsedAction:
  """Parses one model action.

  Malformed: two calls or answers, a call and an answer, a tag opened and
  never closed (or closed and never opened), nested tags, an empty call or
  answer, neither a call nor an answer. Tags not in `tool_tags` (and not
  'answer') are plain text; a trailing '<end_of_turn>' is ignored.

  Args:
    text: the model turn's text.
    tool_tags: the tool tags the task allows, e.g. ('math_exp',).

  Returns:
    ParsedAction: kind 'tool' / 'answer' with the tag and stripped content,
    or kind 'malformed' with a reason.

  Raises:
    TypeError / ValueError: bad `tool_tags` (`check_tool_tags`).
  """
  tags = check_tool_tags(tool_tags)
  if not isinstance(text, str):
    return _malformed(f"the action is a {type(text).__name__}, not text")
  body = strip_end_of_turn(text)
  if not body.strip():
    return _malformed("the message is empty")

  elements: list[tuple[str, str]] = []
  open_tag, open_end = None, 0
  for match in _tag_pattern(tags + (ANSWER_TAG,)).finditer(body):
    closing, tag = match.group(1) == "/", match.group(2)
    if not closing:
      if open_tag is not None:
        return _malformed(f"<{open_tag}> is not closed before <{tag}> opens")
      open_tag, open_end = tag, match.end()
    elif open_tag is None:
      return _malformed(f"</{tag}> closes a tag that was never opened")
    elif tag != open_tag:
      return _malformed(f"<{open_tag}> is closed by </{tag}>")
    else:
      elements.append((tag, body[open_end:match.start()].strip()))
      open_tag = None
  if open_tag is not None:
    return _malformed(f"<{open_tag}> is never closed (missing </{open_tag}>)")

  calls = [e for e in elements if e[0] != ANSWER_TAG]
  answers = [e for e in elements if e[0] == ANSWER_TAG]
  if calls and answers:
    return _malformed("it contains both a tool call and an answer")
  if len(calls) > 1:
    return _malformed(
        f"it contains {len(calls)} tool calls; only one call per step is "
        "allowed")
  if len(answers) > 1:
    return _malformed(f"it contains {len(answers)} answers; give exactly one")
  if not elements:
    unknown = sorted({m.group(1) for m in _ANY_ELEMENT_RE.finditer(body)})
    if unknown:
      allowed = _call_forms(tags) or "no tools"
      return _malformed(
          f"<{unknown[0]}> is not a tool of this task (tools: {allowed})")
    return _malformed("it contains neither a tool call nor an answer")
  tag, content = elements[0]
  if not content:
    return _malformed(f"<{tag}> </{tag}> is empty")
  return ParsedAction(kind=ANSWER if tag == ANSWER_TAG else TOOL, tag=tag,
                      content=content)


def malformed_feedback(reason: str, tool_tags: Sequence[str] = ()) -> str:
  """The user turn answering a malformed action.

  Args:
    reason: `ParsedAction.reason`.
    tool_tags: the task's tool tags, to show the expected call forms.

  Returns:
    str: what was wrong, how to write a call or an answer, then NOT_BOTH.
  """
  tags = check_tool_tags(tool_tags)
  if tags:
    how = (f"Write exactly one tool call ({_call_forms(tags)}) or the final "
           "answer as <answer> ... </answer>.")
  else:
    how = "Write the final answer as <answer> ... </answer>."
  return f"Your last message was not a valid step: {reason}. {how} {NOT_BOTH}"
