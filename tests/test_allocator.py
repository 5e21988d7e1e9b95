"""The caching-allocator re-exec of the entry points (swirl_jax/allocator.py)."""

import os
import subprocess
import sys

import pytest

from swirl_jax import allocator

_PROBE = ("import os; from swirl_jax import allocator; "
          "allocator.reexec_with_fast_allocator(); "
          "maps = open('/proc/self/maps').read(); "
          "print(os.environ.get('LD_PRELOAD', ''), '|', 'libmimalloc' in maps)")

needs_mimalloc = pytest.mark.skipif(
    allocator.mimalloc_path() is None or not sys.platform.startswith("linux"),
    reason="cmeel-mimalloc is installed on Linux x86-64 only")


def _clean_env(**extra):
  env = {k: v for k, v in os.environ.items()
         if k not in ("LD_PRELOAD", allocator.ENV_CHOICE, allocator.ENV_MARKER)}
  env.update(extra)
  return env


def test_system_opts_out():
  assert allocator.preload_environ({allocator.ENV_CHOICE: "system"}) is None
  assert allocator.chosen_library({allocator.ENV_CHOICE: "system"}) is None


def test_an_already_preloaded_allocator_is_left_alone():
  env = {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4"}
  assert allocator.preloaded_allocator(env) == env["LD_PRELOAD"]
  assert allocator.preload_environ(env) is None
  assert "tcmalloc" in allocator.describe(env)
  assert allocator.describe({}) == "system malloc"


def test_a_missing_library_is_named_in_the_error():
  with pytest.raises(ValueError, match="/no/such/libfoo.so"):
    allocator.chosen_library({allocator.ENV_CHOICE: "/no/such/libfoo.so"})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
def test_an_explicit_library_is_prepended(tmp_path):
  lib = tmp_path / "libmine.so"
  lib.write_bytes(b"")
  env = allocator.preload_environ(
      {allocator.ENV_CHOICE: str(lib), "LD_PRELOAD": "/opt/other.so"})
  assert env["LD_PRELOAD"] == f"{lib}:/opt/other.so"
  assert env[allocator.ENV_MARKER] == str(lib)


@needs_mimalloc
def test_reexec_loads_mimalloc_once():
  out = subprocess.run([sys.executable, "-c", _PROBE], env=_clean_env(),
                       capture_output=True, text=True, check=True).stdout
  preload, loaded = out.strip().split(" | ")
  assert preload == allocator.mimalloc_path()
  assert loaded == "True"


@needs_mimalloc
def test_reexec_is_skipped_when_opted_out():
  out = subprocess.run(
      [sys.executable, "-c", _PROBE],
      env=_clean_env(**{allocator.ENV_CHOICE: "system"}),
      capture_output=True, text=True, check=True).stdout
  assert out.strip() == "| False"


@needs_mimalloc
def test_module_runs_a_command_under_it():
  out = subprocess.run(
      [sys.executable, "-m", "swirl_jax.allocator", sys.executable, "-c",
       "print('libmimalloc' in open('/proc/self/maps').read())"],
      env=_clean_env(), capture_output=True, text=True, check=True).stdout
  assert out.strip() == "True"
