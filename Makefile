# Mergeable: `make run` serves the app with demo data; `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= $(shell bin/find-python)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test venv agents bench lint clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "No Python >= 3.12 found; set PYTHON=..."; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# aider, mini-swe-agent (virtualenvs) and claude-code, codex, opencode (npm) under .agents/ (MERGEABLE_AGENTS_DIR).
agents:
	@PYTHON="$(PYTHON)" bin/install-agents

run: $(STAMP)
	@bin/run

# The suite fails, never skips, when a tool it tests is missing: install them first (quick when
# they are there).
test: $(STAMP)
	@bin/install-packages
	@PYTHON="$(PYTHON)" bin/install-agents
	@bin/test

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; DEBUG=true $(PY) $$b || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) var staticfiles
