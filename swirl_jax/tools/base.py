"""The `Tool` interface, a name -> class registry and the SWiRL call format.

A tool call in a model action is written `<tag> CONTENT </tag>` (SWiRL uses the
tags `search_query` and `math_exp`); the host runs the tool on CONTENT and
feeds `CONTENT -> RESULT` back in the next user turn. Model text is untrusted:
`Tool.execute` must treat it as data and must never raise for bad input, it
returns a string starting with "Error:" instead.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from typing import Any, Callable, Iterable, Optional, TypeVar

from swirl_jax import registries

ERROR_PREFIX = "Error:"

_TAG_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")

T = TypeVar("T", bound=type)


class Tool(abc.ABC):
  """A host-side tool the model can call.

  Subclasses set the class attributes `name` (registry key) and `tag` (the
  XML-like tag of a call) and implement `describe` and `execute`.
  """

  name: str = ""
  tag: str = ""

  @abc.abstractmethod
  def describe(self) -> str:
    """One line describing the tool and its call syntax, for prompts."""

  @abc.abstractmethod
  def execute(self, call: str) -> str:
    """Runs the call (the text between the tags) and returns the result text.

    Must not raise for bad input: returns a string starting with "Error:".
    """

  def run(self, call: str) -> str:
    """`execute`, with any unexpected exception turned into an error string.

    Hosts should call this rather than `execute`: a bug in a tool must not
    crash a rollout worker.
    """
    if not isinstance(call, str):
      return (f"{ERROR_PREFIX} tool call content must be text, "
              f"got {type(call).__name__}.")
    try:
      result = self.execute(call)
    except Exception as e:  # pylint: disable=broad-except
      return (f"{ERROR_PREFIX} internal error in tool {self.name!r}: "
              f"{type(e).__name__}: {e}")
    if not isinstance(result, str):
      return (f"{ERROR_PREFIX} tool {self.name!r} returned "
              f"{type(result).__name__}, not text.")
    return result

  def format_call(self, content: str) -> str:
    return format_call(self.tag, content)

  def __repr__(self) -> str:
    return f"{type(self).__name__}(name={self.name!r}, tag={self.tag!r})"


def truncate(text: str, max_chars: int) -> str:
  """`text` cut to at most `max_chars` characters, ending in '...' if cut."""
  if len(text) <= max_chars:
    return text
  return text[:max(max_chars - 3, 0)].rstrip() + "..."


def is_error(result: str) -> bool:
  """True if a tool result is an error string."""
  return isinstance(result, str) and result.startswith(ERROR_PREFIX)


# --- registry -----------------------------------------------------------------


def _check_tool(name: str, cls: Any) -> None:
  if not (isinstance(cls, type) and issubclass(cls, Tool)):
    raise TypeError(f"@register_tool({name!r}) needs a Tool subclass, got "
                    f"{cls!r}.")
  if not _TAG_RE.match(cls.tag or ""):
    raise ValueError(f"Tool {cls.__name__} has an invalid tag {cls.tag!r}.")


def _import_builtin() -> None:
  # Importing the package registers the built-in tools.
  import swirl_jax.tools  # pylint: disable=g-import-not-at-top,unused-import  # noqa: F401


TOOLS: registries.Registry[type[Tool]] = registries.Registry(
    "tool", importer=_import_builtin, check=_check_tool)


def register_tool(name: str) -> Callable[[T], T]:
  """Class decorator: registers a `Tool` subclass under `name`.

  Sets `cls.name = name`. Registering a second class under a taken name is an
  error (re-registering the same class, e.g. on module reload, is allowed).
  """
  add = TOOLS.register(name)

  def decorator(cls: T) -> T:
    add(cls)
    cls.name = name
    return cls

  return decorator


def tool_names() -> list[str]:
  """Sorted names of the registered tools."""
  return TOOLS.names()


def get_tool_class(name: str) -> type[Tool]:
  """The class registered under `name` (ValueError naming the closest match)."""
  return TOOLS.get(name)


def get_tool(name: str, **kwargs) -> Tool:
  """Instantiates the tool registered under `name` with `kwargs`."""
  return get_tool_class(name)(**kwargs)


# --- call format --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ToolCall:
  """One parsed tool call: the tool's registry name and the call content."""

  name: str
  content: str


def format_call(tag: str, content: str) -> str:
  """`<tag> content </tag>`, the way a model writes a call."""
  return f"<{tag}> {content.strip()} </{tag}>"


def format_result(query: str, result: str) -> str:
  """`QUERY -> RESULT`, the SWiRL convention for the next user turn."""
  return f"{query.strip()} -> {result.strip()}"


def parse_call(text: str, tools: Iterable[Tool]) -> Optional[ToolCall]:
  """The first complete `<tag> ... </tag>` call in `text` for one of `tools`.

  Returns None if the text contains no complete call. Only the tags of the
  given tools are recognised; the content is returned stripped.
  """
  by_tag = {t.tag: t.name for t in tools}
  if not by_tag or not isinstance(text, str):
    return None
  tags = "|".join(re.escape(t) for t in sorted(by_tag, key=len, reverse=True))
  match = re.search(rf"<({tags})>(.*?)</\1>", text, flags=re.DOTALL)
  if match is None:
    return None
  return ToolCall(name=by_tag[match.group(1)], content=match.group(2).strip())
