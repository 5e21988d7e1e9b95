"""Metric sinks: `metrics.jsonl`, TensorBoard event files, a progress bar.

TensorBoard files are written here directly (TFRecord framing of `Event`
protos), because tensorboard's own writer imports TensorFlow when it is
installed, and training code must not. Only process 0 writes. On resume, lines of metrics.jsonl beyond the restored
step are dropped, so the file always describes one consistent run.
"""

from __future__ import annotations

import json
import math
import os
import struct
import time
from typing import Any, Mapping, Optional

import jax
import numpy as np


def _scalar(v: Any) -> Optional[float]:
  try:
    x = float(np.asarray(v))
  except (TypeError, ValueError):
    return None
  return x if math.isfinite(x) else None


def _crc32c_table() -> list[int]:
  table = []
  for i in range(256):
    c = i
    for _ in range(8):
      c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    table.append(c)
  return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), as TFRecord framing requires."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class EventFileWriter:
  """Appends TensorBoard `Event` records to one events.out.tfevents file."""

  def __init__(self, logdir: str):
    import socket  # pylint: disable=g-import-not-at-top
    os.makedirs(logdir, exist_ok=True)
    name = (f"events.out.tfevents.{int(time.time())}."
            f"{socket.gethostname()}.{os.getpid()}")
    self.path = os.path.join(logdir, name)
    self._file = open(self.path, "ab")
    from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
    self.add_event(event_pb2.Event(wall_time=time.time(),
                                   file_version="brain.Event:2"))

  def add_event(self, event) -> None:
    data = event.SerializeToString()
    header = struct.pack("<Q", len(data))
    self._file.write(header + struct.pack("<I", _masked_crc(header)) + data +
                     struct.pack("<I", _masked_crc(data)))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class MetricsWriter:
  """Writes one JSON object per logged step plus TensorBoard scalars.

  Args:
    workdir: run directory; metrics.jsonl and tensorboard/ go there.
    resume_step: drop previously written entries with step > resume_step.
    tensorboard: also write TensorBoard event files.
  """

  def __init__(self, workdir: str, resume_step: int = 0,
               tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(self.path):
      kept = []
      with open(self.path) as f:
        for line in f:
          try:
            if json.loads(line).get("step", 0) <= resume_step:
              kept.append(line)
          except json.JSONDecodeError:
            continue  # a line cut by a kill
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(kept)
      os.replace(tmp, self.path)
    if tensorboard:
      self._tb = EventFileWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: Mapping[str, Any]) -> dict:
    """Logs scalars at `step`; returns the dict that was written."""
    row = {"step": int(step)}
    for k, v in metrics.items():
      x = _scalar(v)
      if x is not None:
        row[k] = x
    if not self.enabled:
      return row
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self._tb is not None:
      from tensorboard.compat.proto import event_pb2, summary_pb2  # pylint: disable=g-import-not-at-top
      values = [summary_pb2.Summary.Value(tag=k, simple_value=v)
                for k, v in row.items() if k != "step"]
      self._tb.add_event(event_pb2.Event(
          wall_time=time.time(), step=int(step),
          summary=summary_pb2.Summary(value=values)))
    return row

  def flush(self):
    if self._tb is not None:
      self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_metrics(workdir: str) -> list[dict]:
  """The rows of DIR/metrics.jsonl (for reports, notebooks and tests)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class ProgressBar:
  """A tqdm bar showing step, loss and tokens/s (process 0, stderr)."""

  def __init__(self, total: int, initial: int = 0, desc: str = "train"):
    self._bar = None
    if jax.process_index() == 0:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=total, initial=initial, desc=desc,
                       dynamic_ncols=True, mininterval=1.0)

  def update(self, step: int, loss: Optional[float] = None,
             tokens_per_second: Optional[float] = None):
    if self._bar is None:
      return
    self._bar.n = step
    post = {}
    if loss is not None:
      post["loss"] = f"{loss:.4f}"
    if tokens_per_second is not None:
      post["tok/s"] = f"{tokens_per_second:,.0f}"
    self._bar.set_postfix(post, refresh=False)
    self._bar.refresh()

  def close(self):
    if self._bar is not None:
      self._bar.close()
