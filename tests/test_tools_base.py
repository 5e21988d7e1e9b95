"""Tests for swirl_jax.tools.base: registry, call format, error handling."""

import pathlib
import re

import pytest

import swirl_jax.tools as tools
from swirl_jax.tools import base


def test_registry_lists_all_tools():
  assert tools.tool_names() == ["calculator", "functions", "python", "search"]
  assert isinstance(tools.get_tool("calculator"), tools.Calculator)


def test_unknown_tool_names_the_closest_match():
  with pytest.raises(ValueError) as info:
    tools.get_tool("serch")
  message = str(info.value)
  assert "'serch'" in message
  assert "['calculator', 'functions', 'python', 'search']" in message
  assert "Did you mean 'search'?" in message
  with pytest.raises(ValueError, match="Known tools"):
    tools.get_tool("zzzzzz")


def test_register_tool_validation():
  with pytest.raises(ValueError, match="non-empty"):
    base.register_tool("")
  with pytest.raises(TypeError, match="Tool subclass"):
    base.register_tool("x")(int)

  class NoTag(base.Tool):
    def describe(self):
      return ""

    def execute(self, call):
      return call

  with pytest.raises(ValueError, match="invalid tag"):
    base.register_tool("no_tag")(NoTag)

  class Other(NoTag):
    tag = "other"

  with pytest.raises(ValueError, match="already registered"):
    base.register_tool("calculator")(Other)


def test_run_turns_exceptions_into_errors():
  class Broken(base.Tool):
    name, tag = "broken", "broken"

    def describe(self):
      return "broken"

    def execute(self, call):
      raise RuntimeError("oops")

  class NotText(Broken):
    def execute(self, call):
      return 3

  assert Broken().run("x") == "Error: internal error in tool 'broken': RuntimeError: oops"
  assert NotText().run("x").startswith("Error:")
  assert Broken().run(None).startswith("Error:")   # type: ignore[arg-type]
  assert base.is_error("Error: x") and not base.is_error("42")


def test_call_format_helpers():
  assert base.format_call("math_exp", " 1 + 2 ") == "<math_exp> 1 + 2 </math_exp>"
  assert base.format_result(" 1 + 2 ", "3\n") == "1 + 2 -> 3"
  calc = tools.get_tool("calculator")
  text = "Let me compute. <math_exp> 2 * 21 </math_exp> <math_exp> 1 </math_exp>"
  assert base.parse_call(text, [calc]) == base.ToolCall("calculator", "2 * 21")
  assert base.parse_call("no call here", [calc]) is None
  assert base.parse_call("<math_exp> unclosed", [calc]) is None
  assert base.parse_call("<search_query> x </search_query>", [calc]) is None
  assert base.parse_call("<math_exp>\n1\n+2</math_exp>", [calc]).content == "1\n+2"
  assert calc.format_call("7") == "<math_exp> 7 </math_exp>"


def test_no_eval_or_exec_in_the_package():
  root = pathlib.Path(tools.__file__).parent
  banned = re.compile(r"(?<![\w.])(eval|exec|compile|__import__)\s*\(|"
                      r"^\s*(import|from)\s+ast\b", re.MULTILINE)
  for path in root.glob("*.py"):
    match = banned.search(path.read_text())
    assert match is None, (path.name, match and match.group(0))
