"""Shared fixtures: the real tritonserver with the real models and the API as a real process.

Heavy processes start once per test session; readiness is polled with a deadline.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from kubechat.embedded.launcher import TritonPorts, start_triton
from kubechat.embedded.tritonserver import TritonServer
from tests.llama_server import API_KEY as LLAMA_KEY
from tests.llama_server import UPSTREAM_MODEL, LlamaServer, llama_server_python
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_MODELS = ROOT / "examples" / "models"
TEST_KNOWLEDGE_BASES = ROOT / "tests" / "data" / "knowledge-bases"
ALICE_KEY = "alice-test-key"
BOB_KEY = "bob-test-key"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports() -> TritonPorts:
    return TritonPorts(grpc=free_port(), http=free_port(), metrics=free_port())


@dataclass
class ApiProcess:
    """The API served by uvicorn in its own process, as in a real deployment."""

    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    log_level: str = "warning"  # uvicorn's; "info" logs every request (the access log)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            sys.executable, "-m", "uvicorn", "--factory", "kubechat.api.app:create_app",
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", self.log_level,
            "--ws-per-message-deflate", "false",  # as the image, the chart and `kubechat serve`
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT
            )
        wait_until(self._healthy, 60, f"the API on port {self.port} (log: {self.log})")

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"the API exited with {self.process.returncode}; see {self.log}")
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        self.process = None


def api_env(triton: TritonServer, models_dir: Path, state_dir: Path) -> dict[str, str]:
    return {
        "KUBECHAT_TRITON_URL": triton.grpc_url,
        "KUBECHAT_MODELS_DIR": str(models_dir),
        "KUBECHAT_STATE_DIR": str(state_dir),
        "KUBECHAT_API_KEYS": f"{ALICE_KEY}=alice,{BOB_KEY}=bob",
        "KUBECHAT_DEFAULT_MODEL": "smollm2",
        "KUBECHAT_MAX_MESSAGE_CHARS": "2000",
        "KUBECHAT_KNOWLEDGE_BASES_DIR": str(TEST_KNOWLEDGE_BASES),
    }


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
def triton(state_dir: Path) -> Iterator[TritonServer]:
    """tritonserver serving examples/models (SmolLM2, MiniLM, synthetic) for the whole session."""
    server = start_triton(EXAMPLE_MODELS, state_dir, free_ports(), timeout=300)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def triton_metrics(triton: TritonServer) -> str:
    return f"http://127.0.0.1:{triton.metrics_port}/metrics"


@pytest.fixture(scope="session")
def api(triton: TritonServer, state_dir: Path) -> Iterator[ApiProcess]:
    process = ApiProcess(api_env(triton, EXAMPLE_MODELS, state_dir), state_dir / "api.log")
    process.start()
    yield process
    process.stop()


def auth(key: str = ALICE_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """llama.cpp's OpenAI-compatible server serving the SmolLM2 GGUF, with an API key."""
    python = llama_server_python()
    if python is None:
        message = "llama.cpp's server is not installed: run `make llama-server`"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI builds it (make test): never skip silently there
        pytest.skip(message)
    server = LlamaServer(python, free_port(), tmp_path_factory.mktemp("llama") / "server.log")
    server.start()
    yield server
    server.stop()


def remote_model_document(name: str, url: str, model: str = UPSTREAM_MODEL, **endpoint: object) -> str:
    """A ChatModel YAML of backend openai, as a user would write it for `kubechat serve`."""
    document = {
        "apiVersion": "kubechat.io/v1alpha1",
        "kind": "ChatModel",
        "metadata": {"name": name},
        "spec": {
            "displayName": f"{name} (llama.cpp server)",
            "engine": {"backend": "openai", "maxInputTokens": 1536, "maxOutputTokens": 256},
            "endpoint": {"url": url, "model": model, "timeoutSeconds": 60, **endpoint},
            "capabilities": ["chat"],
            "defaults": {"temperature": 0, "maxTokens": 48, "repetitionPenalty": 1.1},
        },
    }
    return yaml.safe_dump(document, sort_keys=False)


def remote_embedder_document(name: str, url: str, model: str) -> str:
    """A remote embedder (capability embeddings) reached with the peer API's key."""
    document = yaml.safe_load(
        remote_model_document(name, url, model=model, apiKeyEnv="KUBECHAT_TEST_PEER_KEY")
    )
    document["spec"]["capabilities"] = ["embeddings"]
    document["spec"]["engine"]["maxBatchSize"] = 32
    return str(yaml.safe_dump(document, sort_keys=False))


REMOTE_KNOWLEDGE_BASES = """
apiVersion: kubechat.io/v1alpha1
kind: KnowledgeBase
metadata: {name: remote-handbook}
spec:
  embedding: {model: remote-minilm, dimensions: 384}
  chunking: {size: 64, overlap: 16}
  access: {owners: [alice]}
---
apiVersion: kubechat.io/v1alpha1
kind: KnowledgeBase
metadata: {name: remote-misdeclared}
spec:
  embedding: {model: remote-minilm, dimensions: 512}
  access: {owners: [alice]}
"""


@pytest.fixture(scope="session")
def remote_models_dir(
    tmp_path_factory: pytest.TempPathFactory, llama_server: LlamaServer, api: ApiProcess
) -> Path:
    """The example models plus remote ones: the llama.cpp server with the right key, a wrong one,
    an upstream model it does not list, an endpoint nobody listens on, and a peer: the first
    kubechat API's /v1 (which reports streamed usage, as vLLM does)."""
    folder = tmp_path_factory.mktemp("remote-models")
    for example in EXAMPLE_MODELS.glob("*.yaml"):
        (folder / example.name).write_text(example.read_text())
    # The tool-caller supervises the llama.cpp model: a remote model as a specialist tool.
    supervisor = yaml.safe_load((folder / "tool-caller.yaml").read_text())
    supervisor["spec"]["tools"]["models"] = [{"name": "llama", "description": "A small assistant."}]
    (folder / "tool-caller.yaml").write_text(yaml.safe_dump(supervisor))
    documents = {
        "llama": remote_model_document("llama", llama_server.url, apiKeyEnv="KUBECHAT_TEST_LLAMA_KEY"),
        "llama-wrong-key": remote_model_document(
            "llama-wrong-key", llama_server.url, apiKeyEnv="KUBECHAT_TEST_WRONG_KEY", maxRetries=0
        ),
        "llama-unlisted": remote_model_document(
            "llama-unlisted", llama_server.url, model="no-such-model", apiKeyEnv="KUBECHAT_TEST_LLAMA_KEY"
        ),
        "peer": remote_model_document(
            "peer", f"{api.url}/v1", model="smollm2", apiKeyEnv="KUBECHAT_TEST_PEER_KEY"
        ),
        "remote-minilm": remote_embedder_document("remote-minilm", f"{api.url}/v1", "minilm"),
        "nowhere": remote_model_document(
            "nowhere", f"http://127.0.0.1:{free_port()}/v1", maxRetries=0, timeoutSeconds=5
        ),
    }
    for name, text in documents.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder


@pytest.fixture(scope="session")
def remote_api(
    triton: TritonServer, remote_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """A second API process whose catalog has the remote models beside the Triton ones."""
    state = tmp_path_factory.mktemp("remote-state")
    knowledge_bases = tmp_path_factory.mktemp("remote-knowledge-bases")
    (knowledge_bases / "test.yaml").write_text((TEST_KNOWLEDGE_BASES / "test.yaml").read_text())
    (knowledge_bases / "remote.yaml").write_text(REMOTE_KNOWLEDGE_BASES)
    env = {
        **api_env(triton, remote_models_dir, state),
        "KUBECHAT_KNOWLEDGE_BASES_DIR": str(knowledge_bases),
        "KUBECHAT_DEFAULT_MODEL": "llama",
        "KUBECHAT_TEST_LLAMA_KEY": LLAMA_KEY,
        "KUBECHAT_TEST_WRONG_KEY": "not-the-key",
        "KUBECHAT_TEST_PEER_KEY": ALICE_KEY,
    }
    process = ApiProcess(env, state / "api.log")
    process.start()
    yield process
    process.stop()
