# loginvault — `make ingest` runs the job on the local stack, `make test` runs the tests.
# Every target creates the virtualenv (.venv) first when needed.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The command line: pyproject.toml's console script.
LV := $(VENV)/bin/loginvault
STAMP := $(VENV)/.installed
# Point a command at the local stack (user-set PG_DSN / SQS_QUEUE_URL / keys win).
WITH_ENV := eval "$$($(LV) stack env)" &&
COUNT ?= 100

.PHONY: help venv lock stack-up stack-down stack-status env bootstrap seed ingest transform rotate-keys summary demo docs docs-serve lint test test-unit flake bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# The locks (`make lock` writes them): every Python package with its version and hashes, for
# CPython 3.11 on Linux x86_64 (glibc >= 2.28). dev.lock: the dependencies and the `dev` extra
# (the venv, CI); runtime.lock: the dependencies alone, at dev.lock's versions (the image).
LOCK := requirements/dev.lock
RUNTIME_LOCK := requirements/runtime.lock
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_28
UV_COMPILE := $(VENV)/bin/uv pip compile pyproject.toml --generate-hashes $(LOCK_TARGET) --custom-compile-command 'make lock' --quiet

$(STAMP): pyproject.toml $(LOCK)
	@echo "creating $(VENV) (Python deps from $(LOCK), hashes checked)" >&2
	@$(PYTHON) -m venv $(VENV) >&2
	@$(VENV)/bin/pip install -q --disable-pip-version-check --upgrade pip >&2
	@$(VENV)/bin/pip install -q --disable-pip-version-check --require-hashes -r $(LOCK) >&2
	@$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e . >&2
	@touch $@

venv: $(STAMP) ## create the virtualenv with all Python dependencies (from requirements/dev.lock, hashes checked)

LOCK_ARGS ?=
lock: $(STAMP) ## after changing dependencies in pyproject.toml: rewrite requirements/*.lock (uv, hashes); pinned versions stay unless LOCK_ARGS="--upgrade-package NAME" (or --upgrade)
	@$(UV_COMPILE) --extra dev $(LOCK_ARGS) --output-file $(LOCK)
	@$(UV_COMPILE) --constraint $(LOCK) --output-file $(RUNTIME_LOCK)
	@echo "lock: wrote $(LOCK) and $(RUNTIME_LOCK); the next make target reinstalls $(VENV) from them" >&2

stack-up: $(STAMP) ## start local PostgreSQL (.local/pg), moto SQS (127.0.0.1:4566) and the recovery service; create queue + roles
	@$(LV) stack up

stack-down: ## stop the local stack: PostgreSQL, moto, the recovery service (data in .local/ is kept); without a venv nothing was started
	@if [ -x $(LV) ]; then $(LV) stack down; else echo "stack: no $(VENV): nothing of the stack was started" >&2; fi

stack-status: $(STAMP) ## say whether local PostgreSQL, moto and the recovery service are up
	@$(LV) stack status

env: $(STAMP) ## print `export …` lines for the local stack (PATH with bin/ and .venv/bin, DBT_PROJECT_DIR, DBT_PROFILES_DIR, logins, queue): eval "$(make -s env)"
	@$(LV) stack env

bootstrap: $(STAMP) ## migrate the schema (ingest/schema/migrations/, repeatable/) as the admin PG_DSN, and the logins of the LOGINVAULT_<ROLE>_DSNs set
	@$(WITH_ENV) $(LV) bootstrap

seed: stack-up ## send COUNT (default 100) synthetic login events to the queue
	@$(WITH_ENV) $(LV) seed --count $(COUNT)

ingest: $(STAMP) ## stack up (+100 sample events into a new queue), then drain the queue into raw.login_events
	@$(LV) stack up --seed-if-new 100
	@$(WITH_ENV) $(LV) run

transform: $(STAMP) ## dbt build (models + tests) as loginvault_transformer, keys in the session
	@$(WITH_ENV) $(LV) transform build

rotate-keys: $(STAMP) ## local stack: new PII keys into .local/keys.env (old ones kept as *_PREVIOUS), both rotated, key status
	@$(WITH_ENV) $(LV) stack rotate-keys

summary: $(STAMP) ## print what an analyst sees: mart rows, rejections by reason, shared IPs/devices, samples
	@$(WITH_ENV) $(LV) summary

demo: $(STAMP) ## the whole job on the local stack: stack up, 100 new sample events, ingest, transform, summary
	@$(LV) stack up
	@$(WITH_ENV) $(LV) seed --count 100
	@$(WITH_ENV) $(LV) run
	@$(WITH_ENV) $(LV) transform build
	@$(WITH_ENV) $(LV) summary

docs: $(STAMP) ## build the static dbt docs site (dbt_project/target/static_index.html)
	@$(WITH_ENV) $(LV) transform docs generate --static
	@echo "docs: open file://$(CURDIR)/dbt_project/target/static_index.html"

DOCS_PORT ?= 8580
docs-serve: docs ## serve the docs site on http://127.0.0.1:8580/ (DOCS_PORT=N: another port; Ctrl-C stops)
	@echo "docs: http://127.0.0.1:$(DOCS_PORT)/static_index.html"
	@$(PY) -m http.server $(DOCS_PORT) --bind 127.0.0.1 --directory dbt_project/target

lint: $(STAMP) ## sqlfluff on dbt_project/ and ingest/schema/, ruff on the Python code, mypy (strict) on ingest/, terraform fmt -check when terraform is installed
	@$(VENV)/bin/sqlfluff lint dbt_project ingest/schema
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy
	@if command -v terraform >/dev/null 2>&1; then \
		TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive -diff deploy/terraform; \
	else \
		echo "lint: terraform is not installed: deploy/terraform was not format-checked" >&2; \
	fi

test: $(STAMP) lint ## lint, then the unit tests and the integration tests (own throwaway PostgreSQL and moto), one worker per core
	@$(PY) -m pytest -n auto --durations=15 tests/unit tests/integration

test-unit: $(STAMP) ## the unit tests only: no service, seconds
	@$(PY) -m pytest tests/unit

RUNS ?= 20
FLAKE_BUSY ?= 0
flake: $(STAMP) ## the timing-sensitive integration tests (tests/flake.sh) RUNS times in a row (default 20), one at a time, stopping at the first failure; FLAKE_BUSY=N keeps N cores busy meanwhile
	@FLAKE_BUSY=$(FLAKE_BUSY) tests/flake.sh $(RUNS)

bench: $(STAMP) ## benchmarks (not tests), BENCH="NAME…" for some: land, sqs, freshness, transform (+incremental), rotate, retention, scale, memory, rss, recovery; ratios vs same-run baselines
	@$(PY) -m bench $(BENCH)

clean: ## stop the stack and delete .local/ (keys included), dbt's target/ and logs/, the venv, egg-info and caches
	@if [ -x $(LV) ]; then $(LV) stack down; fi
	rm -rf .local $(VENV) dbt_project/target dbt_project/logs *.egg-info .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
