# Keel — short named targets. `make run` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_URL := postgres://postgres@127.0.0.1:5432/keel
# Tests run on PostgreSQL (and Redis) unless told otherwise; `make run` uses the embedded defaults.
TEST_DATABASE_URL ?= $(if $(DATABASE_URL),$(DATABASE_URL),$(PG_URL))
TEST_REDIS_URL ?= $(if $(REDIS_URL),$(REDIS_URL),redis://127.0.0.1:6379/15)
PYTEST_ARGS ?=
# The one port setting (README, .env.example): `make run KEEL_PORT=8130` serves there, and seed_demo points the
# sandbox insurer at it (KEEL_BASE_URL defaults to http://127.0.0.1:$(KEEL_PORT)). A .env value is used too.
KEEL_PORT ?= $(or $(shell sed -n 's/^KEEL_PORT=\([0-9]*\).*/\1/p' .env 2>/dev/null | tail -1),8000)
export KEEL_PORT

.PHONY: help install run demo test faults check lint fmt bench migrate seed key clean

help:
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/ —/'

$(STAMP): requirements/base.txt requirements/dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the pinned requirements

migrate: install ## apply migrations
	mkdir -p var
	$(BIN)/python manage.py migrate --noinput

seed: migrate ## load the demo data (idempotent) and print a demo API key
	$(BIN)/python manage.py seed_demo

run: seed ## install, migrate, seed, then the Procfile: web (127.0.0.1:$KEEL_PORT, default 8000) + worker + loans worker + relay + webhook dispatcher + beat, restarting any that dies; prints the demo key last
	$(BIN)/python manage.py collectstatic --noinput >/dev/null
	@echo "Keel on http://127.0.0.1:$(KEEL_PORT)/ (KEEL_PORT; the sandbox insurer is reached there too)"
	rm -rf var/prometheus && mkdir -p var/prometheus
	KEEL_WORKER_LOG_LEVEL="$${KEEL_WORKER_LOG_LEVEL:-WARNING}" \
	  PROMETHEUS_MULTIPROC_DIR="$(abspath var/prometheus)" PATH="$(abspath $(BIN)):$$PATH" \
	  $(BIN)/python -m config.supervise config/Procfile

key: seed ## issue a fresh demo API key (revokes the previous one) and print it
	$(BIN)/python manage.py demo_key --fresh

demo: seed ## drive an end-to-end endorsement run on the embedded defaults and print its timeline
	$(BIN)/python manage.py demo

test: install ## run the whole suite (PostgreSQL + Redis on this machine by default)
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest $(PYTEST_ARGS)

faults: install ## the five fault drills (SPEC §12): own PostgreSQL + Redis, the real Procfile processes (~10 min)
	KEEL_FAULT_DRILLS=1 $(BIN)/pytest tests/faults $(PYTEST_ARGS)

lint: install ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: install ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

check: lint ## lint, types, import contracts, migrations, OpenAPI, deploy checks
	DJANGO_SETTINGS_MODULE=config.settings.test $(BIN)/mypy apps config
	$(BIN)/lint-imports
	DJANGO_SETTINGS_MODULE=config.settings.test $(BIN)/python manage.py makemigrations --check --dry-run
	DJANGO_SETTINGS_MODULE=config.settings.test $(BIN)/python manage.py spectacular --validate --fail-on-warn --file /dev/null
	DJANGO_SETTINGS_MODULE=config.settings.production DJANGO_SECRET_KEY="$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(64))')" \
	  DJANGO_ALLOWED_HOSTS=keel.example DATABASE_URL=$(PG_URL) REDIS_URL=redis://127.0.0.1:6379/0 \
	  $(BIN)/python manage.py check --deploy --fail-level WARNING
	@if command -v docker-compose >/dev/null; then DJANGO_SECRET_KEY=x OAUTH_SIGNING_KEYS_KEY=x docker-compose -f docker-compose.yml config -q && echo "docker-compose.yml parses"; \
	 elif docker compose version >/dev/null 2>&1; then DJANGO_SECRET_KEY=x OAUTH_SIGNING_KEYS_KEY=x docker compose -f docker-compose.yml config -q; \
	 else echo "docker compose not installed: docker-compose.yml not checked"; fi

bench: install ## run every benchmark (PostgreSQL + Redis), each on its own database; figures go to docs/benchmarks.md
	@status=0; for b in request_cost outbox_relay ledger_hold_capture ledger_hot_employer endorsement_api upload_memory endorsement_pipeline file_gateway loan_pipeline input_edge batch_parse webhooks analytics reconciliation; do \
	  echo "== bench/$$b.py"; \
	  createdb -h 127.0.0.1 -U postgres keel_bench_$$b 2>/dev/null || true; \
	  DATABASE_URL=postgres://postgres@127.0.0.1:5432/keel_bench_$$b $(BIN)/python manage.py migrate -v0 || exit 1; \
	  DATABASE_URL=postgres://postgres@127.0.0.1:5432/keel_bench_$$b REDIS_URL=redis://127.0.0.1:6379/14 \
	    $(BIN)/python bench/$$b.py || { echo "bench/$$b.py exited $$? (a missed target or an error: see above)"; status=1; }; \
	done; exit $$status

clean: ## remove the embedded database, broker folders and caches
	rm -rf var .mypy_cache .ruff_cache
