# jobkit: `make test` is the test command (.ci/run calls it); `make up` runs the system.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test up bench lint clean

$(BIN)/jobkit: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,dev,bench]'
	touch $@

install: $(BIN)/jobkit

test: install
	$(BIN)/python -m pytest

up: install
	$(BIN)/jobkit up

bench: install
	$(BIN)/python -m benchmarks

lint: install
	$(BIN)/ruff check jobkit tests
	$(BIN)/mypy --strict jobkit

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .jobkit jobkit.db*
