# Stafett: two commands for a newcomer (make run, make test); the rest for developers.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
TSTAMP := $(VENV)/.test-installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test browser lint check-python install bench bench-bus bench-connectors fuzz clean

check-python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Stafett needs Python 3.11 or newer, found " + sys.version.split()[0]' \
		|| { echo "make: set PYTHON=python3.11 (or newer)"; exit 2; }

$(STAMP): pyproject.toml | check-python
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@rm -f $(VENV)/.installed-*; touch $@

$(TSTAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.test-installed-*; touch $@

install: $(STAMP)

## make run: Stafett on http://127.0.0.1:8080 (SQLite under .stafett/, dev auth, a demo log) with its
## worker, connectors and the kindergarten, school, health-station and child-welfare simulators, all
## in one process on the in-process bus; ARGS='--port-base 9000' moves every port (stafett demo --help)
ARGS ?=
run: $(STAMP)
	STAFETT_DEV_AUTH=1 STAFETT_DATA_DIR=.stafett $(BIN)/stafett demo $(ARGS)

## make browser: Debian's chromium for the browser tests (tests/web); installed once when root with apt-get
browser:
	@if [ -n "$$STAFETT_CHROMIUM" ] || [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make: installing Debian's chromium for the browser tests (tests/web), once"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
			|| echo "make: could not install chromium with apt-get: the browser tests (tests/web) will be skipped"; \
	else \
		echo "make: no /usr/bin/chromium, and installing it needs root and apt-get: the browser tests (tests/web) will be skipped"; \
	fi

## make test: lint, type-check and run the whole suite against real PostgreSQL and SQLite
test: $(TSTAMP) browser
	$(BIN)/ruff check service bus simulators mapping connectors tests bench scripts
	$(BIN)/ruff format --check service bus simulators mapping connectors tests bench scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: $(TSTAMP)
	$(BIN)/ruff check service bus simulators mapping connectors tests bench scripts
	$(BIN)/mypy

## make bench: the API benchmark against PostgreSQL (several minutes; writes docs/PERFORMANCE.md)
bench: $(TSTAMP)
	$(BIN)/python bench/bench_api.py

## make bench-bus: the message-bus benchmark, relay and write-to-delivery (about 4 minutes; writes docs/PERFORMANCE.md)
bench-bus: $(TSTAMP)
	$(BIN)/python bench/bench_bus.py

## make bench-connectors: bulk pull of 100,000 kindergarten records through the connector (long: ingest runs at tens/s; writes docs/PERFORMANCE.md)
bench-connectors: $(TSTAMP)
	$(BIN)/python bench/bench_connectors.py

## make fuzz: the hostile-input suite, longer: 10x the fuzz examples, 50 schemathesis examples per operation (about 30 minutes)
fuzz: $(TSTAMP)
	STAFETT_FUZZ_RANDOM=1 STAFETT_FUZZ_EXAMPLES_SCALE=10 STAFETT_SCHEMATHESIS_EXAMPLES=50 $(BIN)/python -m pytest -q -s tests/hardening

clean:
	rm -rf $(VENV) .stafett .pytest_cache .mypy_cache .ruff_cache
