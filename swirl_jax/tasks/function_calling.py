"""Function calling in the APIGen / xLAM format (R3's tool-call task).

* `load(path)`: a json list (or jsonl) of {id, query, tools, answers}, where
  `tools` is a list of function descriptions (or its JSON string) and
  `answers` the gold calls [{name, arguments}] (or their JSON string).
* `generate(n, seed, split)`: queries over a small set of invented APIs
  (weather, currency conversion, stock prices, timers, ...), each with its
  gold call(s) and a tool list padded with distractor functions.
* `parse_answer`: the last `<tool_call> ... </tool_call>` of the reply;
  `verify` grades its content against the gold calls.

Categories (R3's error analysis):

* `format_error`: no call, unparsable JSON, or not {name, arguments} objects;
* `wrong_tool`: the called function names differ from the gold ones;
* `wrong_arguments`: same functions, but argument names or values differ;
* `correct`: names, argument names and values all match (calls in any order,
  each gold call matched by one predicted call).

`grading` chooses how strictly (see `GRADINGS`):

* 'strict' (default, R3's rule: tool name, parameter names and values all
  match exactly). The reply must hold `<tool_call> JSON </tool_call>` as the
  prompt asks: a non-empty JSON list (no code fence, no NaN / Infinity) of
  objects with exactly the keys "name" (a string) and "arguments" (an
  object); anything else is a `format_error`. A call is correct when its
  name equals the gold name, its set of parameter names equals the gold set
  (an omitted optional parameter is missing, even if its value would be the
  default; a default written out is unexpected if the gold call omits it),
  and each value equals the gold value as parsed JSON: strings exactly (case
  and spaces count), true / false / null only themselves, lists in order,
  objects key by key. Numbers compare by value, so 5 equals 5.0: JSON has one
  number type, and the function receives the same number either way; but
  "5" (a string) does not equal 5, and true does not equal 1.
* 'lenient' (this repository's earlier verifier): also accepts an untagged
  reply (a fenced JSON block, else the whole reply) and the shapes
  `swirl_jax.tools.functions.parse_calls` accepts (a single object,
  "parameters" for "arguments", arguments as a JSON string); values are
  compared after type-aware normalisation guided by the function specs: "5"
  equals 5 for a numeric parameter, "true" equals true for a boolean one,
  strings compare after trimming spaces, and an omitted argument equals its
  documented default (on both sides).
"""

from __future__ import annotations

import fractions
import json
import os
import random
import re
from typing import Any, Iterator, Mapping, Optional, Sequence

from swirl_jax.tasks import answers as answers_lib
from swirl_jax.tasks import base
from swirl_jax.tasks import prompts
from swirl_jax.tools import functions as functions_lib

FORMAT_ERROR = "format_error"
WRONG_TOOL = "wrong_tool"
WRONG_ARGUMENTS = "wrong_arguments"
TOOL_CALL_TAG = "tool_call"
STRICT = "strict"
LENIENT = "lenient"
GRADINGS = {
    STRICT: "R3's rule: a <tool_call> JSON list of {name, arguments} calls "
            "whose tool names, parameter names and values (as JSON; 5 == "
            "5.0, \"5\" != 5) equal the gold calls', in any call order",
    LENIENT: "also untagged replies and other call shapes; values after "
             "type-aware normalisation (numeric / boolean strings, trimmed "
             "spaces), omitted arguments equal to their defaults",
}
CALL_KEYS = frozenset({"name", "arguments"})

_FENCE_RE = re.compile(r"```(?:json)?\s*\n?(.*?)```", re.DOTALL)
_MISSING = object()

# ----------------------------------------------------------------------------
# Invented APIs (xLAM-style descriptions) and query templates.

API_SPECS: dict[str, dict[str, Any]] = {
    "get_weather": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "city": {"type": "str", "description": "City name."},
            "unit": {"type": "str, optional",
                     "description": "'celsius' or 'fahrenheit'.",
                     "default": "celsius"}}},
    "convert_currency": {
        "name": "convert_currency",
        "description": "Converts an amount between two currencies.",
        "parameters": {
            "amount": {"type": "float", "description": "Amount to convert."},
            "from_currency": {"type": "str",
                              "description": "ISO code of the source."},
            "to_currency": {"type": "str",
                            "description": "ISO code of the target."}}},
    "get_stock_price": {
        "name": "get_stock_price",
        "description": "Latest price of a stock.",
        "parameters": {
            "symbol": {"type": "str", "description": "Ticker symbol."},
            "exchange": {"type": "str, optional",
                         "description": "Exchange code.",
                         "default": "NASDAQ"}}},
    "set_timer": {
        "name": "set_timer",
        "description": "Starts a countdown timer.",
        "parameters": {
            "minutes": {"type": "int", "description": "Duration in minutes."},
            "label": {"type": "str, optional", "description": "Timer name.",
                      "default": ""}}},
    "translate_text": {
        "name": "translate_text",
        "description": "Translates text into another language.",
        "parameters": {
            "text": {"type": "str", "description": "Text to translate."},
            "target_language": {"type": "str",
                                "description": "Language name."}}},
    "calculate_tip": {
        "name": "calculate_tip",
        "description": "Tip amount for a restaurant bill.",
        "parameters": {
            "bill_amount": {"type": "float", "description": "Bill total."},
            "tip_percent": {"type": "int", "description": "Tip percentage."}}},
    "find_flights": {
        "name": "find_flights",
        "description": "Searches flights between two airports on a date.",
        "parameters": {
            "origin": {"type": "str", "description": "IATA code of origin."},
            "destination": {"type": "str",
                            "description": "IATA code of destination."},
            "date": {"type": "str", "description": "Date as YYYY-MM-DD."},
            "nonstop": {"type": "bool, optional",
                        "description": "Only nonstop flights.",
                        "default": False}}},
    "get_population": {
        "name": "get_population",
        "description": "Population of a country in a given year.",
        "parameters": {
            "country": {"type": "str", "description": "Country name."},
            "year": {"type": "int", "description": "Year."}}},
    "search_recipes": {
        "name": "search_recipes",
        "description": "Finds recipes using an ingredient.",
        "parameters": {
            "ingredient": {"type": "str", "description": "Main ingredient."},
            "max_results": {"type": "int, optional",
                            "description": "How many recipes.",
                            "default": 5}}},
    "list_primes": {
        "name": "list_primes",
        "description": "Prime numbers in a closed range.",
        "parameters": {
            "start": {"type": "int", "description": "Lower bound."},
            "end": {"type": "int", "description": "Upper bound."}}},
}

_CITIES = ("Lisbon", "Nairobi", "Osaka", "Quito", "Tromso", "Adelaide",
           "Krakow", "Montreal", "Cusco", "Tbilisi", "Hanoi", "Reykjavik")
_CURRENCIES = ("USD", "EUR", "JPY", "GBP", "CHF", "INR", "BRL", "KRW", "ZAR")
_SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "INTC", "ORCL", "ADBE", "CSCO")
_AIRPORTS = ("LIS", "NBO", "KIX", "UIO", "TOS", "ADL", "KRK", "YUL", "CUZ",
             "TBS", "HAN", "KEF")
_LANGUAGES = ("French", "Swahili", "Japanese", "Portuguese", "Korean",
              "Norwegian", "Georgian")
_PHRASES = ("good morning", "where is the station", "thank you very much",
            "the meeting starts at noon", "I would like a coffee")
_COUNTRIES = ("Peru", "Kenya", "Norway", "Vietnam", "Chile", "Georgia",
              "Portugal", "Canada")
_INGREDIENTS = ("lentils", "eggplant", "salmon", "chickpeas", "mushrooms",
                "quinoa", "spinach")


def _q_weather(rng):
  city = rng.choice(_CITIES)
  if rng.random() < 0.5:
    return (f"What's the weather like in {city} right now?",
            [{"name": "get_weather", "arguments": {"city": city}}])
  unit = rng.choice(("celsius", "fahrenheit"))
  return (f"Tell me the current weather in {city} in {unit}.",
          [{"name": "get_weather", "arguments": {"city": city,
                                                  "unit": unit}}])


def _q_weather_two(rng):
  a, b = rng.sample(_CITIES, 2)
  return (f"Compare the current weather in {a} and {b}.",
          [{"name": "get_weather", "arguments": {"city": a}},
           {"name": "get_weather", "arguments": {"city": b}}])


def _q_currency(rng):
  amount = rng.choice((rng.randint(5, 5000), round(rng.uniform(1, 999), 2)))
  src, dst = rng.sample(_CURRENCIES, 2)
  return (f"How much is {amount} {src} in {dst}?",
          [{"name": "convert_currency",
            "arguments": {"amount": amount, "from_currency": src,
                          "to_currency": dst}}])


def _q_stock(rng):
  sym = rng.choice(_SYMBOLS)
  if rng.random() < 0.6:
    return (f"What is {sym} trading at?",
            [{"name": "get_stock_price", "arguments": {"symbol": sym}}])
  ex = rng.choice(("NYSE", "LSE", "TSE"))
  return (f"Get the latest {sym} share price on the {ex}.",
          [{"name": "get_stock_price",
            "arguments": {"symbol": sym, "exchange": ex}}])


def _q_timer(rng):
  minutes = rng.randint(1, 120)
  label = rng.choice(("pasta", "laundry", "workout", "tea"))
  return (f"Set a {minutes}-minute timer called {label}.",
          [{"name": "set_timer",
            "arguments": {"minutes": minutes, "label": label}}])


def _q_translate(rng):
  phrase, lang = rng.choice(_PHRASES), rng.choice(_LANGUAGES)
  return (f"Translate '{phrase}' into {lang}.",
          [{"name": "translate_text",
            "arguments": {"text": phrase, "target_language": lang}}])


def _q_tip(rng):
  bill = round(rng.uniform(10, 400), 2)
  pct = rng.choice((10, 12, 15, 18, 20, 22, 25))
  return (f"What tip should I leave on a ${bill} bill at {pct} percent?",
          [{"name": "calculate_tip",
            "arguments": {"bill_amount": bill, "tip_percent": pct}}])


def _q_flights(rng):
  a, b = rng.sample(_AIRPORTS, 2)
  date = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
  nonstop = rng.random() < 0.4
  args = {"origin": a, "destination": b, "date": date}
  text = f"Find flights from {a} to {b} on {date}"
  if nonstop:
    args["nonstop"] = True
    text += ", nonstop only"
  return text + ".", [{"name": "find_flights", "arguments": args}]


def _q_population(rng):
  country = rng.choice(_COUNTRIES)
  year = rng.randint(1950, 2023)
  return (f"What was the population of {country} in {year}?",
          [{"name": "get_population",
            "arguments": {"country": country, "year": year}}])


def _q_recipes(rng):
  ing = rng.choice(_INGREDIENTS)
  k = rng.randint(2, 12)
  return (f"Give me {k} recipes with {ing}.",
          [{"name": "search_recipes",
            "arguments": {"ingredient": ing, "max_results": k}}])


def _q_primes(rng):
  start = rng.randint(1, 500)
  end = start + rng.randint(10, 300)
  return (f"List the prime numbers between {start} and {end}.",
          [{"name": "list_primes", "arguments": {"start": start, "end": end}}])


def _q_weather_and_currency(rng):
  city = rng.choice(_CITIES)
  amount = rng.randint(10, 900)
  src, dst = rng.sample(_CURRENCIES, 2)
  return (f"I'm flying to {city}: what's the weather there, and how much is "
          f"{amount} {src} in {dst}?",
          [{"name": "get_weather", "arguments": {"city": city}},
           {"name": "convert_currency",
            "arguments": {"amount": amount, "from_currency": src,
                          "to_currency": dst}}])


QUERY_GENERATORS = (_q_weather, _q_weather_two, _q_currency, _q_stock,
                    _q_timer, _q_translate, _q_tip, _q_flights, _q_population,
                    _q_recipes, _q_primes, _q_weather_and_currency)


# ----------------------------------------------------------------------------
# Comparing calls.


def _param_type(schema: Mapping[str, Any]) -> Optional[str]:
  kind = schema.get("type")
  if isinstance(kind, str):
    return kind
  for option in schema.get("anyOf", []):
    if isinstance(option, Mapping) and option.get("type") not in (None, "null"):
      return option.get("type")
  return None


def normalize_value(value: Any, schema: Optional[Mapping[str, Any]] = None
                    ) -> Any:
  """A comparable form of an argument value, guided by its JSON schema."""
  schema = schema or {}
  kind = _param_type(schema)
  if isinstance(value, str):
    text = value.strip()
    if kind in ("integer", "number"):
      number = answers_lib.parse_number(text)
      if number is not None and re.fullmatch(r"[-+]?[\d,]*\.?\d+", text):
        return ("num", number)
    if kind == "boolean" and text.lower() in ("true", "false"):
      return ("bool", text.lower() == "true")
    return ("str", text)
  if isinstance(value, bool):
    return ("bool", value)
  if isinstance(value, int):
    return ("num", fractions.Fraction(value))
  if isinstance(value, float):
    try:  # via repr, so that 0.1 equals the string "0.1"
      return ("num", fractions.Fraction(repr(value)))
    except (ValueError, OverflowError):  # nan / inf
      return ("float", repr(value))
  if isinstance(value, list):
    items = schema.get("items")
    items = items if isinstance(items, Mapping) else {}
    return ("list", tuple(normalize_value(v, items) for v in value))
  if isinstance(value, dict):
    props = schema.get("properties", {}) if isinstance(schema, Mapping) else {}
    return ("dict", tuple(sorted(
        (str(k), normalize_value(v, props.get(k))) for k, v in value.items())))
  if value is None:
    return ("none",)
  return ("other", repr(value))


def strict_value(value: Any) -> Any:
  """A comparable form of a parsed JSON value for strict grading.

  Equal forms mean equal JSON values: numbers by value (5 == 5.0), booleans,
  strings and null only to themselves, lists in order, objects key by key.
  """
  if isinstance(value, bool):
    return ("bool", value)
  if isinstance(value, (int, float)):
    return ("num", value)
  if isinstance(value, str):
    return ("str", value)
  if value is None:
    return ("none",)
  if isinstance(value, list):
    return ("list", tuple(strict_value(v) for v in value))
  if isinstance(value, dict):
    return ("dict", tuple(sorted((str(k), strict_value(v))
                                 for k, v in value.items())))
  return ("other", repr(value))


def check_grading(grading: str) -> str:
  """`grading` if it is one of GRADINGS, else ValueError naming it."""
  if grading not in GRADINGS:
    raise ValueError(f"Unknown function-calling grading {grading!r}; choose "
                     f"one of {list(GRADINGS)}.")
  return grading


def _json_kind(value: Any) -> str:
  kinds = ((bool, "a boolean"), (dict, "an object"), (list, "a list"),
           (str, "a string"), ((int, float), "a number"))
  if value is None:
    return "null"
  return next((k for t, k in kinds if isinstance(value, t)),
              type(value).__name__)


def _reject_constant(name: str) -> Any:
  raise ValueError(f"{name} is not JSON")


def parse_strict_calls(text: str
                       ) -> tuple[Optional[list[dict[str, Any]]], str]:
  """(calls, "") if `text` is the prompt's call format, else (None, why).

  The format: a non-empty JSON list of objects with exactly the keys "name"
  (a non-empty string) and "arguments" (an object).
  """
  text = text.strip()
  if len(text) > functions_lib.MAX_CALL_CHARS:
    return None, f"function call is too long ({len(text)} characters)"
  try:
    data = json.loads(text, parse_constant=_reject_constant)
  except (ValueError, RecursionError) as e:
    return None, f"malformed JSON: {e}"
  if not isinstance(data, list) or not data:
    got = "an empty list" if data == [] else _json_kind(data)
    return None, f"expected a non-empty JSON list of calls, got {got}"
  calls = []
  for i, item in enumerate(data):
    if not isinstance(item, dict) or set(item) != CALL_KEYS:
      got = (f"keys {sorted(item)}" if isinstance(item, dict)
             else _json_kind(item))
      return None, (f"call {i} must be an object with exactly the keys "
                    f"'arguments' and 'name', got {got}")
    if not isinstance(item["name"], str) or not item["name"]:
      return None, (f"call {i}: 'name' must be a non-empty string, got "
                    f"{_json_kind(item['name'])}")
    if not isinstance(item["arguments"], dict):
      return None, (f"call {i}: 'arguments' must be an object, got "
                    f"{_json_kind(item['arguments'])}")
    calls.append({"name": item["name"], "arguments": item["arguments"]})
  return calls, ""


def _strict_arguments(call: Mapping[str, Any]) -> dict[str, Any]:
  return {k: strict_value(v) for k, v in (call.get("arguments") or {}).items()}


def _normalized_arguments(call: Mapping[str, Any],
                          spec: Optional[functions_lib.FunctionSpec]
                          ) -> dict[str, Any]:
  args = dict(call.get("arguments") or {})
  props = dict(spec.properties) if spec else {}
  for name, schema in props.items():  # omitted == documented default
    if name not in args and "default" in schema:
      args[name] = schema["default"]
  return {k: normalize_value(v, props.get(k)) for k, v in args.items()}


def _describe_diff(pred: Mapping[str, Any], gold: Mapping[str, Any]) -> str:
  parts = []
  missing = sorted(set(gold) - set(pred))
  extra = sorted(set(pred) - set(gold))
  if missing:
    parts.append(f"missing {missing}")
  if extra:
    parts.append(f"unexpected {extra}")
  differ = sorted(k for k in set(pred) & set(gold) if pred[k] != gold[k])
  if differ:
    parts.append(f"different values for {differ}")
  return ", ".join(parts)


def compare_calls(predicted: Sequence[Mapping[str, Any]],
                  gold: Sequence[Mapping[str, Any]],
                  specs: Mapping[str, functions_lib.FunctionSpec],
                  grading: str = STRICT) -> base.Verdict:
  """Grades parsed calls against gold calls (order-insensitive).

  Args:
    predicted / gold: calls {name, arguments}.
    specs: the available functions (their defaults and types are used by
      'lenient' grading only).
    grading: one of GRADINGS (see the module docstring).
  """
  check_grading(grading)

  def arguments(call):
    if grading == STRICT:
      return _strict_arguments(call)
    return _normalized_arguments(call, specs.get(call["name"]))

  pred_names = sorted(c["name"] for c in predicted)
  gold_names = sorted(c["name"] for c in gold)
  if pred_names != gold_names:
    return base.Verdict(False, WRONG_TOOL,
                        f"called {pred_names}, expected {gold_names}")
  remaining = [(c["name"], arguments(c)) for c in gold]
  for call in predicted:
    args = arguments(call)
    match = next((j for j, (n, a) in enumerate(remaining)
                  if n == call["name"] and a == args), None)
    if match is None:
      candidates = [a for n, a in remaining if n == call["name"]]
      diff = _describe_diff(args, candidates[0]) if candidates else ""
      return base.Verdict(False, WRONG_ARGUMENTS,
                          f"{call['name']}: {diff or 'arguments differ'}")
    del remaining[match]
  return base.Verdict(True, base.CORRECT, f"{len(predicted)} call(s) match")


def _parse_json_field(value: Any, field: str, where: str) -> Any:
  if isinstance(value, str):
    try:
      return json.loads(value)
    except json.JSONDecodeError as e:
      raise base.DataFormatError(
          f"{where}: field {field!r} is a string but not valid JSON "
          f"({e.msg} at column {e.colno})") from None
  return value


@base.register_task("function_calling")
class FunctionCallingTask(base.Task):
  """APIGen / xLAM function calling with R3's reflection instruction.

  Args:
    num_distractors: extra functions in each generated tool list.
    grading: 'strict' (R3's rule, the default) or 'lenient' (see the module
      docstring); set it per task, e.g. in gin
      `R3Config.task_kwargs = {'function_calling': {'grading':
      'lenient'}}`.
  """

  name = "function_calling"
  tools = (TOOL_CALL_TAG,)
  max_steps = 1
  reflection_instruction = prompts.REFLECTION_INSTRUCTION

  def __init__(self, num_distractors: int = 3, grading: str = STRICT):
    if not 0 <= num_distractors <= len(API_SPECS) - 2:
      raise ValueError(f"num_distractors must be in [0, "
                       f"{len(API_SPECS) - 2}], got {num_distractors}")
    self.num_distractors = num_distractors
    self.grading = check_grading(grading)

  # -- loading ---------------------------------------------------------------

  def load(self, path: str, split: str = "test") -> list[base.Example]:
    """Reads xLAM / APIGen records (json list or jsonl)."""
    records = base.read_records(path, "records")
    out = []
    for where, rec in records:
      id_ = base.require(rec, "id", (int, str), where)
      query = base.require(rec, "query", str, where)
      tools = _parse_json_field(base.require(rec, "tools", (str, list), where),
                                "tools", where)
      answers = _parse_json_field(
          base.require(rec, "answers", (str, list), where), "answers", where)
      if not isinstance(tools, list):
        raise base.DataFormatError(f"{where}: 'tools' must be a list")
      try:
        specs = functions_lib.as_specs(tools)
      except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise base.DataFormatError(f"{where}: bad tool description: {e}"
                                   ) from None
      calls = functions_lib.parse_calls(json.dumps(answers))
      if functions_lib.is_parse_error(calls):
        raise base.DataFormatError(
            f"{where}: 'answers' is not a list of {{name, arguments}} calls: "
            f"{calls[0]['message']}")
      unknown = sorted({c["name"] for c in calls} - set(specs))
      if unknown:
        raise base.DataFormatError(
            f"{where}: answers call functions {unknown} that are not in "
            f"'tools' ({sorted(specs)})")
      out.append(base.Example(
          id=f"xlam-{id_}", question=query, answer=json.dumps(calls),
          metadata={"split": split, "tools": tools}))
    return out

  # -- generation ------------------------------------------------------------

  def generate(self, n: int, seed: int = 0,
               split: str = "train") -> list[base.Example]:
    base.check_split(split)
    rng = random.Random(base.seed_for(seed, "function_calling", split))

    def candidates() -> Iterator[tuple[str, base.Example]]:
      while True:
        gen = rng.choice(QUERY_GENERATORS)
        query, calls = gen(rng)
        needed = sorted({c["name"] for c in calls})
        others = sorted(set(API_SPECS) - set(needed))
        names = needed + rng.sample(others, self.num_distractors)
        rng.shuffle(names)
        yield query, base.Example(
            id=base.content_id("fc-gen", query), question=query,
            answer=json.dumps(calls),
            metadata={"tools": [API_SPECS[k] for k in names],
                      "template": gen.__name__.removeprefix("_q_")})

    return base.take_split(candidates(), n, split, 50 * n + 100, self.name)

  # -- prompting and grading -------------------------------------------------

  def specs(self, example: base.Example
            ) -> dict[str, functions_lib.FunctionSpec]:
    return functions_lib.as_specs(example.metadata.get("tools", []))

  def gold_calls(self, example: base.Example) -> list[dict[str, Any]]:
    calls = functions_lib.parse_calls(example.answer)
    if functions_lib.is_parse_error(calls):
      raise ValueError(f"Example {example.id}: gold answer is not a call "
                       f"list: {calls[0]['message']}")
    return calls

  def prompt(self, example: base.Example) -> str:
    tools_json = "\n".join(
        json.dumps(t, ensure_ascii=False)
        for t in example.metadata.get("tools", []))
    return prompts.function_calling_prompt(example.question, tools_json)

  def parse_answer(self, text: str) -> Optional[str]:
    """The last <tool_call> content ('lenient': else a fenced block, else
    the whole reply); None if there is none."""
    if not text or not text.strip():
      return None
    tagged = answers_lib.extract_tagged(text, TOOL_CALL_TAG)
    if tagged is not None or self.grading == STRICT:
      return tagged
    fenced = _FENCE_RE.findall(text)
    if fenced:
      return fenced[-1].strip()
    return text.strip()

  def verify(self, example: base.Example,
             answer: Optional[str]) -> base.Verdict:
    if answer is None or not answer.strip():
      where = (f" (expected <{TOOL_CALL_TAG}> [...] </{TOOL_CALL_TAG}>)"
               if self.grading == STRICT else "")
      return base.Verdict(False, FORMAT_ERROR, "no function call given" + where)
    if self.grading == STRICT:
      calls, why = parse_strict_calls(answer)
      if calls is None:
        return base.Verdict(False, FORMAT_ERROR, why)
    else:
      calls = functions_lib.parse_calls(answer)
      if functions_lib.is_parse_error(calls):
        return base.Verdict(False, FORMAT_ERROR, calls[0]["message"])
    return compare_calls(calls, self.gold_calls(example), self.specs(example),
                         self.grading)
