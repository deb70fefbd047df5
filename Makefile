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
lock: | $(UV) ## Re-lock requirements.lock (dev) and requirements.prod.lock (the image) from pyproject.toml
	$(UV) pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
		--quiet -o requirements.lock
	$(UV) pip compile pyproject.toml --generate-hashes --python-version 3.11 \
		-c requirements.lock --quiet -o requirements.prod.lock

web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

.PHONY: web
web: web/node_modules/.installed ## Build the admin page into web/dist (served under /app/)
	cd web && npm run build

.PHONY: api-types
api-types: install web/node_modules/.installed ## Regenerate web/openapi.json and its TypeScript types
	$(BIN)/nexus-backup openapi > web/openapi.json
	cd web && npm run gen:api

.PHONY: check-api-types
check-api-types: install web/node_modules/.installed ## Fail when the web types drift from the API
	@tmp=$$(mktemp -d) && $(BIN)/nexus-backup openapi > $$tmp/openapi.json \
	  && (cmp -s web/openapi.json $$tmp/openapi.json \
	      || (echo "web/openapi.json differs from the API: run make api-types" && exit 1)) \
	  && (cd web && npx openapi-typescript $$tmp/openapi.json -o $$tmp/schema.d.ts >/dev/null) \
	  && (cmp -s web/src/api/schema.d.ts $$tmp/schema.d.ts \
	      || (echo "web/src/api/schema.d.ts is stale: run make api-types" && exit 1)) \
	  && rm -rf $$tmp && echo "web types match the API"

.PHONY: run
run: install web ## Serve a throwaway demo on 127.0.0.1:8000 (PostgreSQL and uploads in .data/)
	$(BIN)/python -m nexus_dev serve

.PHONY: test
test: install web ## Run lint, types, the web checks and every test (e2e in Chromium included)
	$(BIN)/ruff check api nexus_dev migrations tests bench
	$(BIN)/ruff format --check api nexus_dev migrations tests bench
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile.prod
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.prod.yml
	$(MAKE) check-api-types
	cd web && npm test
	$(BIN)/pytest -n 2 --dist worksteal

.PHONY: bench
bench: install ## Benchmarks: both dataset sizes, 3 runs, medians -> docs/BENCHMARKS.md (slow)
	$(BIN)/python -m bench --size both --runs 3

.PHONY: lint
lint: install ## ruff, mypy --strict, hadolint and the compose schema
	$(BIN)/ruff check api nexus_dev migrations tests bench
	$(BIN)/ruff format --check api nexus_dev migrations tests bench
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile.prod
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.prod.yml

.PHONY: format
format: install ## Format the code
	$(BIN)/ruff format api nexus_dev migrations tests bench
	$(BIN)/ruff check --fix api nexus_dev migrations tests bench

.PHONY: clean
clean: ## Stop the demo database and remove .data/ (demo data) and .venv
	-[ -d .data/pg/data ] && $(BIN)/python -c "from pathlib import Path; from nexus_dev.cluster import LocalCluster; LocalCluster(Path('.data/pg')).stop()"
	rm -rf .data $(VENV) web/node_modules web/dist
