# Quick start: `make demo` trains the default config; `make test` runs lint and the test suite;
# `make check-install` checks that a plain `pip install .` can import every module; `make docs`
# builds the documentation site strictly (a broken link or docstring reference fails it).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: demo test test-fast lint format docs check-install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

$(DOCS_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $@ $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m vae_jax.train --config configs/default.py

lint: $(TEST_STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(TEST_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# --dist loadscope: each test class (or module of plain functions) runs on one worker, so a class's
# setUpClass (often a whole training run) runs once, not once per worker that gets one of its tests.
test: lint
	$(BIN)/python -m pytest -n 2 --dist loadscope --durations=15 tests

# The suite without the end-to-end runs marked `slow` (pyproject.toml): for the edit-test loop.
test-fast: lint
	$(BIN)/python -m pytest -n 2 --dist loadscope -m 'not slow' tests

# The site from docs/ and the docstrings of the public modules (mkdocs.yml), into site/.
# --strict: any warning (a broken link or anchor, an unknown cross-reference in a docstring, a
# docstring that does not parse) fails the build. NO_MKDOCS_2_WARNING quiets mkdocs-material's
# banner about its successor. Not --quiet: it drops warnings before --strict counts them (a broken
# docstring reference then builds).
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# A fresh virtual environment holding only `pip install .` (no test extra, no editable install)
# must import every module of vae_jax and must not install a top-level `configs` package (the
# experiment configs stay in the repository): this catches an import of a package that is not a
# declared dependency but happens to be installed for the tests. The script runs from
# inside the new environment, so the checkout is not on its path. The environment is rebuilt
# each time (pip reuses its download cache; --no-compile skips byte-compiling every installed
# file, most of the install's CPU time); build/ goes first so that no module deleted from the
# source survives in setuptools' build directory.
CHECK_VENV ?= .venv-check-install
check-install:
	rm -rf build $(CHECK_VENV)
	$(PYTHON) -m venv $(CHECK_VENV)
	$(CHECK_VENV)/bin/python -m pip install --quiet --no-compile .
	cd $(CHECK_VENV) && bin/python $(CURDIR)/scripts/check_install.py \
		$(CURDIR)/experiments/iwae_mnist/workdirs/iwae_k5

# torch is a benchmark-only dependency (the PyTorch reference), not in pyproject. The +cpu pin
# can only resolve to the CPU build (never CUDA): here from the local wheel; elsewhere run
# `make bench TORCH_PIP_ARGS='--index-url https://download.pytorch.org/whl/cpu'`.
TORCH_PIP_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet 'torch==2.13.0+cpu' $(TORCH_PIP_ARGS)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) $(CHECK_VENV) build runs site .pytest_cache .ruff_cache
