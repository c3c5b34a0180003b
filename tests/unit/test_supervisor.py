"""kubechat.embedded.supervisor against a stand-in server: a real child process (Python asleep,
with a child of its own in its process group, as tritonserver has its python-backend stubs) that
the tests kill. tests/integration/test_supervisor.py kills the real tritonserver of a real
`kubechat serve`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kubechat.core.backoff import Backoff
from kubechat.embedded.supervisor import ProcessState, TritonSupervisor
from tests.polling import wait_until

# A server that starts a helper in its own process group, then waits.
SERVER = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
time.sleep(600)
"""


@dataclass
class StandInServer:
    """A SupervisedServer: `ready_after_start` decides whether a start ever becomes ready."""

    log_file: Path
    ready_after_start: bool = True
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    groups: list[int] = field(default_factory=list)

    def start(self) -> None:
        self.starts += 1
        self.process = subprocess.Popen([sys.executable, "-c", SERVER], start_new_session=True)
        self.groups.append(self.process.pid)

    def is_ready(self) -> bool:
        return self.ready_after_start and self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        process, self.process = self.process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(*groups: int) -> None:
    """Until no process of `groups` is left: killed helpers are zombies until init reaps them."""
    wait_until(lambda: not any(group_alive(g) for g in groups), 10, f"process groups {groups} to end")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StandInServer]:
    server = StandInServer(tmp_path / "server.log")
    server.start()
    yield server
    server.stop()
    for group in server.groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


def test_a_killed_server_is_reaped_and_restarted(server: StandInServer) -> None:
    supervisor = TritonSupervisor(server, ready_timeout_s=30, backoff=Backoff((0.05,)))
    supervisor.watch()
    try:
        first = server.groups[0]
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)  # the server alone: its helper lives on
        wait_until(
            lambda: supervisor.restarts == 1 and supervisor.state is ProcessState.RUNNING, 30, "a restart"
        )
        assert not group_alive(first), "the dead server's helper was left behind"
        assert server.starts == 2 and server.process is not None and server.process.poll() is None
        assert supervisor.status() == {
            "state": "running",
            "restarts": 1,
            "last_exit": "was killed by SIGKILL",
        }
    finally:
        supervisor.stop()
    assert supervisor.status()["state"] == "stopped"
    assert server.process is None
    wait_gone(server.groups[-1])


def test_a_restart_that_never_gets_ready_is_killed_and_tried_again(server: StandInServer) -> None:
    supervisor = TritonSupervisor(server, ready_timeout_s=0.5, backoff=Backoff((0.05,)))
    supervisor.watch()
    try:
        server.ready_after_start = False
        assert server.process is not None
        server.process.terminate()
        wait_until(lambda: server.starts >= 3, 30, "two restarts")
        assert supervisor.state is ProcessState.RESTARTING
        assert supervisor.status()["last_exit"] == "was not ready after 0.5 s"
        server.ready_after_start = True
        wait_until(lambda: supervisor.state is ProcessState.RUNNING, 30, "a ready restart")
    finally:
        supervisor.stop()
    wait_gone(*server.groups)


def test_stopping_does_not_restart(server: StandInServer) -> None:
    supervisor = TritonSupervisor(server, ready_timeout_s=30, backoff=Backoff((0.05,)))
    supervisor.watch()
    supervisor.stop()
    assert server.starts == 1 and server.process is None
    assert supervisor.restarts == 0
