"""Running the real `tritonserver` (shipped in the nvidia-pytriton wheel) as a child process."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)


class TritonStartError(RuntimeError):
    pass


def pytriton_root() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise TritonStartError("nvidia-pytriton is not installed: pip install -e '.[embedded]'")
    return Path(spec.origin).parent / "tritonserver"


def prepare_backends(state_dir: Path) -> Path:
    """Copy Triton's backends and put the python stub matching this interpreter into them."""
    root = pytriton_root()
    target = state_dir / "backends"
    stub = root / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}"
    if not (target / "python" / "triton_python_backend_stub").exists():
        shutil.copytree(root / "backends", target, dirs_exist_ok=True)
        shutil.copy2(stub / "triton_python_backend_stub", target / "python")
    return target


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: the kernel sends SIGTERM to tritonserver if the launcher dies, even by
    # SIGKILL, so no orphan keeps the ports and the CPU.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class TritonServer:
    repository: Path
    state_dir: Path
    http_port: int = 8001
    grpc_port: int = 8002
    metrics_port: int = 8003
    log_file: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False)

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> None:
        backends = prepare_backends(self.state_dir)
        binary = pytriton_root() / "bin" / "tritonserver"
        # The python backend stub takes its interpreter (numpy, torch, kubechat) from PATH, and
        # the wheel's bundled libraries (libcudart...) from beside the package: the copied stub
        # no longer finds them through its relative RPATH. It must also link this interpreter's
        # libpython, not another 3.11 the system may have, or extension modules fail to load.
        bundled_libs = pytriton_root().parent.parent / "nvidia_pytriton.libs"
        libpython_dir = sysconfig.get_config_var("LIBDIR") or ""
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "LD_LIBRARY_PATH": os.pathsep.join(
                p for p in (libpython_dir, str(bundled_libs), os.environ.get("LD_LIBRARY_PATH", "")) if p
            ),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        command = [
            str(binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            "--exit-timeout-secs=10",
            "--log-verbose=0",
            # Every python-backend response crosses shared memory; the 1 MiB default region
            # overflows (and crashed the stub here) with 64 fast concurrent streams.
            "--backend-config=python,shm-default-byte-size=67108864",
            "--backend-config=python,shm-growth-byte-size=16777216",
        ]
        self.log_file = self.log_file or self.state_dir / "tritonserver.log"
        self._log = self.log_file.open("ab")
        logger.info("starting tritonserver (log: %s)", self.log_file)
        # Its own process group holds tritonserver and its python-backend stubs, so that a kill
        # takes them all, as when a container dies; otherwise stubs outlive a killed server.
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )

    def is_ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.http_port}/v2/health/ready"
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise TritonStartError(
                    f"tritonserver exited with {self.process.returncode}; see {self.log_file}"
                )
            if self.is_ready():
                return
            time.sleep(0.25)
        raise TritonStartError(f"tritonserver not ready after {timeout:.0f}s; see {self.log_file}")

    def stop(self, timeout: float = 30.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("tritonserver ignored SIGTERM for %.0fs, killing it", timeout)
        if process is not None:
            _kill_group(process)
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """Hard-kill server and stubs, as a crash would (tests use it for failure handling)."""
        if self.process is not None:
            _kill_group(self.process)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
