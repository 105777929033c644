# The two set-up commands: `make demo` runs the main job on embedded defaults,
# `make test` runs the whole suite (lint, types, tests). Both create .venv themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=
PORT   ?= 5000
EXAMPLE_PORT ?=
# checkov (tests/infra) pins boto3, networkx and packaging below the project's versions, so it
# lives in its own venv; the tests find it at .venv-tools/bin/checkov.
TOOLS  := .venv-tools
CHECKOV_VERSION := 3.3.30
TOOLS_STAMP := $(TOOLS)/.installed-checkov-$(CHECKOV_VERSION)

.PHONY: demo test lint typecheck unit bench clean tools

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

$(TOOLS_STAMP):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	rm -f $(TOOLS)/.installed-*
	touch $@

tools: $(TOOLS_STAMP)

# make demo PORT=8000 (the example app takes the next free port; EXAMPLE_PORT=8100 to choose it)
demo: $(STAMP)
	$(BIN)/anvil-forge demo --port $(PORT)$(if $(EXAMPLE_PORT), --example-port $(EXAMPLE_PORT))

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration and not e2e and not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache instance .anvil_cache
