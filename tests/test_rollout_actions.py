"""Tests for swirl_jax.rollout.actions: the action parser and its feedback."""

import pytest

from swirl_jax.rollout import actions
from swirl_jax.rollout.actions import parse_action

CALC = ("math_exp",)
TAGS = ("math_exp", "search_query")


# -- valid actions ------------------------------------------------------------


def test_one_tool_call_with_reasoning():
  p = parse_action("First 3 apples times 4.\n<math_exp> 3 * 4 </math_exp>",
                   CALC)
  assert (p.kind, p.tag, p.content, p.reason) == ("tool", "math_exp", "3 * 4",
                                                  None)
  assert p.is_tool and not p.is_answer and not p.is_malformed


def test_answer_with_reasoning_and_trailing_text():
  p = parse_action("So the total is 12. <answer> 12 </answer> Done.", CALC)
  assert (p.kind, p.tag, p.content) == ("answer", "answer", "12")


def test_multiline_content_and_second_tool_tag():
  p = parse_action("<search_query>\ncapital of\nFrance\n</search_query>", TAGS)
  assert (p.kind, p.tag, p.content) == ("tool", "search_query",
                                        "capital of\nFrance")


def test_trailing_end_of_turn_is_ignored():
  p = parse_action("<answer>7</answer><end_of_turn>\n", CALC)
  assert (p.kind, p.content) == ("answer", "7")
  assert actions.strip_end_of_turn("x <end_of_turn><end_of_turn> ") == "x"
  assert actions.strip_end_of_turn("no marker ") == "no marker "


# -- malformed actions --------------------------------------------------------


@pytest.mark.parametrize("text, needle", [
    ("<math_exp> 1+1 </math_exp> then <math_exp> 2+2 </math_exp>",
     "2 tool calls"),
    ("<math_exp> 1+1 </math_exp> <answer> 2 </answer>",
     "both a tool call and an answer"),
    ("<answer> 2 </answer> <math_exp> 1+1 </math_exp>",
     "both a tool call and an answer"),
    ("<math_exp> 1+1", "<math_exp> is never closed"),
    ("1+1 </math_exp>", "</math_exp> closes a tag that was never opened"),
    ("<answer> 2 </math_exp>", "<answer> is closed by </math_exp>"),
    ("<math_exp> 1 <answer> 2 </answer> </math_exp>",
     "<math_exp> is not closed before <answer> opens"),
    ("<answer> 1 </answer> or <answer> 2 </answer>", "2 answers"),
    ("I think the answer is 12.", "neither a tool call nor an answer"),
    ("#$%^ garbage ))) <<>>", "neither a tool call nor an answer"),
    ("", "the message is empty"),
    ("  \n <end_of_turn>", "the message is empty"),
    ("<answer>   </answer>", "<answer> </answer> is empty"),
    ("<math_exp></math_exp>", "<math_exp> </math_exp> is empty"),
    ("<search_query> Paris </search_query>",
     "<search_query> is not a tool of this task"),
])
def test_malformed(text, needle):
  p = parse_action(text, CALC)
  assert p.kind == "malformed" and p.is_malformed
  assert p.tag is None and p.content is None
  assert needle in p.reason, p.reason


def test_unknown_tags_are_text_when_an_answer_is_present():
  p = parse_action("<search_query> x </search_query> <answer> 3 </answer>",
                   CALC)
  assert (p.kind, p.content) == ("answer", "3")


def test_no_tools_task_accepts_only_answers():
  assert parse_action("<answer> 5 </answer>", ()).is_answer
  p = parse_action("<math_exp> 2 + 3 </math_exp>", ())
  assert p.is_malformed and "not a tool of this task" in p.reason


def test_non_text_action_is_malformed():
  assert parse_action(None, CALC).is_malformed  # type: ignore[arg-type]


def test_bad_tool_tags_raise_naming_the_tag():
  with pytest.raises(ValueError, match="'answer' is the answer tag"):
    parse_action("x", ("answer",))
  with pytest.raises(ValueError, match="Invalid tool tag 'a b'"):
    parse_action("x", ("a b",))
  with pytest.raises(ValueError, match="listed twice"):
    parse_action("x", ("math_exp", "math_exp"))
  with pytest.raises(TypeError, match="not the string 'math_exp'"):
    parse_action("x", "math_exp")


# -- feedback -----------------------------------------------------------------


def test_feedback_names_the_problem_and_the_rule():
  reason = parse_action("<math_exp> 1 </math_exp><answer>1</answer>",
                        CALC).reason
  text = actions.malformed_feedback(reason, CALC)
  assert reason in text
  assert "<math_exp> ... </math_exp>" in text
  assert "<answer> ... </answer>" in text
  assert text.endswith(
      "Please either issue a query or answer the question, but not both.")
  no_tools = actions.malformed_feedback("it is empty", ())
  assert "<math_exp>" not in no_tools and no_tools.endswith(actions.NOT_BOTH)
