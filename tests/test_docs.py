"""Every command and snippet in docs/*.md is checked, so the docs cannot drift.

The convention (also written in docs/index.md, "How the docs are tested"):

* A ```python block is run. The python blocks of a page run in order, in one
  process and one namespace (like a notebook), from a scratch directory that
  stands in for the repository root (see "sandbox" below).

* A ```bash block (also ```sh / ```shell) must be followed by a directive,
  an HTML comment that markdown renderers do not show:

      <!-- doc-test: MODE
      key: value
      -->

  MODE says how the block is checked:

  run      executed verbatim with `bash -euo pipefail` in the sandbox, with
           `append:` added to the end of every command line matching
           `append_to:` (a regular expression, default `swirl_jax\\.main`):
           this is how a documented command gets small settings, e.g.
           `append: --gin.TRAIN_STEPS=2`. `append_for: REGEX :: ARGS`
           (repeatable) adds ARGS to the lines matching REGEX only. The
           arguments go before a trailing `&` of a background command. `expect_rc:` (default 0) is the
           exit status it must end with and each `expect:` a string its
           output must contain. `env:` NAME=VALUE pairs, `timeout:` seconds
           (default 300).
  gin      for commands that cannot run here (paper scale, TPU): every
           `python -m swirl_jax.main ...` line is run with `-m swirl_jax.main`
           replaced by a checker that parses the arguments and the gin files
           and bindings exactly as main.py does (unknown names, wrong types,
           missing %gin.REQUIRED values fail; so does a --gin.MACRO= binding
           of a macro nothing uses, which main.py lets through) and stops
           before any work;
           `make TARGET` lines are expanded with `make -n` and their
           swirl_jax.main commands checked the same way. Other lines are
           not allowed. `expect_rc:` / `expect:` as for run.
  dry-run  for tpu/*.sh: executed with DRY_RUN=1 and a `gcloud` (and `git`)
           on PATH that fails if called; then the gin files and bindings of
           every tpu/launch.sh line are checked as in `gin` mode.
  flags    for scripts that need hardware we do not have (a GPU benchmark)
           or take minutes (the CPU benchmarks): `SCRIPT --help` must succeed
           and list every --flag the line uses. Needs `reason:`.
  excerpt  the block must appear verbatim in `file:` (for quotes of gin
           files and code).

* A ```gin block needs a directive too: `excerpt` (as above) or `gin`, in
  which case the block is a gin fragment parsed on top of the gin files in
  `base:` (space-separated) with the same checker.

* `needs: quickstart` (any block) makes `runs/quickstart` in the sandbox the
  session's toy-size SWiRL experiment (`swirl_toy_run` in conftest.py: the
  quickstart gin file with the toy bindings listed there), so commands that
  read an experiment's outputs have real ones to read.

* Blocks of other languages (```text, ```json, none) are shown output and
  not checked.

The sandbox is a scratch directory with `.venv`, `gin_configs`, `tpu`,
`benchmarks`, `Makefile`, `setup.py` and `constraints.txt` linked from the
repository, so commands written for the repository root run unchanged and
everything they write (workdirs under runs/, exports) stays in the scratch
directory. Each page runs in its own subprocess; a failure names the page
and the line of the block.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shlex
import subprocess
import sys
import textwrap
import time
from typing import Optional

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TESTS = ROOT / "tests"
PAGES = sorted(p.name for p in DOCS.glob("*.md"))

SHELL_LANGS = ("bash", "sh", "shell")
MODES = ("run", "gin", "dry-run", "flags", "excerpt")
KEYS = ("append", "append_to", "append_for", "expect", "expect_rc", "env",
        "timeout", "reason", "file", "base", "needs")
LINKED = (".venv", "gin_configs", "tpu", "benchmarks", "Makefile", "setup.py",
          "constraints.txt")
HELPER_DIR = ".doc_test"
PAGE_TIMEOUT_S = 1200

# Run by `gin` mode instead of `python -m swirl_jax.main`: the same argument
# and gin parsing as swirl_jax/main.py, without running the job.
GIN_CHECK = textwrap.dedent('''\
    """python -m swirl_jax.main, stopped after the configuration is parsed."""
    import sys

    from swirl_jax import gin_utils
    from swirl_jax import main as main_lib
    from swirl_jax import registry  # noqa: F401  (registers configurables)

    args, bindings = main_lib.parse_args(sys.argv[1:])
    try:
      gin_utils.parse(args.gin_file, bindings)
    except gin_utils.GinConfigError as e:
      print(f"Configuration error: {e}", file=sys.stderr)
      sys.exit(2)
    import re
    import gin
    # gin accepts a binding of a macro nothing uses (a misspelt name) without
    # a word; a documented command must not hold one.
    used = set(re.findall(r"%([A-Za-z_][A-Za-z0-9_]*)", gin.config_str()))
    for binding in bindings:
      name = binding.split("=", 1)[0].strip()
      if re.fullmatch(r"[A-Z][A-Z0-9_]*", name) and name not in used:
        print(f"Configuration error: --gin.{name} sets a macro that no "
              f"binding uses (%{name} appears nowhere).", file=sys.stderr)
        sys.exit(2)
    job = gin.query_parameter("swirl_jax.run.job")
    print(f"gin check OK: {' '.join(args.gin_file)} -> "
          f"{getattr(job, 'selector', job)} (workdir {args.workdir}, "
          f"{len(bindings)} command-line bindings)")
    ''')

FAKE_TOOL = textwrap.dedent('''\
    #!/bin/sh
    echo "FAKE {name} CALLED (the docs test forbids it): $*" >&2
    exit 97
    ''')


# ----------------------------------------------------------------------------
# Parsing the pages.


@dataclasses.dataclass
class Block:
  page: str
  line: int              # line of the block's first content line (1-based)
  lang: str
  text: str
  mode: Optional[str] = None
  keys: dict = dataclasses.field(default_factory=dict)  # key -> [values]

  def get(self, key: str, default: Optional[str] = None) -> Optional[str]:
    values = self.keys.get(key)
    return values[-1] if values else default

  @property
  def where(self) -> str:
    return f"docs/{self.page}:{self.line}"


_FENCE = re.compile(r"^(\s*)```([\w+-]*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*doc-test:\s*([\w-]+)\s*(-->)?\s*$")


def parse_page(name: str) -> list[Block]:
  """The fenced blocks of docs/NAME with their directives."""
  lines = (DOCS / name).read_text(encoding="utf-8").splitlines()
  blocks, i = [], 0
  while i < len(lines):
    m = _FENCE.match(lines[i])
    if not m:
      i += 1
      continue
    indent, lang = len(m.group(1)), m.group(2).lower()
    start, i = i + 1, i + 1
    while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
      i += 1
    if i >= len(lines):
      raise ValueError(f"docs/{name}:{start}: unterminated ``` block")
    body = [l[indent:] if l[:indent].strip() == "" else l
            for l in lines[start:i]]
    block = Block(name, start + 1, lang, "\n".join(body) + "\n")
    i += 1
    j = i
    while j < len(lines) and not lines[j].strip():
      j += 1
    if j < len(lines):
      d = _DIRECTIVE.match(lines[j].strip())
      if d:
        block.mode = d.group(1)
        j += 1
        if not d.group(2):
          while j < len(lines) and lines[j].strip() != "-->":
            key, sep, value = lines[j].strip().partition(":")
            if not sep:
              raise ValueError(f"docs/{name}:{j + 1}: directive lines are "
                               f"'key: value', got {lines[j]!r}")
            block.keys.setdefault(key.strip(), []).append(value.strip())
            j += 1
          if j >= len(lines):
            raise ValueError(f"docs/{name}:{j}: unterminated directive")
          j += 1
        i = j
    blocks.append(block)
  return blocks


def check_directive(block: Block) -> None:
  """ValueError if the block lacks a directive it needs or has a bad one."""
  needs_directive = block.lang in SHELL_LANGS or block.lang == "gin"
  if block.mode is None:
    if needs_directive:
      raise ValueError(f"{block.where}: a ```{block.lang} block needs a "
                       "<!-- doc-test: MODE --> directive after it (see "
                       "tests/test_docs.py)")
    return
  if block.mode not in MODES:
    raise ValueError(f"{block.where}: unknown doc-test mode {block.mode!r}; "
                     f"one of {MODES}")
  unknown = sorted(set(block.keys) - set(KEYS))
  if unknown:
    raise ValueError(f"{block.where}: unknown directive keys {unknown}")
  allowed = {"python": ("excerpt",), "gin": ("excerpt", "gin")}.get(
      block.lang, MODES if block.lang in SHELL_LANGS else ("excerpt",))
  if block.mode not in allowed:
    raise ValueError(f"{block.where}: mode {block.mode!r} is not for "
                     f"```{block.lang} blocks (allowed: {allowed})")
  if block.mode == "flags" and not block.get("reason"):
    raise ValueError(f"{block.where}: 'flags' mode needs a 'reason:'")
  if block.mode == "excerpt" and not block.get("file"):
    raise ValueError(f"{block.where}: 'excerpt' mode needs 'file:'")
  if block.lang == "gin" and block.mode == "gin" and not block.get("base"):
    raise ValueError(f"{block.where}: a gin fragment needs 'base:' files")


def logical_lines(text: str) -> list[str]:
  """Shell lines with backslash continuations joined; comments dropped."""
  out, buf = [], ""
  for line in text.splitlines():
    if line.rstrip().endswith("\\"):
      buf += line.rstrip()[:-1] + " "
      continue
    buf += line
    if buf.strip() and not buf.strip().startswith("#"):
      out.append(buf.strip())
    buf = ""
  if buf.strip():
    out.append(buf.strip())
  return out


# ----------------------------------------------------------------------------
# Checking blocks (called from the page subprocess, cwd = the sandbox).


def _env(extra: Optional[dict] = None) -> dict:
  sandbox = os.getcwd()
  env = dict(os.environ)
  env["PATH"] = os.pathsep.join([
      os.path.join(sandbox, HELPER_DIR, "bin"),
      os.path.join(sandbox, ".venv", "bin"),
      os.path.dirname(sys.executable), env.get("PATH", "")])
  env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg",
             PYTHONUNBUFFERED="1")
  env.pop("XLA_FLAGS", None)
  env.update(extra or {})
  return env


def _run(block: Block, script: str, extra_env: Optional[dict] = None,
         expect_rc: Optional[int] = None, cwd: Optional[str] = None,
         check_expect: bool = True) -> str:
  """Runs `script` with bash; checks the exit status and expected output."""
  env = _env(extra_env)
  for pair in shlex.split(" ".join(block.keys.get("env", []))):
    name, _, value = pair.partition("=")
    env[name] = value
  timeout = float(block.get("timeout", "300"))
  start = time.perf_counter()
  proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script],
                        capture_output=True, text=True, env=env, cwd=cwd,
                        timeout=timeout, check=False)
  output = proc.stdout + proc.stderr
  want = int(block.get("expect_rc", "0")) if expect_rc is None else expect_rc
  if proc.returncode != want:
    raise AssertionError(
        f"{block.where}: exit status {proc.returncode}, expected {want}.\n"
        f"--- script\n{script}\n--- output (end)\n{output[-6000:]}")
  for expected in block.keys.get("expect", []) if check_expect else []:
    if expected not in output:
      raise AssertionError(f"{block.where}: the output lacks {expected!r}.\n"
                           f"--- output (end)\n{output[-6000:]}")
  if "FAKE " in proc.stderr and " CALLED (the docs test forbids it)" in (
      proc.stderr):
    raise AssertionError(f"{block.where}: called a forbidden tool:\n"
                         f"{proc.stderr[-3000:]}")
  print(f"{block.where}: {block.mode} OK "
        f"({time.perf_counter() - start:.1f} s)", flush=True)
  return output


def _gin_check_command(python: str, args: list[str]) -> str:
  checker = os.path.join(os.getcwd(), HELPER_DIR, "gin_check.py")
  return " ".join(shlex.quote(a) for a in [python, checker, *args])


_MAIN = re.compile(r"(^|\s)-m\s+swirl_jax\.main(\s|$)")


def _gin_lines(block: Block) -> list[str]:
  """The block's commands with swirl_jax.main replaced by the checker."""
  out = []
  for line in logical_lines(block.text):
    argv = shlex.split(line)
    if argv and argv[0] == "make":
      proc = subprocess.run(["make", "-n", "-C", str(ROOT), *argv[1:]],
                            capture_output=True, text=True, check=False)
      if proc.returncode:
        raise AssertionError(f"{block.where}: `make -n {' '.join(argv[1:])}`"
                             f" failed:\n{proc.stdout}{proc.stderr}")
      mains = [l for l in proc.stdout.splitlines() if _MAIN.search(l)]
      if not mains:
        raise AssertionError(f"{block.where}: `{line}` runs no "
                             "swirl_jax.main command to check")
      lines = mains
    elif _MAIN.search(line):
      lines = [line]
    elif argv and (argv[0] == "export" or all(
        re.match(r"^\w+=", a) for a in argv)):
      out.append(line)
      continue
    else:
      raise AssertionError(f"{block.where}: a `gin` block may only hold "
                           f"swirl_jax.main and make commands, not {line!r}")
    for main_line in lines:
      argv = shlex.split(main_line)
      k = argv.index("-m")
      out.append(_gin_check_command(argv[k - 1], argv[k + 2:]))
  return out


def _append(line: str, extra: str) -> str:
  """`line` with `extra` arguments added (before a trailing `&`)."""
  m = re.match(r"^(.*?)(\s*&)$", line)
  if m and not line.endswith("&&"):
    return f"{m.group(1)} {extra}{m.group(2)}"
  return f"{line} {extra}"


def with_appended_args(block: Block) -> list[str]:
  """The block's command lines with its `append` / `append_for` arguments."""
  rules = []
  extra = " ".join(block.keys.get("append", []))
  if extra:
    rules.append((block.get("append_to", r"swirl_jax\.main"), extra))
  for rule in block.keys.get("append_for", []):
    pattern, sep, args = rule.partition("::")
    if not sep:
      raise ValueError(f"{block.where}: append_for is 'REGEX :: ARGS', got "
                       f"{rule!r}")
    rules.append((pattern.strip(), args.strip()))
  lines = logical_lines(block.text)
  for pattern, args in rules:
    regex = re.compile(pattern)
    if not any(regex.search(l) for l in lines):
      raise AssertionError(f"{block.where}: no command line matches "
                           f"{pattern!r}")
    lines = [_append(l, args) if regex.search(l) else l for l in lines]
  return lines


def check_shell_block(block: Block) -> None:
  if block.mode == "run":
    _run(block, "\n".join(with_appended_args(block)))
  elif block.mode == "gin":
    _run(block, "\n".join(_gin_lines(block)))
  elif block.mode == "dry-run":
    # In the repository itself: tpu/setup.sh packs the git checkout its
    # scripts live in (a dry run only prints what it would do).
    _run(block, block.text, {"DRY_RUN": "1"}, cwd=str(ROOT))
    checks = []
    for line in logical_lines(block.text):
      argv = shlex.split(line)
      if not argv or not argv[0].endswith("launch.sh"):
        continue
      args, k = [], 1
      while k < len(argv):
        a = argv[k]
        if a in ("--gin_file", "--gin-file"):
          args.append(f"--gin_file={argv[k + 1]}")
          k += 1
        elif a.startswith(("--gin_file=", "--gin.")):
          args.append(a.replace("--gin-file=", "--gin_file="))
        elif a == "--":
          args.extend(argv[k + 1:])
          break
        k += 1
      checks.append(_gin_check_command(
          os.path.join(".venv", "bin", "python"),
          args + ["--workdir=gin-check-only"]))
    if checks:
      _run(block, "\n".join(checks), expect_rc=0, check_expect=False)
  elif block.mode == "flags":
    for line in logical_lines(block.text):
      argv = shlex.split(line)
      first_flag = next((k for k, a in enumerate(argv) if a.startswith("--")),
                        len(argv))
      flags = {a.split("=", 1)[0] for a in argv[first_flag:]
               if a.startswith("--")}
      help_text = _run(block, " ".join(shlex.quote(a) for a in
                                       argv[:first_flag]) + " --help",
                       expect_rc=0, check_expect=False)
      missing = sorted(f for f in flags if f not in help_text)
      if missing:
        raise AssertionError(f"{block.where}: {argv[:first_flag]} does not "
                             f"take {missing} (not in its --help)")
  elif block.mode == "excerpt":
    check_excerpt(block)
  else:
    raise AssertionError(f"{block.where}: mode {block.mode!r}")


def check_gin_block(block: Block) -> None:
  if block.mode == "excerpt":
    check_excerpt(block)
    return
  path = os.path.join(os.getcwd(), HELPER_DIR,
                      f"{block.page[:-3]}_{block.line}.gin")
  with open(path, "w", encoding="utf-8") as f:
    f.write(block.text)
  files = block.get("base").split() + [path]
  _run(block, _gin_check_command(
      os.path.join(".venv", "bin", "python"),
      [f"--gin_file={f}" for f in files] + ["--workdir=gin-check-only"]))


def check_excerpt(block: Block) -> None:
  path = ROOT / block.get("file")
  text = path.read_text(encoding="utf-8")
  squash = lambda s: "\n".join(l.rstrip() for l in s.strip().splitlines())  # noqa: E731
  if squash(block.text) not in squash(text):
    raise AssertionError(f"{block.where}: the block is not (any more) a "
                         f"verbatim excerpt of {block.get('file')}:\n"
                         f"{block.text}")


# ----------------------------------------------------------------------------
# A page as one script.


def page_script(name: str, blocks: list[Block]) -> str:
  """A python script that checks every block of the page in order."""
  parts = [
      "import sys",
      f"sys.path.insert(0, {str(TESTS)!r})",
      "import test_docs as _doc_test",
      "_namespace = {'__name__': '__main__'}",
  ]
  for block in blocks:
    if block.lang == "python" and block.mode is None:
      padded = "\n" * (block.line - 1) + block.text
      parts.append(
          f"print('docs/{name}:{block.line}: python', flush=True)\n"
          f"exec(compile({padded!r}, 'docs/{name}', 'exec'), _namespace)")
    elif block.mode is not None:
      fn = "check_gin_block" if block.lang == "gin" else "check_shell_block"
      parts.append(f"_doc_test.{fn}(_doc_test.Block(**{dataclasses.asdict(block)!r}))")
  return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------
# Tests.


@pytest.fixture(scope="session")
def doc_sandbox(tmp_path_factory):
  sandbox = tmp_path_factory.mktemp("docs_sandbox")
  for name in LINKED:
    if (ROOT / name).exists():
      os.symlink(ROOT / name, sandbox / name)
  helper = sandbox / HELPER_DIR
  (helper / "bin").mkdir(parents=True)
  (helper / "gin_check.py").write_text(GIN_CHECK)
  for tool in ("gcloud", "git"):
    fake = helper / "bin" / tool
    fake.write_text(FAKE_TOOL.format(name=tool.upper()))
    fake.chmod(0o755)
  (sandbox / "runs").mkdir()
  return sandbox


def test_every_command_block_has_a_valid_directive():
  problems = []
  for page in PAGES:
    for block in parse_page(page):
      try:
        check_directive(block)
      except ValueError as e:
        problems.append(str(e))
  assert not problems, "\n".join(problems)


def test_excerpts_are_verbatim():
  for page in PAGES:
    for block in parse_page(page):
      if block.mode == "excerpt":
        check_excerpt(block)


def test_index_lists_every_page_and_links_resolve():
  index = (DOCS / "index.md").read_text(encoding="utf-8")
  missing = [p for p in PAGES if p != "index.md" and f"({p}" not in index]
  assert not missing, f"docs/index.md does not link {missing}"
  broken = []
  for page in PAGES:
    text = (DOCS / page).read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
      if re.match(r"^[a-z]+://", target) or target.startswith("#"):
        continue
      path = (DOCS / target.split("#")[0]).resolve()
      if not path.exists():
        broken.append(f"docs/{page}: {target}")
  assert not broken, "broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", PAGES)
def test_doc_page_commands(page, doc_sandbox, request):
  blocks = [b for b in parse_page(page)
            if b.mode not in (None, "excerpt") or b.lang == "python"]
  if not blocks:
    pytest.skip(f"docs/{page} has no commands or snippets")
  for block in blocks:
    check_directive(block)
  if any("quickstart" in b.keys.get("needs", []) for b in blocks):
    workdir, _ = request.getfixturevalue("swirl_toy_run")
    link = doc_sandbox / "runs" / "quickstart"
    if not link.exists():
      os.symlink(workdir, link)
  proc = subprocess.run(
      [sys.executable, "-c", page_script(page, blocks)], cwd=doc_sandbox,
      env=dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
               MPLBACKEND="Agg"),
      capture_output=True, text=True, timeout=PAGE_TIMEOUT_S, check=False)
  assert proc.returncode == 0, (
      f"docs/{page} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
