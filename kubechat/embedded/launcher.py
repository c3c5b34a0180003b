"""`kubechat serve`: the embedded runtime on one machine.

Reads ChatModel YAML files (the same documents a cluster would `kubectl apply`), renders the
local Triton model repository with the operator's pure renderers, starts tritonserver, waits
for it, and serves the API; a tritonserver that dies is restarted (kubechat.embedded.supervisor);
Ctrl-C or SIGTERM stops both, leaving no process behind.
"""

from __future__ import annotations

import logging
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from kubechat.api.app import create_app
from kubechat.api.settings import Settings
from kubechat.core.resources import Backend, ChatModel, load_chat_models_from_dir
from kubechat.embedded.supervisor import TritonSupervisor
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


def _exit_gracefully(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def serve(settings: Settings, host: str, port: int, ports: TritonPorts, timeout: float) -> None:
    # uvicorn shuts down on SIGTERM, then re-raises it with the previous handler in place: with
    # the default handler the process would die before stopping tritonserver below.
    signal.signal(signal.SIGTERM, _exit_gracefully)
    server = start_triton(settings.models_dir, settings.state_dir, ports, timeout)
    # From here on a tritonserver that dies is restarted (/ready reports it meanwhile).
    supervisor = TritonSupervisor(server, ready_timeout_s=timeout)
    supervisor.watch()
    try:
        settings = settings.model_copy(update={"triton_url": server.grpc_url})
        # uvicorn's own WebSocket message limit (ws_max_size) is left at its default, as the
        # chart and the image leave it: kubechat.api.settings.WS_TRANSPORT_MAX_BYTES.
        uvicorn.run(
            create_app(settings, supervised={"tritonserver": supervisor}),
            host=host,
            port=port,
            log_level="info",
            log_config=None,  # `kubechat serve` configured logging (kubechat.core.logs)
        )
    finally:
        supervisor.stop()
