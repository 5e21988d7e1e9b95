"""Function calling with JSON-schema-described tools (APIGen / xLAM style).

A function is described as in APIGen:

  {"name": "get_weather", "description": "...",
   "parameters": {"city": {"type": "str", "description": "..."},
                  "units": {"type": "str, optional", "default": "metric"}}}

(Python-style type names such as `int`, `List[str]`, `Optional[float]`,
`str, optional`; a parameter is required unless it has a default or is
optional), or with a standard JSON Schema object:

  {"name": ..., "description": ..., "parameters": {"type": "object",
   "properties": {...}, "required": [...]}}

(optionally wrapped as {"type": "function", "function": {...}}).

A model calls functions with a JSON object or a list of objects, each
`{"name": ..., "arguments": {...}}`, inside `<tool_call> ... </tool_call>`.
Model text is only ever parsed with `json.loads`; calls are validated
against the schema (with `jsonschema`) and dispatched to trusted Python
implementations registered on the host.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from typing import Any, Callable, Iterable, Mapping, Optional, Union

from swirl_jax.tools import base

MAX_CALL_CHARS = 100_000
FORMAT_ERROR = "format_error"

_JSON_TYPES = ("string", "integer", "number", "boolean", "array", "object", "null")
_SIMPLE_TYPES = {
    "str": "string", "string": "string", "text": "string",
    "int": "integer", "integer": "integer", "long": "integer",
    "float": "number", "number": "number", "double": "number", "decimal": "number",
    "bool": "boolean", "boolean": "boolean",
    "none": "null", "nonetype": "null", "null": "null",
}
_ARRAY_TYPES = ("list", "array", "sequence", "iterable", "set", "frozenset", "tuple")
_OBJECT_TYPES = ("dict", "object", "mapping", "map")
_TYPE_TOKEN_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.]*|\[|\]|,)")
_FENCE_RE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?```$", re.DOTALL)


# --- Python-style type names -> JSON Schema ------------------------------------


def python_type_to_schema(type_name: str) -> tuple[dict[str, Any], bool]:
  """Maps an APIGen type string to (JSON Schema, optional).

  `"List[int]"` -> ({"type": "array", "items": {"type": "integer"}}, False);
  `"str, optional"` and `"Optional[str]"` are optional. Unknown names (`Any`,
  `Callable`, ...) map to {} (no constraint) rather than rejecting calls.
  """
  text = type_name.strip()
  optional = False
  if re.search(r",\s*optional\s*$", text, flags=re.IGNORECASE):
    optional = True
    text = re.sub(r",\s*optional\s*$", "", text, flags=re.IGNORECASE)
  tokens = [m.group(1) for m in _TYPE_TOKEN_RE.finditer(text)]
  if "".join(tokens) != re.sub(r"\s+", "", text) or not tokens:
    return {}, optional
  try:
    schema, end = _parse_type(tokens, 0)
  except (IndexError, ValueError):
    return {}, optional
  if end != len(tokens):
    return {}, optional
  if schema.pop("x-optional", False):
    optional = True
  return schema, optional


def _parse_type(tokens: list[str], i: int) -> tuple[dict[str, Any], int]:
  name = tokens[i].split(".")[-1]
  i += 1
  args = []
  if i < len(tokens) and tokens[i] == "[":
    i += 1
    while True:
      if tokens[i] == "]":   # e.g. "List[]"
        i += 1
        break
      arg, i = _parse_type(tokens, i)
      args.append(arg)
      if tokens[i] == ",":
        i += 1
      elif tokens[i] == "]":
        i += 1
        break
      else:
        raise ValueError(tokens[i])
  key = name.lower()
  if key in _SIMPLE_TYPES:
    return {"type": _SIMPLE_TYPES[key]}, i
  if key in _ARRAY_TYPES:
    schema: dict[str, Any] = {"type": "array"}
    items = args[:1]
    if key == "tuple":
      items = []
      for a in args:
        if a and a not in items:
          items.append(a)
    if len(items) == 1 and items[0]:
      schema["items"] = items[0]
    elif len(items) > 1:
      schema["items"] = {"anyOf": items}
    return schema, i
  if key in _OBJECT_TYPES:
    schema = {"type": "object"}
    if len(args) == 2 and args[1]:
      schema["additionalProperties"] = args[1]
    return schema, i
  if key == "optional" and len(args) == 1:
    inner = args[0]
    return ({"anyOf": [inner, {"type": "null"}], "x-optional": True} if inner
            else {"x-optional": True}), i
  if key == "union" and args:
    if any(not a for a in args):
      return {}, i
    return {"anyOf": args}, i
  if key == "literal":
    return {}, i
  return {}, i   # Any, Callable, custom classes: no constraint


def _normalize_property(prop: Any) -> tuple[dict[str, Any], bool]:
  """A property schema with Python-style 'type' names mapped; (schema, optional)."""
  if not isinstance(prop, Mapping):
    raise ValueError(f"parameter schema must be an object, got {type(prop).__name__}.")
  schema = dict(prop)
  optional = "default" in schema
  kind = schema.get("type")
  if isinstance(kind, str) and kind not in _JSON_TYPES:
    mapped, opt = python_type_to_schema(kind)
    optional = optional or opt
    del schema["type"]
    schema.update(mapped)
  return schema, optional


# --- specs ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FunctionSpec:
  """A callable function as the model sees it.

  Attributes:
    name: function name.
    description: one or more sentences for the prompt.
    properties: parameter name -> JSON Schema of its value.
    required: names of the required parameters.
  """

  name: str
  description: str = ""
  properties: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  required: tuple[str, ...] = ()

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name:
      raise ValueError(f"Function name must be a non-empty string, got {self.name!r}.")
    unknown = [r for r in self.required if r not in self.properties]
    if unknown:
      raise ValueError(f"Function {self.name!r}: required parameters {unknown} "
                       "are not among its properties.")
    object.__setattr__(self, "required", tuple(self.required))

  @classmethod
  def from_json(cls, d: Union[Mapping[str, Any], str]) -> "FunctionSpec":
    """Builds a spec from an APIGen or JSON Schema description (dict or JSON text)."""
    if isinstance(d, str):
      d = json.loads(d)
    if not isinstance(d, Mapping):
      raise ValueError(
          f"Function description must be an object, got {type(d).__name__}.")
    if d.get("type") == "function" and isinstance(d.get("function"), Mapping):
      d = d["function"]
    name = d.get("name")
    if not isinstance(name, str) or not name:
      raise ValueError(f"Function description needs a 'name', got {name!r}.")
    params = d.get("parameters") or {}
    if not isinstance(params, Mapping):
      raise ValueError(f"Function {name!r}: 'parameters' must be an object, "
                       f"got {type(params).__name__}.")
    properties, required = {}, []
    json_schema = (params.get("type") == "object" and
                   isinstance(params.get("properties", {}), Mapping))
    if json_schema:
      declared = params.get("required", [])
      if not (isinstance(declared, list) and all(isinstance(r, str) for r in declared)):
        raise ValueError(f"Function {name!r}: 'required' must be a list of names.")
      for pname, prop in params.get("properties", {}).items():
        properties[pname], _ = _normalize_property(prop)
      required = [r for r in declared if r in properties]
      missing = [r for r in declared if r not in properties]
      if missing:
        raise ValueError(f"Function {name!r}: required parameters {missing} "
                         "are not among its properties.")
    else:
      for pname, prop in params.items():
        properties[pname], optional = _normalize_property(prop)
        if not optional:
          required.append(pname)
    import jsonschema  # pylint: disable=import-outside-toplevel
    for pname, prop in properties.items():
      try:
        jsonschema.Draft202012Validator.check_schema(prop)
      except jsonschema.SchemaError as e:
        raise ValueError(f"Function {name!r}: parameter {pname!r} has an invalid "
                         f"schema: {getattr(e, 'message', e)}") from None
    return cls(name=name, description=str(d.get("description", "")),
               properties=properties, required=tuple(required))

  def to_json(self) -> dict[str, Any]:
    """The standard JSON Schema form (for prompts and round trips)."""
    return {"name": self.name, "description": self.description,
            "parameters": self.schema(strict=False)}

  def schema(self, strict: bool = True) -> dict[str, Any]:
    """The arguments object schema (`strict`: no additional properties)."""
    out = {"type": "object",
           "properties": {k: dict(v) for k, v in self.properties.items()},
           "required": list(self.required)}
    if strict:
      out["additionalProperties"] = False
    return out

  def validators(self) -> dict[str, Any]:
    """Compiled per-parameter validators (cached)."""
    cached = self.__dict__.get("_validators")
    if cached is None:
      import jsonschema  # pylint: disable=import-outside-toplevel
      cached = {k: jsonschema.Draft202012Validator(dict(v))
                for k, v in self.properties.items()}
      object.__setattr__(self, "_validators", cached)
    return cached


SpecLike = Union[FunctionSpec, Mapping[str, Any]]
SpecsLike = Union[Mapping[str, FunctionSpec], Iterable[SpecLike]]
Entry = tuple[Callable[..., Any], FunctionSpec]
Implementations = Mapping[str, tuple[Callable[..., Any], SpecLike]]


def as_specs(specs: SpecsLike) -> dict[str, FunctionSpec]:
  """name -> FunctionSpec from a mapping, or a list of specs / descriptions."""
  if isinstance(specs, Mapping):
    items = specs.values()
  else:
    items = specs
  out = {}
  for s in items:
    spec = s if isinstance(s, FunctionSpec) else FunctionSpec.from_json(s)
    out[spec.name] = spec
  return out


# --- parsing and validating calls -------------------------------------------------


def _format_error(message: str) -> list[dict[str, Any]]:
  return [{"error": FORMAT_ERROR, "message": message}]


def is_parse_error(calls: list[dict[str, Any]]) -> bool:
  """True if `parse_calls` reported malformed input."""
  return bool(calls) and "error" in calls[0]


def parse_calls(text: str) -> list[dict[str, Any]]:
  """Parses a JSON call or list of calls into `[{"name", "arguments"}, ...]`.

  Accepts `{"name": ..., "arguments": {...}}` (or "parameters"; arguments may
  also be a JSON-encoded string) or a list of such objects, optionally in a
  ``` code fence. On malformed input returns one structured error:
  `[{"error": "format_error", "message": ...}]` (see `is_parse_error`).
  """
  if not isinstance(text, str):
    return _format_error(f"call must be text, got {type(text).__name__}.")
  text = text.strip()
  fence = _FENCE_RE.match(text)
  if fence:
    text = fence.group(1).strip()
  if not text:
    return _format_error("empty function call.")
  if len(text) > MAX_CALL_CHARS:
    return _format_error(f"function call is too long ({len(text)} characters).")
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    return _format_error(
        f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}.")
  except RecursionError:
    return _format_error("malformed JSON: nested too deeply.")
  except ValueError as e:   # e.g. an integer literal with more than 4300 digits
    return _format_error(f"malformed JSON: {e}.")
  items = data if isinstance(data, list) else [data]
  if not items:
    return _format_error("empty list of function calls.")
  calls = []
  for i, item in enumerate(items):
    where = f"call {i}" if isinstance(data, list) else "call"
    if not isinstance(item, dict):
      return _format_error(f"{where} must be a JSON object, got {_json_type(item)}.")
    name = item.get("name")
    if not isinstance(name, str) or not name:
      return _format_error(f"{where} needs a string 'name', got {_short(name)}.")
    args = item.get("arguments", item.get("parameters", {}))
    if isinstance(args, str):
      try:
        args = json.loads(args) if args.strip() else {}
      except (ValueError, RecursionError) as e:
        return _format_error(
            f"{where} to {name!r}: 'arguments' is not valid JSON ({e}).")
    if args is None:
      args = {}
    if not isinstance(args, dict):
      return _format_error(f"{where} to {name!r}: 'arguments' must be a JSON "
                           f"object, got {_json_type(args)}.")
    calls.append({"name": name, "arguments": args})
  return calls


def validate_call(call: Mapping[str, Any], specs: SpecsLike) -> list[str]:
  """Error messages for one call (empty if valid).

  Checks, in order: the call's shape, unknown function, missing required
  arguments, unexpected arguments, argument types / values (jsonschema).
  """
  specs = as_specs(specs)
  if not isinstance(call, Mapping):
    return [f"format error: a call must be an object, got {type(call).__name__}."]
  if "error" in call:
    return [f"format error: {call.get('message', call['error'])}"]
  name = call.get("name")
  if not isinstance(name, str):
    return [f"format error: call needs a string 'name', got {_short(name)}."]
  if name not in specs:
    close = difflib.get_close_matches(name, list(specs), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    known = ", ".join(sorted(specs)) or "(none)"
    return [f"unknown function {_short(name)}; available: {known}.{hint}"]
  spec = specs[name]
  args = call.get("arguments", {})
  if not isinstance(args, Mapping):
    return [f"format error: arguments of {name!r} must be an object, got "
            f"{type(args).__name__}."]
  errors = []
  for param in spec.required:
    if param not in args:
      errors.append(f"missing required argument {param!r} for {name!r}.")
  for param in sorted(set(args) - set(spec.properties), key=str):
    errors.append(f"unexpected argument {_short(param)} for {name!r}; expected "
                  f"one of: {', '.join(spec.properties) or '(none)'}.")
  validators = spec.validators()
  for param in spec.properties:
    if param not in args:
      continue
    problems = sorted(validators[param].iter_errors(args[param]),
                      key=lambda e: (len(e.path), str(e.message)))
    if problems:
      message = problems[0].message
      if len(message) > 200:
        message = message[:197] + "..."
      errors.append(f"wrong type for argument {param!r} of {name!r}: {message}")
  return errors


def calls_match(predicted: Iterable[Mapping[str, Any]],
                gold: Iterable[Mapping[str, Any]]) -> bool:
  """True if the calls agree on function names, argument names and values.

  The APIGen / R3 criterion; the order of calls does not matter.
  """
  pred = [_canonical(c) for c in predicted]
  remaining = [_canonical(c) for c in gold]
  if len(pred) != len(remaining) or any(p is None for p in pred):
    return False
  for p in pred:
    for j, g in enumerate(remaining):
      if p == g:
        del remaining[j]
        break
    else:
      return False
  return True


def _canonical(call: Mapping[str, Any]) -> Optional[tuple[str, Any]]:
  if not isinstance(call, Mapping) or "error" in call:
    return None
  args = call.get("arguments", call.get("parameters", {}))
  if isinstance(args, str):
    try:
      args = json.loads(args)
    except (ValueError, RecursionError):
      return None
  return call.get("name"), args or {}


def _json_type(value: Any) -> str:
  return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
          int: "a number", float: "a number", type(None): "null"}.get(
              type(value), type(value).__name__)


def _short(value: Any, limit: int = 60) -> str:
  text = repr(value)
  return text if len(text) <= limit else text[:limit - 3] + "..."


# --- the tool -------------------------------------------------------------------


_GLOBAL_FUNCTIONS: dict[str, Entry] = {}


def _checked_entry(name: str, fn: Callable[..., Any], spec: SpecLike) -> Entry:
  if not callable(fn):
    raise TypeError(f"Function {name!r}: implementation {fn!r} is not callable.")
  spec = spec if isinstance(spec, FunctionSpec) else FunctionSpec.from_json(spec)
  if spec.name != name:
    raise ValueError(
        f"Function registered as {name!r} but its spec is named {spec.name!r}.")
  return fn, spec


def register_function(name: str, fn: Callable[..., Any], spec: SpecLike) -> None:
  """Registers a trusted host implementation for every `FunctionCallingTool`."""
  _GLOBAL_FUNCTIONS[name] = _checked_entry(name, fn, spec)


def unregister_function(name: str) -> None:
  """Removes a globally registered function (no error if absent)."""
  _GLOBAL_FUNCTIONS.pop(name, None)


@base.register_tool("functions")
class FunctionCallingTool(base.Tool):
  """Validates `<tool_call> JSON </tool_call>` calls and runs host functions.

  Functions registered on the instance shadow the global ones of
  `register_function`. The result is the JSON of the function's return value
  (a list of them for several calls), or an "Error: ..." string.
  """

  tag = "tool_call"

  def __init__(self, functions: Optional[Implementations] = None,
               max_result_chars: int = 2000, use_global: bool = True):
    self._functions: dict[str, Entry] = {}
    self._use_global = use_global
    self.max_result_chars = max_result_chars
    for name, (fn, spec) in (functions or {}).items():
      self.register_function(name, fn, spec)

  def register_function(self, name: str, fn: Callable[..., Any],
                        spec: SpecLike) -> None:
    """Registers a trusted implementation on this tool only."""
    self._functions[name] = _checked_entry(name, fn, spec)

  def _entries(self) -> dict[str, Entry]:
    entries = dict(_GLOBAL_FUNCTIONS) if self._use_global else {}
    entries.update(self._functions)
    return entries

  @property
  def specs(self) -> dict[str, FunctionSpec]:
    return {name: spec for name, (_, spec) in sorted(self._entries().items())}

  def describe(self) -> str:
    names = ", ".join(self.specs) or "(none registered)"
    return ('<tool_call> {"name": FUNCTION, "arguments": {...}} </tool_call>: '
            f"calls a function ({names}); a JSON list makes several calls.")

  def describe_functions(self) -> str:
    """The JSON list of function descriptions, for the prompt."""
    return json.dumps([s.to_json() for s in self.specs.values()], ensure_ascii=False)

  def execute(self, call: str) -> str:
    calls = parse_calls(call)
    if is_parse_error(calls):
      return f"{base.ERROR_PREFIX} format error: {calls[0]['message']}"
    entries = self._entries()
    specs = {name: spec for name, (_, spec) in entries.items()}
    errors = [e for c in calls for e in validate_call(c, specs)]
    if errors:
      return f"{base.ERROR_PREFIX} " + " ".join(errors)
    results = []
    for c in calls:
      fn = entries[c["name"]][0]
      try:
        results.append(fn(**c["arguments"]))
      except Exception as e:  # pylint: disable=broad-except
        return (f"{base.ERROR_PREFIX} function {c['name']!r} failed: "
                f"{type(e).__name__}: {e}")
    try:
      text = json.dumps(results[0] if len(results) == 1 else results,
                        ensure_ascii=False, default=str)
    except (TypeError, ValueError) as e:
      return f"{base.ERROR_PREFIX} result is not JSON-serialisable: {e}"
    if len(text) > self.max_result_chars:
      text = text[:self.max_result_chars - 3] + "..."
    return text
