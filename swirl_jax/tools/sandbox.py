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

This is defence in depth for model-written code, not a boundary against a
determined attacker with arbitrary native code: for that, run the whole
rollout worker in a container or gVisor.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
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

# The interpreter that runs sandboxed code (its standard library must be
# readable by SANDBOX_USER for the root privilege drop to be used).
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
_drop_state: dict[str, object] = {}


def _sandbox_ids() -> Optional[tuple[int, int]]:
  """(uid, gid) to run the child as, when the host is root and that works."""
  if os.geteuid() != 0:
    return None
  with _drop_lock:
    if PYTHON not in _drop_state:
      _drop_state[PYTHON] = _probe_drop()
    return _drop_state[PYTHON]  # type: ignore[return-value]


def _probe_drop() -> Optional[tuple[int, int]]:
  try:
    entry = pwd.getpwnam(SANDBOX_USER)
  except KeyError:
    _log.warning("No %r user: sandboxed code will run as root.", SANDBOX_USER)
    return None
  ids = (entry.pw_uid, entry.pw_gid)
  probe = ("import collections, decimal, fractions, json, os, re\n"
           "open(os.path.join(os.environ['HOME'], 'probe.txt'), 'w').write('x')\n"
           "print(os.getuid())\n")
  result = _run(probe, timeout_s=10.0, memory_mb=512, max_output_bytes=4096,
                files=None, ids=ids, netns=False, hash_seed=0)
  if result.ok and result.stdout.strip() == str(ids[0]):
    return ids
  _log.warning("Cannot run sandboxed code as %r with %s (%s); it will run as "
               "root behind the audit hook only.", SANDBOX_USER, PYTHON,
               (result.stderr.strip().splitlines() or ["unknown error"])[-1])
  return None


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


def _interpreter_args(hash_seed: Optional[int]) -> list[str]:
  # -I is -E -s (and -P on 3.11+). With a fixed hash seed we pass -s but not -E
  # so that the child reads PYTHONHASHSEED; its environment is built from
  # scratch below, so nothing of the host's environment is read either way.
  # The prelude removes its own directory from sys.path (what -P would do).
  isolation = ["-I"] if hash_seed is None else ["-s"]
  return [PYTHON, *isolation, "-S", "-B", "-X", "utf8"]


def _child_env(root: str, hash_seed: Optional[int]) -> dict[str, str]:
  env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": root, "TMPDIR": root,
         "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
  if hash_seed is not None:
    env["PYTHONHASHSEED"] = str(hash_seed)
  return env


# --- running -----------------------------------------------------------------------


def _run(code: str, timeout_s: float, memory_mb: int, max_output_bytes: int,
         files: Files, ids: Optional[tuple[int, int]], netns: bool,
         hash_seed: Optional[int]) -> SandboxResult:
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
    argv = _interpreter_args(hash_seed) + [PRELUDE_PATH] + [
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
    drop_privileges: when the host is root, run the child as `nobody`.
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
  ids = _sandbox_ids() if drop_privileges else None
  return _run(code, float(timeout_s), memory_mb, max_output_bytes, files, ids,
              network_namespace, hash_seed)


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
    _sandbox_ids()   # probe once, before the threads race for it
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
