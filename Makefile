# Every target refreshes .venv when pyproject.toml changed, so that the two
# README commands work on a fresh machine with only Python >= 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,docs]"
	touch $@

.PHONY: demo test lint bench
demo: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[torch,docs]"
	$(BIN)/python examples/demo.py

lint: $(VENV)/.installed
	$(BIN)/ruff check sksketch tests benchmarks examples

test: lint
	$(BIN)/python -m pytest sksketch tests

bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/bench_sketch.py
	$(BIN)/python benchmarks/bench_decode.py --plot
	$(BIN)/python benchmarks/bench_network_recovery.py --plot

# The documentation: Sphinx (MyST pages, numpydoc API reference, the examples
# gallery), warnings as errors. Output in docs/_build/html.
.PHONY: docs
docs: $(VENV)/.installed
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html
