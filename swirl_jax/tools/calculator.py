"""A safe, exact calculator for `<math_exp> EXPR </math_exp>` calls.

The expression is tokenised and parsed by our own recursive-descent parser;
model text is never handed to `eval`, `exec`, `compile` or `ast`. Numbers are
`fractions.Fraction` (exact) until an irrational operation (sqrt of a
non-square, log, exp, trig, pi, e) makes them floats.

Grammar (loosest binding first, Python precedence):

  expr    := term (('+' | '-') term)*
  term    := unary (('*' | '/' | '//' | '%') unary)*
  unary   := ('+' | '-') unary | power
  power   := postfix (('**' | '^') unary)?        right-associative
  postfix := primary '!'*                         factorial
  primary := NUMBER | CONSTANT | FUNC '(' expr (',' expr)* ')' | '(' expr ')'

Every size is bounded before work is done: expression length, nesting depth,
the digits of every intermediate numerator and denominator, integer exponents
(with an estimate of the result size checked before computing) and factorial
arguments, so hostile inputs such as `9**9**9` are refused in microseconds.

Output: an exact integer prints as an integer ("42", up to 100 digits); an
exact rational with a terminating decimal prints exactly ("3.5", up to 40
characters); anything else prints with 12 significant digits, trailing zeros
stripped ("0.333333333333", "1.41421356237", "3.33333333333e+19").
"""

from __future__ import annotations

import dataclasses
import decimal
import difflib
import fractions
import keyword
import math
import re
from typing import Callable, Union

from swirl_jax.tools import base

Fraction = fractions.Fraction
Number = Union[Fraction, float]

MAX_EXPR_CHARS = 500
MAX_DEPTH = 50
MAX_DIGITS = 10_000          # of any intermediate numerator / denominator
MAX_EXPONENT = 10_000        # |n| of an exact integer power
MAX_FACTORIAL = 100
MAX_ROOT_INDEX = 1_000       # q of an exact rational power p/q
MAX_ROUND_DIGITS = 100
MAX_INT_OUTPUT_DIGITS = 100  # longer exact integers print in 12-digit notation
MAX_DECIMAL_OUTPUT_CHARS = 40
SIGNIFICANT_DIGITS = 12

_MAX_BITS = int(MAX_DIGITS * math.log2(10)) + 1
_DIGITS = "0123456789"
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
_OPERATORS = ("**", "//", "+", "-", "*", "/", "%", "^", "(", ")", ",", "!")
_UNICODE_OPERATORS = {"\u00d7": "*", "\u00f7": "/", "\u2212": "-",
                      "\u2013": "-", "\u22c5": "*", "\u00b7": "*"}
_THOUSANDS_RE = re.compile(r"\d,\d{3}(?![\d.])")


class CalculatorError(ValueError):
  """An expression that cannot be evaluated; the message names the problem."""


# --- tokeniser ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Token:
  kind: str    # 'num', 'name', 'op', 'end'
  text: str
  pos: int
  value: Fraction | None = None


def _number_token(s: str, i: int) -> tuple[_Token, int]:
  """Reads a decimal literal (`12`, `1.25`, `.5`, `6.02e23`) starting at i."""
  start, n = i, len(s)
  while i < n and s[i] in _DIGITS:
    i += 1
  int_part = s[start:i]
  frac_part = ""
  if i < n and s[i] == ".":
    j = i + 1
    while j < n and s[j] in _DIGITS:
      j += 1
    frac_part = s[i + 1:j]
    i = j
  exponent = 0
  if (i < n and s[i] in "eE" and
      (i + 1 < n and s[i + 1] in _DIGITS or
       i + 2 < n and s[i + 1] in "+-" and s[i + 2] in _DIGITS)):
    j = i + 1
    if s[j] in "+-":
      j += 1
    while j < n and s[j] in _DIGITS:
      j += 1
    exponent = int(s[i + 1:j])
    i = j
  text = s[start:i]
  if len(int_part) > 1 and int_part[0] == "0":
    hint = (" (if ',' was a thousands separator, write the number without it)"
            if start > 0 and s[start - 1] == "," else "")
    raise CalculatorError(f"leading zeros are not allowed in {text!r}{hint}.")
  if i < n and s[i] == "_" and i + 1 < n and s[i + 1] in _DIGITS:
    raise CalculatorError(
        f"digit separators are not allowed in {s[start:i + 2]!r}...; "
        "write the number without '_'.")
  if i < n and s[i] == ".":
    raise CalculatorError(
        f"malformed number {s[start:i + 1]!r}... at position {start}.")
  mantissa = int(int_part + frac_part or "0")
  scale = exponent - len(frac_part)
  if mantissa and abs(scale) + len(str(mantissa)) > MAX_DIGITS:
    raise CalculatorError(
        f"number {text!r} is too large (more than {MAX_DIGITS} digits).")
  value = Fraction(mantissa) * (Fraction(10) ** scale) if mantissa else Fraction(0)
  return _Token("num", text, start, value), i


def _tokenize(s: str) -> list[_Token]:
  tokens = []
  i, n = 0, len(s)
  while i < n:
    c = s[i]
    if c.isspace():
      i += 1
    elif c in _DIGITS or (c == "." and i + 1 < n and s[i + 1] in _DIGITS):
      token, i = _number_token(s, i)
      tokens.append(token)
    elif c in _LETTERS:
      j = i
      while j < n and (s[j] in _LETTERS or s[j] in _DIGITS):
        j += 1
      if keyword.iskeyword(s[i:j]):
        raise CalculatorError(
            f"{s[i:j]!r} is not allowed: only arithmetic expressions are supported.")
      tokens.append(_Token("name", s[i:j], i))
      i = j
    elif s.startswith(("**", "//"), i):
      tokens.append(_Token("op", s[i:i + 2], i))
      i += 2
    elif c in "+-*/%^(),!":
      tokens.append(_Token("op", c, i))
      i += 1
    elif c in "'\"":
      raise CalculatorError(f"strings are not allowed (quote at position {i}).")
    elif c == ".":
      raise CalculatorError(
          f"unexpected '.' at position {i}: attribute access is not allowed.")
    elif c in "[]{}":
      raise CalculatorError(
          f"{c!r} at position {i} is not allowed: only numbers, operators, "
          "parentheses and functions are supported.")
    elif c == "=":
      raise CalculatorError(
          f"'=' at position {i} is not allowed: write only the expression.")
    else:
      raise CalculatorError(f"unexpected character {c!r} at position {i}.")
  tokens.append(_Token("end", "", n))
  return tokens


# --- exact and floating arithmetic -----------------------------------------------


def _check(x: Number) -> Number:
  """Bounds the size of an exact value and the finiteness of a float."""
  if isinstance(x, float):
    if not math.isfinite(x):
      raise CalculatorError("result is too large or undefined (not a finite number).")
    return x
  if (x.numerator.bit_length() > _MAX_BITS or
      x.denominator.bit_length() > _MAX_BITS):
    raise CalculatorError(
        f"intermediate result is too large (more than {MAX_DIGITS} digits).")
  return x


def _to_float(x: Number) -> float:
  try:
    return float(x)
  except OverflowError:
    raise CalculatorError(
        "number is too large for a floating-point operation.") from None


def _is_int(x: Number) -> bool:
  if isinstance(x, float):
    return x.is_integer()
  return x.denominator == 1


def _as_int(x: Number, what: str) -> int:
  if not _is_int(x):
    raise CalculatorError(f"{what} must be an integer, got {_format(x)}.")
  return int(x)


def _iroot(n: int, k: int) -> int | None:
  """The exact integer k-th root of n >= 0, or None if n is not a k-th power."""
  if n < 2 or k == 1:
    return n
  if k == 2:
    r = math.isqrt(n)
    return r if r * r == n else None
  if n.bit_length() < 50 * k:   # the root is below 2**50: a float guess is enough
    guess = round(2.0 ** (math.log2(n) / k))
    for r in (guess - 1, guess, guess + 1):
      if r >= 0 and r ** k == n:
        return r
    return None
  x = 1 << -(-n.bit_length() // k)   # an upper bound; Newton descends from it
  while True:
    y = ((k - 1) * x + n // x ** (k - 1)) // k
    if y >= x:
      break
    x = y
  return x if x ** k == n else None


def _int_power(base: Fraction, n: int) -> Fraction:
  """base ** n for an integer n, with the result size estimated first."""
  if base == 0 and n < 0:
    raise CalculatorError("division by zero (0 raised to a negative power).")
  if base in (0, 1) or n == 0:
    return base ** n if n >= 0 else Fraction(1)
  if base == -1:
    return Fraction(-1 if n % 2 else 1)
  if abs(n) > MAX_EXPONENT:
    raise CalculatorError(f"exponent {n} is too large (limit |n| <= {MAX_EXPONENT}).")
  bits = max(math.log2(abs(base.numerator)), math.log2(base.denominator))
  if bits * abs(n) > _MAX_BITS + 64:
    raise CalculatorError(
        f"result of a power with exponent {n} would have more than "
        f"{MAX_DIGITS} digits.")
  return _check(base ** n)


def _power(a: Number, b: Number) -> Number:
  if isinstance(a, Fraction) and isinstance(b, Fraction):
    if b.denominator == 1:
      return _int_power(a, b.numerator)
    p, q = b.numerator, b.denominator
    if a < 0 and q % 2 == 0:
      raise CalculatorError(
          f"{_paren(a)} ** {_paren(b)} is not a real number (even root of a negative).")
    if q <= MAX_ROOT_INDEX and a.numerator.bit_length() <= _MAX_BITS:
      num, den = _iroot(abs(a.numerator), q), _iroot(a.denominator, q)
      if num is not None and den is not None:
        root = Fraction(num, den) * (-1 if a < 0 else 1)
        return _int_power(root, p)
    magnitude = _positive_float_power(abs(a), b)
    return -magnitude if a < 0 else magnitude
  if _to_float(a) < 0 and not _is_int(b):
    raise CalculatorError(
        f"{_paren(a)} ** {_paren(b)} is not a real number (negative base, "
        "fractional exponent).")
  if a == 0 and b < 0:
    raise CalculatorError("division by zero (0 raised to a negative power).")
  try:
    return _check(math.pow(_to_float(a), _to_float(b)))
  except OverflowError:
    raise CalculatorError("result is too large (floating-point overflow).") from None


def _positive_float_power(a: Fraction, b: Fraction) -> float:
  """a ** b for a > 0 as a float, via logarithms when a is beyond float range."""
  try:
    return _check(math.pow(float(a), float(b)))
  except OverflowError:
    pass
  exponent = _ln(a) * _to_float(b)
  if exponent > 709.78:
    raise CalculatorError("result is too large (floating-point overflow).")
  return math.exp(exponent)


def _binary(op: str, a: Number, b: Number) -> Number:
  if op in ("/", "//", "%") and b == 0:
    raise CalculatorError("division by zero.")
  try:
    if op == "+":
      result = a + b
    elif op == "-":
      result = a - b
    elif op == "*":
      result = a * b
    elif op == "/":
      result = a / b
    elif op == "//":
      result = a // b
      result = Fraction(result) if isinstance(result, int) else result
    elif op == "%":
      result = a % b
    else:  # '**' or '^'
      return _power(a, b)
  except OverflowError:
    raise CalculatorError(
        "number is too large for a floating-point operation.") from None
  return _check(result)


# --- functions ------------------------------------------------------------------


def _sqrt(x: Number) -> Number:
  if x < 0:
    raise CalculatorError(f"sqrt of a negative number ({_format(x)}).")
  return _power(x, Fraction(1, 2)) if isinstance(x, Fraction) else math.sqrt(x)


def _ln(x: Number) -> float:
  if x <= 0:
    raise CalculatorError(f"log of a non-positive number ({_format(x)}).")
  if isinstance(x, Fraction):   # math.log accepts integers of any size
    return math.log(x.numerator) - math.log(x.denominator)
  return math.log(x)


def _log(x: Number, base: Number | None = None) -> float:
  if base is None:
    return _ln(x)
  if base <= 0 or base == 1:
    raise CalculatorError(f"invalid logarithm base {_format(base)}.")
  return _ln(x) / _ln(base)


def _round(x: Number, ndigits: Number = Fraction(0)) -> Fraction:
  """Rounds half away from zero (2.5 -> 3, -2.5 -> -3), exactly."""
  n = _as_int(ndigits, "round() digits")
  if abs(n) > MAX_ROUND_DIGITS:
    raise CalculatorError(
        f"round() digits {n} out of range (|n| <= {MAX_ROUND_DIGITS}).")
  exact = Fraction(repr(x)) if isinstance(x, float) else x
  scale = Fraction(10) ** n
  scaled = abs(exact) * scale
  rounded = math.floor(scaled + Fraction(1, 2))
  return _check(Fraction(rounded) / scale * (-1 if exact < 0 else 1))


def _factorial(x: Number) -> Fraction:
  n = _as_int(x, "factorial argument")
  if n < 0:
    raise CalculatorError(f"factorial of a negative number ({n}).")
  if n > MAX_FACTORIAL:
    raise CalculatorError(
        f"factorial argument {n} is too large (limit {MAX_FACTORIAL}).")
  return Fraction(math.factorial(n))


def _floor(x: Number) -> Fraction:
  return Fraction(math.floor(x))


def _ceil(x: Number) -> Fraction:
  return Fraction(math.ceil(x))


def _gcd(*args: Number) -> Fraction:
  return Fraction(math.gcd(*(_as_int(a, "gcd() argument") for a in args)))


def _lcm(*args: Number) -> Fraction:
  result = Fraction(1)
  for a in args:   # one step at a time, so the size check runs before it grows
    result = _check(Fraction(math.lcm(int(result), _as_int(a, "lcm() argument"))))
  return result


def _float_fn(fn: Callable[[float], float], name: str) -> Callable[[Number], float]:
  def wrapped(x: Number) -> float:
    try:
      return fn(_to_float(x))
    except ValueError:
      raise CalculatorError(
          f"{name}({_format(x)}) is undefined (math domain error).") from None
    except OverflowError:
      raise CalculatorError(f"{name}({_format(x)}) is too large.") from None
  return wrapped


@dataclasses.dataclass(frozen=True)
class _Function:
  fn: Callable[..., Number]
  min_args: int
  max_args: int   # -1: any number


_FUNCTIONS: dict[str, _Function] = {
    "sqrt": _Function(_sqrt, 1, 1),
    "abs": _Function(abs, 1, 1),
    "round": _Function(_round, 1, 2),
    "floor": _Function(_floor, 1, 1),
    "ceil": _Function(_ceil, 1, 1),
    "min": _Function(min, 1, -1),
    "max": _Function(max, 1, -1),
    "log": _Function(_log, 1, 2),
    "ln": _Function(_ln, 1, 1),
    "log10": _Function(lambda x: _log(x, Fraction(10)), 1, 1),
    "log2": _Function(lambda x: _log(x, Fraction(2)), 1, 1),
    "exp": _Function(_float_fn(math.exp, "exp"), 1, 1),
    "sin": _Function(_float_fn(math.sin, "sin"), 1, 1),
    "cos": _Function(_float_fn(math.cos, "cos"), 1, 1),
    "tan": _Function(_float_fn(math.tan, "tan"), 1, 1),
    "asin": _Function(_float_fn(math.asin, "asin"), 1, 1),
    "acos": _Function(_float_fn(math.acos, "acos"), 1, 1),
    "atan": _Function(_float_fn(math.atan, "atan"), 1, 1),
    "factorial": _Function(_factorial, 1, 1),
    "gcd": _Function(_gcd, 1, -1),
    "lcm": _Function(_lcm, 1, -1),
    "pow": _Function(_power, 2, 2),
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


def function_names() -> list[str]:
  """Names of the supported functions."""
  return sorted(_FUNCTIONS)


# --- parser ---------------------------------------------------------------------


class _Parser:
  """Recursive-descent parser that evaluates while it parses."""

  def __init__(self, tokens: list[_Token]):
    self._tokens = tokens
    self._i = 0
    self._depth = 0

  @property
  def _tok(self) -> _Token:
    return self._tokens[self._i]

  def _next(self) -> _Token:
    tok = self._tokens[self._i]
    self._i += 1
    return tok

  def _is_op(self, *ops: str) -> bool:
    return self._tok.kind == "op" and self._tok.text in ops

  def _expect(self, op: str, context: str) -> None:
    if not self._is_op(op):
      raise CalculatorError(f"expected {op!r} {context}, found {_describe(self._tok)}.")
    self._i += 1

  def parse(self) -> Number:
    if self._tok.kind == "end":
      raise CalculatorError("empty expression.")
    value = self._expr()
    if self._tok.kind != "end":
      tok = self._tok
      hint = ""
      if tok.kind in ("num", "name") or (tok.kind == "op" and tok.text == "("):
        hint = " (implicit multiplication is not supported: use '*')"
      raise CalculatorError(f"unexpected {_describe(tok)}{hint}.")
    return value

  def _expr(self) -> Number:
    value = self._term()
    while self._is_op("+", "-"):
      op = self._next().text
      value = _binary(op, value, self._term())
    return value

  def _term(self) -> Number:
    value = self._unary()
    while self._is_op("*", "/", "//", "%"):
      op = self._next().text
      value = _binary(op, value, self._unary())
    return value

  def _unary(self) -> Number:
    self._depth += 1
    if self._depth > MAX_DEPTH:
      raise CalculatorError(f"expression is nested too deeply (limit {MAX_DEPTH}).")
    try:
      if self._is_op("+", "-"):
        op = self._next().text
        value = self._unary()
        return -value if op == "-" else value
      return self._power()
    finally:
      self._depth -= 1

  def _power(self) -> Number:
    base_value = self._postfix()
    if self._is_op("**", "^"):
      self._next()
      return _binary("**", base_value, self._unary())
    return base_value

  def _postfix(self) -> Number:
    value = self._primary()
    while self._is_op("!"):
      self._next()
      value = _factorial(value)
    return value

  def _primary(self) -> Number:
    tok = self._next()
    if tok.kind == "num":
      return tok.value
    if tok.kind == "name":
      return self._name(tok)
    if tok.kind == "op" and tok.text == "(":
      value = self._expr()
      self._expect(")", f"to close '(' at position {tok.pos}")
      return value
    raise CalculatorError(f"expected a number, found {_describe(tok)}.")

  def _name(self, tok: _Token) -> Number:
    name = tok.text
    called = self._is_op("(")
    if name in _CONSTANTS:
      if called:
        raise CalculatorError(f"{name!r} is a constant, not a function.")
      return _CONSTANTS[name]
    if name in _FUNCTIONS:
      if not called:
        raise CalculatorError(
            f"function {name!r} must be called with parentheses: {name}(...).")
      return self._call(name, tok)
    known = sorted(_FUNCTIONS) + sorted(_CONSTANTS)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    what = "function" if called else "name"
    raise CalculatorError(f"unknown {what} {name!r}{hint}")

  def _call(self, name: str, tok: _Token) -> Number:
    self._next()   # '('
    args = []
    if not self._is_op(")"):
      args.append(self._expr())
      while self._is_op(","):
        self._next()
        args.append(self._expr())
    self._expect(")", f"to close {name}( at position {tok.pos}")
    spec = _FUNCTIONS[name]
    if len(args) < spec.min_args or (spec.max_args >= 0 and len(args) > spec.max_args):
      if spec.max_args < 0:
        expected = f"at least {spec.min_args}"
      elif spec.min_args == spec.max_args:
        expected = str(spec.min_args)
      else:
        expected = f"{spec.min_args} or {spec.max_args}"
      raise CalculatorError(
          f"{name}() takes {expected} argument{'s' if expected != '1' else ''}, "
          f"got {len(args)}.")
    try:
      result = spec.fn(*args)
    except ZeroDivisionError:
      raise CalculatorError(f"division by zero in {name}().") from None
    except OverflowError:
      raise CalculatorError(f"result of {name}() is too large.") from None
    return _check(result if isinstance(result, float) else Fraction(result))


def _describe(tok: _Token) -> str:
  if tok.kind == "end":
    return "end of expression"
  return f"{tok.text!r} at position {tok.pos}"


# --- formatting -----------------------------------------------------------------


def _format_significant(d: decimal.Decimal) -> str:
  """`d` (already rounded to 12 digits) like '%.12g', trailing zeros stripped."""
  if d == 0:
    return "0"
  sign, digits, exponent = d.normalize().as_tuple()
  text = "".join(map(str, digits))
  adjusted = len(digits) - 1 + exponent
  if -5 <= adjusted < SIGNIFICANT_DIGITS:
    if exponent >= 0:
      body = text + "0" * exponent
    elif adjusted >= 0:
      body = text[:adjusted + 1] + "." + text[adjusted + 1:]
    else:
      body = "0." + "0" * (-adjusted - 1) + text
  else:
    mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
    body = f"{mantissa}e{'-' if adjusted < 0 else '+'}{abs(adjusted):02d}"
  return ("-" if sign else "") + body


def _paren(x: Number) -> str:
  text = _format(x)
  return f"({text})" if text.startswith("-") else text


def _terminating_places(den: int) -> int | None:
  """Decimal places of 1/den if it terminates (den = 2^a 5^b), else None."""
  twos = (den & -den).bit_length() - 1
  rest = den >> twos
  fives = 0
  while rest % 5 == 0:
    rest //= 5
    fives += 1
  return max(twos, fives) if rest == 1 else None


def _format(x: Number) -> str:
  if isinstance(x, float):
    text = format(x, f".{SIGNIFICANT_DIGITS}g")
    return "0" if text == "-0" else text
  num, den = x.numerator, x.denominator
  if den == 1 and num.bit_length() <= 333:   # 333 bits < 101 digits
    text = str(num)
    if len(text.lstrip("-")) <= MAX_INT_OUTPUT_DIGITS:
      return text
  # A terminating decimal with at most 40 places has den | 10**40 (< 2**133).
  places = _terminating_places(den) if den.bit_length() <= 133 else None
  if places is not None and places <= MAX_DECIMAL_OUTPUT_CHARS and den != 1:
    scaled = abs(num) * 10 ** places // den
    if scaled.bit_length() <= 133:   # fewer than 41 digits
      digits = str(scaled).rjust(places + 1, "0")
      text = (digits[:-places] + "." + digits[-places:]).rstrip("0").rstrip(".")
      text = ("-" if num < 0 else "") + text
      if len(text) <= MAX_DECIMAL_OUTPUT_CHARS:
        return text
  with decimal.localcontext() as ctx:
    ctx.prec = SIGNIFICANT_DIGITS
    ctx.Emax = decimal.MAX_EMAX
    ctx.Emin = decimal.MIN_EMIN
    value = decimal.Decimal(num) / decimal.Decimal(den)
  return _format_significant(value)


def _check_thousands_separators(expr: str) -> None:
  """Refuses `1,000` outside parentheses (inside, ',' separates arguments)."""
  for match in _THOUSANDS_RE.finditer(expr):
    prefix = expr[:match.start()]
    if prefix.count("(") <= prefix.count(")"):
      raise CalculatorError(
          f"thousands separators are not allowed ({match.group(0)!r}...): write "
          "numbers without ','.")


# --- public API -----------------------------------------------------------------


def evaluate_number(expr: str) -> Number:
  """The value of `expr` (Fraction if exact, else float); CalculatorError if bad."""
  if not isinstance(expr, str):
    raise CalculatorError(f"expression must be text, got {type(expr).__name__}.")
  for char, replacement in _UNICODE_OPERATORS.items():
    expr = expr.replace(char, replacement)
  expr = expr.strip()
  if not expr:
    raise CalculatorError("empty expression.")
  if len(expr) > MAX_EXPR_CHARS:
    raise CalculatorError(
        f"expression is too long ({len(expr)} characters, limit {MAX_EXPR_CHARS}).")
  _check_thousands_separators(expr)
  value = _Parser(_tokenize(expr)).parse()
  return value if isinstance(value, float) else Fraction(value)


def evaluate(expr: str) -> str:
  """Evaluates an arithmetic expression; never raises.

  Returns the formatted result, or a string starting with "Error:" that names
  the problem (syntax, unknown name, division by zero, size limits, ...).
  """
  try:
    return _format(evaluate_number(expr))
  except CalculatorError as e:
    return f"{base.ERROR_PREFIX} {e}"
  except RecursionError:
    return f"{base.ERROR_PREFIX} expression is nested too deeply."
  except Exception as e:  # pylint: disable=broad-except
    return f"{base.ERROR_PREFIX} cannot evaluate expression ({type(e).__name__}: {e})."


@base.register_tool("calculator")
class Calculator(base.Tool):
  """SWiRL's math tool: `<math_exp> EXPR </math_exp>` -> exact value."""

  tag = "math_exp"

  def describe(self) -> str:
    return ("<math_exp> EXPRESSION </math_exp>: evaluates an arithmetic "
            "expression exactly, e.g. <math_exp> (12 + 30) * 3 / 4 </math_exp>. "
            "Supports + - * / // % ** ^ !, parentheses, pi, e and "
            + ", ".join(function_names()) + ".")

  def execute(self, call: str) -> str:
    return evaluate(call)
