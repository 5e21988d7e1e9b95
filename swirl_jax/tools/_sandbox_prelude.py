"""Child-side prelude of `swirl_jax.tools.sandbox`: confine, then run main.py.

Never imported by the host. `sandbox.run_python` starts a fresh interpreter
(`python -S -B ... _sandbox_prelude.py KEY=VALUE ...`) in a new session whose
cwd is a private temporary directory holding the untrusted `main.py`. Before
any untrusted code runs, this file, in order:

1. sets no_new_privs (no privilege gain through exec);
2. as root, moves into a fresh network namespace (unshare(CLONE_NEWNET)); as
   a normal user, tries a fresh user + network namespace (mapping only its own
   ids, then dropping the namespace's capabilities); silently skipped when the
   kernel refuses;
3. as root, drops to the unprivileged user given in the config (nobody);
   everything imported from then on is read as that user, so on a host
   whose interpreter that user cannot reach the host starts this file with
   a readable mirror of the interpreter (see `sandbox`), whose sys.path is
   the mirror's;
4. sets resource limits: CPU seconds, address space, file size, no new
   processes or threads, few file descriptors, no core dumps;
5. removes the few os/signal functions that have no audit event and could
   touch things outside (mkfifo, mknod, pidfd_*, setpriority, sched_set*,
   unshare, setns) and stubs
   _posixsubprocess.fork_exec and _thread.start_new_thread (no threads);
6. installs an audit hook (PEP 578) that refuses process creation, signals to
   other processes, sockets other than local socketpairs, ctypes,
   subinterpreters, raising limits, writes (and directory opens) outside the
   sandbox directory, reads outside the sandbox, the standard library and a
   few system paths, relative paths with '..' in open() (they could be
   relative to a hidden dir_fd) and symlinks that point outside;
7. runs main.py with runpy as `__main__`; uncaught exceptions are printed
   without the prelude's frames and exit with status 1.

The defences that took effect are listed, comma separated, in the
SWIRL_SANDBOX_DEFENCES environment variable of the child.

Audit hooks are not a security boundary against arbitrary native code (e.g.
crafted bytecode); the process separation, the unprivileged user, the
namespace and the resource limits are the layers that bound the damage.
"""

import _posixsubprocess
import _thread
import itertools
import os
import pkgutil  # pylint: disable=unused-import  # runpy imports it lazily
import posix
import resource
import runpy
import signal
import stat
import sys
import traceback

_DEFENCES = []


def _fail(message):
  sys.stderr.write(f"sandbox: {message}\n")
  sys.stderr.flush()
  os._exit(70)  # pylint: disable=protected-access


# --- kernel-level confinement (ctypes is used here only, then unloaded) -------


def _kernel_setup(cfg):
  try:
    import ctypes  # pylint: disable=import-outside-toplevel
    libc = ctypes.CDLL(None, use_errno=True)
  except (ImportError, OSError):
    return
  pr_set_no_new_privs = 38
  if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) == 0:
    _DEFENCES.append("no_new_privs")
  if cfg.get("netns"):
    _new_network_namespace(ctypes, libc)


def _new_network_namespace(ctypes, libc):
  clone_newnet, clone_newuser = 0x40000000, 0x10000000
  if os.geteuid() == 0:
    if libc.unshare(clone_newnet) == 0:
      _DEFENCES.append("netns")
    return
  uid, gid = os.geteuid(), os.getegid()
  if libc.unshare(clone_newuser | clone_newnet) != 0:
    return
  try:   # map only our own ids, so files keep their owner
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):
      with open(f"/proc/self/{name}", "w") as f:
        f.write(text)
  except OSError as e:
    _fail(f"could not map ids in the new user namespace: {e}")

  class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

  class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]

  linux_capability_version_3 = 0x20080522
  header, data = _Header(linux_capability_version_3, 0), (_Data * 2)()
  if libc.capset(ctypes.byref(header), data) != 0:
    _fail("could not drop the capabilities of the new user namespace.")
  _DEFENCES.extend(["userns", "netns"])


def _drop_privileges(cfg):
  uid, gid = cfg.get("uid"), cfg.get("gid")
  if uid is None or os.geteuid() != 0:
    return
  try:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
  except OSError as e:
    _fail(f"could not switch to uid {uid}: {e}")
  if os.getuid() != uid or os.geteuid() != uid or os.getegid() != gid:
    _fail(f"could not switch to uid {uid}.")
  _DEFENCES.append("uid_drop")


def _set_limits(cfg):
  def limit(res, soft, hard=None):
    hard = soft if hard is None else hard
    _, old_hard = resource.getrlimit(res)
    if old_hard != resource.RLIM_INFINITY:
      soft, hard = min(soft, old_hard), min(hard, old_hard)
    resource.setrlimit(res, (soft, hard))

  try:
    limit(resource.RLIMIT_CPU, cfg["cpu_s"], cfg["cpu_s"] + 1)
    limit(resource.RLIMIT_AS, cfg["memory_bytes"])
    limit(resource.RLIMIT_FSIZE, cfg["fsize_bytes"])
    limit(resource.RLIMIT_NOFILE, cfg["nofile"])
    limit(resource.RLIMIT_NPROC, cfg["nproc"])
    limit(resource.RLIMIT_CORE, 0)
  except (OSError, ValueError) as e:
    _fail(f"could not set resource limits: {e}")
  _DEFENCES.append("rlimits")


def _refuse_process_creation(*args, **kwargs):
  raise PermissionError("sandbox: starting processes is not allowed")


def _refuse_thread_creation(*args, **kwargs):
  raise PermissionError("sandbox: starting threads is not allowed")


def _remove_unaudited_functions():
  """Removes or stubs functions that act outside without raising audit events."""
  for module in (os, posix):
    for name in ("mkfifo", "mknod", "pidfd_open", "setpriority", "sched_setaffinity",
                 "sched_setscheduler", "sched_setparam", "unshare", "setns"):
      if hasattr(module, name):
        delattr(module, name)
  for module in (signal, sys.modules.get("_signal")):
    if module is not None and hasattr(module, "pidfd_send_signal"):
      delattr(module, "pidfd_send_signal")
  # `subprocess` (and asyncio, which imports it) must stay importable, but
  # _posixsubprocess.fork_exec raises no audit event: stub it. Threads are
  # refused too (RLIMIT_NPROC stops them only for non-root users), so code
  # behaves the same on every host. Re-importing these modules to get the
  # originals back is refused by the audit hook.
  _posixsubprocess.fork_exec = _refuse_process_creation
  _thread.start_new_thread = _refuse_thread_creation
  if hasattr(_thread, "start_new"):
    _thread.start_new = _refuse_thread_creation
  threading = sys.modules.get("threading")
  if threading is not None:
    # pylint: disable-next=protected-access
    threading._start_new_thread = _refuse_thread_creation
  for name in [m for m in sys.modules if m == "ctypes" or m.startswith("ctypes.")
               or m == "_ctypes"]:
    del sys.modules[name]


# --- the audit hook ---------------------------------------------------------------


def _make_audit_hook(sandbox, read_roots, max_write_opens):
  """Builds the hook; everything it uses is bound here, so later monkeypatching
  of modules or builtins by the untrusted code does not change its decisions."""
  lstat, stat_, readlink, getcwd, fspath = (posix.lstat, posix.stat, posix.readlink,
                                            posix.getcwd, posix.fspath)
  s_islnk, s_isdir = stat.S_ISLNK, stat.S_ISDIR
  str_startswith, str_split, str_join = str.startswith, str.split, str.join
  bytes_decode = bytes.decode
  str_type, bytes_type, int_type, bool_type = str, bytes, int, bool
  isinstance_, len_, reversed_, list_, any_ = isinstance, len, reversed, list, any
  permission_error, import_error, os_error = PermissionError, ImportError, OSError
  own_proc = f"/proc/{os.getpid()}"
  write_flags = (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
                 | getattr(os, "O_TMPFILE", 0))
  devices = frozenset({"/dev/null", "/dev/zero", "/dev/urandom", "/dev/random",
                       "/dev/full"})
  writable_devices = frozenset({"/dev/null"})
  stdlib_roots = tuple(r for r in read_roots if r != sandbox)
  read_roots = tuple(read_roots) + (sandbox, own_proc)
  af_unix = 1
  write_count = itertools.count(1)   # can only go up, even if reached by user code
  next_ = next
  str_rfind = str.rfind

  denied = frozenset({
      "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
      "os.startfile", "subprocess.Popen", "os.kill", "os.killpg", "pty.spawn",
      "resource.setrlimit", "resource.prlimit", "gc.get_objects",
      "gc.get_referrers", "gc.get_referents", "cpython.PyInterpreterState_New",
      "sqlite3.enable_load_extension", "sqlite3.load_extension", "fcntl.ioctl",
      "webbrowser.open", "syslog.openlog", "syslog.syslog", "os.add_dll_directory",
  })
  denied_prefixes = ("ctypes.", "socket.", "_ctypes.")
  denied_modules = frozenset({
      "_posixsubprocess", "_ctypes", "ctypes", "_xxsubinterpreters",
      "_xxinterpchannels", "_interpreters", "_interpchannels", "_interpqueues",
      "_gdbm", "_dbm", "_testcapi", "_testinternalcapi", "_testmultiphase",
      "_testsinglephase", "_testbuffer", "_testimportmultiple", "_testclinic",
      "_xxtestfuzz", "_ctypes_test", "posix", "_signal", "_posixshmem", "_thread",
  })
  # event -> (indices of path arguments, indices of their dir_fd arguments,
  #           follow the final symlink?)
  write_events = {
      "os.remove": ((0,), (1,), False),
      "os.rmdir": ((0,), (1,), False),
      "os.mkdir": ((0,), (2,), False),
      "os.rename": ((0, 1), (2, 3), False),
      "os.link": ((0, 1), (2, 3), True),
      "os.symlink": ((1,), (2,), False),
      "os.chmod": ((0,), (2,), True),
      "os.chown": ((0,), (3,), True),
      "os.utime": ((0,), (3,), True),
      "os.truncate": ((0,), (), True),
      "os.chflags": ((0,), (), True),
      "os.lchflags": ((0,), (), False),
      "os.setxattr": ((0,), (), True),
      "os.removexattr": ((0,), (), True),
  }
  read_events = frozenset({"os.listdir", "os.scandir"})
  watched = frozenset(write_events) | read_events | denied | frozenset(
      {"open", "import", "sqlite3.connect"})

  def deny(what):
    raise permission_error(f"sandbox: {what} is not allowed")

  def as_text(path):
    """The path as an exact str (str subclasses and PathLike objects unwrapped)."""
    if not isinstance_(path, (str_type, bytes_type)):
      path = fspath(path)
    if isinstance_(path, bytes_type):
      return bytes_decode(path, "utf-8", "surrogateescape")
    return str_join("", [path])

  def fd_path(fd):
    try:
      target = readlink(f"/proc/self/fd/{fd}")
    except os_error:
      return None
    return target if str_startswith(target, "/") else None

  def resolve(path, dir_fd=None, follow=True):
    """Absolute path with '.', '..' and symlinks resolved (None: unresolvable)."""
    if isinstance_(path, int_type) and not isinstance_(path, bool_type):
      return fd_path(path)
    text = as_text(path)
    if not str_startswith(text, "/"):
      if dir_fd is not None and dir_fd != -1:
        base = fd_path(dir_fd)
      else:
        try:
          base = getcwd()
        except os_error:
          return None
      if base is None:
        return None
      text = base + "/" + text
    pending = list_(reversed_(str_split(text, "/")))
    resolved, hops = "", 0
    while pending:
      part = pending.pop()
      if part == "" or part == ".":
        continue
      if part == "..":
        resolved = resolved[:resolved.rfind("/")] if resolved else ""
        continue
      candidate = resolved + "/" + part
      if not pending and not follow:
        resolved = candidate
        continue
      try:
        mode = lstat(candidate).st_mode
      except (os_error, ValueError):
        resolved = candidate
        continue
      if s_islnk(mode):
        hops += 1
        if hops > 40:
          return None
        target = readlink(candidate)
        if str_startswith(target, "/"):
          resolved = ""
        pending.extend(reversed_(str_split(target, "/")))
        continue
      resolved = candidate
    return resolved or "/"

  def under(path, roots):
    for root in roots:
      if path == root or str_startswith(path, root + "/"):
        return True
    return False

  def has_parent_ref(path):
    if isinstance_(path, int_type):
      return False
    text = as_text(path)
    return not str_startswith(text, "/") and ".." in str_split(text, "/")

  def check_write(path, dir_fd=None, follow=True, what="write"):
    real = resolve(path, dir_fd, follow)
    if real is None or not (under(real, (sandbox,)) or real in writable_devices):
      deny(f"{what} outside the sandbox directory ({as_text(path)!r})"
           if not isinstance_(path, int_type) else f"{what} to file descriptor {path}")
    return real

  def check_read(path, dir_fd=None):
    real = resolve(path, dir_fd, True)
    if real is None or not (under(real, read_roots) or real in devices):
      deny(f"reading {as_text(path)!r}" if not isinstance_(path, int_type)
           else f"reading file descriptor {path}")
    return real

  def check_symlink_target(target, link):
    text = as_text(target)
    if str_startswith(text, "/"):
      real = resolve(text)
      if real is None or not under(real, (sandbox,)):
        deny(f"a symlink to {text!r} outside the sandbox directory")
    elif ".." in str_split(text, "/"):
      deny(f"a relative symlink target with '..' ({text!r})")

  def on_open(args):
    path = args[0]
    mode = args[1] if len_(args) > 1 else None
    flags = args[2] if len_(args) > 2 else 0
    if isinstance_(path, int_type) and not isinstance_(path, bool_type):
      return   # wraps an already open descriptor
    writing = ((isinstance_(mode, str_type) and any_(c in mode for c in "wax+")) or
               (isinstance_(flags, int_type) and flags > 0 and flags & write_flags))
    if has_parent_ref(path):
      deny(f"a relative path with '..' ({as_text(path)!r})")
    if writing:
      real = check_write(path, what="writing")
      if real not in writable_devices:
        if next_(write_count) > max_write_opens:
          deny(f"opening more than {max_write_opens} files for writing")
      return
    real = check_read(path)
    if not under(real, (sandbox,)):
      try:
        is_dir = s_isdir(stat_(real).st_mode)
      except (os_error, ValueError):
        is_dir = False
      if is_dir:
        deny(f"opening the directory {real!r} outside the sandbox")

  def hook(event, args):
    if event not in watched and not str_startswith(event, denied_prefixes):
      return
    if event == "open":
      on_open(args)
    elif event in write_events:
      path_idx, fd_idx, follow = write_events[event]
      for j, i in enumerate(path_idx):
        has_fd = j < len_(fd_idx) and fd_idx[j] < len_(args)
        dir_fd = args[fd_idx[j]] if has_fd else None
        if event == "os.truncate" and isinstance_(args[i], int_type):
          continue   # ftruncate needs a descriptor opened for writing
        check_write(args[i], dir_fd, follow, what=event)
        if event == "os.link":
          check_write(args[i], dir_fd, False, what=event)
      if event == "os.symlink":
        check_symlink_target(args[0], args[1])
    elif event in read_events:
      path = args[0] if len_(args) else "."
      check_read("." if path is None else path)
    elif event == "import":
      name = as_text(args[0]) if len_(args) and isinstance_(args[0], str_type) else ""
      short = name[str_rfind(name, ".") + 1:]
      filename = (as_text(args[1]) if len_(args) > 1 and
                  isinstance_(args[1], (str_type, bytes_type)) else "")
      base = filename[str_rfind(filename, "/") + 1:]
      if (name in denied_modules or short in denied_modules or
          str_split(base, ".")[0] in denied_modules):
        raise import_error(f"sandbox: importing {name!r} is not allowed")
      if filename:   # an extension module: only from the standard library
        real = resolve(filename)
        if real is None or under(real, (sandbox,)) or not under(real, stdlib_roots):
          raise import_error(
              f"sandbox: loading the extension {filename!r} is not allowed")
    elif event == "sqlite3.connect":
      database = args[0] if len_(args) else ""
      text = as_text(database) if not isinstance_(database, int_type) else ""
      if text not in ("", ":memory:"):
        if str_startswith(text, "file:"):
          deny("sqlite URIs")
        check_write(database, what="sqlite3.connect")
    elif event == "socket.__new__":
      if not (len_(args) > 1 and args[1] == af_unix):
        deny("creating a network socket")
    else:
      deny(event)

  return hook


def _read_roots(sandbox):
  roots = {sandbox, "/usr/share/zoneinfo"}
  for entry in sys.path:
    if entry:
      roots.add(os.path.realpath(entry))
  return sorted(r for r in roots if r != "/")


# --- running the untrusted code ----------------------------------------------------


def _run_main(main):
  sys.argv = [main]
  try:
    runpy.run_path(main, run_name="__main__")
  except SystemExit:
    raise
  except BaseException as e:  # pylint: disable=broad-except
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != main:
      tb = tb.tb_next
    sys.stdout.flush()
    traceback.print_exception(type(e), e, tb)
    sys.stderr.flush()
    sys.exit(1)


def _parse_config(argv):
  """KEY=VALUE arguments (values: decimal ints, 'none', or text) -> dict."""
  cfg = {}
  for item in argv:
    key, _, value = item.partition("=")
    if value == "none":
      cfg[key] = None
    elif value.lstrip("-").isdigit():
      cfg[key] = int(value)
    else:
      cfg[key] = value
  return cfg


def main():
  cfg = _parse_config(sys.argv[1:])
  sandbox = os.path.realpath(cfg["dir"])
  os.chdir(sandbox)
  _kernel_setup(cfg)
  _drop_privileges(cfg)
  _set_limits(cfg)
  _remove_unaudited_functions()
  prelude_dir = os.path.dirname(os.path.realpath(__file__))
  sys.path[:] = [p for p in sys.path if p and os.path.realpath(p) != prelude_dir]
  sys.path.insert(0, sandbox)
  read_roots = _read_roots(sandbox)
  _DEFENCES.append("audit_hook")
  os.environ["SWIRL_SANDBOX_DEFENCES"] = ",".join(_DEFENCES)
  import builtins  # pylint: disable=import-outside-toplevel
  if not hasattr(builtins, "exit"):   # -S skips site, which defines exit/quit
    builtins.exit = builtins.quit = sys.exit
  sys.addaudithook(_make_audit_hook(sandbox, read_roots, cfg["max_write_opens"]))
  _run_main(cfg["main"])


if __name__ == "__main__":
  main()
