# jobkit: `make test` is the test command (.ci/run calls it); `make up` runs the system.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Written last, once everything is installed: a venv without it is half-made
# (an install stopped by Ctrl-C, a failed download) and is rebuilt from scratch.
STAMP := $(VENV)/.jobkit-installed
# Test files run in this many processes at once (pytest-xdist, a file's tests together): most
# of the suite waits on servers and workers, so two halve its time even on a small machine.
TEST_PROCESSES ?= 2

.PHONY: install test up bench lint clean clean-data

$(STAMP): setup.cfg pyproject.toml
	@if [ ! -f $@ ]; then rm -rf $(VENV); fi
	rm -f $@
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,dev,bench]'
	touch $@

install: $(STAMP)

test: install
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile

up: install
	$(BIN)/jobkit up

bench: install
	$(BIN)/python -m benchmarks

lint: install
	$(BIN)/ruff check jobkit tests
	$(BIN)/mypy --strict jobkit

# Build artefacts and the venv only: job records and queued jobs stay.
clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

# DELETES DATA: every job record (jobkit.db*) and the queued jobs of up's beanstalkd (.jobkit/).
clean-data:
	@echo "clean-data: deleting jobkit.db* (job records) and .jobkit/ (up's beanstalkd binlog: queued jobs)"
	rm -rf .jobkit jobkit.db jobkit.db-wal jobkit.db-shm
