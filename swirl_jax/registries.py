"""One registry class for every kind of named thing (tasks, tools, judges,
objectives, model presets), chosen by name from gin.

    TASKS = Registry("task", importer=_import_task_modules)

    @TASKS.register("gsm8k")
    class GSM8KTask(Task): ...

    TASKS.get("gsm8k")      # the registered value
    TASKS.get("gsm8kk")     # ValueError: Unknown task 'gsm8kk'. Did you
                            # mean 'gsm8k'? Known tasks: [...]

A name maps to one value: registering another value under a taken name is
an error (the same value again, e.g. on a module reload, is allowed; values
are compared with `same`, by default identity or, for classes, the
qualified name). `importer`, when given, runs before every lookup, so a
registry whose entries live in modules imported lazily is complete when it
is read. Prefix families ('rg/<dataset>') are factories taking the rest of
the name.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Generic, Iterator, Optional, TypeVar

V = TypeVar("V")


def _same(a: Any, b: Any) -> bool:
  if a is b:
    return True
  return (isinstance(a, type) and isinstance(b, type)
          and a.__module__ == b.__module__
          and a.__qualname__ == b.__qualname__)


class Registry(Generic[V]):
  """Values by name, with did-you-mean errors.

  Args:
    kind: what the values are, for messages ('task', 'model preset').
    importer: called before lookups (imports the modules that register).
    check: called as check(name, value) at registration; raises on a bad
      value.
    plural: the plural of `kind` (default kind + 's').
  """

  def __init__(self, kind: str, *, importer: Optional[Callable[[], Any]] = None,
               check: Optional[Callable[[str, Any], None]] = None,
               plural: Optional[str] = None):
    self.kind = kind
    self.plural = plural or f"{kind}s"
    self._importer = importer
    self._check = check
    self._values: dict[str, V] = {}
    self._prefixes: dict[str, Callable[..., V]] = {}

  # -- registration ---------------------------------------------------------

  def add(self, name: str, value: V) -> V:
    """Registers `value` under `name`; returns it."""
    if not isinstance(name, str) or not name:
      raise ValueError(f"{self.kind.capitalize()} name must be a non-empty "
                       f"string, got {name!r}.")
    if self._check is not None:
      self._check(name, value)
    old = self._values.get(name)
    if old is not None and not _same(old, value):
      raise ValueError(f"{self.kind.capitalize()} name {name!r} is already "
                       f"registered to {_describe(old)}.")
    self._values[name] = value
    return value

  def register(self, name: str) -> Callable[[V], V]:
    """Decorator form of `add`."""
    if not isinstance(name, str) or not name:
      raise ValueError(f"{self.kind.capitalize()} name must be a non-empty "
                       f"string, got {name!r}.")
    return lambda value: self.add(name, value)

  def add_prefix(self, prefix: str, factory: Callable[..., V]) -> None:
    """Names '<prefix>/<rest>' resolve to `factory(rest, ...)` in `build`."""
    self._prefixes[prefix] = factory

  # -- lookup -----------------------------------------------------------------

  def _load(self) -> None:
    if self._importer is not None:
      self._importer()

  def names(self) -> list[str]:
    """Sorted registered names (prefix families as '<prefix>/<name>')."""
    self._load()
    return sorted(self._values) + sorted(f"{p}/<name>"
                                         for p in self._prefixes)

  def __contains__(self, name: object) -> bool:
    self._load()
    return isinstance(name, str) and name in self._values

  def __iter__(self) -> Iterator[str]:
    return iter(self.names())

  def get(self, name: str) -> V:
    """The value registered as `name`; ValueError naming the closest names."""
    self._load()
    if isinstance(name, str) and name in self._values:
      return self._values[name]
    raise self.unknown(name)

  def build(self, name: str, *args, **kwargs) -> Any:
    """`get(name)(*args, **kwargs)`, or a prefix family's factory."""
    self._load()
    if isinstance(name, str) and name not in self._values and "/" in name:
      prefix, rest = name.split("/", 1)
      if prefix in self._prefixes:
        return self._prefixes[prefix](rest, *args, **kwargs)
    return self.get(name)(*args, **kwargs)

  def unknown(self, name: Any) -> ValueError:
    """The error for a name that is not registered."""
    known = sorted(self._values)
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    also = ", ".join(f"'{p}/<name>'" for p in sorted(self._prefixes))
    return ValueError(
        f"Unknown {self.kind} {name!r}.{hint} Known {self.plural}: {known}"
        + (f"; also {also}." if also else "."))


def _describe(value: Any) -> str:
  if isinstance(value, type) or callable(value):
    return getattr(value, "__qualname__", repr(value))
  return repr(value)
