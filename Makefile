# Two commands (see README):  make run   |   make test
# Both set up .venv first (a no-op when it is already up to date with pyproject.toml).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The project never ships data: it reads RUNNER_DATA_DIR, defaulting to ../shared/data when present.
RUNNER_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export RUNNER_DATA_DIR
# OpenMP spin-waiting makes 2-core CPU training ~10x slower; litellm must not fetch its price map.
export OMP_WAIT_POLICY ?= PASSIVE
export LITELLM_LOCAL_MODEL_COST_MAP ?= True
export TOKENIZERS_PARALLELISM ?= false

EXPERIMENT ?= wikisql_1k
ARGS ?=
PYTEST_ARGS ?= -q
# One pytest worker per core (pytest-xdist): most of the suite waits on `python -m runner` subprocesses.
PYTEST_WORKERS ?= -n auto --dist loadfile

.PHONY: setup run test test-fast bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned in pyproject: the CPU wheel here, the platform's build elsewhere.
	$(PY) -m pip install --quiet -e ".[mlx]"
	touch $(STAMP)

run: setup
	$(PY) -m runner +experiment=$(EXPERIMENT) $(ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

# The inner loop: everything but the documented commands run end to end (tests/test_readme_commands.py)
# and the tests marked slow. `make test` (what CI runs) stays the whole suite.
test-fast: setup
	$(PY) -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS) -m "not slow" --ignore=tests/test_readme_commands.py

bench: setup
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
