# rater: `make demo` runs the rater on a local broker with traffic; `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The native engine (native/, Rust via PyO3): built into the venv when cargo is on PATH.
NATIVE_STAMP := $(VENV)/.native
NATIVE_SRC   := $(wildcard native/src/*.rs) native/Cargo.toml native/pyproject.toml
CARGO_MISSING := cargo is not on PATH (install Rust: https://rustup.rs); the native engine is not built

.PHONY: venv native native-check test test-fast test-all demo chaos bench check-rates broker-start broker-stop promtool clean

venv: $(STAMP) $(NATIVE_STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "rater needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,rocksdb,bench]'
	@touch $(STAMP)

## The native engine, release profile, into the venv; without cargo rater runs the Python engine.
$(NATIVE_STAMP): $(STAMP) $(NATIVE_SRC)
	@if command -v cargo >/dev/null; then \
		$(PY) -m pip install -q ./native && touch $(NATIVE_STAMP); \
	else echo "make: $(CARGO_MISSING)"; fi

native: $(NATIVE_STAMP)

## The crate's own checks: clippy with warnings as errors, and its unit tests.
native-check:
	@command -v cargo >/dev/null || { echo "make: $(CARGO_MISSING)"; exit 1; }
	cd native && PYO3_PYTHON=$(abspath $(PY)) nice cargo clippy --all-targets --features python -- -D warnings
	cd native && nice cargo clippy --all-targets -- -D warnings
	cd native && nice cargo test -q

## The whole suite (real Kafka broker included), with slow scenarios at their small CI size.
test: venv native-check
	$(PY) -m pytest -q -m "not slow"

## The core only: no broker, a few seconds.
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

## promtool (Prometheus v3.5.0, the compose image's version) built from its Go module into
## .tools/bin, for tests/test_alerts.py. `go install ...@version` refuses this module (its
## go.mod has replace directives), so the module's source is built as the main module.
PROMETHEUS_MODULE ?= github.com/prometheus/prometheus@v0.305.0
promtool: .tools/bin/promtool

.tools/bin/promtool:
	@command -v go >/dev/null || { echo "make promtool needs Go 1.23 or newer (https://go.dev/dl/)"; exit 1; }
	rm -rf .tools/src/prometheus && mkdir -p .tools/src .tools/bin
	dir=$$(go mod download -json $(PROMETHEUS_MODULE) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	  test -n "$$dir" && cp -r "$$dir" .tools/src/prometheus
	chmod -R u+w .tools/src/prometheus
	cd .tools/src/prometheus && GOFLAGS=-mod=mod go build -o ../../bin/promtool ./cmd/promtool

clean:
	rm -rf $(VENV) native/target .kafka/dev .pytest_cache .hypothesis build *.egg-info .tools
