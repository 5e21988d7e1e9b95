"""Command-line entry point: one gin experiment, one workdir.

    python -m swirl_jax.main --gin_file=gin_configs/experiments/sft_tiny.gin \\
        [--gin_file=...] [--gin.NAME=VALUE ...] --workdir=DIR

Gin files follow the T5X layout: `models/*.gin` define the model,
`runs/*.gin` the job (marking what an experiment must supply with
%gin.REQUIRED), `experiments/*.gin` include one of each and fill them in.
The experiment's entry is the configurable `swirl_jax.run`, bound to a job
function such as `@swirl_jax.training.trainer.train`.
"""

from __future__ import annotations

if __name__ == "__main__":
  # Before anything imports jax: re-runs this command under the caching
  # allocator (see swirl_jax/allocator.py; SWIRL_JAX_ALLOCATOR=system opts out).
  from swirl_jax import allocator  # pylint: disable=g-import-not-at-top
  allocator.reexec_with_fast_allocator()

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

import gin

from swirl_jax import gin_utils
from swirl_jax import registry  # registers every gin configurable


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
  parser = argparse.ArgumentParser(
      prog="python -m swirl_jax.main",
      description="Run a swirl_jax gin experiment.")
  parser.add_argument("--gin_file", action="append", default=[],
                      help="gin file (repeatable); later files override.")
  parser.add_argument("--workdir", required=True,
                      help="run directory: checkpoints, metrics, reports.")
  parser.add_argument("--log_level", default="INFO")
  parser.add_argument(
      "--compilation_cache_dir", default=None,
      help="JAX's persistent compilation cache: a program compiled once "
      "(e.g. the train step of each of SWiRL's filter runs, which share "
      "their shapes) is read back instead of compiled again, in this run "
      "and when it resumes. Default: <workdir>/compilation_cache; '' turns "
      "it off. The compiled programs are the same, and so are the results.")
  args, rest = parser.parse_known_args(argv)
  bindings = []
  for item in rest:
    if item.startswith("--gin.") and "=" in item:
      bindings.append(item[len("--gin."):])
    else:
      parser.error(f"unrecognised argument {item!r} (gin bindings are "
                   "written --gin.NAME=VALUE)")
  if not args.gin_file:
    parser.error("at least one --gin_file is required")
  return args, bindings


def enable_compilation_cache(path: str) -> None:
  """Points JAX's persistent compilation cache at `path` ('' : off).

  Programs that took at least half a second to compile are kept (the
  tiny model's train step takes seconds, its decode loop about one).
  """
  if not path:
    return
  import jax  # pylint: disable=g-import-not-at-top
  if "://" not in path:  # a local path; gs:// and the like pass as given
    path = os.path.abspath(path)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args, bindings = parse_args(sys.argv[1:] if argv is None else argv)
  logging.basicConfig(level=args.log_level,
                      format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  # Importing TensorFlow/absl may already have configured the root logger
  # (then basicConfig does nothing); --log_level applies to our loggers.
  logging.getLogger("swirl_jax").setLevel(args.log_level)
  from swirl_jax import allocator  # pylint: disable=g-import-not-at-top
  logging.getLogger("swirl_jax.main").info("host allocator: %s",
                                           allocator.describe())
  try:
    gin_utils.parse(args.gin_file, bindings)
  except gin_utils.GinConfigError as e:
    print(f"Configuration error: {e}", file=sys.stderr)
    return 2
  from swirl_jax import sharding  # pylint: disable=g-import-not-at-top
  sharding.maybe_initialize_distributed()
  os.makedirs(args.workdir, exist_ok=True)
  enable_compilation_cache(
      os.path.join(args.workdir, "compilation_cache")
      if args.compilation_cache_dir is None else args.compilation_cache_dir)
  try:
    registry.run(args.workdir)
  except ValueError as e:
    if "Required bindings" in str(e) or "REQUIRED" in str(e):
      print(f"Configuration error: {gin_utils.explain_error(e)}",
            file=sys.stderr)
      return 2
    raise
  return 0


if __name__ == "__main__":
  sys.exit(main())
