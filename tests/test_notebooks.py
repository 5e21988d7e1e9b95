"""The notebooks in notebooks/ run top to bottom, and are stored without outputs.

Each notebook is executed with nbclient in a kernel started with this
interpreter (the project's .venv), from the notebooks/ directory as Jupyter
would. The cell tagged `parameters` holds the notebook's settings; the test
inserts a cell right after it with smaller ones (as papermill does), so the
notebook runs in seconds instead of minutes. Any cell error fails the test.

quickstart.ipynb reads a SWiRL experiment workdir: it is pointed at the
session's toy-size experiment (`swirl_toy_run` in conftest.py, shared with
tests/test_swirl_experiment.py), so the learning curves and the results table
are drawn from a real, if tiny, run.

self_correction.ipynb reads a SCoRe and an R3 report.json: the test writes
small ones into tmp_path with the project's own writers
(`swirl_jax.evaluation.report.write_report` on `self_correction` metric
tables and scaling curves, as `score_experiment` calls it, and
`swirl_jax.evaluation.r3_report.write_r3_report` on
`evaluation.reflect_retry` summaries), so it needs no experiment run.
"""

import json
import os
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 600


def _read(name):
  with open(NOTEBOOK_DIR / name, encoding="utf-8") as f:
    return nbformat.read(f, as_version=4)


def _parameters_index(nb):
  tagged = [i for i, cell in enumerate(nb.cells)
            if "parameters" in cell.get("metadata", {}).get("tags", [])]
  assert len(tagged) == 1, f"want one cell tagged 'parameters', got {tagged}"
  return tagged[0]


def inject_parameters(nb, **values):
  """Inserts a cell setting `values` after the `parameters` cell."""
  index = _parameters_index(nb)
  names = {}
  exec(nb.cells[index].source, {}, names)  # pylint: disable=exec-used
  unknown = sorted(set(values) - set(names))
  assert not unknown, f"not settings of the notebook: {unknown}"
  source = "\n".join(f"{k} = {v!r}" for k, v in values.items())
  cell = nbformat.v4.new_code_cell(
      "# Injected by tests/test_notebooks.py\n" + source)
  cell.metadata["tags"] = ["injected-parameters"]
  nb.cells.insert(index + 1, cell)
  return nb


@pytest.fixture(scope="module")
def kernel_spec_dir(tmp_path_factory):
  """A kernelspec that starts ipykernel with this interpreter (.venv)."""
  spec_dir = tmp_path_factory.mktemp("kernels")
  kernel = spec_dir / "swirl_jax_test"
  kernel.mkdir()
  (kernel / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
               "{connection_file}"],
      "display_name": "swirl_jax tests", "language": "python"}))
  return str(spec_dir)


def execute(nb, kernel_spec_dir):
  """Runs `nb` in notebooks/ with a fresh kernel; raises on a cell error."""
  from jupyter_client.kernelspec import KernelSpecManager  # pylint: disable=g-import-not-at-top
  from jupyter_client.manager import KernelManager  # pylint: disable=g-import-not-at-top
  km = KernelManager(
      kernel_name="swirl_jax_test",
      kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernel_spec_dir],
                                            ensure_native_kernel=False))
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
             MPLBACKEND="module://matplotlib_inline.backend_inline")
  env.pop("XLA_FLAGS", None)
  client = nbclient.NotebookClient(
      nb, km=km, timeout=CELL_TIMEOUT_S, allow_errors=False,
      resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
  client.execute(env=env)
  return nb


def _text_outputs(nb):
  out = []
  for cell in nb.cells:
    for o in cell.get("outputs", []):
      if o.get("output_type") == "stream":
        out.append(o.get("text", ""))
      elif "data" in o:
        out.append(o["data"].get("text/plain", ""))
        out.append(o["data"].get("text/markdown", ""))
  return "\n".join(out)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_without_outputs(name):
  nb = _read(name)
  nbformat.validate(nb)
  _parameters_index(nb)
  for i, cell in enumerate(nb.cells):
    if cell.cell_type != "code":
      continue
    assert cell.get("outputs") == [], f"{name} cell {i} has outputs"
    assert cell.get("execution_count") is None, (
        f"{name} cell {i} has an execution count")


def test_the_notebooks_are_the_documented_ones():
  assert {"quickstart.ipynb", "gemma_checkpoints.ipynb",
          "self_correction.ipynb"} <= set(NOTEBOOKS)


def test_gemma_checkpoints_notebook_runs(kernel_spec_dir, tmp_path):
  nb = inject_parameters(_read("gemma_checkpoints.ipynb"),
                         OUT_DIR=str(tmp_path), SEQ_LEN=16, TRAIN_STEPS=1)
  text = _text_outputs(execute(nb, kernel_spec_dir))
  # The three logit comparisons with transformers (two imports, the export).
  diffs = [float(line.rsplit("=", 1)[1]) for line in text.splitlines()
           if "transformers" in line and "max |" in line]
  assert len(diffs) == 3, text[-3000:]
  assert max(diffs) < 1e-4, diffs
  assert "kaggle.load(path, config) == params: True" in text
  assert (tmp_path / "workdir" / "checkpoints" / "1" / "state").is_dir()
  assert (tmp_path / "hf_export" / "config.json").exists()


def test_quickstart_notebook_runs_on_a_toy_experiment(kernel_spec_dir,
                                                     swirl_toy_run):
  workdir, payload = swirl_toy_run
  task = sorted(t["task"] for t in payload["trained_on"].values() if t)[0]
  nb = inject_parameters(_read("quickstart.ipynb"), WORKDIR=workdir,
                         TASK=task, NUM_QUESTIONS=1, MAX_STEPS=1,
                         MAX_NEW_TOKENS=16, MAX_CONTEXT_TOKENS=320)
  text = _text_outputs(execute(nb, kernel_spec_dir))
  assert f"Policy: {os.path.join(workdir, 'swirl_' + task)}" in text
  assert "--- step 0" in text and "judge:" in text
  # The results table of the toy run, rendered from its report.json.
  for method in payload["tables"]["accuracy"]:
    assert f"| {method} |" in text, method
  images = [o for cell in nb.cells for o in cell.get("outputs", [])
            if "image/png" in o.get("data", {})]
  assert len(images) >= 2, "the learning curves and the accuracy plot"


# ----------------------------------------------------------------------------
# self_correction.ipynb on small reports written by the project's writers.

SCORE_METHODS = ("base", "self_refine", "star", "pair_sft", "score_stage1",
                 "score")
SCORE_TASKS = ("math_small", "code_small")


def write_score_report(workdir):
  """A SCoRe report.json as score_experiment writes it; returns its results.

  The tables come from `self_correction_metrics` on fixed outcomes, the
  scaling curve from `scaling_curve` on fixed votes; `write_report` writes
  them with the extra keys `score_experiment` adds (it assembles that dict
  inline, so it is repeated here).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from swirl_jax.evaluation import report as report_lib  # pylint: disable=g-import-not-at-top
  from swirl_jax.evaluation import self_correction as sc  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  results = {m: {t: sc.self_correction_metrics(rng.integers(0, 2, 20),
                                               rng.integers(0, 2, 20))
                 for t in SCORE_TASKS} for m in SCORE_METHODS}
  budgets = (2, 4, 8)
  parallel = [[("7", True) if j % 3 == 0 else (str(j % 2), False)
               for j in range(8)] for _ in range(5)]
  sequential = [[("7", True)] * 3 + [("1", False)] for _ in range(5)]
  curves = {f"score/{t}": sc.scaling_curve(parallel, sequential, budgets)
            for t in SCORE_TASKS}
  extra = {"methods": {m: os.path.join(str(workdir), m)
                       for m in SCORE_METHODS},
           "missing_methods": [], "inference_scaling": curves,
           "stage_seconds": {}, "this_call_seconds": 0.0,
           "config": {"tasks": list(SCORE_TASKS)}}
  paths = report_lib.write_report(str(workdir), sc.metric_tables(results),
                                  extra=extra, title="SCoRe self-correction",
                                  plots=False)
  return paths["json"], results, curves


def _r3_rows(task, seed, accuracy):
  """evaluate_task-style rows of 30 queries of one model on one task."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  errors = {"countdown": ("missed_target", "wrong_numbers"),
            "function_calling": ("wrong_tool", "wrong_arguments")}[task]
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(30):
    c1 = bool(rng.random() < accuracy)
    c2 = c1 or bool(rng.random() < 0.3)
    cat1 = "correct" if c1 else errors[i % 2]
    rows.append({"id": f"q{i}", "correct1": c1, "correct2": c2,
                 "category1": cat1, "reflection": "" if c1 else "r",
                 "final_category": "correct" if c2 else errors[(i + 1) % 2]})
  return rows


def write_r3_report(workdir):
  """An R3 report.json written by `write_r3_report`; returns its payload."""
  from swirl_jax.evaluation import reflect_retry as evaluation  # pylint: disable=g-import-not-at-top
  from swirl_jax.evaluation import r3_report  # pylint: disable=g-import-not-at-top
  rows = {m: {t: _r3_rows(t, seed, acc) for t in ("countdown",
                                                  "function_calling")}
          for m, seed, acc in (("vanilla", 1, 0.3), ("trained", 2, 0.5))}
  evals = {m: {t: evaluation.summarize(r) for t, r in per_task.items()}
           for m, per_task in rows.items()}
  paired = {t: evaluation.paired_comparison(rows["vanilla"][t],
                                            rows["trained"][t])
            for t in ("countdown", "function_calling")}
  log = workdir / "rollouts.jsonl"
  log.write_text("\n".join(json.dumps({
      "step": step, "mean_reward": reward,
      "reward_by_task": {"countdown": reward}})
                           for step, reward in ((0, 0.125), (2, 0.375))))
  failure_stats = {"countdown": {"queries": 30, "samples": 60,
                                 "sample_accuracy": 0.25,
                                 "failed_queries": 25,
                                 "categories": {"missed_target": 25}},
                   "total_failures": 25}
  return r3_report.write_r3_report(
      str(workdir), evals, failure_stats=failure_stats,
      rollout_log=str(log), paired=paired,
      settings={"tasks": ["countdown", "function_calling"]}, plots=False)


def test_self_correction_notebook_runs_on_written_reports(kernel_spec_dir,
                                                          tmp_path):
  from swirl_jax.evaluation import self_correction as sc  # pylint: disable=g-import-not-at-top
  score_dir, r3_dir = tmp_path / "score", tmp_path / "r3"
  r3_dir.mkdir()
  score_json, results, curves = write_score_report(score_dir)
  r3_payload = write_r3_report(r3_dir)
  nb = inject_parameters(_read("self_correction.ipynb"),
                         SCORE_REPORT=score_json,
                         R3_REPORT=str(r3_dir / "report.json"))
  text = _text_outputs(execute(nb, kernel_spec_dir))

  def fmt(r):
    return f"{r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"

  # The SCoRe table: every method and task, all five metrics with intervals.
  for method in SCORE_METHODS:
    for task in SCORE_TASKS:
      cells = [fmt(results[method][task][m]) for m in sc.METRICS]
      assert any(line.split()[:1] == [method] and
                 all(c in line for c in cells)
                 for line in text.splitlines()), (method, task, cells)
  # The scaling table.
  curve = curves["score/math_small"]
  assert "score/math_small: majority-vote accuracy" in text
  assert fmt(curve["sequential"][0]) in text and fmt(curve["parallel"][2]) in text
  # R3: accuracies, retry success, the paired test and error categories.
  tables = r3_payload["tables"]
  for title in ("accuracy@t1", "accuracy@t2", "retry success"):
    for method in ("vanilla", "trained"):
      for task in ("countdown", "function_calling", "all"):
        assert fmt(tables[title][method][task]) in text, (title, method, task)
  assert "Paired on the same queries" in text
  for category in ("missed_target", "wrong_numbers", "wrong_tool",
                   "wrong_arguments"):
    assert category in text
  assert "2 sampled GRPO batches" in text
  images = [o for cell in nb.cells for o in cell.get("outputs", [])
            if "image/png" in o.get("data", {})]
  assert len(images) == 3, "accuracy bars, scaling curves, error categories"


def test_self_correction_notebook_names_a_missing_report(kernel_spec_dir,
                                                         tmp_path):
  score_json, _, _ = write_score_report(tmp_path / "score")
  missing = tmp_path / "no_r3_run" / "report.json"
  nb = inject_parameters(_read("self_correction.ipynb"),
                         SCORE_REPORT=score_json, R3_REPORT=str(missing))
  with pytest.raises(nbclient.exceptions.CellExecutionError) as error:
    execute(nb, kernel_spec_dir)
  message = str(error.value)
  assert "FileNotFoundError" in message
  assert f"No R3 report at {missing}" in message
