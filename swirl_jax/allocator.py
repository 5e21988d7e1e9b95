"""A caching host allocator (mimalloc) for XLA:CPU, loaded by re-exec.

Why: XLA:CPU allocates the temporary buffer of every execution in one piece
(about 296 MB for the GRPO step of the tiny model) and frees it when the
call returns. glibc's malloc serves a request that large with a fresh
`mmap` and gives it back with `munmap`, so every call page-faults the whole
buffer in again and the kernel zeroes it: on the 2-core CPU default that
was 73,000 page faults and ~160 ms of system time per GRPO step (30-40% of
its wall time). mimalloc keeps freed memory for reuse: the faults drop to
~0 and the step is ~0.8x as long (`benchmarks/grpo_step.py` prints which
allocator it ran with; `--allocator=system` compares).

An allocator can only be swapped before the process starts (`LD_PRELOAD`),
so the entry points (`python -m swirl_jax.main`, the benchmarks) call
`reexec_with_fast_allocator()` first thing: if mimalloc is installed (the
`cmeel-mimalloc` wheel, a dependency on Linux x86-64) and not loaded yet,
the process replaces itself with the same command line plus
`LD_PRELOAD=<libmimalloc>`. It does nothing when:

* `SWIRL_JAX_ALLOCATOR=system` (opt out), or the process already preloads
  an allocator (tcmalloc, jemalloc, mimalloc: e.g. a TPU VM image that
  preloads tcmalloc is left as it is);
* the platform is not Linux, or the library is not installed;
* it already re-executed once (`SWIRL_JAX_ALLOCATOR_REEXEC` is set).

`SWIRL_JAX_ALLOCATOR=/path/to/lib.so` preloads that library instead.
Run a command under it by hand with
`python -m swirl_jax.allocator CMD [ARGS...]`.

This module imports nothing heavy: it must run before jax is imported.
"""

from __future__ import annotations

import glob
import os
import sys
import sysconfig
from typing import Optional, Sequence

ENV_CHOICE = "SWIRL_JAX_ALLOCATOR"
ENV_MARKER = "SWIRL_JAX_ALLOCATOR_REEXEC"
_KNOWN = ("mimalloc", "tcmalloc", "jemalloc")


def mimalloc_path() -> Optional[str]:
  """Path of the installed libmimalloc shared library, or None."""
  roots = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
  for root in sorted(r for r in roots if r):
    hits = sorted(glob.glob(os.path.join(root, "cmeel.prefix", "lib",
                                         "libmimalloc.so*")))
    if hits:
      # Prefer the versioned soname (libmimalloc.so.3) over the dev link.
      return max(hits, key=len)
  return None


def preloaded_allocator(environ=None) -> Optional[str]:
  """The allocator library already in LD_PRELOAD, or None."""
  environ = os.environ if environ is None else environ
  for entry in environ.get("LD_PRELOAD", "").replace(":", " ").split():
    if any(name in os.path.basename(entry) for name in _KNOWN):
      return entry
  return None


def chosen_library(environ=None) -> Optional[str]:
  """The library to preload under the current settings, or None for none.

  Raises:
    ValueError: SWIRL_JAX_ALLOCATOR names a file that does not exist.
  """
  environ = os.environ if environ is None else environ
  choice = environ.get(ENV_CHOICE, "").strip()
  if choice == "system":
    return None
  if choice and choice != "mimalloc":
    if not os.path.isfile(choice):
      raise ValueError(f"{ENV_CHOICE}={choice!r}: expected 'system', "
                       "'mimalloc' or the path of an allocator library "
                       "(.so); no such file.")
    return choice
  return mimalloc_path()


def describe(environ=None) -> str:
  """One line for logs: which host allocator this process runs with."""
  environ = os.environ if environ is None else environ
  lib = preloaded_allocator(environ)
  return f"LD_PRELOAD {lib}" if lib else "system malloc"


def preload_environ(environ=None) -> Optional[dict]:
  """A copy of the environment that preloads the chosen allocator.

  None when nothing should change (opted out, not Linux, no library, or an
  allocator is already preloaded).
  """
  environ = dict(os.environ if environ is None else environ)
  if not sys.platform.startswith("linux") or preloaded_allocator(environ):
    return None
  lib = chosen_library(environ)
  if lib is None:
    return None
  old = environ.get("LD_PRELOAD", "").strip()
  environ["LD_PRELOAD"] = f"{lib}:{old}" if old else lib
  environ[ENV_MARKER] = lib
  return environ


def reexec_with_fast_allocator(argv: Optional[Sequence[str]] = None) -> None:
  """Replaces this process by itself under the caching allocator.

  Call it first thing in an entry point (before importing jax). Returns
  normally (doing nothing) in the cases listed in the module docstring;
  otherwise it does not return. `argv` defaults to the interpreter's own
  command line (`sys.orig_argv`), so `python -m pkg.mod ARGS` re-runs as is.
  """
  if os.environ.get(ENV_MARKER):
    return
  environ = preload_environ()
  if environ is None:
    return
  argv = list(sys.orig_argv if argv is None else argv)
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, [sys.executable] + argv[1:], environ)
  except OSError as e:  # keep running with the system allocator
    print(f"swirl_jax: could not re-exec under {environ['LD_PRELOAD']} "
          f"({e}); continuing with the system allocator.", file=sys.stderr)


def main(argv: Sequence[str]) -> int:
  """`python -m swirl_jax.allocator CMD [ARGS...]`: runs CMD under it."""
  if not argv:
    print("usage: python -m swirl_jax.allocator CMD [ARGS...]",
          file=sys.stderr)
    return 2
  environ = preload_environ() or dict(os.environ)
  os.execvpe(argv[0], list(argv), environ)
  return 127  # not reached


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
