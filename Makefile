# heavy-jobs: every command a user or CI needs. Each target creates .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

STAGE ?= dev
PORT ?= 8000
EMULATOR_PORT ?= 4566
export PORT EMULATOR_PORT

.DEFAULT_GOAL := help
.PHONY: help venv test lint

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# The venv is rebuilt when a requirements file changes.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@
# The project itself is installed too (the `jobs` command): reinstall when it changes.
$(VENV)/.installed: pyproject.toml

# checkov, the infrastructure scanner make test runs, in a virtualenv of its own: its
# dependency pins clash with requirements-dev.txt's (see requirements-checkov.txt).
CHECKOV_VENV := $(VENV)/checkov
$(CHECKOV_VENV)/.installed: requirements-checkov.txt | $(VENV)/.installed
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

venv: $(VENV)/.installed $(CHECKOV_VENV)/.installed ## Create .venv from the requirements files

lint: venv ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# pytest-xdist workers: one per core. Most of the suite waits on processes it started (the
# emulator, chalice local, the event source), so two workers share two cores well; whole
# files go to one worker (--dist loadfile), so a file's shared fixtures are built once;
# they go in collection order (--no-loadscope-reorder, not xdist's most-tests-first), which
# tests/conftest.py sets: the files that start processes first, so that the run ends on
# short in-process files rather than one worker alone with a minute-long one.
# TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The suite's documentation tests (tests/docs) read the site make docs has just built.
test: lint docs ## Lint, build the docs site, then the whole test suite (TEST_WORKERS, default 2)
	HEAVY_JOBS_BUILT_SITE=$(SITE) $(PYTEST) --durations=10

# The fast tier, for the inner loop: the unit and moto tests, which start no process
# (the domain, the handlers through Chalice's test client, the CLI against a scripted API).
FAST_TESTS := tests/chalicelib tests/cli $(wildcard tests/test_*.py)
.PHONY: test-fast
test-fast: venv ## The unit and moto tests only (under a minute): no emulator, no live stack
	$(PYTEST) $(FAST_TESTS)

# --- the documentation site (mkdocs.yml; pages in docs/, some derived by docs/hooks/) ----
.PHONY: docs docs-serve
SITE := site
# Material's banner about MkDocs 2 is not about this site; --quiet would hide the warnings
# --strict turns into errors, so the build's own lines stay.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs
# PORT when you set it, else a free port (not make run's 8000).
DOCS_PORT = $(if $(filter file,$(origin PORT)),$(shell $(PY) -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'),$(PORT))

docs: venv ## Build the documentation site into site/ (strict: a broken link or anchor fails)
	$(MKDOCS) build --strict --site-dir $(SITE)

docs-serve: venv ## Serve the documentation site on 127.0.0.1 (PORT, else a free port), rebuilt on change
	$(MKDOCS) serve --strict --dev-addr 127.0.0.1:$(DOCS_PORT)

# Schemathesis with random seeds (make test runs it on one fixed seed) against a local
# stack of its own, on free ports, stopped afterwards. FUZZ_RUNS seeds, each about 350
# requests; a failure names its seed, and SEED=n runs that one again. See docs/testing.md.
.PHONY: fuzz
FUZZ_RUNS ?= 3
SEED ?=
fuzz: venv ## Schemathesis with random seeds against a stack of its own (FUZZ_RUNS=3; SEED=n repeats one)
	FUZZ_RUNS=$(FUZZ_RUNS) FUZZ_SEED=$(SEED) $(PY) -m pytest -p no:cacheprovider -q -s \
		tests/e2e/fuzz_random_seeds.py

# Mutation testing of the state machine and its adapters (mutmut; config in pyproject.toml):
# hours on 2 cores for all six modules, so not in make test or CI. Narrow it with
# MUTATE='chalicelib.worker*' (mutant name globs); JOBS=n children. See README "Testing".
.PHONY: mutation
MUTATE ?=
JOBS ?= 1
mutation: venv ## Mutation testing (slow, hours; MUTATE='chalicelib.worker*' narrows it)
	nice -n 10 $(BIN)/mutmut run --max-children $(JOBS) $(foreach m,$(MUTATE),'$(m)')
	$(BIN)/mutmut results

# --- the local stack (no AWS account: an emulator on EMULATOR_PORT) -------------------
.PHONY: run emulator infra api worker demo
LOCAL := AWS_ENDPOINT_URL=$${AWS_ENDPOINT_URL:-http://127.0.0.1:$(EMULATOR_PORT)} \
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} \
	AWS_ACCESS_KEY_ID=$${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=$${AWS_SECRET_ACCESS_KEY:-test}

# EVENT_SOURCE_MODE=exact|aws (run, worker): how the local event source polls, see README.
run: venv ## Everything, in the foreground: emulator, infra, API on PORT, worker (EVENT_SOURCE_MODE; JOBS_REQUIRE_API_KEY=true: keys as on prod)
	$(PY) -m infra.run --port $(PORT) --emulator-port $(EMULATOR_PORT)

emulator: venv ## The AWS emulator alone (moto server, unless one already answers)
	$(PY) -m infra.emulator --port $(EMULATOR_PORT)

infra: venv ## Apply infra/template.yaml to the emulator (idempotent)
	$(LOCAL) $(PY) -m infra.stack apply --stage local

api: venv ## chalice local on PORT, against the emulator
	$(LOCAL) $(PY) -m infra.local_api --stage local --host 127.0.0.1 --port $(PORT)

worker: venv ## The SQS and scheduled handlers, run as Lambda would (EVENT_SOURCE_MODE=aws: with its throttling)
	$(LOCAL) $(PY) -m infra.event_source --project-dir . --stage local

demo: venv ## The classic experiment, against a running `make run`
	$(PY) -m infra.demo --url http://127.0.0.1:$(PORT)

# --- Deploy to AWS (infra/deploy/): wherever the standard AWS settings point ----------
.PHONY: deploy destroy package api-key pause resume

deploy: venv ## Deploy STAGE (dev|prod) to AWS [ALARM_EMAIL=you@example.com]: all of it
	$(PY) -m infra.deploy deploy --stage $(STAGE)

destroy: venv ## Delete STAGE from AWS: API keys, operations, Chalice app, logs, stack (data too)
	$(PY) -m infra.deploy destroy --stage $(STAGE)

package: venv ## Write out/STAGE/ (SAM template + zip) for a pipeline; needs no AWS
	$(PY) -m infra.deploy package --stage $(STAGE)

api-key: venv ## Print STAGE's API key value (STAGE=local: in make run's emulator); CLIENT=name: that client's own key (made once)
	@$(PY) -m infra.deploy api-key --stage $(STAGE) $(if $(CLIENT),--client $(CLIENT))

pause: venv ## Stop STAGE's worker (dev|prod|local) taking jobs: they wait in the queue, none is lost
	$(PY) -m infra.deploy pause --stage $(STAGE)

resume: venv ## Let STAGE's worker take jobs again, in order
	$(PY) -m infra.deploy resume --stage $(STAGE)

# --- the README's picture of the dashboard -------------------------------------------------
.PHONY: screenshot

screenshot: venv ## Regenerate docs/dashboard.png from a real local run (needs chromium)
	$(PY) -m infra.screenshot --output docs/dashboard.png

# --- benchmarks (bench/): a stack of their own on free ports ---------------------------
.PHONY: bench

bench: venv ## Benchmark the local stack (~6 min); write BENCHMARKS.md and bench/results/
	$(PY) -m bench
