# Two entry points: `make quickstart` and `make test`. Both create .venv on first
# use and reinstall only when setup.py or constraints.txt changed.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
PY := $(VENV)/bin/python

.PHONY: quickstart test venv clean

$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -c constraints.txt -e '.[all]'
	touch $(STAMP)

venv: $(STAMP)

quickstart: $(STAMP)
	$(PY) -m swirl_jax.main --gin_file=gin_configs/experiments/quickstart.gin --workdir=runs/quickstart

# Two pytest-xdist workers (the CI machine has 2 cores); tests sharing the toy
# SWiRL run are grouped onto one worker (tests/conftest.py).
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m swirl_jax.allocator $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup tests

clean:
	rm -rf $(VENV) runs
