# credit-gateway — the two commands first:
#   make demo    install into .venv and run the end-to-end demo (SQLite + the built-in platform sandbox)
#   make test    install what the tests need (PostgreSQL, openssl, xmlsec1 from Debian) and run the whole suite
# and: make check (ruff + mypy strict), make bench (throughput, latency, peak memory).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test check bench lint types deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/credit-gateway demo --dir demo-run

deps:
	bash tests/ensure-deps.sh

test: $(STAMP) deps
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check gateway adapters tests

types: $(STAMP)
	$(VENV)/bin/mypy gateway adapters

check: lint types

bench: $(STAMP)
	$(PY) -m tests.bench.bench_e2e

clean:
	rm -rf $(VENV) demo-run .bench .mypy_cache .ruff_cache
