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

.PHONY: venv demo test test-fast lint format bench clean notebook mutation

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

# Mutation testing with mutmut (config: [tool.mutmut] in pyproject.toml). mutmut rather than
# cosmic-ray: it forks one worker per mutant from a process that has already imported torch and
# run only the unit tests that reach the mutated function, where cosmic-ray starts a fresh
# pytest per mutant (seconds of imports each), which would not fit 20 minutes on two cores.
# It runs on a copy of the tree, so edits made meanwhile do not mix into the mutants and no
# mutants/ folder lands in the checkout. Survivors: `cd $(MUTATION_DIR) && mutmut show NAME`;
# the ones no test can kill are listed in tests/mutation_equivalent.md.
MUTATION_DIR ?= $(or $(TMPDIR),/tmp)/occaist-mutation
MUTATION_JOBS ?= 2

mutation: $(STAMP)
	rm -rf $(MUTATION_DIR) && mkdir -p $(MUTATION_DIR)
	cp -r src tests pyproject.toml $(MUTATION_DIR)/
	cd $(MUTATION_DIR) && OMP_NUM_THREADS=1 PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 $(CURDIR)/$(VENV)/bin/mutmut run \
		--max-children $(MUTATION_JOBS) > run.log 2>&1 || { tail -c 3000 run.log; exit 1; }
	cd $(MUTATION_DIR) && $(CURDIR)/$(VENV)/bin/mutmut export-cicd-stats > /dev/null
	cd $(MUTATION_DIR) && $(CURDIR)/$(VENV)/bin/mutmut results > survivors.txt || true
	@$(PY) -c 'import json, sys; s = json.load(open(sys.argv[1])); \
		k = s["killed"] + s["timeout"] + s["segfault"]; t = s["total"] - s["skipped"]; \
		print("mutation score: %d of %d killed (%.1f %%), %d survived, %d reached by no test; " \
		"survivors in %s" % (k, t, 100.0 * k / max(t, 1), s["survived"], s["no_tests"], sys.argv[2]))' \
		$(MUTATION_DIR)/mutants/mutmut-cicd-stats.json $(MUTATION_DIR)/survivors.txt

bench: $(STAMP)
	@for b in scripts/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
