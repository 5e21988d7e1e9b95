"""Tests for swirl_jax.tools.functions: specs, parsing, validation, dispatch."""

import json

import pytest

from swirl_jax.tools import base
from swirl_jax.tools import functions as fc
from swirl_jax.tools.functions import (FunctionCallingTool, FunctionSpec, calls_match,
                                       is_parse_error, parse_calls, validate_call)

# APIGen / xLAM style.
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "city": {"type": "str", "description": "City name."},
        "days": {"type": "int, optional", "description": "Forecast days.", "default": 1},
        "units": {"type": "str", "description": "metric or imperial.", "default": "metric"},
    },
}
# Standard JSON Schema style.
ADD = {
    "name": "add",
    "description": "Adds numbers.",
    "parameters": {
        "type": "object",
        "properties": {
            "a": {"type": "number"},
            "b": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["a", "b"],
    },
}
SPECS = [FunctionSpec.from_json(WEATHER), FunctionSpec.from_json(ADD)]


def test_spec_from_apigen():
  spec = FunctionSpec.from_json(WEATHER)
  assert spec.name == "get_weather"
  assert spec.required == ("city",)
  assert spec.properties["city"]["type"] == "string"
  assert spec.properties["days"]["type"] == "integer"
  schema = spec.schema()
  assert schema["additionalProperties"] is False
  assert FunctionSpec.from_json(spec.to_json()) == spec   # round trip
  assert FunctionSpec.from_json(json.dumps(WEATHER)) == spec


def test_spec_from_json_schema_and_openai_wrapper():
  spec = FunctionSpec.from_json(ADD)
  assert spec.required == ("a", "b")
  wrapped = FunctionSpec.from_json({"type": "function", "function": ADD})
  assert wrapped == spec
  empty = FunctionSpec.from_json({"name": "now"})
  assert empty.properties == {} and empty.required == ()


@pytest.mark.parametrize("bad, fragment", [
    ({"description": "no name"}, "needs a 'name'"),
    ([1, 2], "must be an object"),
    ({"name": "f", "parameters": [1]}, "'parameters' must be an object"),
    ({"name": "f", "parameters": {"type": "object", "properties": {},
                                  "required": ["x"]}}, "not among its properties"),
    ({"name": "f", "parameters": {"x": 3}}, "parameter schema must be an object"),
    ({"name": "f", "parameters": {"x": {"type": "integer", "minimum": "zero"}}},
     "invalid schema"),
])
def test_spec_errors(bad, fragment):
  with pytest.raises(ValueError, match=fragment):
    FunctionSpec.from_json(bad)


@pytest.mark.parametrize("type_name, schema, optional", [
    ("str", {"type": "string"}, False),
    ("int", {"type": "integer"}, False),
    ("float", {"type": "number"}, False),
    ("bool", {"type": "boolean"}, False),
    ("List[int]", {"type": "array", "items": {"type": "integer"}}, False),
    ("list", {"type": "array"}, False),
    ("Dict[str, Any]", {"type": "object"}, False),
    ("Dict[str, int]", {"type": "object", "additionalProperties": {"type": "integer"}},
     False),
    ("str, optional", {"type": "string"}, True),
    ("Optional[float]", {"anyOf": [{"type": "number"}, {"type": "null"}]}, True),
    ("Union[int, float]", {"anyOf": [{"type": "integer"}, {"type": "number"}]}, False),
    ("Tuple[int, int]", {"type": "array", "items": {"type": "integer"}}, False),
    ("Callable", {}, False),
    ("Any", {}, False),
    ("some odd type!", {}, False),
])
def test_python_type_names(type_name, schema, optional):
  assert fc.python_type_to_schema(type_name) == (schema, optional)


def test_parse_calls_valid_forms():
  one = parse_calls('{"name": "add", "arguments": {"a": 1, "b": 2}}')
  assert one == [{"name": "add", "arguments": {"a": 1, "b": 2}}]
  many = parse_calls('[{"name": "add", "arguments": {"a": 1, "b": 2}}, '
                     '{"name": "get_weather", "arguments": {"city": "Paris"}}]')
  assert [c["name"] for c in many] == ["add", "get_weather"]
  as_string = parse_calls('{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": 2}"}')
  assert as_string[0]["arguments"] == {"a": 1, "b": 2}
  assert parse_calls('{"name": "add", "parameters": {"a": 1}}')[0]["arguments"] == {"a": 1}
  assert parse_calls('{"name": "now"}') == [{"name": "now", "arguments": {}}]
  fenced = parse_calls('```json\n{"name": "now", "arguments": {}}\n```')
  assert fenced == [{"name": "now", "arguments": {}}]


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"),
    ("{", "malformed JSON at line 1"),
    ('{"name": "add", "arguments": {"a": 1,}}', "malformed JSON"),
    ("add(1, 2)", "malformed JSON"),
    ("[]", "empty list"),
    ("42", "must be a JSON object"),
    ('["add"]', "call 0 must be a JSON object"),
    ('{"arguments": {}}', "needs a string 'name'"),
    ('{"name": 3}', "needs a string 'name'"),
    ('{"name": "add", "arguments": [1, 2]}', "must be a JSON object, got an array"),
    ('{"name": "add", "arguments": "{bad"}', "not valid JSON"),
    ("[" * 100_000, "nested too deeply"),
    ("1" * 5000, "malformed JSON"),
    ("x" * (fc.MAX_CALL_CHARS + 1), "too long"),
])
def test_parse_calls_malformed(text, fragment):
  result = parse_calls(text)
  assert is_parse_error(result)
  assert result[0]["error"] == "format_error"
  assert fragment in result[0]["message"], result


def test_validate_valid_calls():
  assert validate_call({"name": "get_weather", "arguments": {"city": "Paris"}}, SPECS) == []
  assert validate_call({"name": "get_weather", "arguments": {"city": "Paris", "days": 3,
                                                              "units": "imperial"}},
                       SPECS) == []
  assert validate_call({"name": "add", "arguments": {"a": 1, "b": 2.5, "tags": ["x"]}},
                       {s.name: s for s in SPECS}) == []
  assert validate_call({"name": "add", "arguments": {"a": 1, "b": 2}}, [ADD]) == []


def test_validate_unknown_function():
  errors = validate_call({"name": "get_wether", "arguments": {}}, SPECS)
  assert len(errors) == 1
  assert "unknown function 'get_wether'" in errors[0]
  assert "add, get_weather" in errors[0] and "Did you mean 'get_weather'" in errors[0]


def test_validate_missing_unexpected_and_types():
  assert validate_call({"name": "add", "arguments": {"a": 1}}, SPECS) == [
      "missing required argument 'b' for 'add'."]
  errors = validate_call({"name": "add", "arguments": {"a": 1, "b": 2, "c": 3}}, SPECS)
  assert len(errors) == 1 and "unexpected argument 'c' for 'add'" in errors[0]
  errors = validate_call({"name": "add", "arguments": {"a": "one", "b": 2}}, SPECS)
  assert len(errors) == 1 and "wrong type for argument 'a' of 'add'" in errors[0]
  assert "'one' is not of type 'number'" in errors[0]
  errors = validate_call({"name": "get_weather", "arguments": {"city": 3, "days": 1.5}},
                         SPECS)
  assert len(errors) == 2
  assert all("wrong type" in e for e in errors)
  errors = validate_call({"name": "get_weather", "arguments": {"days": True}}, SPECS)
  assert "missing required argument 'city'" in errors[0]
  assert "wrong type for argument 'days'" in errors[1]   # bool is not an integer
  errors = validate_call({"name": "add", "arguments": {"a": 1, "b": 2, "tags": [1]}},
                         SPECS)
  assert len(errors) == 1 and "'tags'" in errors[0]


def test_validate_format_errors():
  assert "format error" in validate_call("add", SPECS)[0]   # type: ignore[arg-type]
  assert "format error" in validate_call({"name": 3}, SPECS)[0]
  assert "format error" in validate_call({"name": "add", "arguments": [1]}, SPECS)[0]
  assert "format error" in validate_call(parse_calls("{")[0], SPECS)[0]


def test_long_values_are_shortened_in_messages():
  errors = validate_call({"name": "add", "arguments": {"a": "x" * 10_000, "b": 1}}, SPECS)
  assert len(errors[0]) < 400


def test_tool_dispatch():
  calls = []

  def add(a, b, tags=()):
    calls.append((a, b))
    return {"sum": a + b}

  def get_weather(city, days=1, units="metric"):
    return f"sunny in {city} for {days} days"

  tool = FunctionCallingTool({"add": (add, ADD), "get_weather": (get_weather, WEATHER)},
                             use_global=False)
  assert tool.tag == "tool_call"
  assert "add" in tool.describe() and "get_weather" in tool.describe()
  assert json.loads(tool.describe_functions())[0]["name"] == "add"
  assert json.loads(tool.execute('{"name": "add", "arguments": {"a": 2, "b": 3}}')) == {
      "sum": 5}
  both = tool.execute('[{"name": "add", "arguments": {"a": 1, "b": 1}}, '
                      '{"name": "get_weather", "arguments": {"city": "Oslo"}}]')
  assert json.loads(both) == [{"sum": 2}, "sunny in Oslo for 1 days"]
  # Invalid calls are never dispatched.
  n = len(calls)
  for bad in ['{"name": "add", "arguments": {"a": 1}}',
              '{"name": "sub", "arguments": {}}',
              '[{"name": "add", "arguments": {"a": 1, "b": 1}}, {"name": "nope"}]',
              "not json"]:
    result = tool.execute(bad)
    assert result.startswith("Error:"), result
  assert len(calls) == n
  assert "format error" in tool.execute("not json")


def test_tool_function_errors_and_truncation():
  def boom(x):
    raise KeyError("secret detail")

  def big():
    return "y" * 10_000

  def weird():
    return object()

  tool = FunctionCallingTool(use_global=False, max_result_chars=100)
  tool.register_function("boom", boom, {"name": "boom", "parameters": {"x": {"type": "int"}}})
  tool.register_function("big", big, {"name": "big"})
  tool.register_function("weird", weird, {"name": "weird"})
  result = tool.execute('{"name": "boom", "arguments": {"x": 1}}')
  assert result.startswith("Error: function 'boom' failed: KeyError")
  result = tool.execute('{"name": "big"}')
  assert len(result) == 100 and result.endswith("...")
  assert tool.execute('{"name": "weird"}').startswith('"<object object')
  with pytest.raises(ValueError, match="spec is named"):
    tool.register_function("other", big, {"name": "big"})
  with pytest.raises(TypeError, match="not callable"):
    tool.register_function("big", 3, {"name": "big"})


def test_global_registry_and_get_tool():
  fc.register_function("echo", lambda text: text,
                       {"name": "echo", "parameters": {"text": {"type": "str"}}})
  try:
    tool = base.get_tool("functions")
    assert tool.run('{"name": "echo", "arguments": {"text": "hi"}}') == '"hi"'
    assert "echo" in tool.specs
    local = FunctionCallingTool(use_global=False)
    assert local.run('{"name": "echo", "arguments": {"text": "hi"}}').startswith("Error:")
  finally:
    fc.unregister_function("echo")
  assert base.get_tool("functions").run('{"name": "echo"}').startswith("Error:")


def test_calls_match():
  gold = [{"name": "add", "arguments": {"a": 1, "b": 2}},
          {"name": "get_weather", "arguments": {"city": "Paris"}}]
  assert calls_match(list(reversed(gold)), gold)
  assert calls_match([{"name": "add", "arguments": {"b": 2.0, "a": 1}}], gold[:1])
  assert calls_match([{"name": "add", "arguments": '{"a": 1, "b": 2}'}], gold[:1])
  assert not calls_match(gold[:1], gold)
  assert not calls_match([{"name": "add", "arguments": {"a": 1, "b": 3}}], gold[:1])
  assert not calls_match([{"name": "sum", "arguments": {"a": 1, "b": 2}}], gold[:1])
  assert not calls_match([{"name": "add", "arguments": {"a": 1, "c": 2}}], gold[:1])
  assert not calls_match(parse_calls("{"), gold[:1])
  assert not calls_match([gold[0], gold[0]], [gold[0], gold[1]])
