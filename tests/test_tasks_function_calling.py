"""Tests of tasks.function_calling: xLAM loader, generator, verifier."""

import json

import pytest

from swirl_jax.tasks import base
from swirl_jax.tasks import get_task
from swirl_jax.tasks import function_calling as fc
from swirl_jax.tools import functions

TASK = fc.FunctionCallingTask()                      # strict, R3's rule
LENIENT = fc.FunctionCallingTask(grading="lenient")

XLAM_TOOLS = [
    {"name": "live_giveaways_by_type",
     "description": "Retrieve live giveaways from the GamerPower API.",
     "parameters": {"type": {"description": "Type of giveaways.",
                             "type": "str", "default": "game"}}},
    {"name": "calculate_distance",
     "description": "Distance between two points.",
     "parameters": {"x": {"description": "x.", "type": "float"},
                    "y": {"description": "y.", "type": "float"},
                    "precise": {"description": "Exact?",
                                "type": "bool, optional", "default": False},
                    "points": {"description": "Extra.",
                               "type": "List[int], optional"}}},
]
XLAM_ANSWERS = [
    {"name": "live_giveaways_by_type", "arguments": {"type": "beta"}},
    {"name": "live_giveaways_by_type", "arguments": {"type": "game"}},
]
XLAM = [
    {"id": 0, "query": "Where can I find live giveaways for beta access and "
                       "games?",
     "tools": json.dumps(XLAM_TOOLS), "answers": json.dumps(XLAM_ANSWERS)},
    {"id": 1, "query": "Distance for 3 and 4.",
     "tools": XLAM_TOOLS,
     "answers": [{"name": "calculate_distance",
                  "arguments": {"x": 3.0, "y": 4, "points": [1, 2]}}]},
]


@pytest.fixture
def examples(tmp_path):
  path = tmp_path / "xlam_function_calling_60k.json"
  path.write_text(json.dumps(XLAM))
  return TASK.load(str(path))


def test_load_xlam(examples):
  a, b = examples
  assert (a.id, b.id) == ("xlam-0", "xlam-1")
  assert a.question.startswith("Where can I find")
  assert json.loads(a.answer) == XLAM_ANSWERS
  assert a.metadata["tools"] == XLAM_TOOLS
  assert b.metadata["tools"] == XLAM_TOOLS
  assert a.metadata["split"] == "test"
  assert '"live_giveaways_by_type"' in TASK.prompt(a)
  assert TASK.prompt(a).endswith("User request: " + a.question)


def test_load_jsonl_and_errors(tmp_path):
  path = tmp_path / "x.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in XLAM))
  assert len(TASK.load(str(path))) == 2
  cases = [
      (dict(XLAM[0], tools="[{bad"), r"x\.jsonl:2: field 'tools' is a string "
                                     "but not valid JSON"),
      (dict(XLAM[0], answers='[{"arguments": {}}]'),
       r"x\.jsonl:2: 'answers' is not a list"),
      (dict(XLAM[0], answers='[{"name": "nope", "arguments": {}}]'),
       r"x\.jsonl:2: answers call functions \['nope'\]"),
      (dict(XLAM[0], tools='[{"description": "no name"}]'),
       r"x\.jsonl:2: bad tool description"),
      ({"id": 3, "query": "q", "tools": "[]"},
       r"x\.jsonl:2: missing field 'answers'"),
  ]
  for record, message in cases:
    path.write_text(json.dumps(XLAM[0]) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(base.DataFormatError, match=message):
      TASK.load(str(path))
  obj = tmp_path / "o.json"
  obj.write_text("{}")
  with pytest.raises(base.DataFormatError, match="expected a JSON list"):
    TASK.load(str(obj))


def tagged(calls) -> str:
  return f"<tool_call>{json.dumps(calls)}</tool_call>"


BETA = {"name": "live_giveaways_by_type", "arguments": {"type": "beta"}}
GAME = {"name": "live_giveaways_by_type", "arguments": {"type": "game"}}
NO_ARGS = {"name": "live_giveaways_by_type", "arguments": {}}


@pytest.mark.parametrize("response,strict,lenient", [
    # Gold calls in another order, in tags, text around them.
    ("Sure. " + tagged([GAME, BETA]) + " Done.", "correct", "correct"),
    # The last complete tagged call counts.
    (tagged([BETA]) + " no, " + tagged([BETA, GAME]), "correct", "correct"),
    # An omitted argument: missing for strict, its default for lenient.
    (tagged([BETA, NO_ARGS]), "wrong_arguments", "correct"),
    # Whitespace inside a string value.
    (tagged([GAME, {"name": BETA["name"], "arguments": {"type": " beta "}}]),
     "wrong_arguments", "correct"),
    # Untagged replies: a fenced JSON block, the whole reply.
    ("```json\n" + json.dumps([BETA, GAME]) + "\n```", "format_error",
     "correct"),
    (json.dumps([BETA, GAME]), "format_error", "correct"),
    # Other call shapes inside the tags.
    ("<tool_call>```json\n" + json.dumps([BETA, GAME]) + "\n```</tool_call>",
     "format_error", "correct"),
    ('<tool_call>[{"name": "live_giveaways_by_type", "parameters": {"type": '
     '"beta"}}, {"name": "live_giveaways_by_type", "arguments": "{\\"type\\": '
     '\\"game\\"}"}]</tool_call>', "format_error", "correct"),
    (tagged(BETA), "format_error", "wrong_tool"),       # not a list
    (tagged([BETA]), "wrong_tool", "wrong_tool"),
    (tagged([{"name": "calculate_distance", "arguments": {"x": 1, "y": 2}},
             NO_ARGS]), "wrong_tool", "wrong_tool"),
    (tagged([BETA, BETA]), "wrong_arguments", "wrong_arguments"),
    (tagged([{"name": BETA["name"], "arguments": {"type": "alpha"}}, GAME]),
     "wrong_arguments", "wrong_arguments"),
    (tagged([{"name": BETA["name"], "arguments": {"kind": "beta"}}, NO_ARGS]),
     "wrong_arguments", "wrong_arguments"),
    ('<tool_call>[{"name": "live_giveaways_by_type", "arguments": '
     '{"type": "beta"}</tool_call>', "format_error", "format_error"),
    ('<tool_call>[{"arguments": {}}]</tool_call>', "format_error",
     "format_error"),
    ("<tool_call></tool_call>", "format_error", "format_error"),
    ("I would call the giveaway API.", "format_error", "format_error"),
    ("", "format_error", "format_error"),
])
def test_verify_categories(examples, response, strict, lenient):
  for task, category in ((TASK, strict), (LENIENT, lenient)):
    verdict = task.score(examples[0], response)
    assert verdict.category == category, (task.grading, verdict)
    assert verdict.correct == (category == "correct")


@pytest.mark.parametrize("response,message", [
    ("no call here", "expected <tool_call>"),
    ("<tool_call>nope</tool_call>", "malformed JSON"),
    ("<tool_call>[]</tool_call>", "got an empty list"),
    ('<tool_call>{"name": "f", "arguments": {}}</tool_call>',
     "non-empty JSON list of calls, got an object"),
    ('<tool_call>[{"name": "f", "arguments": {}, "id": 1}]</tool_call>',
     "exactly the keys 'arguments' and 'name', got keys ['arguments', 'id', "
     "'name']"),
    ('<tool_call>[{"name": "f", "parameters": {}}]</tool_call>',
     "exactly the keys"),
    ('<tool_call>[["f"]]</tool_call>', "call 0 must be an object"),
    ('<tool_call>[{"name": "", "arguments": {}}]</tool_call>',
     "'name' must be a non-empty string"),
    ('<tool_call>[{"name": "f", "arguments": "{}"}]</tool_call>',
     "'arguments' must be an object, got a string"),
    ('<tool_call>[{"name": "f", "arguments": {"x": NaN}}]</tool_call>',
     "NaN is not JSON"),
])
def test_strict_format_errors_say_why(examples, response, message):
  verdict = TASK.score(examples[0], response)
  assert verdict.category == "format_error"
  assert message in verdict.detail, verdict.detail


# Gold: calculate_distance(x=3.0, y=4, points=[1, 2]); precise defaults to
# false.
@pytest.mark.parametrize("arguments,strict,lenient", [
    ({"x": 3.0, "y": 4, "points": [1, 2]}, True, True),
    ({"points": [1, 2], "y": 4, "x": 3.0}, True, True),      # key order
    ({"x": 3, "y": 4.0, "points": [1, 2]}, True, True),      # 3 == 3.0
    ({"x": 3, "y": 4, "points": [1.0, 2]}, True, True),
    ({"x": "3", "y": "4.0", "points": [1, 2]}, False, True),  # numeric strings
    ({"x": 3, "y": 4, "points": [1, 2], "precise": False}, False,
     True),                                                  # the default
    ({"x": 3, "y": 4, "points": [1, 2], "precise": "false"}, False, True),
    ({"x": 3, "y": 4, "points": [1, 2], "precise": True}, False, False),
    ({"x": 3, "y": 4, "points": [True, 2]}, False, False),    # true != 1
    ({"x": 3, "y": 4, "points": [2, 1]}, False, False),      # list order
    ({"x": 3, "y": 4}, False, False),                        # missing
    ({"x": 3, "y": 5, "points": [1, 2]}, False, False),
    ({"x": "three", "y": 4, "points": [1, 2]}, False, False),
    ({"x": None, "y": 4, "points": [1, 2]}, False, False),
])
def test_argument_comparison(examples, arguments, strict, lenient):
  response = tagged([{"name": "calculate_distance", "arguments": arguments}])
  for task, correct in ((TASK, strict), (LENIENT, lenient)):
    verdict = task.score(examples[1], response)
    assert verdict.correct == correct, (task.grading, verdict)
    if not correct:
      assert verdict.category == "wrong_arguments"


def test_wrong_arguments_detail(examples):
  response = tagged([{"name": "calculate_distance",
                      "arguments": {"x": 3, "y": "4", "precise": False}}])
  verdict = TASK.score(examples[1], response)
  assert verdict.detail == ("calculate_distance: missing ['points'], "
                            "unexpected ['precise'], different values for "
                            "['y']")


def test_strict_value():
  assert fc.strict_value(1) == fc.strict_value(1.0)
  assert fc.strict_value("1") != fc.strict_value(1)
  assert fc.strict_value(True) != fc.strict_value(1)
  assert fc.strict_value(None) != fc.strict_value(0)
  assert fc.strict_value(" a") != fc.strict_value("a")
  assert fc.strict_value({"a": [1, {"b": 2}], "c": 3}) == fc.strict_value(
      {"c": 3.0, "a": [1, {"b": 2}]})
  assert fc.strict_value([1, 2]) != fc.strict_value([2, 1])


def test_normalize_value():
  assert fc.normalize_value(0.1) == fc.normalize_value("0.1",
                                                       {"type": "number"})
  assert fc.normalize_value("0.1") != fc.normalize_value(0.1)  # no schema
  assert fc.normalize_value(True) != fc.normalize_value(1)
  assert fc.normalize_value({"a": [1, "x "]}) == fc.normalize_value(
      {"a": [1.0, "x"]})


def test_grading_option():
  assert TASK.grading == "strict" and LENIENT.grading == "lenient"
  assert get_task("function_calling").grading == "strict"
  assert get_task("function_calling", grading="lenient").grading == "lenient"
  with pytest.raises(ValueError,
                     match=r"grading 'exact'.*\['strict', 'lenient'\]"):
    fc.FunctionCallingTask(grading="exact")
  with pytest.raises(ValueError, match="grading 'loose'"):
    fc.compare_calls([], [], {}, grading="loose")
  assert set(fc.GRADINGS) == {"strict", "lenient"}


def test_generate_deterministic_disjoint_and_valid():
  a = TASK.generate(40, seed=0, split="train")
  assert a == TASK.generate(40, seed=0, split="train")
  assert a != TASK.generate(40, seed=1, split="train")
  test = TASK.generate(20, seed=0, split="test")
  assert not {e.question for e in a} & {e.question for e in test}
  templates = set()
  for ex in a + test:
    templates.add(ex.metadata["template"])
    specs = functions.as_specs(ex.metadata["tools"])
    assert len(specs) == len({c["name"] for c in json.loads(ex.answer)}) + 3
    for call in json.loads(ex.answer):
      assert functions.validate_call(call, specs) == [], (ex.question, call)
    assert TASK.score(ex, f"<tool_call>{ex.answer}</tool_call>").correct
    assert TASK.prompt(ex).endswith(ex.question)
  assert len(templates) >= 8
  assert any(len(json.loads(e.answer)) == 2 for e in a)


def test_reflection_instruction():
  assert TASK.reflection_instruction.startswith(
      "You tried to perform the task but did not produce the correct tool "
      "call.")
  assert TASK.tools == ("tool_call",)
