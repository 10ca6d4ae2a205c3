# credit-gateway — the two commands first:
#   make demo    install into .venv and run the end-to-end demo (SQLite + the built-in platform sandbox)
#   make test    install what the tests need (PostgreSQL, MariaDB, openssl, xmlsec1 from Debian) and run the whole suite
# and: make check (ruff + mypy strict), make bench (throughput, latency, peak memory).

# The interpreter for .venv: the distribution's own CPython 3.11+ when it can make a venv (Debian builds it with
# profile-guided and link-time optimisation and links it statically: 10-20 % less CPU per record than a default
# pyenv build, docs/benchmark.md), else python3 on PATH. `make PYTHON=... demo` chooses another.
PYTHON ?= $(or $(firstword $(foreach p,/usr/bin/python3 python3,$(shell $(p) -c 'import ensurepip, sys; \
	print("$(p)" if sys.version_info >= (3, 11) else "")' 2>/dev/null))),python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test check bench lint types deps docs clean

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

# The generated blocks of docs/configuration.md and docs/mappings.md (settings' help texts, canonical fields);
# tests/ops/test_docs.py fails when they are out of date.
docs: $(STAMP)
	$(PY) -m gateway.cli.docs

bench: $(STAMP)
	$(PY) -m tests.bench.bench_e2e

clean:
	rm -rf $(VENV) demo-run .bench .mypy_cache .ruff_cache
