"""Tests of tasks.function_calling: xLAM loader, generator, verifier."""

import json

import pytest

from swirl_jax.tasks import base
from swirl_jax.tasks import function_calling as fc
from swirl_jax.tools import functions

TASK = fc.FunctionCallingTask()

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


@pytest.mark.parametrize("response,category", [
    # Gold calls in another order, in tags.
    ('<tool_call>[{"name": "live_giveaways_by_type", "arguments": {"type": '
     '"game"}}, {"name": "live_giveaways_by_type", "arguments": {"type": '
     '"beta"}}]</tool_call>', "correct"),
    # An omitted argument equals its default ("game").
    ('<tool_call>[{"name": "live_giveaways_by_type", "arguments": {"type": '
     '"beta"}}, {"name": "live_giveaways_by_type", "arguments": {}}]'
     '</tool_call>', "correct"),
    # A fenced JSON block, whitespace around a string value.
    ('```json\n[{"name": "live_giveaways_by_type", "arguments": {"type": '
     '" beta "}}, {"name": "live_giveaways_by_type", "arguments": {"type": '
     '"game"}}]\n```', "correct"),
    ('<tool_call>[{"name": "live_giveaways_by_type", "arguments": {"type": '
     '"beta"}}]</tool_call>', "wrong_tool"),
    ('<tool_call>[{"name": "calculate_distance", "arguments": {"x": 1, '
     '"y": 2}}, {"name": "live_giveaways_by_type", "arguments": {}}]'
     '</tool_call>', "wrong_tool"),
    ('<tool_call>[{"name": "live_giveaways_by_type", "arguments": {"type": '
     '"alpha"}}, {"name": "live_giveaways_by_type", "arguments": {"type": '
     '"game"}}]</tool_call>', "wrong_arguments"),
    ('<tool_call>[{"name": "live_giveaways_by_type", "arguments": {"kind": '
     '"beta"}}, {"name": "live_giveaways_by_type", "arguments": {}}]'
     '</tool_call>', "wrong_arguments"),
    ('<tool_call>[{"name": "live_giveaways_by_type", "arguments": '
     '{"type": "beta"}</tool_call>', "format_error"),
    ('<tool_call>[{"arguments": {}}]</tool_call>', "format_error"),
    ("I would call the giveaway API.", "format_error"),
    ("", "format_error"),
])
def test_verify_categories(examples, response, category):
  verdict = TASK.score(examples[0], response)
  assert verdict.category == category, verdict
  assert verdict.correct == (category == "correct")


@pytest.mark.parametrize("arguments,correct", [
    ({"x": 3.0, "y": 4, "points": [1, 2]}, True),
    ({"x": 3, "y": 4.0, "points": [1, 2]}, True),          # 3 == 3.0
    ({"x": "3", "y": "4.0", "points": [1, 2]}, True),      # numeric strings
    ({"x": 3, "y": 4, "points": [1, 2], "precise": False}, True),  # default
    ({"x": 3, "y": 4, "points": [1, 2], "precise": "false"}, True),
    ({"x": 3, "y": 4, "points": [1, 2], "precise": True}, False),
    ({"x": 3, "y": 4, "points": [2, 1]}, False),            # list order
    ({"x": 3, "y": 4}, False),                              # missing
    ({"x": 3, "y": 5, "points": [1, 2]}, False),
    ({"x": "three", "y": 4, "points": [1, 2]}, False),
])
def test_type_aware_argument_comparison(examples, arguments, correct):
  response = json.dumps({"name": "calculate_distance", "arguments": arguments})
  verdict = TASK.verify(examples[1], response)
  assert verdict.correct == correct, verdict
  if not correct:
    assert verdict.category == "wrong_arguments"


def test_normalize_value():
  assert fc.normalize_value(0.1) == fc.normalize_value("0.1",
                                                       {"type": "number"})
  assert fc.normalize_value("0.1") != fc.normalize_value(0.1)  # no schema
  assert fc.normalize_value(True) != fc.normalize_value(1)
  assert fc.normalize_value({"a": [1, "x "]}) == fc.normalize_value(
      {"a": [1.0, "x"]})


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
