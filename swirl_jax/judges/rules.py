"""A deterministic rule judge for the procedural tool-use tasks.

`RuleProcessJudge` (registered as 'rules') labels the LAST step of a context
GOOD or BAD with fixed rules, so that SWiRL's process filter runs without a
judge model (tests, CPU smoke runs, and a baseline to compare model judges
against). The rules check that the step only uses evidence the episode has
gathered:

* Form: the action holds exactly one tool call or one answer
  (`swirl_jax.rollout.actions.parse_action` with the task's tool tags).
  Anything malformed is BAD. A call identical to an earlier call of the
  episode (same tag, same text ignoring case and whitespace) is BAD: it cannot
  help.
* Calculator calls (`<math_exp>`): the expression evaluates without error
  (`swirl_jax.tools.calculator.evaluate`), and every number literal in it
  appears in the question or in an earlier grounded result, or is one of the
  allowed constants (a calculator result is grounded when its expression
  used a number of the question or of an earlier grounded result: results
  of constants alone are not evidence). Allowed constants (`DEFAULT_CONSTANTS`): 0, 1, 2, 10,
  100 and 1000 (halving, doubling, percentages, powers of ten) and the unit
  conversions 7 (days a week), 12 (months a year, a dozen), 24 (hours a
  day), 52 (weeks a year), 60 (minutes an hour) and 365 (days a year). A
  number in the question written as a word ('three', 'dozen', 'twice',
  'half', ...) counts as that number, and 'N%' also gives N / 100. The
  expression must combine at least two numbers, at least one of them from
  the question or an earlier result: a lone number or constants alone
  compute nothing the question needs (stage-2 RL on the tiny default
  otherwise learns to emit `<math_exp> 1 </math_exp>`, which the looser rule
  called GOOD). And its value must be new: not a number of the question, not
  an earlier result, not 0 or 1 (x*1, x/x, recomputing a known value add
  nothing; stage-2 RL otherwise learned loops such as `10*10`, `10/10`,
  `10*1` on its own results).
* Search calls (`<search_query>`): the query names an entity of the question
  or of an earlier result: some word of the query, compared
  case-insensitively, is a capitalised word of the question or of an earlier
  tool result (function words such as 'The', 'What', 'In' excluded).
* Answers of math tasks (calculator tools): the answer is a number equal to
  the last computed result, or to a number present in the question or in an
  earlier tool result.
* Answers of QA tasks (search tools): the normalised answer (SQuAD-style:
  lowercase, no punctuation or articles) appears as whole words in an
  earlier search result. 'yes' / 'no' answers are GOOD when the episode has
  at least one search result (the rules cannot check a comparison).
* Other tools and tasks without tools: a well-formed step is GOOD (there is
  no rule to check its content).

Error results ('Error: ...') are never evidence. The reward is 1.0 for GOOD
and 0.0 for BAD; the explanation names the rule that decided.
"""

from __future__ import annotations

import fractions
import functools
import re
from typing import Iterable, Optional, Sequence

import gin

from swirl_jax.judges import base
from swirl_jax.rollout import actions
from swirl_jax.tasks import answers as answers_lib
from swirl_jax.tools import base as tool_base
from swirl_jax.tools import calculator

Fraction = fractions.Fraction

MATH_TAG = "math_exp"
SEARCH_TAG = "search_query"
# Tool tags assumed for a task the task registry does not know.
DEFAULT_TOOL_TAGS = (MATH_TAG, SEARCH_TAG)

DEFAULT_CONSTANTS = (0, 1, 2, 10, 100, 1000, 7, 12, 24, 52, 60, 365)

NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11,
    "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
    "thousand": 1000, "million": 1000000, "dozen": 12, "half": 2,
    "twice": 2, "double": 2, "triple": 3, "thrice": 3, "third": 3,
    "quarter": 4, "fourth": 4, "fifth": 5, "tenth": 10,
}

# Capitalised words that are not names.
FUNCTION_WORDS = frozenset("""
a an the and or but nor not no yes of in on at to for from by with without
into onto over under about after before during between through as is was
are were be been being am do does did has have had its it it's his her hers
their theirs our ours your yours my mine this that these those there here
what which who whom whose when where why how whether if then than so such
also other others include includes including i you he she we they me him us
them question answer step result search query please
""".split())

_TEXT_NUMBER_RE = re.compile(
    r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?:[eE]([-+]?\d+))?(%?)"
    r"|(?<![\w.])\.(\d+)")
_EXPR_NUMBER_RE = re.compile(r"\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+")
_WORD_RE = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*", re.UNICODE)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCT_RE = re.compile(r"[^\w\s]", re.UNICODE)
_YES_NO = ("yes", "no")


# ----------------------------------------------------------------------------
# Reading the context.


@functools.lru_cache(maxsize=256)
def task_tool_tags(task_name: str) -> Optional[tuple[str, ...]]:
  """The tool tags of a registered task, or None if the task is unknown."""
  from swirl_jax.tasks import base as task_base  # pylint: disable=g-import-not-at-top
  try:
    return tuple(task_base.get_task(task_name).tools)
  except Exception:  # pylint: disable=broad-except
    return None


def tool_tags_for(task_name: str) -> tuple[str, ...]:
  """The task's tool tags, or `DEFAULT_TOOL_TAGS` for an unknown task."""
  tags = task_tool_tags(task_name)
  return DEFAULT_TOOL_TAGS if tags is None else tags


def earlier_calls(context_turns: Sequence[base.Turn],
                  tool_tags: Sequence[str]
                  ) -> list[tuple[str, str, Optional[str]]]:
  """The tool calls of the context and their results.

  Args:
    context_turns: (role, text) turns; each model turn holding a valid tool
      call is answered by the next user turn (`QUERY -> RESULT`).
    tool_tags: the task's tool tags.

  Returns:
    list of (tag, query, result) in order; result is None when no user turn
    follows the call. The 'QUERY -> ' prefix is removed from results.
  """
  out = []
  turns = list(context_turns)
  for i, (role, text) in enumerate(turns):
    if role != "model":
      continue
    action = actions.parse_action(text, tool_tags)
    if not action.is_tool:
      continue
    result = None
    if i + 1 < len(turns) and turns[i + 1][0] == "user":
      reply = turns[i + 1][1]
      prefix = tool_base.format_result(action.content, "").rstrip() + " "
      if reply.startswith(prefix):
        result = reply[len(prefix):].strip()
      elif " -> " in reply:
        result = reply.split(" -> ", 1)[1].strip()
      else:
        result = reply.strip()
    out.append((action.tag, action.content, result))
  return out


def _evidence(calls: Iterable[tuple[str, str, Optional[str]]],
              tag: Optional[str] = None) -> list[str]:
  """Non-error results of the calls (of one tag if given)."""
  return [r for t, _, r in calls
          if r is not None and not tool_base.is_error(r)
          and (tag is None or t == tag)]


def numbers_in_text(text: str, number_words: bool = False
                    ) -> set[Fraction]:
  """Absolute values of the numbers written in `text`.

  Reads '1,234', '3.5', '.5', '6e3' and 'N%' (which also gives N / 100);
  with `number_words`, also words like 'three', 'dozen', 'twice', 'half'.
  """
  out: set[Fraction] = set()
  for m in _TEXT_NUMBER_RE.finditer(text or ""):
    if m.group(5) is not None:
      out.add(Fraction("0." + m.group(5)))
      continue
    value = Fraction(m.group(1).replace(",", "") + (m.group(2) or ""))
    if m.group(3):
      exponent = int(m.group(3))
      if abs(exponent) <= 400:
        value *= Fraction(10) ** exponent
    out.add(value)
    if m.group(4):
      out.add(value / 100)
  if number_words:
    for word in _WORD_RE.findall((text or "").lower()):
      if word in NUMBER_WORDS:
        out.add(Fraction(NUMBER_WORDS[word]))
  return out


def expression_numbers(expr: str) -> list[str]:
  """The number literals of a calculator expression, in order."""
  return _EXPR_NUMBER_RE.findall(expr)


def _literal_value(literal: str) -> Optional[Fraction]:
  try:
    mantissa, _, exponent = literal.lower().partition("e")
    value = Fraction(mantissa if mantissa != "." else "0")
    if exponent:
      e = int(exponent)
      if abs(e) > 400:
        return None
      value *= Fraction(10) ** e
    return value
  except (ValueError, ZeroDivisionError):
    return None


def name_words(text: str) -> set[str]:
  """Lowercased capitalised words of `text`, function words removed."""
  out = set()
  for word in _WORD_RE.findall(text or ""):
    if word[0].isupper() and word.lower() not in FUNCTION_WORDS:
      out.add(word.lower())
  return out


def normalize_text(text: str) -> str:
  """SQuAD-style normalisation: lowercase, no punctuation or articles."""
  text = _PUNCT_RE.sub(" ", str(text).lower())
  text = _ARTICLES_RE.sub(" ", text)
  return " ".join(text.split())


def _same_call(a: str, b: str) -> bool:
  """Same call text, ignoring case and whitespace."""
  return "".join(a.lower().split()) == "".join(b.lower().split())


def _show(values: Iterable[Fraction]) -> str:
  return ", ".join(answers_lib.format_number(v) for v in sorted(values))


# ----------------------------------------------------------------------------
# The judge.


@gin.configurable(module="swirl_jax.judges")
@base.register_judge("rules")
class RuleProcessJudge(base.Judge):
  """Deterministic GOOD/BAD rules for calculator and search steps.

  Args:
    constants: numbers a calculator expression may use without finding them
      in the question or in earlier results (see `DEFAULT_CONSTANTS`).
    number_words: also read numbers written as words in the question and in
      results ('three', 'dozen', 'twice', ...).
    reject_repeats: label a call identical to an earlier call BAD.
    require_new_value: label a calculation BAD when its value is a number
      of the question, an earlier result, 0 or 1 (it computes nothing new).
      Measured on 2,112 steps of 500 scripted gsm8k solutions, this calls 8
      correct steps BAD (0.4%: a value that happens to repeat, such as
      1620-810 = 810).
  """

  def __init__(self, constants: Sequence[float] = DEFAULT_CONSTANTS,
               number_words: bool = True, reject_repeats: bool = True,
               require_new_value: bool = True):
    self.constants = frozenset(Fraction(str(c)) for c in constants)
    self.number_words = bool(number_words)
    self.reject_repeats = bool(reject_repeats)
    self.require_new_value = bool(require_new_value)

  def judge_steps(self, requests: Sequence[base.JudgeRequest]
                  ) -> list[base.JudgeResult]:
    return [self._judge(r) for r in requests]

  # -- dispatch ---------------------------------------------------------------

  def _judge(self, req: base.JudgeRequest) -> base.JudgeResult:
    tags = tool_tags_for(req.task_name)
    action = actions.parse_action(req.action_text, tags)
    if action.is_malformed:
      return base.JudgeResult.of(False, f"malformed step: {action.reason}.")
    calls = earlier_calls(req.context_turns, tags)
    if action.is_tool:
      if self.reject_repeats and any(
          t == action.tag and _same_call(q, action.content)
          for t, q, _ in calls):
        return base.JudgeResult.of(
            False, f"the call <{action.tag}> {action.content} </{action.tag}> "
            "repeats an earlier call, so it cannot add evidence.")
      if action.tag == MATH_TAG:
        return self._judge_calculation(req, action.content, calls)
      if action.tag == SEARCH_TAG:
        return self._judge_search(req, action.content, calls)
      return base.JudgeResult.of(
          True, f"well-formed <{action.tag}> call (no content rule for this "
          "tool).")
    return self._judge_answer(req, action.content, calls, tags)

  def _question(self, req: base.JudgeRequest) -> str:
    if req.question:
      return req.question
    return req.context_turns[0][1] if req.context_turns else ""

  def _grounded(self, req, calls) -> tuple[set, list[tuple[str, str]]]:
    """(numbers the episode has, [(tag, result)] of its grounded calls).

    A calculator result is evidence only when its expression used a number
    of the question or of an earlier grounded result; otherwise a step made
    of constants alone (BAD itself) would turn its result into evidence for
    the next step (stage-2 RL on the tiny default learned exactly that:
    `1000*1`, then `1000*10` on its result). Other tools' results are
    evidence from outside the episode and always count.
    """
    numbers = set(numbers_in_text(self._question(req), self.number_words))
    grounded = []
    for tag, query, result in calls:
      if result is None or tool_base.is_error(result):
        continue
      if tag == MATH_TAG and not any(
          _literal_value(l) in numbers for l in expression_numbers(query)):
        continue
      numbers |= numbers_in_text(result, self.number_words)
      grounded.append((tag, result))
    return numbers, grounded

  # -- calculator -------------------------------------------------------------

  def _judge_calculation(self, req, expr: str, calls) -> base.JudgeResult:
    result = calculator.evaluate(expr)
    if tool_base.is_error(result):
      detail = result[len(tool_base.ERROR_PREFIX):].strip()
      return base.JudgeResult.of(
          False, f"the expression {expr!r} does not evaluate: {detail}")
    allowed, _ = self._grounded(req, calls)
    invented = []
    for literal in expression_numbers(expr):
      value = _literal_value(literal)
      if value is None or (value not in allowed and
                           value not in self.constants):
        invented.append(literal)
    if invented:
      return base.JudgeResult.of(
          False, f"the expression {expr!r} uses {', '.join(invented)}, which "
          "appear(s) neither in the question nor in earlier tool results and "
          f"is not an allowed constant ({_show(self.constants)}).")
    literals = expression_numbers(expr)
    if len(literals) < 2:
      return base.JudgeResult.of(
          False, f"the expression {expr!r} combines no quantities, so it "
          "computes nothing the question needs.")
    if not any(_literal_value(l) in allowed for l in literals):
      return base.JudgeResult.of(
          False, f"the expression {expr!r} uses only constants, none of the "
          "question's quantities or earlier results.")
    value = _literal_value(result.strip().lstrip("-"))  # `allowed` is |x|
    if self.require_new_value and value is not None and (
        value in allowed or value in (0, 1)):
      return base.JudgeResult.of(
          False, f"the expression {expr!r} evaluates to {result}, which the "
          "episode already has (a quantity of the question or an earlier "
          "result) or is 0 / 1: it computes nothing new.")
    return base.JudgeResult.of(
        True, f"the expression {expr!r} uses only numbers from the question, "
        f"earlier results or allowed constants, and evaluates to {result}.")

  # -- search -----------------------------------------------------------------

  def _judge_search(self, req, query: str, calls) -> base.JudgeResult:
    names = name_words(self._question(req))
    for r in _evidence(calls):
      names |= name_words(r)
    words = {w.lower() for w in _WORD_RE.findall(query)}
    shared = sorted(words & names)
    if shared:
      return base.JudgeResult.of(
          True, f"the query {query!r} names {', '.join(shared)}, which "
          "appear(s) in the question or in an earlier result.")
    return base.JudgeResult.of(
        False, f"the query {query!r} names no entity of the question or of "
        "an earlier result, so it is unlikely to help.")

  # -- answers ----------------------------------------------------------------

  def _judge_answer(self, req, answer: str, calls, tags) -> base.JudgeResult:
    math_results = _evidence(calls, MATH_TAG)
    if MATH_TAG in tags and SEARCH_TAG in tags:
      numeric = (answers_lib.parse_number(answer) is not None
                 and bool(math_results))
      mode = "math" if numeric else "qa"
    elif MATH_TAG in tags:
      mode = "math"
    elif SEARCH_TAG in tags:
      mode = "qa"
    else:
      return base.JudgeResult.of(
          True, "well-formed answer (this task has no tool results to check "
          "it against).")
    if mode == "math":
      return self._judge_math_answer(req, answer, calls)
    return self._judge_qa_answer(answer, _evidence(calls, SEARCH_TAG))

  def _judge_math_answer(self, req, answer, calls) -> base.JudgeResult:
    value = answers_lib.parse_number(answer)
    if value is None:
      return base.JudgeResult.of(
          False, f"the answer {answer!r} is not a number.")
    _, grounded = self._grounded(req, calls)
    math_results = [r for t, r in grounded if t == MATH_TAG]
    if math_results:
      last = answers_lib.parse_number(math_results[-1])
      if last is not None and last == value:
        return base.JudgeResult.of(
            True, f"the answer {answer!r} equals the last computed result "
            f"{math_results[-1]}.")
    for _, r in grounded:
      if value in numbers_in_text(r) or abs(value) in numbers_in_text(r):
        return base.JudgeResult.of(
            True, f"the answer {answer!r} equals the earlier result {r!r}.")
    if abs(value) in numbers_in_text(self._question(req)):
      return base.JudgeResult.of(
          True, f"the answer {answer!r} is a number given in the question.")
    last = f" (the last computed result is {math_results[-1]})" if (
        math_results) else " (nothing was computed)"
    return base.JudgeResult.of(
        False, f"the answer {answer!r} does not follow from the evidence: "
        f"it is neither a computed result nor a number of the question{last}.")

  def _judge_qa_answer(self, answer: str, results: list[str]
                       ) -> base.JudgeResult:
    norm = normalize_text(answer)
    if not norm:
      return base.JudgeResult.of(
          False, f"the answer {answer!r} is empty after normalisation.")
    if norm in _YES_NO:
      if results:
        return base.JudgeResult.of(
            True, f"a {norm!r} answer after {len(results)} search result(s) "
            "(comparisons are not checked by the rules).")
      return base.JudgeResult.of(
          False, f"a {norm!r} answer without any search result to base it "
          "on.")
    for r in results:
      if f" {norm} " in f" {normalize_text(r)} ":
        return base.JudgeResult.of(
            True, f"the answer {answer!r} appears in the search result "
            f"{r[:120]!r}.")
    if not results:
      return base.JudgeResult.of(
          False, f"the answer {answer!r} is given without any search "
          "result.")
    return base.JudgeResult.of(
        False, f"the answer {answer!r} appears in none of the "
        f"{len(results)} search result(s), so it does not follow from the "
        "evidence.")
