"""Run untrusted Python (model-written code, unit tests) in a confined child.

`run_python(code)` writes the code to `main.py` in a fresh private directory
and runs it with a separate interpreter (`sys.executable -S -B`, isolated
from the host's environment and site-packages) in its own session and process
group, with a minimal environment (HOME and TMPDIR = that directory), no
stdin, and output read through size-capped pipes. The child first runs
`_sandbox_prelude.py`, which applies resource limits, drops privileges,
enters a fresh network namespace when allowed and installs an audit hook (see
its docstring); the host enforces a wall-clock timeout, then kills the whole
process group and removes the directory.

Defences by situation (see `sandbox_defences()`):
  * always: separate process + session, minimal env, rlimits (CPU, address
    space, file size, processes, descriptors, core), audit hook, wall-clock
    kill, output caps, private directory removed afterwards;
  * host running as root: also a fresh network namespace and the child runs
    as `nobody` (so the kernel, not only the hook, protects host files);
  * normal user: also a fresh user + network namespace when the kernel allows
    unprivileged user namespaces, otherwise only the audit hook blocks sockets.

Root hosts whose interpreter `nobody` cannot read. The child starts as root
(the kernel loads the interpreter and libpython then) and drops to `nobody`
before untrusted code runs, but every later import is read as `nobody`. When
the interpreter sits in a directory other users cannot enter (pyenv under
/root, mode 700: common in containers), the child is started from a mirror
instead: a root-owned tree, mode 755, under /var/cache/swirl_jax_sandbox
(else tempdir/swirl_jax_sandbox_<euid>), with the binary, libpython and the
standard library (without test/, site-packages, idlelib, tkinter, turtledemo,
ensurepip, lib2to3, config-*) as hard links to the original files, so it
costs no disk space beyond its directories (about 0.5 MB; files are copied,
about 90 MB, only where a hard link fails, e.g. across file systems). The
interpreter finds its prefix from the binary's location, so the mirror's
sys.path, and the audit hook's read roots, are the mirror's. It is built
once per interpreter (keyed by the binary's path, size, mtime and
`sys.version`), published by an atomic rename, reused by later processes
after checking that only root can change it, and rebuilt once if the
privilege-drop probe fails on it. Only world-readable files are mirrored:
it exposes nothing `nobody` could not read if it could reach the original.
Sandboxed code needs nothing else: the child runs `-I -S` (no
site-packages), and the graders (HumanEval / MBPP checks, the python tool)
only import the standard library. A user namespace does not help here: as
root, `unshare -U` maps the child to uid 0 outside, which still reads
root-owned files. Only when no mirror can be made (or there is no `nobody`
user) does a root host fall back to running the child as root behind the
audit hook, with a warning.

This is defence in depth for model-written code, not a boundary against a
determined attacker with arbitrary native code: for that, run the whole
rollout worker in a container or gVisor.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import math
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from typing import Mapping, Optional, Sequence, Union

# The interpreter that runs sandboxed code (on a root host, from a readable
# mirror when SANDBOX_USER cannot reach it; see the module docstring).
PYTHON = sys.executable
PRELUDE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "_sandbox_prelude.py")
MAIN_FILE = "main.py"
MAX_FILE_BYTES = 8 * 2 ** 20     # RLIMIT_FSIZE: largest file the child may write
MAX_WRITE_OPENS = 128            # files the child may open for writing
MAX_OPEN_FILES = 64              # RLIMIT_NOFILE
SANDBOX_USER = "nobody"
DEFENCES_VAR = "SWIRL_SANDBOX_DEFENCES"
_READ_CHUNK = 1 << 16

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SandboxResult:
  """Outcome of one run.

  Attributes:
    ok: exit status 0 and not timed out.
    stdout / stderr: decoded output (UTF-8, invalid bytes replaced), each
      capped at `max_output_bytes`.
    timed_out: killed at the wall-clock timeout or by the CPU-time limit.
    returncode: exit status; negative = killed by that signal; None if the
      child could not be started.
    duration_s: wall-clock seconds, including interpreter start-up.
    output_truncated: stdout or stderr exceeded the cap.
  """

  ok: bool
  stdout: str
  stderr: str
  timed_out: bool
  returncode: Optional[int]
  duration_s: float
  output_truncated: bool


class _CappedReader(threading.Thread):
  """Drains a pipe, keeping at most `cap` bytes (the rest is read and dropped)."""

  def __init__(self, stream, cap: int):
    super().__init__(daemon=True)
    self._stream = stream
    self._cap = cap
    self._chunks: list[bytes] = []
    self._kept = 0
    self.truncated = False

  def run(self) -> None:
    fd = self._stream.fileno()
    while True:
      try:
        chunk = os.read(fd, _READ_CHUNK)
      except OSError:
        break
      if not chunk:
        break
      room = self._cap - self._kept
      if room > 0:
        keep = chunk[:room]
        self._chunks.append(keep)
        self._kept += len(keep)
      if len(chunk) > max(room, 0):
        self.truncated = True

  def text(self) -> str:
    return b"".join(self._chunks).decode("utf-8", errors="replace")


# --- privilege drop (root only) ----------------------------------------------------

_drop_lock = threading.Lock()
_drop_state: dict[str, tuple[str, Optional[tuple[int, int]]]] = {}

_PROBE_CODE = ("import collections, decimal, fractions, json, os, re\n"
               "open(os.path.join(os.environ['HOME'], 'probe.txt'), 'w').write('x')\n"
               "print(os.getuid())\n")


def _sandbox_setup() -> tuple[str, Optional[tuple[int, int]]]:
  """(interpreter, (uid, gid)) of a privilege-dropping child; probed once.

  Not root: (PYTHON, None). Root: PYTHON when the sandbox user can run it,
  else its readable mirror (`_stdlib_mirror`); (PYTHON, None) with a warning
  when neither works.
  """
  if os.geteuid() != 0:
    return PYTHON, None
  with _drop_lock:
    if PYTHON not in _drop_state:
      _drop_state[PYTHON] = _probe_drop(PYTHON)
    return _drop_state[PYTHON]


def _sandbox_ids() -> Optional[tuple[int, int]]:
  """(uid, gid) to run the child as, when the host is root and that works."""
  return _sandbox_setup()[1]


def _probe(python: str, ids: tuple[int, int]) -> Optional[str]:
  """None if `python` runs the probe as `ids`, else the error."""
  result = _run(_PROBE_CODE, timeout_s=10.0, memory_mb=512, max_output_bytes=4096,
                files=None, ids=ids, netns=False, hash_seed=0, python=python)
  if result.ok and result.stdout.strip() == str(ids[0]):
    return None
  return (result.stderr.strip().splitlines() or ["unknown error"])[-1]


def _traversable(path: str) -> bool:
  """True if every directory above `path` lets other users through (o+x)."""
  parent = os.path.dirname(path)
  while True:
    try:
      if not os.stat(parent).st_mode & stat.S_IXOTH:
        return False
    except OSError:
      return False
    if parent == os.path.dirname(parent):
      return True
    parent = os.path.dirname(parent)


def _probe_drop(python: str) -> tuple[str, Optional[tuple[int, int]]]:
  """`_sandbox_setup`'s answer for `python`: itself, else its mirror, else root."""
  try:
    entry = pwd.getpwnam(SANDBOX_USER)
  except KeyError:
    _log.warning("No %r user: sandboxed code will run as root.", SANDBOX_USER)
    return python, None
  ids = (entry.pw_uid, entry.pw_gid)
  if _traversable(os.path.realpath(python)):
    error = _probe(python, ids)
    if error is None:
      return python, ids
  else:
    error = f"other users cannot reach {os.path.realpath(python)}"
  for rebuild in (False, True):   # a reused mirror that fails is rebuilt once
    try:
      mirror = _stdlib_mirror(python, rebuild=rebuild)
    except (OSError, ValueError, subprocess.SubprocessError) as e:
      error = f"{error}; no readable copy of it: {e}"
      break
    mirror_error = _probe(mirror, ids)
    if mirror_error is None:
      return mirror, ids
    error = f"{error}; its copy {mirror}: {mirror_error}"
  _log.warning("Cannot run sandboxed code as %r with %s (%s); it will run as "
               "root behind the audit hook only.", SANDBOX_USER, python, error)
  return python, None


# --- a readable mirror of the interpreter (root hosts) -------------------------------
#
# The child starts as root and drops to SANDBOX_USER before any untrusted code
# runs; after that every module it imports is read as that user. When the
# interpreter lives where that user cannot go (e.g. /root/.pyenv, /root is
# mode 700), the child runs from a mirror instead: a root-owned tree, mode 755,
# holding the interpreter binary, libpython and the standard library (without
# its test suite, site-packages and GUI/packaging tools) as hard links to the
# original files (copies where linking fails, e.g. across file systems). It is
# built once per interpreter (keyed by its path, size, mtime and version) in
# the first usable MIRROR_DIRS entry, published atomically, and reused by later
# processes. Only world-readable files are mirrored, so it exposes nothing the
# sandbox user could not read if it could reach the original.

# Where mirrors are built, the first usable one wins (None:
# tempdir/swirl_jax_sandbox_<euid>).
MIRROR_DIRS = ("/var/cache/swirl_jax_sandbox", None)
MIRROR_SKIP = frozenset({"site-packages", "dist-packages", "test", "idlelib",
                         "tkinter", "turtledemo", "ensurepip", "lib2to3"})
MIRROR_MARKER = ".swirl_sandbox_mirror.json"
_MIRROR_FORMAT = 1
_LAYOUT_CODE = (
    "import json, os, sys, sysconfig\n"
    "v = sysconfig.get_config_var\n"
    "lib = os.path.join(v('LIBDIR') or '', v('INSTSONAME') or '')\n"
    "print(json.dumps({'binary': getattr(sys, '_base_executable', '') or "
    "sys.executable, 'version': sys.version, 'prefix': sys.base_prefix, "
    "'path': sys.path, 'libpython': lib if v('Py_ENABLE_SHARED') else ''}))\n")


def _interpreter_layout(python: str) -> dict:
  """The binary, version, prefix, `-I -S` sys.path and libpython of `python`."""
  out = subprocess.run([python, "-I", "-S", "-c", _LAYOUT_CODE], capture_output=True,
                       text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
                       env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"})
  if out.returncode != 0:
    raise OSError(f"{python} -I -S failed: {out.stderr.strip()[-300:]}")
  layout = json.loads(out.stdout)
  layout["binary"] = os.path.realpath(layout["binary"] or python)
  st = os.stat(layout["binary"])
  layout["binary_stat"] = [st.st_size, st.st_mtime_ns]
  return layout


def _mirror_entries(layout: Mapping) -> list[tuple[str, str]]:
  """(original, path inside the mirror) of the binary, libpython, stdlib dirs."""
  prefix = os.path.realpath(layout["prefix"])
  binary = layout["binary"]
  entries = [(binary, os.path.join("bin", os.path.basename(binary)))]
  roots = sorted({os.path.realpath(p) for p in layout["path"]
                  if p and os.path.isdir(p)})
  for root in roots:
    if any(root.startswith(other + "/") for other in roots):
      continue   # e.g. lib-dynload inside the stdlib dir
    rel = os.path.relpath(root, prefix)
    if rel == "." or rel.startswith(".."):
      raise ValueError(f"{root} on sys.path is not inside the prefix {prefix}")
    entries.append((root, rel))
  libpython = os.path.realpath(layout["libpython"]) if layout["libpython"] else ""
  if libpython and os.path.isfile(libpython):
    rel = os.path.relpath(os.path.dirname(libpython), prefix)
    if not rel.startswith(".."):
      name = os.path.basename(layout["libpython"])
      entries.append((libpython, os.path.join(rel, name)))
  return entries


def _mirror_file(source: str, target: str) -> None:
  """Hard-links (else copies) a world-readable file; skips any other."""
  st = os.stat(source)
  if not stat.S_ISREG(st.st_mode) or not st.st_mode & stat.S_IROTH:
    return
  if not st.st_mode & (0o022 | stat.S_ISUID | stat.S_ISGID):   # only its owner
    # can change it and it grants nothing when run: share the original
    try:
      os.link(source, target)
      return
    except OSError:
      pass
  shutil.copy2(source, target)   # keeps the mtime, which .pyc files check
  os.chmod(target, stat.S_IMODE(st.st_mode) & 0o755)


def _mirror_tree(source: str, target: str) -> None:
  """Mirrors directory `source` at `target`, skipping MIRROR_SKIP at the top."""
  for dirpath, dirnames, filenames in os.walk(source):
    rel = os.path.relpath(dirpath, source)
    if rel == ".":
      dirnames[:] = [d for d in dirnames
                     if d not in MIRROR_SKIP and not d.startswith("config-")]
    out = target if rel == "." else os.path.join(target, rel)
    _make_dir(out)
    for name in filenames:
      _mirror_file(os.path.join(dirpath, name), os.path.join(out, name))


def _make_dir(path: str) -> None:
  """Creates `path` and missing parents, each mode 755 whatever the umask."""
  if os.path.isdir(path):
    return
  _make_dir(os.path.dirname(path))
  os.mkdir(path)
  os.chmod(path, 0o755)


def _fill_mirror(layout: Mapping, dest: str, key: str) -> None:
  for source, rel in _mirror_entries(layout):
    target = os.path.join(dest, rel)
    if os.path.isdir(source):
      _mirror_tree(source, target)
    else:
      _make_dir(os.path.dirname(target))
      _mirror_file(source, target)
  with open(os.path.join(dest, MIRROR_MARKER), "w") as f:
    json.dump({"format": _MIRROR_FORMAT, "key": key, "layout": layout}, f, indent=1)
  os.chmod(os.path.join(dest, MIRROR_MARKER), 0o644)


def _safe_parent(path: str) -> bool:
  """True if only root (or we) can change `path` and each directory above it,
  and every one of them is traversable by other users."""
  euid = os.geteuid()
  current = os.path.realpath(path)
  first = True
  while True:
    try:
      st = os.lstat(current)
    except OSError:
      return False
    sticky = bool(st.st_mode & stat.S_ISVTX) and not first
    if (not stat.S_ISDIR(st.st_mode) or st.st_uid not in (0, euid) or
        (st.st_mode & 0o022 and not sticky) or not st.st_mode & stat.S_IXOTH):
      return False
    if first and st.st_uid != euid:
      return False
    if current == "/":
      return True
    current, first = os.path.dirname(current), False


def _make_parent(path: str) -> None:
  """Creates a MIRROR_DIRS entry (mode 755) unless it exists."""
  try:
    os.mkdir(path)
  except FileExistsError:
    return
  os.chmod(path, 0o755)


def _mirror_parents() -> list[str]:
  return [d or os.path.join(tempfile.gettempdir(), f"swirl_jax_sandbox_{os.geteuid()}")
          for d in MIRROR_DIRS]


def _valid_mirror(path: str, key: str) -> bool:
  try:
    st = os.lstat(path)
    with open(os.path.join(path, MIRROR_MARKER)) as f:
      marker = json.load(f)
  except (OSError, ValueError):
    return False
  return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and
          not st.st_mode & 0o022 and isinstance(marker, dict) and
          marker.get("key") == key)


def _publish(built: str, final: str, key: str, rebuild: bool) -> None:
  """Renames `built` to `final`; replaces an invalid (or, rebuilding, any) one."""
  try:
    os.rename(built, final)
    return
  except OSError:
    if not os.path.lexists(final):
      raise
  if _valid_mirror(final, key) and not rebuild:
    return   # another process published the same mirror first
  stale = tempfile.mkdtemp(prefix=".stale-", dir=os.path.dirname(final))
  os.rename(final, os.path.join(stale, "old"))
  os.rename(built, final)
  _remove_tree(stale)


def _remove_leftovers(parent: str, min_age_s: float = 3600.0) -> None:
  """Removes half-built or replaced mirrors left by killed processes."""
  for name in os.listdir(parent):
    path = os.path.join(parent, name)
    try:
      old = time.time() - os.lstat(path).st_mtime > min_age_s
    except OSError:
      continue
    if name.startswith((".build-", ".stale-")) and old:
      _remove_tree(path)


def _stdlib_mirror(python: str, rebuild: bool = False) -> str:
  """The binary of a mirror of `python` that SANDBOX_USER can read (built once).

  Raises:
    OSError / ValueError: no MIRROR_DIRS entry is usable, or the interpreter's
      layout cannot be mirrored.
  """
  layout = _interpreter_layout(python)
  key = hashlib.sha256(json.dumps([_MIRROR_FORMAT, layout], sort_keys=True)
                       .encode()).hexdigest()[:16]
  version = ".".join(layout["version"].split()[0].split(".")[:2])
  binary_rel = _mirror_entries(layout)[0][1]
  errors = []
  for parent in _mirror_parents():
    final = os.path.join(parent, f"python{version}-{key}")
    try:
      _make_parent(parent)
      if not _safe_parent(parent):
        raise OSError(f"{parent} is writable by others or not traversable")
      if not rebuild and _valid_mirror(final, key):
        return os.path.join(final, binary_rel)
      _remove_leftovers(parent)
      built = tempfile.mkdtemp(prefix=".build-", dir=parent)
      try:
        os.chmod(built, 0o755)
        _fill_mirror(layout, built, key)
        _publish(built, final, key, rebuild)
      finally:
        if os.path.lexists(built):
          _remove_tree(built)
      _log.info("Sandbox interpreter mirror of %s: %s", python, final)
      return os.path.join(final, binary_rel)
    except OSError as e:
      errors.append(f"{parent}: {e}")
  raise OSError("; ".join(errors))


# --- helpers ---------------------------------------------------------------------


Files = Optional[Mapping[str, Union[str, bytes]]]


def _write_files(root: str, code: str, files: Files) -> None:
  entries = {MAIN_FILE: code}
  for name, content in (files or {}).items():
    if not isinstance(name, str) or not name or name.startswith("/") or "\0" in name:
      raise ValueError(f"files: invalid file name {name!r} (must be a relative path).")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
      raise ValueError(
          f"files: file name {name!r} must not contain '', '.' or '..' parts.")
    if name == MAIN_FILE:
      raise ValueError(f"files: {MAIN_FILE!r} is reserved for the code itself.")
    if not isinstance(content, (str, bytes)):
      raise ValueError(f"files: content of {name!r} must be str or bytes, "
                       f"got {type(content).__name__}.")
    entries[name] = content
  for name, content in entries.items():
    path = os.path.join(root, *name.split("/"))
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    data = content
    if isinstance(content, str):
      data = content.encode("utf-8", errors="replace")
    with open(path, "wb") as f:
      f.write(data)
    os.chmod(path, 0o644)


def _chown_tree(root: str, uid: int, gid: int) -> None:
  os.chown(root, uid, gid)
  for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
      os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def _remove_tree(root: str) -> None:
  """Removes the sandbox directory even if the child made parts unwritable."""
  try:
    shutil.rmtree(root)
    return
  except FileNotFoundError:
    return
  except OSError:
    pass

  def make_writable(path: str) -> None:
    try:
      st = os.lstat(path)
    except OSError:
      return
    if not stat.S_ISDIR(st.st_mode):   # never follow symlinks out of the tree
      return
    try:
      os.chmod(path, 0o700)
      names = os.listdir(path)
    except OSError:
      return
    for name in names:
      make_writable(os.path.join(path, name))

  make_writable(root)
  shutil.rmtree(root, ignore_errors=True)
  if os.path.lexists(root):
    _log.warning("Could not remove sandbox directory %s.", root)


def _kill_group(proc: subprocess.Popen) -> None:
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass
  try:
    proc.kill()
  except ProcessLookupError:
    pass


def _interpreter_args(python: str, hash_seed: Optional[int]) -> list[str]:
  # -I is -E -s (and -P on 3.11+). With a fixed hash seed we pass -s but not -E
  # so that the child reads PYTHONHASHSEED; its environment is built from
  # scratch below, so nothing of the host's environment is read either way.
  # The prelude removes its own directory from sys.path (what -P would do).
  isolation = ["-I"] if hash_seed is None else ["-s"]
  return [python, *isolation, "-S", "-B", "-X", "utf8"]


def _child_env(root: str, hash_seed: Optional[int]) -> dict[str, str]:
  env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": root, "TMPDIR": root,
         "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
  if hash_seed is not None:
    env["PYTHONHASHSEED"] = str(hash_seed)
  return env


# --- running -----------------------------------------------------------------------


def _run(code: str, timeout_s: float, memory_mb: int, max_output_bytes: int,
         files: Files, ids: Optional[tuple[int, int]], netns: bool,
         hash_seed: Optional[int], python: str) -> SandboxResult:
  start = time.monotonic()
  root = tempfile.mkdtemp(prefix="swirl_sandbox_")
  try:
    _write_files(root, code, files)
    if ids is not None:
      _chown_tree(root, *ids)
    config = {
        "dir": root, "main": MAIN_FILE,
        "cpu_s": int(math.ceil(timeout_s)) + 1,
        "memory_bytes": int(memory_mb) * 2 ** 20,
        "fsize_bytes": MAX_FILE_BYTES, "nofile": MAX_OPEN_FILES, "nproc": 0,
        "max_write_opens": MAX_WRITE_OPENS,
        "uid": ids[0] if ids else None, "gid": ids[1] if ids else None,
        "netns": int(bool(netns)),
    }
    argv = _interpreter_args(python, hash_seed) + [PRELUDE_PATH] + [
        f"{k}={'none' if v is None else v}" for k, v in config.items()]
    try:
      proc = subprocess.Popen(
          argv, cwd=root, env=_child_env(root, hash_seed), stdin=subprocess.DEVNULL,
          stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
          start_new_session=True)
    except (OSError, subprocess.SubprocessError) as e:
      return SandboxResult(ok=False, stdout="", stderr=f"sandbox: could not start "
                           f"the interpreter: {e}", timed_out=False, returncode=None,
                           duration_s=time.monotonic() - start, output_truncated=False)
    readers = [_CappedReader(proc.stdout, max_output_bytes),
               _CappedReader(proc.stderr, max_output_bytes)]
    for reader in readers:
      reader.start()
    timed_out = False
    try:
      proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
      timed_out = True
    finally:
      _kill_group(proc)   # also reaps strays of a finished child
      proc.wait()
    for reader in readers:
      reader.join(timeout=5.0)
    if not any(reader.is_alive() for reader in readers):
      proc.stdout.close()   # else a stray holds the pipe: leave it to the reader
      proc.stderr.close()
    returncode = proc.returncode
    stderr = readers[1].text()
    if returncode == -signal.SIGXCPU:
      timed_out = True
      stderr += "\nsandbox: CPU time limit exceeded.\n"
    elif timed_out:
      stderr += f"\nsandbox: timed out after {timeout_s:g} s.\n"
    return SandboxResult(
        ok=returncode == 0 and not timed_out, stdout=readers[0].text(), stderr=stderr,
        timed_out=timed_out, returncode=returncode,
        duration_s=time.monotonic() - start,
        output_truncated=readers[0].truncated or readers[1].truncated)
  finally:
    _remove_tree(root)


def run_python(code: str, timeout_s: float = 5.0, memory_mb: int = 512,
               max_output_bytes: int = 64_000,
               files: Files = None, *,
               drop_privileges: bool = True, network_namespace: bool = True,
               hash_seed: Optional[int] = 0) -> SandboxResult:
  """Runs `code` as `main.py` in a confined child interpreter.

  Args:
    code: Python source (untrusted).
    timeout_s: wall-clock limit; the CPU-time limit is ceil(timeout_s) + 1.
    memory_mb: address-space limit of the child.
    max_output_bytes: cap on the stdout and on the stderr kept (each).
    files: extra files (relative path -> text or bytes) written next to
      main.py, importable by it.
    drop_privileges: when the host is root, run the child as `nobody`
      (from a readable mirror of the interpreter where it needs one).
    network_namespace: put the child in a fresh network namespace when the
      kernel allows it.
    hash_seed: PYTHONHASHSEED of the child (None: random, as with -I), so
      that set and dict iteration orders are reproducible.

  Returns:
    A SandboxResult. Never raises for anything the code does; raises
    ValueError only for invalid arguments.
  """
  if not isinstance(code, str):
    raise ValueError(f"code must be a str, got {type(code).__name__}.")
  if not (isinstance(timeout_s, (int, float)) and 0 < timeout_s <= 3600):
    raise ValueError(f"timeout_s must be in (0, 3600], got {timeout_s!r}.")
  if not (isinstance(memory_mb, int) and 32 <= memory_mb <= 1 << 20):
    raise ValueError(f"memory_mb must be an int >= 32, got {memory_mb!r}.")
  if not (isinstance(max_output_bytes, int) and max_output_bytes >= 0):
    raise ValueError(f"max_output_bytes must be an int >= 0, got {max_output_bytes!r}.")
  python, ids = _sandbox_setup() if drop_privileges else (PYTHON, None)
  return _run(code, float(timeout_s), memory_mb, max_output_bytes, files, ids,
              network_namespace, hash_seed, python)


def run_python_batch(codes: Sequence[str], max_workers: Optional[int] = None,
                     **kwargs) -> list[SandboxResult]:
  """`run_python` on each code in parallel threads; results in input order."""
  codes = list(codes)
  if not codes:
    return []
  workers = max_workers or min(len(codes), os.cpu_count() or 1)
  if workers < 1:
    raise ValueError(f"max_workers must be positive, got {max_workers!r}.")
  if os.geteuid() == 0 and kwargs.get("drop_privileges", True):
    _sandbox_setup()   # probe once, before the threads race for it
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    return list(pool.map(lambda c: run_python(c, **kwargs), codes))


def sandbox_defences(**kwargs) -> tuple[str, ...]:
  """The defences a default `run_python` child gets on this host.

  Some of: no_new_privs, userns, netns, uid_drop, rlimits, audit_hook.
  """
  result = run_python(f"import os\nprint(os.environ.get({DEFENCES_VAR!r}, ''))\n",
                      timeout_s=10.0, **kwargs)
  if not result.ok:
    raise RuntimeError(f"sandbox probe failed: {result.stderr.strip()}")
  return tuple(d for d in result.stdout.strip().split(",") if d)
