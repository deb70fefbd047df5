# Nexus Backup: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION := 0.13.9

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(UV): $(BIN)/python
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.installed: requirements.lock pyproject.toml | $(UV)
	VIRTUAL_ENV=$(VENV) $(UV) pip sync --quiet --require-hashes requirements.lock
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet --no-deps -e .
	touch $@

.PHONY: install
install: $(VENV)/.installed ## Create .venv with the locked dependencies

.PHONY: lock
lock: | $(UV) ## Re-lock requirements.lock from pyproject.toml
	$(UV) pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
		--quiet -o requirements.lock

.PHONY: run
run: install ## Serve on 127.0.0.1:8000 (embedded demo PostgreSQL unless DATABASE_URL is set)
	$(BIN)/nexus-backup serve

.PHONY: test
test: install ## Run lint, types and every test
	$(BIN)/ruff check api migrations tests
	$(BIN)/ruff format --check api migrations tests
	$(BIN)/mypy
	$(BIN)/pytest

.PHONY: lint
lint: install ## ruff and mypy --strict
	$(BIN)/ruff check api migrations tests
	$(BIN)/ruff format --check api migrations tests
	$(BIN)/mypy

.PHONY: format
format: install ## Format the code
	$(BIN)/ruff format api migrations tests
	$(BIN)/ruff check --fix api migrations tests

.PHONY: clean
clean: ## Stop the demo database and remove .data/ (demo data) and .venv
	-[ -d .data/pg/data ] && $(BIN)/python -c "from pathlib import Path; from api.embedded import LocalCluster; LocalCluster(Path('.data/pg')).stop()"
	rm -rf .data $(VENV)
