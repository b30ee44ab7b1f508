# Two commands matter: `make demo` and `make test` (each sets up what it needs first).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8443

.PHONY: demo test setup system lint e2e clean

setup: $(VENV)/.installed node_modules/.installed system

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $$(scripts/find-python.sh) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	@touch $@

system:
	@scripts/install-system.sh

demo: setup
	@PORT=$(PORT) exec scripts/demo.sh

test: setup
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf var/portal.sqlite3 var/test.sqlite3 .pytest_cache
