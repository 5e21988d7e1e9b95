"""Tests for swirl_jax.tools.sandbox, including hostile programs.

Every hostile program must fail inside the child, leave no trace on the host
and leave the host process unchanged.
"""

import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid

import pytest

from swirl_jax.tools import base
from swirl_jax.tools import sandbox
from swirl_jax.tools.sandbox import run_python, run_python_batch, sandbox_defences

IS_ROOT = os.geteuid() == 0
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM_PYTHON = "/usr/bin/python3"
HOST_HOME = os.path.expanduser("~")


def run(code, **kwargs):
  kwargs.setdefault("timeout_s", 5.0)
  kwargs.setdefault("memory_mb", 256)
  return run_python(textwrap.dedent(code), **kwargs)


def assert_refused(result, fragment="sandbox:"):
  assert not result.ok, result
  assert fragment in result.stderr, result.stderr


# --- normal behaviour ------------------------------------------------------------


def test_normal_code():
  result = run("""
      import collections, fractions, json, math
      print(sum(range(10)), fractions.Fraction(1, 3) * 3, math.sqrt(16))
      print(json.dumps(collections.Counter("aab").most_common(1)))
  """)
  assert result.ok and result.returncode == 0 and not result.timed_out
  assert result.stdout == '45 1 4.0\n[["a", 2]]\n'
  assert result.stderr == "" and not result.output_truncated
  assert 0 < result.duration_s < 5


def test_exception_gives_traceback():
  result = run("""
      def f(x):
        return 1 / x
      print("before")
      f(0)
  """)
  assert not result.ok and result.returncode == 1
  assert result.stdout == "before\n"
  assert "Traceback (most recent call last)" in result.stderr
  assert 'File "main.py", line 3, in f' in result.stderr
  assert "ZeroDivisionError: division by zero" in result.stderr
  assert "_sandbox_prelude" not in result.stderr and "runpy" not in result.stderr


def test_syntax_error_and_exit_codes():
  result = run("def (:")
  assert not result.ok and "SyntaxError" in result.stderr
  assert run("import sys; sys.exit(3)").returncode == 3
  assert run("exit(0)").ok          # site's exit() exists despite -S
  assert not run("quit(2)").ok


def test_files_are_importable_and_validated():
  result = run("import helper\nfrom pkg import mod\nprint(helper.X + mod.Y)\n"
               "print(open('data.bin', 'rb').read())",
               files={"helper.py": "X = 40", "pkg/__init__.py": "",
                      "pkg/mod.py": "Y = 2", "data.bin": b"\x00\x01"})
  assert result.ok, result.stderr
  assert result.stdout == "42\nb'\\x00\\x01'\n"
  for bad in ["/etc/x", "../x", "a/../../x", "", "main.py", "a//b"]:
    with pytest.raises(ValueError, match="files"):
      run_python("pass", files={bad: "x"})
  with pytest.raises(ValueError, match="timeout_s"):
    run_python("pass", timeout_s=0)
  with pytest.raises(ValueError, match="code must be a str"):
    run_python(b"pass")   # type: ignore[arg-type]


def test_hash_seed_makes_runs_reproducible():
  code = "print(hash('abc'), list({'x', 'y', 'z', 'w'}))"
  assert run(code).stdout == run(code).stdout


def test_invalid_utf8_output_is_replaced():
  result = run("import sys; sys.stdout.buffer.write(b'ok\\xff\\n')")
  assert result.ok and result.stdout == "ok\ufffd\n"


def test_local_files_and_stdlib_work():
  result = run("""
      import os, pathlib, shutil, sqlite3, tempfile
      pathlib.Path("a.txt").write_text("hello")
      os.makedirs("d/e")
      shutil.copy("a.txt", "d/e/b.txt")
      shutil.rmtree("d")
      with tempfile.TemporaryDirectory() as tmp:
        open(os.path.join(tmp, "t"), "w").write("1")
      con = sqlite3.connect("db.sqlite")
      con.execute("create table t (x)")
      print(open("a.txt").read(), sorted(os.listdir(".")), os.environ["HOME"] == os.getcwd())
  """)
  assert result.ok, result.stderr
  assert result.stdout == "hello ['a.txt', 'db.sqlite', 'main.py'] True\n"


def test_asyncio_works():
  result = run("""
      import asyncio
      async def main():
        await asyncio.sleep(0)
        return 5
      print(asyncio.run(main()))
  """)
  assert result.ok and result.stdout == "5\n", result.stderr


def test_batch_keeps_order():
  results = run_python_batch(["print(1)", "print(2)", "1/0", "print(4)"], max_workers=2,
                             timeout_s=5.0)
  assert [r.stdout for r in results] == ["1\n", "2\n", "", "4\n"]
  assert [r.ok for r in results] == [True, True, False, True]
  assert run_python_batch([]) == []


def test_defences_reported():
  defences = set(sandbox_defences())
  assert {"rlimits", "audit_hook"} <= defences
  assert defences <= {"no_new_privs", "userns", "netns", "uid_drop", "rlimits", "audit_hook"}


# --- resource exhaustion ---------------------------------------------------------


def test_infinite_loop_times_out():
  start = time.monotonic()
  result = run("while True:\n  pass", timeout_s=1.0)
  elapsed = time.monotonic() - start
  assert result.timed_out and not result.ok
  assert result.returncode is not None and result.returncode < 0
  assert elapsed < 2.0
  assert "timed out" in result.stderr


def test_sleep_times_out_on_wall_clock():
  result = run("import time\nprint('start', flush=True)\ntime.sleep(60)", timeout_s=0.5)
  assert result.timed_out and result.stdout == "start\n"
  assert result.duration_s < 1.5


def test_unbounded_allocation_is_stopped():
  for code in ["x = bytearray(1 << 36)",
               "a = []\nwhile True:\n  a.append(bytearray(10 ** 7))"]:
    start = time.monotonic()
    result = run(code, memory_mb=128)
    assert not result.ok
    assert "MemoryError" in result.stderr or result.returncode < 0
    assert time.monotonic() - start < 5


def test_huge_output_is_capped():
  result = run("import sys\nsys.stdout.write('x' * 100_000_000)\n"
               "sys.stderr.write('e' * 1_000_000)", max_output_bytes=10_000,
               memory_mb=512, timeout_s=10.0)
  assert result.output_truncated
  assert result.stdout == "x" * 10_000
  assert result.stderr == "e" * 10_000
  assert result.ok
  assert result.duration_s < 10


def test_endless_printing_is_capped_and_timed_out():
  result = run("while True:\n  print('spam' * 100)", timeout_s=1.0, max_output_bytes=1000)
  assert result.timed_out and result.output_truncated
  assert len(result.stdout) <= 1000


def test_big_file_is_limited():
  result = run("open('big', 'wb').write(b'x' * (64 << 20))", memory_mb=256)
  assert not result.ok
  assert "File too large" in result.stderr or result.returncode < 0


def test_too_many_written_files_refused():
  result = run(f"for i in range({sandbox.MAX_WRITE_OPENS + 5}):\n"
               "  open(f'f{i}', 'w').close()")
  assert_refused(result, "for writing")


def test_crash_does_not_hurt_host():
  for code in ["import faulthandler\nfaulthandler._sigsegv()", "import os\nos.abort()"]:
    result = run(code)
    assert not result.ok and result.returncode != 0, code


def test_threads_refused():
  result = run("import threading\nthreading.Thread(target=print).start()")
  assert_refused(result, "threads")


# --- processes and signals -------------------------------------------------------


@pytest.mark.parametrize("code", [
    "import os\nwhile True:\n  os.fork()",
    "import subprocess\nwhile True:\n  subprocess.Popen(['sleep', '100'])",
    "import subprocess\nsubprocess.run('id', shell=True)",
    "import os\nos.system('touch /tmp/pwned')",
    "import os\nos.popen('id').read()",
    "import os\nos.posix_spawn('/bin/true', ['true'], {})",
    "import os\nos.execv('/bin/sh', ['sh', '-c', 'id'])",
    "import os\nos.spawnv(os.P_WAIT, '/bin/true', ['true'])",
    "import pty\npty.fork()",
    "import multiprocessing as mp\nmp.Process(target=print).start()",
    "import _posixsubprocess\n_posixsubprocess.fork_exec()",
    "import sys\ndel sys.modules['_posixsubprocess']\nimport _posixsubprocess",
    "import sys\ndel sys.modules['posix']\nimport posix",
    "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
    "import os, signal\nos.killpg(os.getpgid(os.getppid()), signal.SIGKILL)",
    "import os\nos.kill(1, 0)",
    "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))",
    "import ctypes",
    "import _ctypes",
    "c = [k for k in object.__subclasses__() if k.__name__ == 'CDLL']\n"
    "c[0](None).system(b'id') if c else (_ for _ in ()).throw(PermissionError('sandbox: no CDLL'))",
    "import gc\ngc.get_objects()",
    "import _xxsubinterpreters",
    "import os\nos.mkfifo('/tmp/fifo')",
    "import os\nos.sched_setaffinity(os.getppid(), {0})",
    "open('evil.cpython-311-x86_64-linux-gnu.so', 'wb').write(b'x')\nimport evil",
    "import _thread\n_thread.start_new_thread(print, ())",
    "import threading, sys\ndel sys.modules['_thread']\nimport _thread",
])
def test_process_creation_and_escapes_refused(code):
  result = run(code)
  assert not result.ok, code
  assert "sandbox" in result.stderr or "has no attribute" in result.stderr, result.stderr
  assert not os.path.exists("/tmp/pwned")


# --- files -----------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path):
  """A fresh path outside the sandbox, and one in the host user's home."""
  home = os.path.expanduser("~")
  targets = [str(tmp_path / "x"), os.path.join(home, f".swirl_sandbox_test_{uuid.uuid4().hex}")]
  yield targets
  for target in targets:
    if os.path.lexists(target):
      os.remove(target) if not os.path.isdir(target) else shutil.rmtree(target)


WRITE_ATTEMPTS = [
    "open({t!r}, 'w').write('x')",
    "open({t!r}, 'a').write('x')",
    "open({t!r}, 'xb').write(b'x')",
    "import os\nos.close(os.open({t!r}, os.O_WRONLY | os.O_CREAT))",
    "import pathlib\npathlib.Path({t!r}).write_text('x')",
    "import os\nos.mkdir({t!r})",
    "import os\nopen('local', 'w').write('x')\nos.rename('local', {t!r})",
    "import shutil\nshutil.copy('main.py', {t!r})",
    "import os\nos.symlink({t!r}, 'link')\nopen('link', 'w').write('x')",
    "import os\nos.symlink(os.path.dirname({t!r}), 'd')\nopen('d/' + os.path.basename({t!r}), 'w')",
    "import os\nos.chdir(os.path.dirname({t!r}))\nopen(os.path.basename({t!r}), 'w').write('x')",
    "import os\nfd = os.open('.', os.O_RDONLY)\n"
    "os.close(os.open('../' * 20 + {t!r}.lstrip('/'), os.O_WRONLY | os.O_CREAT, dir_fd=fd))",
    "import os\nfd = os.open(os.path.dirname({t!r}), os.O_RDONLY)\n"
    "os.close(os.open(os.path.basename({t!r}), os.O_WRONLY | os.O_CREAT, dir_fd=fd))",
    "import sqlite3\nsqlite3.connect({t!r}).execute('create table t (x)')",
    "import os\nos.makedirs('a/b')\nos.symlink('../../..', 'a/b/up')",
]


@pytest.mark.parametrize("attempt", WRITE_ATTEMPTS)
def test_writes_outside_are_refused(outside, attempt):
  codes = [attempt.format(t=target) for target in outside]
  for target, result in zip(outside, run_python_batch(codes, max_workers=2,
                                                      memory_mb=256)):
    assert not result.ok, (attempt, target)
    # Refused by the audit hook, or (as nobody) by the kernel first.
    assert "sandbox" in result.stderr or "Permission denied" in result.stderr, \
        result.stderr
    assert not os.path.lexists(target), (attempt, target)


def test_host_files_cannot_be_changed_or_read(tmp_path):
  secret = tmp_path / "secret.txt"
  secret.write_text("TOP-SECRET")
  os.chmod(secret, 0o600)
  path = str(secret)
  codes = [f"import os\nos.remove({path!r})",
           f"import os\nos.chmod({path!r}, 0o777)",
           f"import os\nos.truncate({path!r}, 0)",
           f"import os\nos.utime({path!r}, (0, 0))",
           f"import os\nos.link({path!r}, 'hard')",
           f"import os\nos.rename({path!r}, 'stolen')",
           f"print(open({path!r}).read())",
           f"import os\nprint(os.listdir({str(tmp_path)!r}))",
           "print(open('/etc/passwd').read())",
           "import os\nprint(open(f'/proc/{os.getppid()}/environ').read())",
           f"print(open('/proc/self/root' + {HOST_HOME!r} + '/.bashrc').read())",
           f"import os\nprint(os.listdir({HOST_HOME!r}))"]
  for code, result in zip(codes, run_python_batch(codes, max_workers=2, memory_mb=256)):
    assert_refused(result)
    assert "TOP-SECRET" not in result.stdout, code
  assert secret.read_text() == "TOP-SECRET"
  assert (os.stat(secret).st_mode & 0o777) == 0o600


def test_host_environment_is_not_visible(monkeypatch):
  monkeypatch.setenv("SWIRL_TEST_SECRET", "hunter2")
  result = run("import os\nprint(sorted(os.environ))")
  assert result.ok
  assert "SWIRL_TEST_SECRET" not in result.stdout and "hunter2" not in result.stdout
  names = set(json.loads(result.stdout.replace("'", '"')))
  assert names <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "PYTHONHASHSEED",
                   sandbox.DEFENCES_VAR}


def test_temp_dir_is_removed():
  result = run("""
      import os
      os.makedirs('a/b')
      open('a/b/f', 'w').write('x')
      os.chmod('a/b', 0)
      os.chmod('a', 0o500)
      print(os.getcwd())
  """)
  assert result.ok, result.stderr
  workdir = result.stdout.strip()
  assert os.path.basename(workdir).startswith("swirl_sandbox_")
  assert not os.path.exists(workdir)


def test_host_process_is_unaffected():
  cwd, env = os.getcwd(), dict(os.environ)
  umask = os.umask(0o022)
  os.umask(umask)
  result = run("""
      import os, sys
      os.chdir('/')
      os.environ['PATH'] = '/evil'
      os.umask(0)
      sys.stdout.write('done')
  """)
  assert result.ok and result.stdout == "done"
  assert os.getcwd() == cwd and dict(os.environ) == env
  assert os.umask(umask) == umask


# --- network ---------------------------------------------------------------------


def test_network_refused():
  server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  server.bind(("127.0.0.1", 0))
  server.listen(1)
  server.settimeout(0.2)
  port = server.getsockname()[1]
  try:
    for code in [f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
                 "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)",
                 "import socket\nsocket.getaddrinfo('localhost', 80)",
                 "import socket\nsocket.gethostbyname('example.com')",
                 "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:1/')",
                 "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('/run/x.sock')",
                 "import socket\na, b = socket.socketpair()\na.bind('\\0abstract')"]:
      result = run(code)
      assert not result.ok, code
      assert "sandbox" in result.stderr, (code, result.stderr)
    with pytest.raises(socket.timeout):
      server.accept()
  finally:
    server.close()


def test_network_namespace_when_root():
  if "netns" not in sandbox_defences():
    pytest.skip("no network namespace on this host")
  result = run("print(open('/proc/self/net/dev').read())")
  assert result.ok
  interfaces = [line.split(":")[0].strip() for line in result.stdout.splitlines()
                if ":" in line]
  assert interfaces == ["lo"]


# --- privilege separation (root hosts) -------------------------------------------


def _system_python_usable():
  if not os.path.exists(SYSTEM_PYTHON):
    return False
  out = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                       capture_output=True, text=True, check=False)
  return out.stdout.strip() == "True"


@pytest.mark.skipif(not IS_ROOT, reason="needs a root host")
def test_root_host_drops_to_nobody(monkeypatch):
  if not _system_python_usable():
    pytest.skip(f"needs {SYSTEM_PYTHON} >= 3.11")
  monkeypatch.setattr(sandbox, "PYTHON", SYSTEM_PYTHON)
  if sandbox._sandbox_ids() is None:
    pytest.skip("the sandbox user cannot run this interpreter")
  result = run("import os\nprint(os.getuid(), os.geteuid(), os.getgroups())\n"
               "print(os.environ['SWIRL_SANDBOX_DEFENCES'])")
  assert result.ok, result.stderr
  ids, defences = result.stdout.splitlines()
  assert ids == "65534 65534 []" or not ids.startswith("0 ")
  assert "uid_drop" in defences.split(",")


@pytest.fixture
def fresh_probe(monkeypatch):
  """Forgets the probed interpreter and ids, so that a test probes again."""
  monkeypatch.setattr(sandbox, "_drop_state", {})


@pytest.fixture
def public_dir():
  """A fresh directory in /tmp that other users can enter (tmp_path cannot)."""
  path = tempfile.mkdtemp(prefix="swirl_sandbox_test_", dir="/tmp")
  os.chmod(path, 0o755)
  yield path
  shutil.rmtree(path, ignore_errors=True)


ROOT_HOST_CODE = """
import os, socket, sys, tempfile
print(os.getuid(), os.geteuid(), os.getgid())
print(os.environ['SWIRL_SANDBOX_DEFENCES'])
print(sys.executable)
tmp = tempfile.gettempdir()
st = os.stat(tmp)
print(tmp == os.getcwd(), oct(st.st_mode & 0o777), st.st_uid == os.getuid())
# os.access has no audit event: this is the kernel's answer for this uid.
print(os.access(SECRET, os.R_OK), os.access('/root', os.X_OK),
      os.access('/root/.bashrc', os.R_OK))
for what, attempt in [
    ("read", lambda: open(SECRET).read()),
    ("root", lambda: open('/root/.bashrc').read()),
    ("list", lambda: os.listdir('/root')),
    ("inet", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)),
    ("connect", lambda: socket.create_connection(('127.0.0.1', 22), timeout=1)),
]:
  try:
    print(what, "allowed", repr(attempt())[:40])
  except (OSError, PermissionError) as e:
    print(what, "refused", type(e).__name__)
"""


@pytest.mark.skipif(not IS_ROOT, reason="needs a root host")
def test_root_host_runs_unprivileged_without_fallback(fresh_probe, public_dir, caplog):
  """On a root host (this one: the interpreter under /root, mode 700), the
  child runs as nobody, cannot read root-only files or open sockets, has a
  private temp dir, and no fallback warning is logged."""
  secret = os.path.join(public_dir, "secret.txt")
  with open(secret, "w") as f:
    f.write("TOP-SECRET")
  os.chmod(secret, 0o600)
  with caplog.at_level(logging.WARNING, logger=sandbox.__name__):
    result = run(f"SECRET = {secret!r}\n" + ROOT_HOST_CODE)
  assert result.ok, result.stderr
  assert not [r for r in caplog.records if r.name == sandbox.__name__], caplog.text
  lines = result.stdout.splitlines()
  uid, euid, gid = map(int, lines[0].split())
  assert uid != 0 and euid != 0 and gid != 0
  assert "uid_drop" in lines[1].split(",")
  if not sandbox._traversable(os.path.realpath(sandbox.PYTHON)):
    assert lines[2].startswith(tuple(sandbox._mirror_parents())), lines[2]
  assert lines[3] == "True 0o700 True"
  assert lines[4] == "False False False"
  assert lines[5:] == ["read refused PermissionError", "root refused PermissionError",
                       "list refused PermissionError", "inet refused PermissionError",
                       "connect refused PermissionError"]
  assert "TOP-SECRET" not in result.stdout


@pytest.mark.skipif(not IS_ROOT, reason="needs a root host")
def test_root_host_batch_and_tool_use_the_drop(fresh_probe, caplog):
  """The way the HumanEval checks and the python tool run code."""
  with caplog.at_level(logging.WARNING, logger=sandbox.__name__):
    results = run_python_batch(["import os\nprint(os.getuid())"] * 3, max_workers=3)
    uid = base.get_tool("python").run("import os, decimal\nprint(os.getuid())")
  assert not caplog.records, caplog.text
  assert all(r.ok for r in results), results
  uids = {r.stdout.strip() for r in results} | {uid}
  assert len(uids) == 1 and uids != {"0"} and uid.isdigit(), uids


@pytest.mark.skipif(not IS_ROOT, reason="needs a root host")
def test_mirror_is_built_once_from_hard_links(monkeypatch, public_dir):
  monkeypatch.setattr(sandbox, "MIRROR_DIRS", (os.path.join(public_dir, "cache"),))
  python = sys.executable
  binary = sandbox._stdlib_mirror(python)
  assert binary.startswith(os.path.join(public_dir, "cache", "python"))
  mirror = os.path.dirname(os.path.dirname(binary))
  marker = os.path.join(mirror, sandbox.MIRROR_MARKER)
  built_at = os.stat(marker).st_mtime_ns
  layout = sandbox._interpreter_layout(python)
  stdlib = os.path.dirname(os.__file__)
  rel = os.path.relpath(os.path.realpath(stdlib), os.path.realpath(layout["prefix"]))
  copy = os.path.join(mirror, rel)
  assert os.path.isfile(os.path.join(copy, "os.py"))
  assert os.path.isdir(os.path.join(copy, "json"))
  for skipped in ("test", "site-packages", "idlelib"):
    assert not os.path.exists(os.path.join(copy, skipped))
  if os.stat(stdlib).st_dev == os.stat(public_dir).st_dev:   # same file system
    assert os.stat(os.path.join(copy, "os.py")).st_ino == os.stat(os.__file__).st_ino
  for dirpath, _, _ in os.walk(mirror):
    st = os.stat(dirpath)
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o755, dirpath
  assert sandbox._stdlib_mirror(python) == binary          # reused
  assert os.stat(marker).st_mtime_ns == built_at
  assert sandbox._probe(binary, (65534, 65534)) is None    # nobody runs it
  assert sandbox._stdlib_mirror(python, rebuild=True) == binary
  assert os.stat(marker).st_mtime_ns != built_at
  assert sorted(os.listdir(os.path.join(public_dir, "cache"))) == [os.path.basename(mirror)]


@pytest.mark.skipif(not IS_ROOT, reason="needs a root host")
def test_mirror_copies_where_hard_links_fail(monkeypatch, public_dir):
  def no_link(*args, **kwargs):
    raise OSError(18, "Invalid cross-device link")

  monkeypatch.setattr(sandbox, "MIRROR_DIRS", (public_dir,))
  monkeypatch.setattr(sandbox.os, "link", no_link)
  binary = sandbox._stdlib_mirror(sys.executable)
  copy = os.path.join(os.path.dirname(os.path.dirname(binary)),
                      os.path.relpath(os.__file__, sys.base_prefix))
  assert os.stat(copy).st_ino != os.stat(os.__file__).st_ino
  assert os.stat(copy).st_mtime_ns == os.stat(os.__file__).st_mtime_ns  # .pyc stay valid
  assert sandbox._probe(binary, (65534, 65534)) is None


@pytest.mark.skipif(not IS_ROOT, reason="needs a root host")
def test_mirror_refuses_unsafe_places_and_private_files(monkeypatch, public_dir):
  open_dir = os.path.join(public_dir, "open")
  os.mkdir(open_dir)
  os.chmod(open_dir, 0o777)          # anyone could plant a fake stdlib here
  foreign = os.path.join(public_dir, "foreign")
  os.mkdir(foreign, 0o755)
  os.chown(foreign, 65534, 65534)    # owned by the sandbox user
  assert not sandbox._safe_parent(open_dir)
  assert not sandbox._safe_parent(foreign)
  assert sandbox._safe_parent(public_dir)
  monkeypatch.setattr(sandbox, "MIRROR_DIRS", (open_dir, foreign))
  with pytest.raises(OSError, match="writable by others"):
    sandbox._stdlib_mirror(sys.executable)
  assert os.listdir(open_dir) == [] and os.listdir(foreign) == []
  private = os.path.join(public_dir, "private.py")
  with open(private, "w") as f:
    f.write("SECRET = 1")
  os.chmod(private, 0o600)
  sandbox._mirror_file(private, os.path.join(public_dir, "copy.py"))
  assert not os.path.exists(os.path.join(public_dir, "copy.py"))


@pytest.mark.skipif(not IS_ROOT, reason="needs a root host")
def test_root_fallback_without_mirror_warns(monkeypatch, public_dir, fresh_probe, caplog):
  """Where no mirror can be made, the old fallback (root + audit hook) stays."""
  if sandbox._traversable(os.path.realpath(sandbox.PYTHON)):
    pytest.skip("the interpreter is readable by nobody here: no mirror needed")
  open_dir = os.path.join(public_dir, "open")
  os.mkdir(open_dir)
  os.chmod(open_dir, 0o777)
  monkeypatch.setattr(sandbox, "MIRROR_DIRS", (open_dir,))
  with caplog.at_level(logging.WARNING, logger=sandbox.__name__):
    result = run("import os\nprint(os.getuid())\nopen('/etc/passwd')")
  assert "root behind the audit hook only" in caplog.text
  assert "writable by others" in caplog.text
  assert not result.ok and "sandbox: reading '/etc/passwd'" in result.stderr
  assert result.stdout == "0\n"


UNPRIVILEGED_SCRIPT = r"""
import json, os, sys
from swirl_jax.tools import sandbox
sandbox.PYTHON = sys.executable
out = {"uid": os.getuid(), "defences": sandbox.sandbox_defences()}
target = sys.argv[1]
r = sandbox.run_python("open(%r, 'w').write('x')" % target)
out["write"] = [r.ok, "sandbox" in r.stderr, os.path.exists(target)]
r = sandbox.run_python("import socket\nsocket.create_connection(('127.0.0.1', 22), 1)")
out["socket"] = [r.ok, "sandbox" in r.stderr]
r = sandbox.run_python("import os\nos.fork()")
out["fork"] = [r.ok, "sandbox" in r.stderr]
r = sandbox.run_python("while True: pass", timeout_s=0.5)
out["timeout"] = [r.timed_out, r.duration_s < 1.5]
r = sandbox.run_python("print(21 * 2)")
out["normal"] = [r.ok, r.stdout]
print(json.dumps(out))
"""


@pytest.mark.skipif(not IS_ROOT or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to impersonate a normal user")
def test_unprivileged_host_user(tmp_path):
  """The sandbox as used on a TPU VM by a normal user (here: nobody)."""
  if not _system_python_usable():
    pytest.skip(f"needs {SYSTEM_PYTHON} >= 3.11")
  shared = tmp_path / "shared"
  shared.mkdir()
  os.chmod(tmp_path, 0o755)
  os.chmod(shared, 0o777)   # writable by the host user, outside its sandboxes
  target = str(shared / "x")
  env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": REPO_ROOT, "HOME": "/tmp"}
  proc = subprocess.run(
      ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", SYSTEM_PYTHON,
       "-c", UNPRIVILEGED_SCRIPT, target],
      capture_output=True, text=True, env=env, cwd="/tmp", timeout=60, check=False)
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout)
  assert out["uid"] == 65534
  assert {"rlimits", "audit_hook"} <= set(out["defences"])
  assert out["write"] == [False, True, False]
  assert out["socket"] == [False, True]
  assert out["fork"] == [False, True]
  assert out["timeout"] == [True, True]
  assert out["normal"] == [True, "42\n"]
  assert not os.path.exists(target)


# --- the python tool ---------------------------------------------------------------


def test_python_tool():
  tool = base.get_tool("python", timeout_s=2.0)
  assert tool.tag == "python"
  assert tool.run("print(6 * 7)") == "42"
  assert tool.run("x = 1") == "(no output)"
  error = tool.run("1/0")
  assert error.startswith("Error:") and "ZeroDivisionError" in error
  assert tool.run("   ").startswith("Error:")
  assert tool.run("import os\nos.system('id')").startswith("Error:")
  long = tool.run("print('y' * 100000)")
  assert len(long) <= tool.max_chars and long.endswith("...")
