# rater: `make demo` runs the rater on a local broker with traffic; `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test test-fast test-all demo chaos bench check-rates broker-start broker-stop clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "rater needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,rocksdb,bench]'
	@touch $(STAMP)

## The whole suite (real Kafka broker included), with slow scenarios at their small CI size.
test: venv
	$(PY) -m pytest -q -m "not slow"

## The core only: no broker (under a minute on 2 cores).
test-fast: venv
	$(PY) -m pytest -q -m "not kafka and not slow"

## Everything, slow scenarios at full size.
test-all: venv
	$(PY) -m pytest -q

check-rates: venv
	$(VENV)/bin/rater rates check rate_tables

demo: venv
	$(PY) -m rater.demo

## The kill loop at full size, three runs (a small size runs in `make test`).
chaos: venv
	$(PY) -m tests.chaos --records 200000 --tenants 1000 --kills 10 --runs 3

bench: venv
	$(PY) -m bench.run

broker-start: venv
	$(VENV)/bin/rater dev-broker start

broker-stop: venv
	$(VENV)/bin/rater dev-broker stop

clean:
	rm -rf $(VENV) .kafka/dev .pytest_cache .hypothesis build *.egg-info
