"""The embedded runtime's tritonserver on one machine.

Reads ChatModel YAML files (the same documents a cluster would `kubectl apply`), renders the
local Triton model repository with the operator's pure renderers, starts tritonserver and waits
for it. `kubechat serve` (kubechat.cli) serves the API beside it and supervises it
(kubechat.embedded.supervisor); this package never imports the API.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from kubechat.core.resources import Backend, ChatModel, load_chat_models_from_dir
from kubechat.embedded.tritonserver import TritonServer
from kubechat.triton.artifacts import prepare_artifacts
from kubechat.triton.repository import render_python_model, write_model_repository

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TritonPorts:
    grpc: int = 8001
    http: int = 8002
    metrics: int = 8003


def runs_here(model: ChatModel) -> bool:
    """Whether this machine has what the model runs, beyond Python packages.

    The OCR model runs the tesseract binary. Without it tritonserver would fail to load that
    model and, as it stops on any model's load failure, serve nothing: a laptop without the
    Debian package still gets its chat models, and a warning says what to install. A remote
    model (backend openai) is served by its endpoint, not by the local tritonserver.
    """
    if model.spec.engine.backend.is_remote:
        return False
    if model.spec.engine.backend is Backend.TESSERACT and shutil.which("tesseract") is None:
        logger.warning(
            "ChatModel %s is not served: the tesseract binary is not installed; install the Debian "
            "package tesseract-ocr (apt-get install tesseract-ocr) and restart",
            model.name,
        )
        return False
    return True


def render_local_repository(models_dir: Path, state_dir: Path) -> Path:
    """Prepare artifacts and write the model repository (of the models this machine can run)."""
    models = load_chat_models_from_dir(models_dir)
    if not models:
        raise SystemExit(f"no ChatModel documents in {models_dir}")
    state_dir.mkdir(parents=True, exist_ok=True)
    repository = state_dir / "model-repository"
    rendered = [render_python_model(m, prepare_artifacts(m, state_dir)) for m in models if runs_here(m)]
    write_model_repository(rendered, repository)
    logger.info("rendered %d models into %s", len(rendered), repository)
    return repository


def start_triton(models_dir: Path, state_dir: Path, ports: TritonPorts, timeout: float) -> TritonServer:
    repository = render_local_repository(models_dir, state_dir)
    server = TritonServer(
        repository, state_dir, http_port=ports.http, grpc_port=ports.grpc, metrics_port=ports.metrics
    )
    server.start()
    try:
        server.wait_ready(timeout)
    except BaseException:
        server.stop()
        raise
    logger.info("tritonserver ready on grpc %s", server.grpc_url)
    return server
