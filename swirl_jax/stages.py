"""Resumable experiment stages shared by the SWiRL, SCoRe and R3 experiments.

An experiment is a chain of stages, each writing into its own directory of
the experiment's workdir:

    tok = experiment_tokenizer(workdir)
    sft = train_stage(workdir, 'sft', dataset_fn=..., train_steps=300)
    stats = run_stage(workdir, 'synthesis', lambda d: synthesize(d, ...))

`run_stage` stores what a stage returns in `<workdir>/<name>/result.json`
(written atomically, last), so a rerun skips every finished stage and redoes
only an unfinished one. `train_stage` runs `trainer.train` inside the gin
scope named after the stage, so an experiment file can bind, say,
`sft/learning_rate_schedule.peak_learning_rate = 3e-3` and
`swirl/learning_rate_schedule.peak_learning_rate = 1e-4` side by side; a
killed training stage resumes from its latest checkpoint.

`Experiment` holds what the stages of one run share (tokenizer, sampler,
loaded params); `stage_seconds`, `settings_of` and `load_average` give a
report its timings, settings and machine load.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import gin

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"


EVAL_SPLITS = ("test", "validation")


def check_eval_split(experiment: str, split: str) -> str:
  """The split an experiment evaluates on: 'test' (the held-out questions
  of its report) or 'validation' (for choosing settings without looking at
  them); anything else is a ValueError naming `experiment` and the value."""
  if split not in EVAL_SPLITS:
    raise ValueError(f"{experiment}.eval_split must be 'test' or "
                     f"'validation', got {split!r}.")
  return split


def stage_dir(workdir: str, name: str) -> str:
  return os.path.join(workdir, name)


def stage_result(workdir: str, name: str) -> Optional[dict]:
  """The stored result of a finished stage, or None."""
  path = os.path.join(stage_dir(workdir, name), RESULT_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def write_json_atomic(path: str, payload: Any) -> None:
  """Writes JSON to `path` via a temporary file and a rename."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=2, sort_keys=True, default=_jsonable)
  os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
  if hasattr(value, "tolist"):
    return value.tolist()
  if hasattr(value, "__float__"):
    return float(value)
  raise TypeError(f"{type(value).__name__} is not JSON serialisable.")


def run_stage(workdir: str, name: str,
              fn: Callable[[str], Optional[Mapping[str, Any]]]) -> dict:
  """Runs fn(stage_dir) once; its (JSON-able) result is kept and reused.

  A finished stage (result.json present) is skipped and its stored result
  returned. The stage function must itself be safe to rerun after being
  killed half way (training resumes from checkpoints; data stages overwrite).
  """
  done = stage_result(workdir, name)
  if done is not None:
    print(f"[{name}] finished earlier; reusing {stage_dir(workdir, name)}",
          flush=True)
    return done
  print(f"[{name}] running in {stage_dir(workdir, name)}", flush=True)
  start = time.time()
  os.makedirs(stage_dir(workdir, name), exist_ok=True)
  result = dict(fn(stage_dir(workdir, name)) or {})
  result.setdefault("seconds", round(time.time() - start, 1))
  write_json_atomic(os.path.join(stage_dir(workdir, name), RESULT_FILE),
                    result)
  print(f"[{name}] done in {result['seconds']} s", flush=True)
  return result


def train_stage(workdir: str, name: str, scope: Optional[str] = None,
                **train_kwargs) -> dict:
  """Runs trainer.train in `<workdir>/<name>` under the gin scope `scope`.

  scope: None: `name` (several stages can share one scope, e.g. 'swirl' for
  every SWiRL run of an experiment).

  Keyword arguments go to `train` and win over gin bindings; everything not
  passed (learning rate, steps, batch size, ...) comes from gin, scoped
  bindings first. Returns {'workdir', 'last_step', 'final_metrics'}.
  """
  from swirl_jax.training import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from swirl_jax.training import trainer  # pylint: disable=g-import-not-at-top

  def fn(directory: str) -> dict:
    with gin.config_scope(scope or name):
      result = trainer.train(directory, **train_kwargs)
    if result.preempted:
      raise SystemExit(f"[{name}] preempted at step {result.last_step}; "
                       "rerun to resume.")
    rows = metrics_lib.read_metrics(directory)
    return {"workdir": directory, "last_step": int(result.last_step),
            "final_metrics": rows[-1] if rows else {}}

  return run_stage(workdir, name, fn)


def experiment_tokenizer(workdir: str,
                         corpus_fn: Optional[Callable[[], Any]] = None):
  """The experiment's tokenizer (gin `tokenizer_path_for`; by default a tiny
  one trained in the workdir on `corpus_fn()`, tool-use text when None)."""
  from swirl_jax.data import sources  # pylint: disable=g-import-not-at-top
  from swirl_jax.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  return Tokenizer(sources.tokenizer_path_for(workdir, corpus_fn=corpus_fn))


def stage_seconds(workdir: str, names: Optional[Sequence[str]] = None
                  ) -> dict[str, Optional[float]]:
  """The seconds stages took, from their stored results.

  names: these stages (None for one without a result); None: every stage
  of the workdir whose result records its seconds.
  """
  if names is not None:
    return {n: (stage_result(workdir, n) or {}).get("seconds") for n in names}
  seconds = {}
  for name in sorted(os.listdir(workdir)):
    done = stage_result(workdir, name) or {}
    if "seconds" in done:
      seconds[name] = done["seconds"]
  return seconds


_JSON_VALUES = (int, float, str, bool, type(None), list, tuple, dict)


def settings_of(config: Any, **overrides: Any) -> dict[str, Any]:
  """A settings dataclass's fields by name, for a report: a value JSON does
  not hold as it is (a model config, a controller) as its repr; `overrides`
  replace fields or add entries."""
  settings = {}
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    settings[field.name] = (value if isinstance(value, _JSON_VALUES)
                            else repr(value))
  settings.update(overrides)
  return settings


def load_average() -> list[float]:
  """The machine's 1, 5 and 15 minute load averages ([] where unknown)."""
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return []


class Experiment:
  """What the stages of one experiment run share.

  Attributes:
    workdir / cfg: the experiment directory and the settings (a dataclass
      with `model_config` and `seed`).
    model_config: cfg.model_config.
    tokenizer: `experiment_tokenizer(workdir, corpus_fn)`.
    started / cpu_started / load_started: wall and CPU clock and
      `load_average()` when the run started, for the report.
  """

  def __init__(self, workdir: str, cfg: Any,
               corpus_fn: Optional[Callable[[], Any]] = None,
               **sampler_kwargs: Any):
    """sampler_kwargs go to `chat_sampler` (e.g. batch_bucket)."""
    self.started, self.cpu_started = time.time(), time.process_time()
    self.load_started = load_average()
    self.workdir, self.cfg = workdir, cfg
    self.model_config = cfg.model_config
    self.tokenizer = experiment_tokenizer(workdir, corpus_fn)
    self._sampler_kwargs = sampler_kwargs
    self._sampler = None
    self._params: dict[Optional[str], Any] = {}

  @property
  def sampler(self):
    """One `chat_sampler` for every stage (built on first use), so the
    shapes the stages share compile once."""
    if self._sampler is None:
      from swirl_jax.sampling import chat_sampler  # pylint: disable=g-import-not-at-top
      self._sampler = chat_sampler(self.model_config, self.tokenizer,
                                   **self._sampler_kwargs)
    return self._sampler

  def params(self, init_from: Optional[str], keep: bool = False):
    """`load_policy(model_config, init_from, cfg.seed)`; kept in memory
    for later calls only with `keep`."""
    if init_from in self._params:
      return self._params[init_from]
    params = load_policy(self.model_config, init_from, seed=self.cfg.seed)
    if keep:
      self._params[init_from] = params
    return params

  def stage_dir(self, name: str) -> str:
    return stage_dir(self.workdir, name)

  def run_stage(self, name: str, fn) -> dict:
    return run_stage(self.workdir, name, fn)

  def train_stage(self, name: str, **train_kwargs) -> dict:
    """`train_stage` of the experiment's model in `<workdir>/<name>`."""
    return train_stage(self.workdir, name, model_config=self.model_config,
                       **train_kwargs)

  def seconds(self) -> float:
    """Wall-clock seconds since the run started."""
    return round(time.time() - self.started, 1)

  def cpu_seconds(self) -> float:
    """CPU seconds of this process since the run started."""
    return round(time.process_time() - self.cpu_started, 1)


def policy_shardings(config, mesh=None, seed: int = 0):
  """NamedShardings of the policy's params on `mesh` (None: the gin mesh).

  The same logical-axis rules as training, so a 27B policy is loaded
  FSDP-sharded over the slice, not onto one device.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from swirl_jax import sharding  # pylint: disable=g-import-not-at-top
  from swirl_jax.models.transformer import _boxed_init  # pylint: disable=g-import-not-at-top
  mesh = mesh if mesh is not None else sharding.make_mesh()
  abstract = jax.eval_shape(lambda r: _boxed_init(config, r),
                            jax.random.key(seed))
  return sharding.boxed_shardings(abstract, mesh)


def load_policy(config, init_from: Optional[str], seed: int = 0, mesh=None):
  """Params of a finished training stage's workdir, an import, or random.

  init_from: a training workdir, 'hf:DIR', 'kaggle:DIR' or None (random
  initialisation from `seed`; the untrained base of the CPU default).
  The params are placed with `policy_shardings(config, mesh)`.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from swirl_jax.training.trainer import load_initial_params  # pylint: disable=g-import-not-at-top
  return load_initial_params(init_from, config, jax.random.key(seed),
                             policy_shardings(config, mesh, seed))
