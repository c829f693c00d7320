# The commands of the README: `make run`, `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.k2e-installed

.PHONY: run demo test test-fast test-large lint openapi docs bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import sys; assert sys.version_info[:2] == (3, 11), "the k2e worker needs Python 3.11 (TensorFlow 2.15)"'
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[server,worker,dev]'
	@touch $(STAMP)

# `k2e run` (also `python -m k2e.launcher`): the API, one worker and an embedded Redis.
run: $(STAMP)
	exec $(PY) -m k2e.cli run

# The seed example end to end against the API `make run` serves (run it from another shell).
demo: $(STAMP)
	$(PY) -m k2e.cli demo

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m 'not integration and not large'

test-large: $(STAMP)
	$(PY) -m pytest -m large -s

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

openapi: $(STAMP)
	$(PY) scripts/export_openapi.py

docs: $(STAMP)
	$(PY) scripts/gen_api_reference.py
	$(PY) scripts/gen_settings_reference.py

bench: $(STAMP)
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) data
