"""Parsing gin files and bindings with errors that name the bad binding.

gin reports unknown configurables and parameters, but without suggestions,
and it does not check types. `parse` adds the closest valid names, and
`check_binding_types` compares every bound value with the annotation of the
parameter it binds, before any work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import re
import typing
from typing import Any, Optional, Sequence

import gin
from gin import config as gin_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class GinConfigError(ValueError):
  """A gin file or binding is wrong; the message says which and why."""


def _configurable_names() -> list[str]:
  names = []
  for selector, configurable in gin_config._REGISTRY.items():  # pylint: disable=protected-access
    names.append(selector)
    names.append(getattr(configurable, "name", selector))
  return sorted(set(names))


def _suggest(name: str, candidates: Sequence[str]) -> str:
  close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
  if not close:  # try the last dotted component
    tail = name.rsplit(".", 1)[-1]
    close = [c for c in candidates if c.rsplit(".", 1)[-1] == tail][:3] or \
        difflib.get_close_matches(tail, candidates, n=3, cutoff=0.5)
  return f" Closest valid names: {close}." if close else ""


def _params_of(configurable_name: str) -> list[str]:
  try:
    configurable = gin_config._REGISTRY.get_match(configurable_name)  # pylint: disable=protected-access
  except Exception:  # pylint: disable=broad-except
    return []
  if configurable is None:
    return []
  fn = configurable.wrapped
  try:
    return list(inspect.signature(fn).parameters)
  except (TypeError, ValueError):
    return []


def _settings_owner(configurable_name: str, param: str) -> Optional[str]:
  """The gin name of a settings dataclass that `configurable_name` takes
  (an argument annotated with it) and that has a field `param`."""
  try:
    configurable = gin_config._REGISTRY.get_match(configurable_name)  # pylint: disable=protected-access
    hints = typing.get_type_hints(configurable.wrapped)
  except Exception:  # pylint: disable=broad-except
    return None
  for hint in hints.values():
    for cls in (hint, *typing.get_args(hint)):
      if dataclasses.is_dataclass(cls) and param in {
          f.name for f in dataclasses.fields(cls)}:
        for selector, other in gin_config._REGISTRY.items():  # pylint: disable=protected-access
          if getattr(other.wrapped, "__wrapped__", other.wrapped) is cls or (
              isinstance(other.wrapped, type) and issubclass(other.wrapped, cls)):
            return selector
  return None


def explain_error(error: Exception) -> str:
  """A gin error message plus the closest valid names."""
  msg = str(error)
  m = re.search(r"No configurable matching (?:reference )?'@?([\w./]+)", msg)
  if m:
    return msg + _suggest(m.group(1).split("/")[-1], _configurable_names())
  m = re.search(r"Configurable '([\w.]+)' doesn't have a parameter named "
                r"'(\w+)'", msg)
  if m:
    params = _params_of(m.group(1))
    owner = _settings_owner(m.group(1), m.group(2))
    if owner:
      return (msg + f" {m.group(2)!r} is a field of its settings "
              f"dataclass: bind {owner}.{m.group(2)} (--gin.{owner}."
              f"{m.group(2)}=VALUE).")
    return msg + _suggest(m.group(2), params) + (
        f" Parameters of {m.group(1)}: {params}." if params else "")
  m = re.search(r"Required bindings for `?(\w+)`? not provided in config: "
                r"\[(.*)\]", msg)
  if m:
    return (msg + f" Bind them in a gin file or with "
            f"--gin.{m.group(1)}.NAME=VALUE.")
  return msg


def parse(gin_files: Sequence[str], bindings: Sequence[str],
          search_paths: Sequence[str] = ()) -> None:
  """Parses files and bindings; raises GinConfigError with suggestions."""
  for path in (os.getcwd(), REPO_ROOT, *search_paths):
    gin.add_config_file_search_path(path)
  for f in gin_files:
    if not any(os.path.exists(os.path.join(p, f)) for p in
               ("", os.getcwd(), REPO_ROOT, *search_paths)):
      raise GinConfigError(f"gin file {f!r} not found (searched the current "
                           f"directory and {REPO_ROOT}).")
  try:
    gin.parse_config_files_and_bindings(list(gin_files), list(bindings),
                                        finalize_config=False)
  except (ValueError, KeyError, SyntaxError, IOError) as e:
    raise GinConfigError(explain_error(e)) from None
  check_binding_types()
  check_macro_bindings(bindings)


def _macro_references(value: Any, out: set) -> set:
  """Adds the names of the %MACROs `value` refers to (in containers too)."""
  if isinstance(value, gin_config.ConfigurableReference):
    if value.selector == "gin.macro":  # %NAME is 'NAME/gin.macro'
      out.add(value.scoped_selector.rsplit("/", 1)[0])
  elif isinstance(value, dict):
    for v in value.values():
      _macro_references(v, out)
  elif isinstance(value, (list, tuple, set)):
    for v in value:
      _macro_references(v, out)
  return out


def check_macro_bindings(bindings: Sequence[str]) -> None:
  """Raises GinConfigError for a command-line macro no gin file uses.

  `--gin.CHEKPOINT=...` (misspelt) would otherwise define a new macro that
  nothing reads, and the run would go on with the file's value.
  """
  used: set = set()
  for params in gin_config._CONFIG.values():  # pylint: disable=protected-access
    for value in params.values():
      _macro_references(value, used)
  for binding in bindings:
    m = re.match(r"\s*([A-Za-z_][\w]*)\s*=", binding)
    if m and m.group(1) not in used:
      name = m.group(1)
      close = difflib.get_close_matches(name, sorted(used), n=3, cutoff=0.5)
      raise GinConfigError(
          f"--gin.{name}=... sets the macro %{name}, which no gin file uses."
          + (f" Closest macros in use: {close}." if close else
             f" Macros in use: {sorted(used)}."))


def _matches(value: Any, annotation: Any) -> bool:
  """Loose isinstance against a type annotation (unknown -> True)."""
  if annotation is inspect.Parameter.empty or annotation is Any:
    return True
  if isinstance(value, gin_config.ConfigurableReference) or type(
      value).__name__ == "_UnknownConfigurableReference":
    return True
  if value is gin.REQUIRED:
    return True
  origin = typing.get_origin(annotation)
  args = typing.get_args(annotation)
  if origin is typing.Union or (origin is not None and
                                str(origin) == "<class 'types.UnionType'>"):
    return any(_matches(value, a) for a in args)
  if annotation is type(None):
    return value is None
  if annotation is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if annotation is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if annotation in (str, bool):
    return isinstance(value, annotation)
  if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
    return isinstance(value, (list, tuple))
  if origin is dict or annotation is dict:
    return isinstance(value, dict)
  return True


def _resolve_macro(value: Any, depth: int = 0) -> Any:
  """The value behind %MACRO references (other references stay as they are)."""
  if not isinstance(value, gin_config.ConfigurableReference) or depth >= 10:
    return value
  if value.scoped_selector.split("/")[0] == "gin.REQUIRED":
    return gin.REQUIRED
  if value.selector == "gin.macro":
    try:
      inner = gin.query_parameter(f"{value.scoped_selector}.value")
    except ValueError:
      return value
    return _resolve_macro(inner, depth + 1)
  return value


def check_binding_types() -> None:
  """Raises GinConfigError for a bound value whose type contradicts the
  annotation of its parameter (e.g. train.train_steps = 'ten')."""
  for (scope, selector), params in gin_config._CONFIG.items():  # pylint: disable=protected-access
    try:
      configurable = gin_config._REGISTRY.get_match(selector)  # pylint: disable=protected-access
    except Exception:  # pylint: disable=broad-except
      continue
    if configurable is None:
      continue
    fn = configurable.wrapped
    try:
      hints = typing.get_type_hints(fn)
    except Exception:  # pylint: disable=broad-except
      hints = {}
    for name, raw in params.items():
      value = _resolve_macro(raw)
      if value is gin.REQUIRED and selector == "gin.macro":
        raise GinConfigError(
            f"Required value {scope} (declared %gin.REQUIRED) is not "
            f"provided; set it in the experiment's gin file or with "
            f"--gin.{scope}=VALUE.")
      if value is gin.REQUIRED:
        where = f"{scope}/{selector}" if scope else selector
        macro = (raw.scoped_selector.split("/")[0]
                 if isinstance(raw, gin_config.ConfigurableReference) else "")
        if macro == "gin.REQUIRED":
          macro = ""
        via = f" (through %{macro})" if macro else ""
        raise GinConfigError(
            f"Required binding {where}.{name}{via} is not provided; set it "
            f"in a gin file or with --gin.{macro or where + '.' + name}"
            "=VALUE.")
      if name in hints and not _matches(value, hints[name]):
        where = f"{scope}/{selector}" if scope else selector
        raise GinConfigError(
            f"Binding {where}.{name} = {value!r} has type "
            f"{type(value).__name__}, but {selector}.{name} expects "
            f"{hints[name]}.")
