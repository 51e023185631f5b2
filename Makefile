# occaist: `make demo` runs the main job end to end on the synthetic world; `make test` the suite.
# Every target creates or updates .venv by itself; the stamp is keyed on the hash of pyproject.toml
# and constraints.txt, so a second call installs nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HASH := $(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(HASH)
# PIP_FIND_LINKS is emptied so pip never takes this machine's local torch+cpu wheel.
PIP := PIP_FIND_LINKS= $(PY) -m pip
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_SILENT := true
PYTEST_WORKERS ?= 2

.PHONY: venv demo test test-fast lint format bench clean notebook

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24"
	$(PIP) install -q -c constraints.txt -e '.[dev,sweeps]'
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: $(STAMP)
	$(PY) -m occaist.pipelines.aist_study budget=demo

test: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --durations=20 --nbmake tests notebooks

test-fast: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/nbstripout --verify notebooks/*.ipynb

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# JupyterLab on the quickstart notebook (installs the `notebook` extra into .venv the first time)
notebook: $(STAMP)
	@test -x $(VENV)/bin/jupyter-lab || $(PIP) install -q -c constraints.txt -e '.[notebook]'
	$(VENV)/bin/jupyter-lab notebooks/quickstart.ipynb

bench: $(STAMP)
	@for b in scripts/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
