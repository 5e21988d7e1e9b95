"""`<python> CODE </python>`: runs model-written Python in the sandbox.

The code runs in `sandbox.run_python` (a separate, confined interpreter); the
result is its stdout, or an "Error: ..." string with the end of the traceback.
"""

from __future__ import annotations

import textwrap

from swirl_jax.tools import base
from swirl_jax.tools import sandbox
from swirl_jax.tools.base import truncate


@base.register_tool("python")
class PythonTool(base.Tool):
  """Runs a Python program and returns what it prints."""

  tag = "python"

  def __init__(self, timeout_s: float = 5.0, memory_mb: int = 512,
               max_chars: int = 2000, error_lines: int = 5):
    self.timeout_s = timeout_s
    self.memory_mb = memory_mb
    self.max_chars = max_chars
    self.error_lines = error_lines

  def describe(self) -> str:
    return ("<python> CODE </python>: runs a Python program (standard library "
            "only, no files outside its directory, no network) and returns what "
            "it prints.")

  def execute(self, call: str) -> str:
    code = textwrap.dedent(call.strip("\n"))
    if not code.strip():
      return f"{base.ERROR_PREFIX} empty program."
    result = sandbox.run_python(code, timeout_s=self.timeout_s,
                                memory_mb=self.memory_mb,
                                max_output_bytes=4 * self.max_chars)
    stdout = result.stdout.strip()
    if result.output_truncated:
      stdout += "\n[output truncated]"
    if result.timed_out:
      message = f"{base.ERROR_PREFIX} timed out after {self.timeout_s:g} s."
      if stdout:
        message += f" Output so far:\n{stdout}"
      return truncate(message, self.max_chars)
    if not result.ok:
      lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
      tail = "\n".join(lines[-self.error_lines:]) or f"exit status {result.returncode}"
      return truncate(f"{base.ERROR_PREFIX} {tail}", self.max_chars)
    return truncate(stdout or "(no output)", self.max_chars)
