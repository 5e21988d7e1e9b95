"""Tests for swirl_jax.judges.rules: the deterministic GOOD/BAD rules."""

import re

import pytest

from swirl_jax.judges import base
from swirl_jax.judges import rules
from swirl_jax.tasks import Example, get_task
from swirl_jax.tools import format_result, get_tool
from swirl_jax.tools.search import SearchTool

JUDGE = rules.RuleProcessJudge()

GSM_QUESTION = ("A shop has 3500 pairs of socks in stock. On Monday it sells "
                "25% of them, and on Tuesday it sells 1004 more. How many "
                "pairs of socks are left?")
QA_QUESTION = "Who founded the company that Mudaeth Jaetrail works for?"
QA_RESULT_1 = ("Mudaeth Jaetrail: Mudaeth Jaetrail (born 1944) is a "
               "statistician born in Saifandgard. Mudaeth works at Sefeis "
               "Labs.")
QA_RESULT_2 = ("Sefeis Labs: Sefeis Labs is a research company founded in "
               "2002 by Pakais Lastos. Its headquarters are in Zaethport.")


def _context(task_name, question, calls):
  """The chat before the next action: prompt, then (action, result) pairs."""
  task = get_task(task_name)
  turns = [("user", task.prompt(Example("x", question, "")))]
  for action, reply in calls:
    turns += [("model", action), ("user", reply)]
  return turns


def _judge(task_name, question, calls, action):
  req = base.JudgeRequest(task_name=task_name, question=question,
                          context_turns=_context(task_name, question, calls),
                          action_text=action, step_index=len(calls))
  return JUDGE.judge_step(req)


def _math(calls, action):
  return _judge("gsm8k", GSM_QUESTION, calls, action)


def _qa(calls, action):
  return _judge("hotpotqa", QA_QUESTION, calls, action)


def _calc(expr):
  return (f"I compute. <math_exp> {expr} </math_exp>",
          format_result(expr, get_tool("calculator").run(expr)))


def _search(query, result):
  return (f"Let me look it up. <search_query> {query} </search_query>",
          format_result(query, result))


# -- gsm8k ---------------------------------------------------------------------


@pytest.mark.parametrize("expr", [
    "3500*25/100", "3500 * 0.25", "(3500 - 1004) * 1", "25/100*3500"])
def test_calculation_with_the_given_numbers_is_good(expr):
  r = _math([], f"First the Monday sales. <math_exp> {expr} </math_exp>")
  assert (r.label, r.reward, r.parsed) == (base.GOOD, 1.0, True), r
  assert "evaluates to" in r.explanation


def test_calculation_may_use_earlier_results_and_constants():
  calls = [_calc("3500*25/100")]
  assert _math(calls, "<math_exp> 3500-875 </math_exp>").good
  assert _math(calls, "<math_exp> 875*2 </math_exp>").good   # constant 2
  assert _math(calls, "<math_exp> 875/7 </math_exp>").good   # days a week
  bad = _math([], "<math_exp> 3500-875 </math_exp>")  # 875 not computed yet
  assert bad.label == base.BAD and "875" in bad.explanation


@pytest.mark.parametrize("expr,why", [
    ("1", "combines no quantities"), ("3500", "combines no quantities"),
    ("10*10", "only constants"), ("1+1", "only constants")])
def test_calculation_that_computes_nothing_is_bad(expr, why):
  # Stage-2 RL learned to emit '<math_exp> 1 </math_exp>' while a lone
  # allowed constant counted as GOOD.
  r = _math([], f"I compute. <math_exp> {expr} </math_exp>")
  assert (r.label, r.reward) == (base.BAD, 0.0), r
  assert why in r.explanation


def test_calculation_with_an_invented_number_is_bad():
  r = _math([], "<math_exp> 3500*37/100 </math_exp>")
  assert (r.label, r.reward) == (base.BAD, 0.0)
  assert "37" in r.explanation and "neither in the question" in r.explanation


def test_number_words_in_the_question_count():
  question = "Three friends share two dozen eggs equally. How many each?"
  assert _judge("gsm8k", question, [], "<math_exp> 3*12 </math_exp>").good
  assert not _judge("gsm8k", question, [], "<math_exp> 5*12 </math_exp>").good
  strict = rules.RuleProcessJudge(number_words=False, constants=(1,))
  req = base.JudgeRequest("gsm8k", question, _context("gsm8k", question, []),
                          "<math_exp> 3*12 </math_exp>")
  assert not strict.judge_step(req).good


@pytest.mark.parametrize("expr, why", [
    ("3500*(25", "does not evaluate"),
    ("3500 ** ** 2", "does not evaluate"),
    ("3500 / 0", "does not evaluate"),
    ("socks - 1004", "does not evaluate"),
])
def test_bad_syntax_is_bad(expr, why):
  r = _math([], f"<math_exp> {expr} </math_exp>")
  assert r.label == base.BAD and why in r.explanation, r


@pytest.mark.parametrize("action, why", [
    ("<math_exp> 1+1 </math_exp> <answer> 2 </answer>", "both"),
    ("<math_exp> 3500*25/100", "never closed"),
    ("I think the answer is 1621.", "neither"),
    ("<math_exp> 1+1 </math_exp><math_exp> 2+2 </math_exp>", "2 tool calls"),
])
def test_malformed_steps_are_bad(action, why):
  r = _math([], action)
  assert r.label == base.BAD
  assert r.explanation.startswith("malformed step") and why in r.explanation


def test_repeated_call_is_bad():
  calls = [_calc("3500*25/100")]
  r = _math(calls, "Again: <math_exp> 3500 * 25/100 </math_exp>")
  assert r.label == base.BAD and "repeats" in r.explanation
  lenient = rules.RuleProcessJudge(reject_repeats=False,
                                   require_new_value=False)
  req = base.JudgeRequest("gsm8k", GSM_QUESTION,
                          _context("gsm8k", GSM_QUESTION, calls),
                          "<math_exp> 3500*25/100 </math_exp>")
  assert lenient.judge_step(req).good


def test_correct_and_incorrect_final_answers():
  calls = [_calc("3500*25/100"), _calc("3500-875"), _calc("2625-1004")]
  good = _math(calls, "So the shop has <answer> 1621 </answer>")
  assert good.good and "last computed result" in good.explanation
  assert _math(calls, "<answer> 1,621 pairs </answer>").good
  # A number computed earlier also follows from the evidence.
  assert _math(calls, "<answer> 2625 </answer>").good
  wrong = _math(calls, "<answer> 1625 </answer>")
  assert wrong.label == base.BAD and "1621" in wrong.explanation
  assert not _math(calls, "<answer> many </answer>").good
  # Nothing computed: an answer that is not in the question is a guess.
  assert not _math([], "<answer> 1621 </answer>").good


def test_error_results_are_not_evidence():
  calls = [("<math_exp> 3500*x </math_exp>",
            format_result("3500*x", get_tool("calculator").run("3500*x")))]
  assert calls[0][1].split(" -> ", 1)[1].startswith("Error:")
  assert not _math(calls, "<answer> 17 </answer>").good


def test_gold_solutions_of_generated_problems_are_all_good():
  task = get_task("gsm8k")
  for ex in task.generate(15, seed=1):
    steps = re.findall(r"<<([^=]+)=(\d+)>>", ex.metadata["solution"])
    calls = []
    for expr, _ in steps:
      r = _judge("gsm8k", ex.question, calls, f"<math_exp> {expr} </math_exp>")
      assert r.good, (ex.question, expr, r.explanation)
      calls.append(_calc(expr))
    r = _judge("gsm8k", ex.question, calls, f"<answer> {ex.answer} </answer>")
    assert r.good, r.explanation


# -- hotpotqa ------------------------------------------------------------------


@pytest.mark.parametrize("query", [
    "Mudaeth Jaetrail", "mudaeth jaetrail employer", "Jaetrail company"])
def test_query_about_an_entity_of_the_question_is_good(query):
  r = _qa([], f"<search_query> {query} </search_query>")
  assert r.good and "jaetrail" in r.explanation.lower(), r


def test_query_about_an_entity_of_an_earlier_result_is_good():
  calls = [_search("Mudaeth Jaetrail", QA_RESULT_1)]
  assert _qa(calls, "<search_query> Sefeis Labs </search_query>").good
  assert _qa(calls, "<search_query> Saifandgard </search_query>").good
  # Not known before the first search.
  assert not _qa([], "<search_query> Saifandgard </search_query>").good


@pytest.mark.parametrize("query", [
    "Zorbia capital", "Who founded the company", "capital of France"])
def test_query_about_an_unrelated_entity_is_bad(query):
  r = _qa([], f"<search_query> {query} </search_query>")
  assert (r.label, r.reward) == (base.BAD, 0.0)
  assert "names no entity" in r.explanation


def test_answer_present_in_the_results_is_good():
  calls = [_search("Mudaeth Jaetrail", QA_RESULT_1),
           _search("Sefeis Labs", QA_RESULT_2)]
  r = _qa(calls, "The founder is <answer> Pakais Lastos </answer>")
  assert r.good and "appears in the search result" in r.explanation
  assert _qa(calls, "<answer> pakais lastos. </answer>").good


def test_answer_absent_from_the_results_is_bad():
  calls = [_search("Mudaeth Jaetrail", QA_RESULT_1)]
  r = _qa(calls, "<answer> Pakais Lastos </answer>")  # not found yet
  assert r.label == base.BAD and "none of the 1 search" in r.explanation
  assert not _qa(calls, "<answer> Drutho Kelvar </answer>").good
  assert not _qa(calls, "<answer> Pakais </answer>").good
  assert not _qa([], "<answer> Pakais Lastos </answer>").good
  # Part of a word is not a match.
  assert not _qa(calls, "<answer> Saifand </answer>").good


def test_yes_no_answers_need_a_search_result():
  calls = [_search("Mudaeth Jaetrail", QA_RESULT_1)]
  assert _qa(calls, "<answer> yes </answer>").good
  assert not _qa([], "<answer> no </answer>").good


def test_gold_paths_of_generated_questions_are_all_good():
  task = get_task("hotpotqa")
  examples = task.generate(12, seed=0)
  tool = SearchTool(task.corpus(examples))
  for ex in examples:
    calls = []
    for entity in ex.metadata["path"]:
      r = _judge("hotpotqa", ex.question, calls,
                 f"<search_query> {entity} </search_query>")
      assert r.good, (ex.question, entity, r.explanation)
      calls.append(_search(entity, tool.run(entity)))
    r = _judge("hotpotqa", ex.question, calls,
               f"<answer> {ex.answer} </answer>")
    assert r.good, (ex.question, ex.answer, r.explanation)


# -- helpers and other tasks ---------------------------------------------------


def test_numbers_in_text():
  got = rules.numbers_in_text("Pay $1,234.50 for 25% of 3 items, .5 kg, 6e3",
                              number_words=True)
  F = rules.Fraction
  assert {F("1234.5"), F(25), F(1, 4), F(3), F(1, 2), F(6000)} <= got
  assert F(1234) not in got
  assert rules.Fraction(12) in rules.numbers_in_text("a dozen", True)
  assert rules.Fraction(12) not in rules.numbers_in_text("a dozen")


def test_earlier_calls_pairs_calls_with_results():
  turns = _context("gsm8k", GSM_QUESTION, [
      _calc("2+3"), ("no tags here", "Your last message was not a valid step"),
      _calc("5*7")])
  calls = rules.earlier_calls(turns, ("math_exp",))
  assert calls == [("math_exp", "2+3", "5"), ("math_exp", "5*7", "35")]


def test_unknown_task_and_task_without_tools():
  req = base.JudgeRequest("no_such_task", "What is 6 times 7?",
                          [("user", "What is 6 times 7?")],
                          "<math_exp> 6*7 </math_exp>")
  assert JUDGE.judge_step(req).good  # default tags: calculator rules apply
  req = base.JudgeRequest("math", "What is 6 times 7?", [("user", "Solve.")],
                          "It is <answer> 42 </answer>")
  assert JUDGE.judge_step(req).good
  req = base.JudgeRequest("math", "q", [("user", "Solve.")], "no answer")
  assert not JUDGE.judge_step(req).good


def test_judge_is_deterministic_and_batched():
  reqs = [base.JudgeRequest("gsm8k", GSM_QUESTION,
                            _context("gsm8k", GSM_QUESTION, []), a)
          for a in ("<math_exp> 3500*25/100 </math_exp>",
                    "<math_exp> 3500*37/100 </math_exp>",
                    "<answer> 7 </answer>")]
  first = JUDGE.judge_steps(reqs)
  assert [r.label for r in first] == [base.GOOD, base.BAD, base.BAD]
  assert JUDGE.judge_steps(reqs) == first
  assert JUDGE.judge_steps([]) == []


@pytest.mark.parametrize("expr", ["875*1", "875/875", "3500-3500",
                                  "25*3500/100", "875/1"])
def test_calculation_of_a_known_value_is_bad(expr):
  calls = [_calc("3500*25/100")]  # -> 875
  r = _math(calls, f"<math_exp> {expr} </math_exp>")
  assert r.label == base.BAD and "computes nothing new" in r.explanation
  lenient = rules.RuleProcessJudge(require_new_value=False)
  req = base.JudgeRequest("gsm8k", GSM_QUESTION,
                          _context("gsm8k", GSM_QUESTION, calls),
                          f"<math_exp> {expr} </math_exp>")
  assert lenient.judge_step(req).good or "constants" in (
      lenient.judge_step(req).explanation)


def test_scripted_solutions_are_judged_good():
  from swirl_jax.data import demonstrations  # pylint: disable=g-import-not-at-top
  judge = rules.RuleProcessJudge()
  steps = bad = 0
  for demo in demonstrations.tool_use_demonstrations(
      tasks=("gsm8k",), num_per_task=100, prompt_style="compact", seed=3):
    turns = [tuple(t) for t in demo["turns"]]
    for i, (role, text) in enumerate(turns):
      if role == "model":
        steps += 1
        bad += not judge.judge_step(base.JudgeRequest(
            "gsm8k", None, turns[:i], text)).good
  assert steps > 300 and bad / steps < 0.02, (bad, steps)


def test_results_of_constant_only_steps_are_not_evidence():
  # '1000*1' uses constants only (BAD itself); its result must not make
  # '1000*10' or the answer 10000 GOOD (a hack stage-2 RL found).
  calls = [_calc("1000*1")]
  r = _math(calls, "<math_exp> 1000*10 </math_exp>")
  assert r.label == base.BAD and "constants" in r.explanation
  calls = [_calc("1000*1"), _calc("1000*10")]
  assert not _math(calls, "<answer> 10000 </answer>").good
  # A grounded chain still counts: 3500*25/100 -> 875, then 875*2.
  grounded = [_calc("3500*25/100")]
  assert _math(grounded, "<math_exp> 875*2 </math_exp>").good
  assert _math(grounded + [_calc("875*2")], "<answer> 1750 </answer>").good
