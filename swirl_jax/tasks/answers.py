"""Answer extraction and numeric normalisation shared by the task families.

Model output is untrusted text: everything here is string processing and
exact rational arithmetic, nothing is evaluated.
"""

from __future__ import annotations

import fractions
import re
from typing import Optional

_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
_CURRENCY_RE = re.compile(r"[$£€¥]|\\\$|US\$|USD\b", re.IGNORECASE)
# A leading number, optionally a fraction, then only units / words.
_LEADING_NUMBER_RE = re.compile(
    r"^\s*(?P<num>" + _NUMBER + r")(?:\s*/\s*(?P<den>\d+))?"
    r"\s*(?P<rest>[A-Za-z%°][A-Za-z%°.\s/-]*|\.)?\s*$")


def extract_tagged(text: Optional[str], tag: str) -> Optional[str]:
  """Content of the last complete <tag> ... </tag> in `text` (stripped)."""
  if not text:
    return None
  pattern = re.compile(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>",
                       re.DOTALL)
  found = pattern.findall(text)
  if not found:
    return None
  return found[-1].strip()


def last_number(text: Optional[str]) -> Optional[str]:
  """The last number written in `text` (commas kept), or None."""
  if not text:
    return None
  found = _NUMBER_RE.findall(text)
  return found[-1] if found else None


def parse_number(text: Optional[str]) -> Optional[fractions.Fraction]:
  """Parses a numeric answer exactly, tolerating answer-like decorations.

  Accepts '1,234', '$1,234.50', '42 dollars', '-3', '3/4', '50%', '7.0' and
  '12 cm.'; a string with other words around several numbers is not a
  number (None). A single number inside a short phrase ('about 42') is taken.

  Returns:
    The value as a Fraction, or None when the text is not a plain number.
  """
  if text is None:
    return None
  s = _CURRENCY_RE.sub("", str(text)).strip()
  s = s.replace("\u2212", "-").replace("\\!", "").strip()
  if s.endswith(".") and not s.endswith(".."):  # a sentence's full stop
    s = s[:-1].rstrip()
  if not s:
    return None
  m = _LEADING_NUMBER_RE.match(s)
  if m:
    value = _to_fraction(m.group("num"))
    if m.group("den"):
      den = int(m.group("den"))
      if den == 0:
        return None
      value /= den
    return value
  found = _NUMBER_RE.findall(s)
  if len(found) == 1 and len(s) <= 40:
    return _to_fraction(found[0])
  return None


def _to_fraction(num: str) -> fractions.Fraction:
  return fractions.Fraction(num.replace(",", ""))


def format_number(value: fractions.Fraction) -> str:
  """'42', '-3', '0.75' or '1/3': an exact, canonical text for a value."""
  if value.denominator == 1:
    return str(value.numerator)
  # Terminating decimals print as decimals.
  d = value.denominator
  while d % 2 == 0:
    d //= 2
  while d % 5 == 0:
    d //= 5
  if d == 1:
    text = f"{float(value):.12f}".rstrip("0").rstrip(".")
    if fractions.Fraction(text) == value:
      return text
  return f"{value.numerator}/{value.denominator}"


def numbers_equal(a: Optional[str], b: Optional[str]) -> bool:
  """Whether both texts parse as numbers with the same exact value."""
  x, y = parse_number(a), parse_number(b)
  return x is not None and y is not None and x == y
