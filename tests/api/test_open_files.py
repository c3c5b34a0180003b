"""The API raises its open-files limit: every WebSocket is a file descriptor."""

from __future__ import annotations

import resource
import subprocess
import sys


def test_the_api_raises_a_low_open_files_limit_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, soft)

    def lowered() -> None:  # in the child only
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    code = (
        "import resource; from kubechat.api.app import raise_open_files_limit; "
        "before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]; print(before, raise_open_files_limit())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=lowered, capture_output=True, text=True, check=True
    ).stdout.split()
    expected = hard if hard != resource.RLIM_INFINITY else low
    assert [int(n) for n in out] == [low, expected]
