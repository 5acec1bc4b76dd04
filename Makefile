# Qryptify Ingestor. `make` (or `make help`) lists the targets.
# Without a Docker engine everything runs natively: `python -m stack` installs what is missing
# (Kafka jars from Maven Central, PostgreSQL from Debian) and runs it under supervisord.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
PY := .venv/bin/python
# `make up CONFIG=x` remembers x (in the stack dir): later `make status|tap|replay|logs|...`
# use it unless CONFIG= is given again.
STACK_DIR := $(or $(QRYPTIFY_STACK_DIR),.stack)
REMEMBERED_CONFIG := $(shell cat $(STACK_DIR)/config.path 2>/dev/null)
CONFIG ?= $(or $(REMEMBERED_CONFIG),config.yaml)
DEMO_CONFIG ?= config.demo.yaml
SERVICES ?= backfiller,producer,sink
SERVICE ?=
ARGS ?=
QUICK ?=
DEMO_SIM_ARGS ?= --port 8765 --speed 60 --start 2026-01-15
# Kafka nodes: 1, or 3 (KRaft cluster on 9092-9094, replication factor 3, min.insync.replicas 2)
BROKERS ?= 1
export QRYPTIFY_KAFKA_BROKERS := $(BROKERS)
, := ,
# docker compose: the three-broker profile and the settings that make `kafka` its node 1
COMPOSE_BROKERS := $(if $(filter 3,$(BROKERS)),--profile three-brokers)
COMPOSE_BROKERS_ENV := $(if $(filter 3,$(BROKERS)),QRYPTIFY_COMPOSE_RF=3 QRYPTIFY_COMPOSE_MIN_ISR=2 \
	QRYPTIFY_COMPOSE_VOTERS=1@kafka:9093$(,)2@kafka-2:9093$(,)3@kafka-3:9093 \
	QRYPTIFY_COMPOSE_BOOTSTRAP=kafka:9092$(,)kafka-2:9092$(,)kafka-3:9092)

# Re-install only when pyproject.toml changes (its hash names the stamp).
STAMP := .venv/.qryptify-installed-$(shell sha256sum pyproject.toml 2>/dev/null | cut -c1-16)
# The compiled core (native/): rebuilt when its sources change, if cargo is on PATH.
NATIVE_STAMP := .venv/.qryptify-native-$(shell cat native/Cargo.toml native/Cargo.lock \
	native/pyproject.toml native/src/*.rs 2>/dev/null | sha256sum | cut -c1-16)-$(shell \
	command -v cargo >/dev/null 2>&1 && echo cargo || echo nocargo)
HAVE_CARGO := $(shell command -v cargo >/dev/null 2>&1 && echo 1)
HAVE_DOCKER := docker info >/dev/null 2>&1
# With cargo the native tests must run (a missing module fails them instead of skipping).
TEST_ENV := $(if $(HAVE_CARGO),export QRYPTIFY_EXPECT_NATIVE=1 &&) eval "$$($(PY) -m stack env --profile test)" &&
# Tests of code with a native twin, run again on the pure-Python path by `make test`.
PYTHON_PATH_TESTS := tests/unit/qryptify/test_sink_batch.py tests/unit/qryptify/test_sink_poison.py \
	tests/unit/qryptify/test_archive.py tests/unit/qryptify/test_rest.py tests/unit/services/backfiller \
	tests/unit/services/producer/test_frames.py \
	tests/integration/test_sink_loop.py tests/integration/test_sink_poison.py \
	tests/integration/test_sink_dlq.py tests/integration/test_replay.py

.PHONY: help install up down logs restart ps stack-test-up stack-test-down stack-test-wipe \
	lint fmt test test-unit test-integration test-e2e demo demo-down demo-logs status replay tap reset-db \
	bench chaos

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: CONFIG=$(CONFIG) SERVICE=<name> ARGS='...' QUICK=1 BROKERS=1|3"

install: $(STAMP) $(NATIVE_STAMP) ## create .venv, pip install -e '.[dev]', build the native core if cargo exists
	@$(PY) -m qryptify.native

$(STAMP):
	@test -x $(PY) || { echo "creating .venv"; $(PYTHON) -m venv .venv; }
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f .venv/.qryptify-installed-*
	@touch $@

# With cargo: build and install native/ (maturin via pip); a failed build fails the install.
# Without: say so, remove a module built earlier (it would be stale), use the Python core.
$(NATIVE_STAMP): $(STAMP)
	@if [ -n "$(HAVE_CARGO)" ]; then \
		echo "building the native core (native/, $$(cargo --version))"; \
		$(PY) -m pip install -q ./native; \
	else \
		echo "cargo not found on PATH: native core not built, the pure-Python core is used"; \
		$(PY) -m pip uninstall -q -y qryptify-native >/dev/null 2>&1 || true; \
	fi
	@rm -f .venv/.qryptify-native-*
	@touch $@

# ---- the running stack --------------------------------------------------------------------

up: install ## validate CONFIG, start Kafka, PostgreSQL and the services; fail loudly (CONFIG=config.yaml, BROKERS=3)
	@$(PY) -m qryptify config check --config "$(CONFIG)"
	@mkdir -p "$(STACK_DIR)" && realpath "$(CONFIG)" > "$(STACK_DIR)/config.path"
	@if $(HAVE_DOCKER); then \
		QRYPTIFY_CONFIG_FILE=$(CONFIG) $(COMPOSE_BROKERS_ENV) docker compose $(COMPOSE_BROKERS) up -d --build --wait; \
	else \
		$(PY) -m stack up --config "$(CONFIG)" $(if $(SERVICES),--services $(SERVICES)); \
	fi

down: ## stop everything (data is kept)
	@if $(HAVE_DOCKER); then docker compose $(COMPOSE_BROKERS) down; else $(PY) -m stack down; fi

logs: ## follow the logs (SERVICE=sink for one)
	@if $(HAVE_DOCKER); then docker compose logs -f $(SERVICE); else $(PY) -m stack logs --config "$(CONFIG)" $(SERVICE); fi

ps: ## the programs and their state
	@if $(HAVE_DOCKER); then docker compose ps; else $(PY) -m stack status; fi

restart: ## restart one program: make restart SERVICE=sink
	@test -n "$(SERVICE)" || { echo "usage: make restart SERVICE=<name>"; exit 2; }
	@if $(HAVE_DOCKER); then docker compose restart $(SERVICE); else $(PY) -m stack restart $(SERVICE); fi

stack-test-up: install ## start the test stack (Kafka 19092, PostgreSQL 15432)
	$(PY) -m stack up --profile test

stack-test-down: ## stop the test stack
	$(PY) -m stack down --profile test

stack-test-wipe: ## stop the test stack and delete its data
	$(PY) -m stack wipe --profile test

# ---- quality ------------------------------------------------------------------------------

lint: install ## ruff format --check, ruff check, mypy (changes nothing)
	@status=0; \
	$(PY) -m ruff format --check . || status=1; \
	$(PY) -m ruff check . || status=1; \
	$(PY) -m mypy || status=1; \
	exit $$status

fmt: install ## ruff format + ruff check --fix
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test-unit: install ## unit tests (no sockets)
	$(if $(HAVE_CARGO),QRYPTIFY_EXPECT_NATIVE=1) $(PY) -m pytest tests/unit $(ARGS)

test-integration: stack-test-up ## integration tests against the real test stack
	$(TEST_ENV) $(PY) -m pytest tests/integration $(ARGS)

test-e2e: stack-test-up ## end-to-end tests (simulator + services + Kafka + PostgreSQL)
	$(TEST_ENV) $(PY) -m pytest tests/e2e $(ARGS)

# Unit and integration tests run in 3 workers (each test file in one worker; every test has its
# own topic, group and database); end-to-end tests run alone, they time real services.
test: install lint stack-test-up ## what CI runs: install, lint, every test tier on the test stack
	$(TEST_ENV) $(PY) -m pytest -n 3 --dist loadfile tests/unit tests/integration $(ARGS)
	@echo "again on the pure-Python core (QRYPTIFY_NATIVE=0): $(PYTHON_PATH_TESTS)"
	$(TEST_ENV) QRYPTIFY_NATIVE=0 $(PY) -m pytest -n 3 --dist loadfile $(PYTHON_PATH_TESTS) $(ARGS)
	$(TEST_ENV) $(PY) -m pytest tests/e2e $(ARGS)

# ---- operating ----------------------------------------------------------------------------

# The demo runs in its own stack (.stack-demo) with config.demo.yaml's ports, database and
# topics: beside or after a real `make up` pipeline, it never writes into it.
demo: install ## the pipeline fed by the exchange simulator in its own stack (DEMO_SIM_ARGS='--port 8765 --speed 60 ...')
	@$(PY) -m qryptify config check --config "$(DEMO_CONFIG)"
	@QRYPTIFY_SIM_ARGS='$(DEMO_SIM_ARGS)' $(PY) -m stack up --profile demo --config "$(DEMO_CONFIG)" \
		--services sim,$(SERVICES)
	@echo; echo "demo running in its own stack (.stack-demo): simulator $(DEMO_SIM_ARGS)"; \
	echo "look at the data:"; \
	echo "  make status CONFIG=$(DEMO_CONFIG)     coverage, gaps, freshness per pair"; \
	echo "  make tap CONFIG=$(DEMO_CONFIG)        the decoded stream as it arrives"; \
	echo "  eval \"\$$($(PY) -m stack env --profile demo --config $(DEMO_CONFIG))\"   then:"; \
	echo "  psql \"\$$QRYPTIFY_DB__DSN\" -c 'SELECT symbol, interval, count(*), max(ts) FROM candlesticks GROUP BY 1, 2'"; \
	echo "  make demo-logs                        all logs;  make demo-down  to stop"

demo-down: ## stop the demo stack (its data is kept in .stack-demo)
	$(PY) -m stack down --profile demo --config "$(DEMO_CONFIG)"

demo-logs: ## follow the demo stack's logs
	$(PY) -m stack logs --profile demo --config "$(DEMO_CONFIG)" $(SERVICE)

status: install ## extension, hypertables, coverage, gaps, pointers, lag, freshness
	@$(PY) -m qryptify status --config "$(CONFIG)" $(ARGS)

replay: install ## rebuild a database from the topic (ARGS='--dsn postgresql://... [--follow]')
	@$(PY) -m qryptify replay --config "$(CONFIG)" $(ARGS)

tap: install ## print the decoded stream (ARGS='--pair BTCUSDT/1m --from-beginning')
	@$(PY) -m qryptify tap --config "$(CONFIG)" $(ARGS)

reset-db: install ## drop and re-create the tables (asks; ARGS=-f to skip)
	@$(PY) -m qryptify reset-db --config "$(CONFIG)" $(ARGS)

bench: install ## every figure beside its reference and target → bench/results/*.json, README.md, docs/performance.md (QUICK=1: minutes)
	$(PY) -m bench $(if $(QUICK),--quick) --markdown README.md --markdown docs/performance.md $(ARGS)

chaos: install ## seeded fault-injection run + checker on its own stack (QUICK=1: ~3 min; BROKERS=3; ARGS='--seed N')
	$(PY) -m chaos $(if $(QUICK),--quick) --brokers $(BROKERS) $(ARGS)
