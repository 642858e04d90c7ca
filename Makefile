# Quick start: `make demo` trains the default config; `make test` runs lint and the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m vae_jax.train --config configs/default.py

lint: $(TEST_STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(TEST_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest -n 2 tests

# torch is a benchmark-only dependency (the PyTorch reference), not in pyproject. The +cpu pin
# can only resolve to the CPU build (never CUDA): here from the local wheel; elsewhere run
# `make bench TORCH_PIP_ARGS='--index-url https://download.pytorch.org/whl/cpu'`.
TORCH_PIP_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet 'torch==2.13.0+cpu' $(TORCH_PIP_ARGS)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
