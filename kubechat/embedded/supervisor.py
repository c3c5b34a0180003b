"""`kubechat serve` keeps its tritonserver up: a crash is noticed, cleaned up and restarted.

A thread waits on the tritonserver process. When the process exits while kubechat is not
stopping it (a crash, the OOM killer, `kill -9`), the supervisor kills what is left of its
process group (the python-backend stubs outlive their server otherwise, holding memory and
shared-memory regions), waits a back-off delay (kubechat.core.backoff, the schedule every
supervisor in kubechat uses), starts it again and waits until it is ready. A server that stayed
up for `STABLE_S` forgets the failures before it. It never gives up: a laptop's tritonserver
that keeps failing is reported, with its last exit, by `/ready` (see `status`).

The thread is the parent of every server it restarts and lives until `stop()`: tritonserver's
parent-death signal (PR_SET_PDEATHSIG, kubechat.embedded.tritonserver) is sent when the thread
that started it ends, not the process.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from kubechat.core.backoff import Backoff

logger = logging.getLogger(__name__)

# Waits before each restart after consecutive failures; the last one repeats.
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
# A server up this long before it failed was healthy: the next restart waits the first delay.
STABLE_S = 60.0
POLL_S = 0.25


class SupervisedServer(Protocol):
    """What the supervisor needs of a server (kubechat.embedded.tritonserver.TritonServer)."""

    @property
    def process(self) -> subprocess.Popen[bytes] | None: ...

    @property
    def log_file(self) -> Path | None: ...

    def start(self) -> None:
        """Start the process (without waiting for it to be ready)."""

    def is_ready(self) -> bool: ...

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the process if it runs, kill its process group, release what it held."""

    def kill(self) -> None:
        """Kill the process group at once."""


class ProcessState(StrEnum):
    RUNNING = "running"  # started and ready
    RESTARTING = "restarting"  # exited; waiting out the back-off, or starting and not ready yet
    STOPPED = "stopped"  # kubechat is stopping it


class TritonSupervisor:
    """Watches a started, ready server (`watch`) and restarts it whenever it exits."""

    def __init__(
        self, server: SupervisedServer, ready_timeout_s: float, backoff: Backoff | None = None
    ) -> None:
        self.server = server
        self.ready_timeout_s = ready_timeout_s
        self.backoff = backoff or Backoff(BACKOFF_S, jitter=0.1)
        self.state = ProcessState.RUNNING
        self.restarts = 0  # starts after the first, ready or not
        self.last_exit = ""  # how the last server process ended, for /ready and the log
        self._ended = ""  # set when the supervisor itself ended the process, and why
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a start or a reap, against stop() from another thread
        self._thread: threading.Thread | None = None

    def watch(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tritonserver-supervisor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop supervising and stop the server (and its stubs)."""
        self._stopping.set()
        self.state = ProcessState.STOPPED
        with self._lock:
            self.server.stop(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> dict[str, object]:
        """What /ready reports: the state, how many times the server was restarted, and how the
        last one ended."""
        return {"state": str(self.state), "restarts": self.restarts, "last_exit": self.last_exit}

    def _run(self) -> None:
        while True:
            process = self.server.process
            up_since = time.monotonic()
            code = process.wait() if process is not None else None
            if self._stopping.is_set():
                return
            if time.monotonic() - up_since >= STABLE_S:
                self.backoff.reset()
            self.state = ProcessState.RESTARTING
            self.last_exit, self._ended = self._ended or _describe_exit(code), ""
            delay = self.backoff.next_delay()
            logger.error(
                "tritonserver %s; restarting it in %.1f s (log: %s)",
                self.last_exit,
                delay,
                self.server.log_file,
            )
            with self._lock:
                if self._stopping.is_set():
                    return
                self.server.stop()  # the group's survivors: the python-backend stubs
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self.restarts += 1
                try:
                    self.server.start()
                except OSError as exc:  # the binary or the log file went away: try again later
                    self._ended = f"could not be started ({exc})"
                    continue
            if self._wait_ready():
                self.state = ProcessState.RUNNING
                logger.info("tritonserver is ready again (restart %d)", self.restarts)

    def _wait_ready(self) -> bool:
        """Whether the restarted server became ready; one that hangs past the timeout is killed
        (and restarted like a crash)."""
        deadline = time.monotonic() + self.ready_timeout_s
        while not self._stopping.wait(POLL_S):
            process = self.server.process
            if process is None or process.poll() is not None:
                return False
            if self.server.is_ready():
                return True
            if time.monotonic() > deadline:
                self._ended = f"was not ready after {self.ready_timeout_s:g} s"
                logger.error("tritonserver %s; killing it", self._ended)
                with self._lock:
                    self.server.kill()
                return False
        return False


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not start"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"
