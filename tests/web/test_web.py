"""The chat page's own checks, run by `make test`: its Vitest unit tests (event reducer, Markdown
sanitizing, reconnects) and the generated API types, which must match the Python models."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

WEB = ROOT / "web"


@pytest.fixture(scope="module")
def npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is missing: install Node.js 20 (the chat page is built and tested with it)")
    if not (WEB / "node_modules").is_dir():
        pytest.fail("web/node_modules is missing: run `make install` (npm ci in web/)")
    return npm


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable, "CI": "1", "NO_COLOR": "1"}
    return subprocess.run(command, cwd=WEB, env=env, capture_output=True, text=True, timeout=300)


def test_vitest_unit_tests(npm: str) -> None:
    result = run([npm, "test", "--silent", "--", "--reporter=dot"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_types_match_the_api(npm: str) -> None:
    result = run([npm, "run", "--silent", "types:check"])
    assert result.returncode == 0, result.stdout + result.stderr
