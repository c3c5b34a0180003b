"""A real Prometheus for tests: Debian's `prometheus` package (server and promtool).

`PrometheusServer` runs the server on a free loopback port with a temporary configuration and
storage, scraping the targets it is given every second, and stops it afterwards. CI installs
the package (.ci/run); elsewhere the tests that need it are skipped, saying what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.polling import wait_until


def binary(name: str) -> str:
    """The path of a Prometheus binary; skipped without it, except in CI, where it must be there."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: .ci/run installs Debian's prometheus package")
        pytest.skip(f"{name} is not installed (apt-get install --no-install-recommends prometheus)")
    return path


@dataclass
class Target:
    """A scrape target and the target labels a PodMonitor would give it."""

    address: str  # host:port
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class PrometheusServer:
    folder: Path
    port: int
    targets: list[Target]
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": f"target-{n}",
                    "static_configs": [{"targets": [t.address], "labels": t.labels}],
                }
                for n, t in enumerate(self.targets)
            ],
        }
        path = self.folder / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        log = (self.folder / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={path}",
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(self._ready, 60, f"Prometheus on port {self.port} (log: {self.folder / 'prometheus.log'})")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.process.returncode}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query through Prometheus's HTTP API; its result vector."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        body = response.json()
        assert body["status"] == "success", (promql, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        self.process = None
