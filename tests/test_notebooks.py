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
  assert {"quickstart.ipynb", "gemma_checkpoints.ipynb"} <= set(NOTEBOOKS)


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
  task = sorted(payload["trained_on"][m] for m in payload["trained_on"]
                if payload["trained_on"][m])[0]
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
