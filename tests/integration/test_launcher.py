"""`kubechat serve` end to end: it comes up ready, and leaves no process behind when stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from kubechat.embedded.launcher import render_local_repository
from tests.conftest import free_port
from tests.polling import wait_until

pytestmark = pytest.mark.triton

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
SYNTHETIC = (EXAMPLES / "synthetic.yaml").read_text()


def launch(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    models = tmp_path / "models"
    models.mkdir()
    (models / "synthetic.yaml").write_text(SYNTHETIC)
    port = free_port()
    command = [
        sys.executable, "-m", "kubechat", "serve", "--port", str(port),
        "--models", str(models), "--state-dir", str(tmp_path / "state"),
        "--triton-grpc-port", str(free_port()), "--triton-http-port", str(free_port()),
        "--triton-metrics-port", str(free_port()),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBECHAT_")}
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"kubechat serve exited; see {tmp_path / 'serve.log'}")
        try:
            return httpx.get(f"{url}/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, 180, "kubechat serve to be ready")
    return process, url


def tritonservers_of(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return [p for p in psutil.Process(process.pid).children(recursive=True) if p.name() == "tritonserver"]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_serve_stops_cleanly_on_signals(tmp_path: Path, stop: signal.Signals) -> None:
    process, url = launch(tmp_path)
    reply = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "synthetic", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
    )
    assert reply.json()["choices"][0]["message"]["content"] == "token0 token1 token2 "
    servers = tritonservers_of(process)
    assert len(servers) == 1
    process.send_signal(stop)
    assert process.wait(60) == 0
    _gone, alive = psutil.wait_procs(servers, timeout=30)
    assert not alive


def test_tritonserver_dies_with_a_killed_launcher(tmp_path: Path) -> None:
    process, _ = launch(tmp_path)
    servers = tritonservers_of(process)
    process.kill()  # no chance to clean up: the kernel's parent-death signal must do it
    process.wait()
    _gone, alive = psutil.wait_procs(servers, timeout=30)
    assert not alive


def test_a_machine_without_tesseract_serves_the_other_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """tritonserver stops when any model fails to load: the launcher leaves the OCR model out, and says
    which Debian package would bring it in."""
    models = tmp_path / "models"
    models.mkdir()
    for name in ("synthetic.yaml", "ocr.yaml"):
        (models / name).write_text((EXAMPLES / name).read_text())
    monkeypatch.setenv("PATH", str(tmp_path))  # no tesseract on it
    repository = render_local_repository(models, tmp_path / "state")
    assert sorted(p.name for p in repository.iterdir()) == ["synthetic"]
    assert "ChatModel ocr is not served" in caplog.text
    assert "tesseract-ocr" in caplog.text
    monkeypatch.undo()  # tesseract on PATH again: the OCR model is rendered
    repository = render_local_repository(models, tmp_path / "state")
    assert sorted(p.name for p in repository.iterdir()) == ["ocr", "synthetic"]
