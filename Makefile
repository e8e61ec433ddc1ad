# The README's commands are targets here; .ci/run calls them on a clean clone.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup venv system-deps images demo test test-unit test-operator test-dataplane lint bench clean

setup: venv system-deps

venv: $(BIN)/sotadb
$(BIN)/sotadb: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Debian packages the tests use as real tools: kubectl (the user's client against the
# emulated API) and the Docker engine for the data plane.
system-deps:
	bash scripts/ensure-system-deps.sh

# The operator image is also the backup runner the data-plane tests run as Jobs.
images: system-deps
	bash scripts/build-images.sh postgres pgbouncer operator

# The demo needs only the data plane's images (PostgreSQL and PgBouncer).
demo: setup
	bash scripts/build-images.sh postgres pgbouncer
	bash scripts/demo.sh

# A kind cluster (Secrets encrypted at rest), the operator installed from manifests/, and my-app
# Ready. Needs kind and a registry serving its node image: not on sotadb's dev machines.
.PHONY: kind-up
kind-up: setup images
	bash scripts/kind-up.sh

test: setup images
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy operator tests/support
	$(BIN)/lint-imports

bench: setup images
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
