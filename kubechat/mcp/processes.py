"""What a stdio MCP server leaves behind when it dies: found by a marker, and killed.

The SDK's stdio client starts the server in a process group of its own and, when it closes a
server that is still running, kills that group. A server that already exited is not killed
again, and neither is its group, so what it started (`npx` or `uvx` wrappers start the real
server as a child; servers start helpers) lives on after a crash or a `kill -9` of the server
alone, once per restart. kubechat gives each started server a marker in its environment, which
its descendants inherit, and after the session ends kills every process that carries it, with
the process group it is in (which reaches members that cleared their environment).

Linux only (it reads /proc); elsewhere nothing is reaped beyond what the SDK does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

MARKER_VARIABLE = "KUBECHAT_MCP_SERVER_RUN"
PROC = Path("/proc")


def new_marker() -> str:
    """A marker for one run of one server: different for every start."""
    return uuid.uuid4().hex


def marked(marker: str, proc: Path = PROC) -> list[int]:
    """The processes (readable to this user) whose environment carries `marker`."""
    entry = f"{MARKER_VARIABLE}={marker}".encode()
    found = []
    with contextlib.suppress(OSError):
        for path in proc.iterdir():
            if not path.name.isdigit():
                continue
            try:
                environment = (path / "environ").read_bytes()
            except OSError:  # gone meanwhile, or another user's
                continue
            if entry in environment.split(b"\0"):
                found.append(int(path.name))
    return found


def reap(marker: str, proc: Path = PROC) -> list[int]:
    """SIGKILL the processes carrying `marker`, and their process groups (never this process's
    own group). Returns the process ids found."""
    pids = marked(marker, proc)
    own_group = os.getpgrp()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            group = os.getpgid(pid)
            if group != own_group:
                os.killpg(group, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
    return pids
