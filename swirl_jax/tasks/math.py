"""MATH: competition mathematics with boxed answers (SCoRe's math task).

* `load(path)`: the MATH release (a directory tree of one-problem json files
  {"problem", "level", "type", "solution"}), a single json file (one problem
  or a list), or jsonl (one problem per line; e.g. MATH-500 with an extra
  "answer" field). The gold answer is the content of the solution's last
  `\\boxed{...}` / `\\fbox{...}` (balanced braces), or "answer" when given.
* `generate(n, seed, split)`: small procedural problems (integer arithmetic,
  linear equations, fraction sums, polynomial evaluation) with worked,
  boxed solutions, for runs on a CPU.
* `parse_answer`: the answer in 'Final Answer: The final answer is $X$. I
  hope it is correct.' (SCoRe's format), else the last `\\boxed{}`, else the
  last `<answer>` tag.
* `verify`: string equality after LaTeX normalisation, or equal exact values
  when both answers read as numbers (integers, decimals, a/b, \\frac{a}{b}).
"""

from __future__ import annotations

import fractions
import math
import os
import random
import re
from typing import Iterator, Optional

from swirl_jax.tasks import answers as answers_lib
from swirl_jax.tasks import base
from swirl_jax.tasks import prompts

Fraction = fractions.Fraction

# ----------------------------------------------------------------------------
# Extraction.


def last_boxed(text: Optional[str]) -> Optional[str]:
  """Content of the last `\\boxed{...}` or `\\fbox{...}` (None if absent).

  Braces are matched with nesting; `\\boxed 5` (no braces) gives '5'.
  """
  if not text:
    return None
  start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
  if start < 0:
    return None
  i = start + (len("\\boxed") if text.startswith("\\boxed", start)
               else len("\\fbox"))
  while i < len(text) and text[i] == " ":
    i += 1
  if i >= len(text):
    return None
  if text[i] != "{":
    if i == start + len("\\boxed"):  # '\boxed5' is not a boxed answer
      return None
    m = re.match(r"[^\s$]+", text[i:])
    return m.group(0) if m else None
  depth = 0
  for j in range(i, len(text)):
    c = text[j]
    if c == "{" and text[j - 1] != "\\":
      depth += 1
    elif c == "}" and text[j - 1] != "\\":
      depth -= 1
      if depth == 0:
        return text[i + 1:j]
  return None  # unbalanced


_FINAL_ANSWER_RE = re.compile(
    r"Final Answer:\s*The final answer is\s*(.*?)\s*\.?\s*I hope it is correct",
    re.DOTALL | re.IGNORECASE)
_FINAL_ANSWER_LINE_RE = re.compile(
    r"Final Answer:\s*(?:The final answer is)?\s*(.+)", re.IGNORECASE)


def extract_answer(text: Optional[str]) -> Optional[str]:
  """The final answer of a MATH-style solution (see module docstring)."""
  if not text:
    return None
  found = _FINAL_ANSWER_RE.findall(text)
  if found:
    ans = found[-1].strip()
  else:
    lines = _FINAL_ANSWER_LINE_RE.findall(text)
    ans = lines[-1].strip() if lines else None
  if ans is not None:
    boxed = last_boxed(ans)
    if boxed is not None:
      return boxed.strip()
    ans = ans.strip()
    if ans.endswith("."):
      ans = ans[:-1].rstrip()
    if len(ans) >= 2 and ans.startswith("$") and ans.endswith("$"):
      ans = ans.strip("$").strip()
    return ans or None
  boxed = last_boxed(text)
  if boxed is not None:
    return boxed.strip()
  return answers_lib.extract_tagged(text, prompts.ANSWER_TAG)


# ----------------------------------------------------------------------------
# Normalisation.

_UNIT_WORDS = (
    "degrees", "degree", "units", "unit", "square", "sq", "cm", "mm", "km",
    "meters", "meter", "m", "inches", "inch", "feet", "foot", "ft", "yards",
    "miles", "mph", "hours", "hour", "minutes", "minute", "seconds",
    "second", "days", "day", "cents", "cent", "dollars", "dollar", "pounds",
    "cubic", "grams", "kg", "liters", "students", "people", "ways", "points")
_TEXT_UNIT_RE = re.compile(
    r"\\(?:text|textbf|mbox|mathrm)\{\s*([A-Za-z ^0-9]*)\}(\^\{?\d\}?)?\s*$")
_TRAILING_WORDS_RE = re.compile(
    r"^(?P<num>[-+]?[\d.,]+|\\frac\{\d+\}\{\d+\})\s*"
    r"(?P<w>[A-Za-z ]+)(\^\{?\d\}?)?$")
_WRAPPER_RE = re.compile(r"\\(?:text|textbf|mbox|mathrm|textrm)\{([^{}]*)\}")


def normalize_answer(answer: Optional[str]) -> Optional[str]:
  """A canonical string for a MATH answer (None stays None).

  Removes `$`, `\\left`/`\\right`, spacing commands (`\\!`, `\\,`, ...),
  degree signs, `\\%`, trailing unit text, a leading 'x =', spaces and
  trailing '.0'; maps `\\dfrac`/`\\tfrac` to `\\frac`, `\\frac12` to
  `\\frac{1}{2}`, `\\sqrt2` to `\\sqrt{2}`, simple `a/b` to `\\frac{a}{b}`,
  '.5' to '0.5' and '1,000' to '1000'.
  """
  if answer is None:
    return None
  s = str(answer).strip().replace("\n", "")
  s = s.strip("$").strip()
  for old, new in (("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\:", ""),
                   ("\\ ", ""), ("\\left", ""), ("\\right", ""),
                   ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"),
                   ("^\\circ", ""), ("^{\\circ}", ""), ("\\circ", ""),
                   ("°", ""), ("\\$", ""), ("$", ""), ("\\%", ""), ("%", ""),
                   ("\\displaystyle", "")):
    s = s.replace(old, new)
  s = s.strip()
  if s.endswith("."):
    s = s[:-1].rstrip()
  # Trailing unit text: '5 \text{ cm}^2' -> '5'.
  m = _TEXT_UNIT_RE.search(s)
  if m and s[:m.start()].strip():
    s = s[:m.start()].strip()
  s = _WRAPPER_RE.sub(r"\1", s)
  m = _TRAILING_WORDS_RE.match(s)
  if m and all(w in _UNIT_WORDS for w in m.group("w").lower().split()):
    s = m.group("num")
  # 'x = 5' -> '5' (one variable name, one '=').
  m = re.match(r"^[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(.+)$", s)
  if m and "=" not in m.group(1):
    s = m.group(1)
  s = s.replace(" ", "")
  s = _fix_frac_and_sqrt(s)
  if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", s):
    s = s.replace(",", "")
  s = re.sub(r"(?<![\d.])\.(\d)", r"0.\1", s)      # .5 -> 0.5
  s = re.sub(r"(\d)\.0+(?!\d)", r"\1", s)           # 7.0 -> 7
  m = re.fullmatch(r"(-?)(\d+)/(\d+)", s)
  if m:
    s = f"{m.group(1)}\\frac{{{m.group(2)}}}{{{m.group(3)}}}"
  return s


def _fix_frac_and_sqrt(s: str) -> str:
  # \frac12 -> \frac{1}{2}; \frac1{2} -> \frac{1}{2}; \frac{1}2 -> \frac{1}{2}
  s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
  s = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", s)
  s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)
  s = re.sub(r"\\sqrt(\d+)", r"\\sqrt{\1}", s)
  return s


_FRAC_VALUE_RE = re.compile(
    r"([-+]?)\\frac\{([-+]?\d+(?:\.\d+)?)\}\{([-+]?\d+(?:\.\d+)?)\}")


def answer_value(answer: Optional[str]) -> Optional[Fraction]:
  """The exact value of a normalised numeric answer, or None.

  Reads integers, decimals, 'a/b', '\\frac{a}{b}' and their negatives.
  """
  if answer is None:
    return None
  s = normalize_answer(answer)
  m = _FRAC_VALUE_RE.fullmatch(s)
  if m:
    den = Fraction(m.group(3))
    if den == 0:
      return None
    value = Fraction(m.group(2)) / den
    return -value if m.group(1) == "-" else value
  if re.fullmatch(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", s):
    return Fraction(s)
  return None


def is_equiv(a: Optional[str], b: Optional[str]) -> bool:
  """Whether two MATH answers agree (normalised text or exact value)."""
  if a is None or b is None:
    return False
  na, nb = normalize_answer(a), normalize_answer(b)
  if na == nb:
    return True
  va, vb = answer_value(a), answer_value(b)
  return va is not None and va == vb


# ----------------------------------------------------------------------------
# Procedural problems.


def _tex_fraction(v: Fraction) -> str:
  if v.denominator == 1:
    return str(v.numerator)
  sign = "-" if v < 0 else ""
  return f"{sign}\\frac{{{abs(v.numerator)}}}{{{v.denominator}}}"


def _gen_arithmetic(rng: random.Random):
  a, b = rng.randint(12, 99), rng.randint(3, 40)
  c, d = rng.randint(10, 500), rng.randint(2, 9)
  ab = a * b
  q = f"Compute $({a} \\times {b} - {c}) \\times {d}$."
  inner = ab - c
  ans = inner * d
  sol = (f"First, ${a} \\times {b} = {ab}$. Then ${ab} - {c} = {inner}$. "
         f"Finally ${inner} \\times {d} = {ans}$, so the answer is "
         f"$\\boxed{{{ans}}}$.")
  return q, sol, str(ans), "Prealgebra", 1


def _gen_linear(rng: random.Random):
  a = rng.choice([k for k in range(-9, 10) if k not in (0, 1)])
  b = rng.randint(-30, 30)
  c = rng.randint(-30, 30)
  x = Fraction(c - b, a)
  sign = "+" if b >= 0 else "-"
  q = f"Solve for $x$: ${a}x {sign} {abs(b)} = {c}$."
  sol = (f"Subtracting {b} from both sides gives ${a}x = {c - b}$. Dividing "
         f"by {a}, $x = {_tex_fraction(x)}$, so the answer is "
         f"$\\boxed{{{_tex_fraction(x)}}}$.")
  level = 1 if x.denominator == 1 else 2
  return q, sol, _tex_fraction(x), "Algebra", level


def _gen_fraction_sum(rng: random.Random):
  b, d = rng.randint(2, 12), rng.randint(2, 12)
  a, c = rng.randint(1, b - 1) if b > 2 else 1, rng.randint(1, 11)
  op = rng.choice(("+", "-"))
  x, y = Fraction(a, b), Fraction(c, d)
  v = x + y if op == "+" else x - y
  q = (f"Compute $\\frac{{{a}}}{{{b}}} {op} \\frac{{{c}}}{{{d}}}$. Express "
       "your answer as a common fraction in lowest terms.")
  lcm = b * d // math.gcd(b, d)
  sol = (f"Over the common denominator {lcm}, "
         f"$\\frac{{{a * lcm // b}}}{{{lcm}}} {op} \\frac{{{c * lcm // d}}}"
         f"{{{lcm}}} = {_tex_fraction(v)}$ in lowest terms, so the answer is "
         f"$\\boxed{{{_tex_fraction(v)}}}$.")
  return q, sol, _tex_fraction(v), "Prealgebra", 2


def _poly_tex(a: int, b: int, c: int) -> str:
  """'3x^2 - x + 4' for (3, -1, 4); a != 0."""
  out = f"{'' if a == 1 else a}x^2"
  if b:
    coef = "" if abs(b) == 1 else str(abs(b))
    out += f" {'+' if b > 0 else '-'} {coef}x"
  if c:
    out += f" {'+' if c > 0 else '-'} {abs(c)}"
  return out


def _gen_polynomial(rng: random.Random):
  a, b, c = rng.randint(1, 9), rng.randint(-12, 12), rng.randint(-20, 20)
  k = rng.choice([j for j in range(-6, 7) if j])
  terms = [a * k * k, b * k, c]
  v = sum(terms)
  q = f"If $f(x) = {_poly_tex(a, b, c)}$, what is $f({k})$?"
  steps = " ".join(f"{'+' if t >= 0 else '-'} {abs(t)}" for t in terms[1:])
  sol = (f"Substituting $x = {k}$: $f({k}) = {terms[0]} {steps} = {v}$, so "
         f"the answer is $\\boxed{{{v}}}$.")
  return q, sol, str(v), "Algebra", 2


GENERATORS = (_gen_arithmetic, _gen_linear, _gen_fraction_sum,
              _gen_polynomial)


@base.register_task("math")
class MathTask(base.Task):
  """MATH with SCoRe's prompt and self-correction instruction."""

  name = "math"
  tools = ()
  max_steps = 1
  correction_instruction = prompts.MATH_CORRECTION_INSTRUCTION

  def load(self, path: str, split: str = "test") -> list[base.Example]:
    """Reads a MATH directory tree, a json file or a jsonl file."""
    path = os.fspath(path)
    records = []  # (source id, where, record)
    if os.path.isdir(path):
      files = sorted(
          os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
          if f.endswith(".json"))
      if not files:
        raise FileNotFoundError(f"No MATH .json files under {path}")
      for f in files:
        rel = os.path.splitext(os.path.relpath(f, path))[0].replace(os.sep, "/")
        records.append((rel, f, base.read_json(f)))
    elif base.is_jsonl(path):
      for lineno, rec in base.read_jsonl(path):
        uid = rec.get("unique_id") if isinstance(rec, dict) else None
        records.append((str(uid) if uid else f"line{lineno}",
                        f"{path}:{lineno}", rec))
    else:
      data = base.read_json(path)
      if isinstance(data, list):
        for i, rec in enumerate(data):
          records.append((f"{i}", f"{path}[record {i}]", rec))
      else:
        records.append((os.path.splitext(os.path.basename(path))[0], path,
                        data))
    out = []
    for source_id, where, rec in records:
      problem = base.require(rec, "problem", str, where)
      solution = base.require(rec, "solution", str, where)
      if "answer" in rec and rec["answer"] not in (None, ""):
        gold = str(rec["answer"])
      else:
        gold = last_boxed(solution)
        if gold is None:
          raise base.DataFormatError(
              f"{where}: the solution has no \\boxed{{...}} answer: "
              f"{solution[-80:]!r}")
      out.append(base.Example(
          id=f"math-{source_id}", question=problem, answer=gold.strip(),
          metadata={"split": split, "solution": solution,
                    "level": rec.get("level", ""),
                    "type": rec.get("type", rec.get("subject", ""))}))
    return out

  def generate(self, n: int, seed: int = 0,
               split: str = "train") -> list[base.Example]:
    base.check_split(split)
    rng = random.Random(base.seed_for(seed, "math", split))

    def candidates() -> Iterator[tuple[str, base.Example]]:
      while True:
        gen = rng.choice(GENERATORS)
        q, sol, ans, kind, level = gen(rng)
        yield q, base.Example(
            id=base.content_id("math-gen", q), question=q, answer=ans,
            metadata={"solution": sol, "type": kind, "level": f"Level {level}"})

    return base.take_split(candidates(), n, split, 50 * n + 100, self.name)

  def prompt(self, example: base.Example) -> str:
    return prompts.math_prompt(example.question)

  def parse_answer(self, text: str) -> Optional[str]:
    return extract_answer(text)

  def verify(self, example: base.Example,
             answer: Optional[str]) -> base.Verdict:
    if answer is None or not str(answer).strip():
      return base.Verdict(False, base.NO_ANSWER, "no answer given")
    got, want = normalize_answer(answer), normalize_answer(example.answer)
    if is_equiv(answer, example.answer):
      return base.Verdict(True, base.CORRECT, f"{got!r} == {want!r}")
    return base.Verdict(False, base.WRONG_ANSWER, f"{got!r} != {want!r}")
